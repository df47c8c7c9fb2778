#!/usr/bin/env python3
"""Open-loop HTTP/1.1 load for benches/goodput.sh (Python 3 standard library only).

Why not oha/wrk: an open-loop test of an overloaded queue needs every request sent at its
scheduled time whatever the number already in flight (HAProxy can hold ~10 s of arrivals in its
queue, so ~1000 open requests at 4x), and per-request outcomes: the completion time of each 200
(goodput counts completions inside the window), the latency of 200s alone, and the JSON error
`code` of each 503. oha's `-q` is bounded by its `-c` workers and summarizes latency over all
statuses; wrk is closed-loop.

Subcommands:
  body    OUT_JSON OUT_FORM TEXT SPK        write the two request bodies (JSON, multipart)
  once    HOST PORT PATH BODY CTYPE         one request; prints {"status","seconds","bytes"}
  run     HOST PORT PATH BODY CTYPE ...     open-loop run; prints one JSON summary
  haproxy SOCKET COMMAND                    one command on HAProxy's stats socket
"""

import argparse
import asyncio
import json
import resource
import socket
import sys
import time

BOUNDARY = "cosygatebenchboundary7d1f3a"


def write_bodies(out_json, out_form, text, spk):
    with open(out_json, "wb") as f:
        f.write(json.dumps({"text": text, "mode": "sft", "spk_id": spk},
                           ensure_ascii=False).encode("utf-8"))
    parts = []
    for name, value in (("tts_text", text), ("spk_id", spk)):
        parts.append(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                     f"{value}\r\n")
    parts.append(f"--{BOUNDARY}--\r\n")
    with open(out_form, "wb") as f:
        f.write("".join(parts).encode("utf-8"))
    print(f"multipart/form-data; boundary={BOUNDARY}")


def request_bytes(host, port, path, body, ctype):
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nUser-Agent: goodput-bench\r\n\r\n")
    return head.encode("latin-1") + body


async def exchange(host, port, raw, timeout):
    """One request on its own connection: (status, body, error code or None, Retry-After?)."""
    async def go():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(raw)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                chunks = []
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")  # no trailers expected
                        break
                    chunks.append(await reader.readexactly(size))
                    await reader.readexactly(2)
                body = b"".join(chunks)
            else:
                body = await reader.read()
            return status, body, headers
        finally:
            writer.close()
    status, body, headers = await asyncio.wait_for(go(), timeout)
    code = None
    if status != 200:
        ctype = headers.get("content-type", "")
        code = "html" if ctype.startswith("text/html") else "-"
        if ctype.startswith("application/json"):
            try:
                code = json.loads(body)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "?"
    return status, body, code, "retry-after" in headers


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


async def run(args):
    raise_nofile()
    with open(args.body, "rb") as f:
        raw = request_bytes(args.host, args.port, args.path, f.read(), args.ctype)
    total = args.warmup + args.duration
    n = int(round(total * args.rate))
    results = []  # (scheduled offset, done offset, outcome, Retry-After present)
    loop = asyncio.get_running_loop()
    inflight = 0
    peak_inflight = 0
    max_lag = 0.0

    async def one(t_sched):
        nonlocal inflight, peak_inflight
        inflight += 1
        peak_inflight = max(peak_inflight, inflight)
        retry_after = False
        try:
            status, body, code, retry_after = await exchange(args.host, args.port, raw, args.timeout)
            if status == 200:
                outcome = "200" if (args.expect_bytes <= 0 or len(body) == args.expect_bytes) \
                    else "200-wrong-length"
            else:
                outcome = f"{status} {code}"
        except asyncio.TimeoutError:
            outcome = "client-timeout"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            outcome = f"conn-error {type(e).__name__}"
        finally:
            inflight -= 1
        results.append((t_sched, loop.time() - t0, outcome, retry_after))

    t0 = loop.time() + 0.05
    tasks = []
    for i in range(n):
        t_sched = i / args.rate
        delay = t0 + t_sched - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            max_lag = max(max_lag, -delay)
        tasks.append(asyncio.ensure_future(one(t_sched)))
    await asyncio.gather(*tasks)
    wall = loop.time() - t0

    w0, w1 = args.warmup, args.warmup + args.duration
    window = [r for r in results if w0 <= r[0] < w1]
    counts = {}
    with_retry_after = {}
    for r in window:
        counts[r[2]] = counts.get(r[2], 0) + 1
        if r[3]:
            with_retry_after[r[2]] = with_retry_after.get(r[2], 0) + 1
    ok_lat = sorted(r[1] - r[0] for r in window if r[2] == "200")
    err_lat = sorted(r[1] - r[0] for r in window if r[2] != "200")
    done_ok_in_window = sum(1 for r in results if r[2] == "200" and w0 <= r[1] < w1)
    sent = len(window)
    out = {
        "rate": args.rate,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "sent_in_window": sent,
        "offered_rps": sent / args.duration,
        # completed 200s (full audio) whose answer arrived inside the window, per second
        "goodput_rps": done_ok_in_window / args.duration,
        "ok_share": counts.get("200", 0) / sent if sent else 0.0,
        "outcomes": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "with_retry_after": with_retry_after,
        "ok_p50_s": pct(ok_lat, 50),
        "ok_p99_s": pct(ok_lat, 99),
        "ok_max_s": ok_lat[-1] if ok_lat else None,
        "err_p50_s": pct(err_lat, 50),
        "err_max_s": err_lat[-1] if err_lat else None,
        "client_peak_inflight": peak_inflight,
        "client_max_send_lag_s": max_lag,
        "wall_s": wall,
    }
    print(json.dumps(out))


async def once(args):
    with open(args.body, "rb") as f:
        raw = request_bytes(args.host, args.port, args.path, f.read(), args.ctype)
    t = time.monotonic()
    status, body, code, _ = await exchange(args.host, args.port, raw, args.timeout)
    print(json.dumps({"status": status, "seconds": time.monotonic() - t, "bytes": len(body),
                      "code": code}))


def haproxy_cmd(sock_path, command):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sock_path)
    s.sendall(command.encode() + b"\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    sys.stdout.write(data.decode("utf-8", "replace"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("body")
    for a in ("out_json", "out_form", "text", "spk"):
        b.add_argument(a)
    for name in ("once", "run"):
        q = sub.add_parser(name)
        q.add_argument("host")
        q.add_argument("port", type=int)
        q.add_argument("path")
        q.add_argument("body")
        q.add_argument("ctype")
        q.add_argument("--timeout", type=float, default=60.0)
        if name == "run":
            q.add_argument("--rate", type=float, required=True)
            q.add_argument("--warmup", type=float, default=8.0)
            q.add_argument("--duration", type=float, default=20.0)
            q.add_argument("--expect-bytes", type=int, default=0)
    h = sub.add_parser("haproxy")
    h.add_argument("socket")
    h.add_argument("command")
    args = p.parse_args()
    if args.cmd == "body":
        write_bodies(args.out_json, args.out_form, args.text, args.spk)
    elif args.cmd == "once":
        asyncio.run(once(args))
    elif args.cmd == "run":
        asyncio.run(run(args))
    else:
        haproxy_cmd(args.socket, args.command)


if __name__ == "__main__":
    main()
