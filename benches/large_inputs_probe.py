#!/usr/bin/env python3
"""Latency of a small request while large bodies are being validated (benches/large_inputs.sh).

Runs LOADERS threads that POST the body file to /generate back to back, each on its own
keep-alive connection (every answer is expected to be a refusal after validation, 422), and
one probe that sends GET /health on its own keep-alive connection every INTERVAL seconds and
records how long each answer took. Prints one line:
  p50_ms p90_ms p99_ms max_ms probes bodies_validated
Standard library only; every request has a timeout.
"""

import argparse
import http.client
import statistics
import threading
import time


def loader(host, port, body, stop, counts, statuses):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    while not stop.is_set():
        try:
            conn.request("POST", "/generate", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            counts.append(1)
            statuses.add(resp.status)
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--loaders", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--interval", type=float, default=0.02)
    args = p.parse_args()
    host, port = args.target.rsplit(":", 1)
    port = int(port)
    body = open(args.body, "rb").read()
    stop = threading.Event()
    counts, statuses = [], set()
    threads = [threading.Thread(target=loader, args=(host, port, body, stop, counts, statuses), daemon=True)
               for _ in range(args.loaders)]
    for t in threads:
        t.start()
    time.sleep(0.5 if args.loaders else 0)  # let the loaders get going
    counts.clear()
    probe = http.client.HTTPConnection(host, port, timeout=10)
    samples = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        start = time.monotonic()
        probe.request("GET", "/health")
        resp = probe.getresponse()
        resp.read()
        samples.append((time.monotonic() - start) * 1000)
        if resp.status != 200:
            raise SystemExit(f"probe answered {resp.status}")
        time.sleep(max(0.0, args.interval - (time.monotonic() - start)))
    stop.set()
    done = len(counts)
    for t in threads:
        t.join(timeout=35)
    if args.loaders and statuses - {422}:
        raise SystemExit(f"loaders got {sorted(statuses)}, expected only 422")
    q = statistics.quantiles(samples, n=100)
    print(f"{q[49]:.2f} {q[89]:.2f} {q[98]:.2f} {max(samples):.2f} {len(samples)} {done}")


if __name__ == "__main__":
    main()
