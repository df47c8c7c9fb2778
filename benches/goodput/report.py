#!/usr/bin/env python3
"""Table and write-up for benches/goodput.sh.

report.py RUNS_DIR META_JSON OUT_MD
  RUNS_DIR holds one NAME.json per run (the loadgen summary plus "peer", "mult", "sims" and,
  for HAProxy, "haproxy" stats); META_JSON describes the setup. Prints the table on stdout and
  writes the Markdown report to OUT_MD.
"""

import glob
import json
import os
import sys


def load(runs_dir):
    runs = []
    for path in glob.glob(os.path.join(runs_dir, "*.json")):
        with open(path) as f:
            runs.append(json.load(f))
    order = {"cosygate": 0, "haproxy": 1}
    runs.sort(key=lambda r: (r["mult"], order.get(r["peer"], 9)))
    return runs


def f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def share(run, pred):
    sent = run["sent_in_window"]
    n = sum(c for k, c in run["outcomes"].items() if pred(k))
    return 100.0 * n / sent if sent else 0.0


def is_503(k):
    return k.startswith("503")


def is_other(k):
    return k != "200" and not k.startswith("503")


def table(runs, cap):
    head = ("| peer | load | offered rps | goodput rps | goodput / capacity | 200 % | 503 % | "
            "other % | p50 s (200s) | p99 s (200s) | p50 s (errors) | sim max_inflight A/B |")
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    rows = [head, sep]
    for r in runs:
        sims = r["sims"]
        rows.append("| {peer} | {mult}x | {off:.1f} | {good:.1f} | {ratio:.2f} | {ok:.1f} | {e503:.1f} | "
                    "{oth:.1f} | {p50} | {p99} | {ep50} | {mi} |".format(
                        peer=r["peer"], mult=r["mult"], off=r["offered_rps"], good=r["goodput_rps"],
                        ratio=r["goodput_rps"] / cap, ok=100.0 * r["ok_share"],
                        e503=share(r, is_503), oth=share(r, is_other),
                        p50=f(r["ok_p50_s"]), p99=f(r["ok_p99_s"]), ep50=f(r["err_p50_s"], "{:.3f}"),
                        mi="/".join(str(s["max_inflight"]) for s in sims)))
    return "\n".join(rows)


def details(runs):
    head = ("| peer | load | requests in window | outcomes (requests sent in the window) | "
            "syntheses started (sims A+B) | HAProxy peak queue | client: peak open requests, worst send lag |")
    sep = "|---|---:|---:|---|---:|---:|---:|"
    rows = [head, sep]
    for r in runs:
        outcomes = ", ".join(f"{k}: {v}" for k, v in r["outcomes"].items())
        queue = "-"
        if r.get("haproxy"):
            h = r["haproxy"]
            queue = f"backend {h['backend_qmax']}, servers {h['server_qmax']}"
        rows.append(f"| {r['peer']} | {r['mult']}x | {r['sent_in_window']} | {outcomes} | "
                    f"{sum(s['requests'] for s in r['sims'])} | {queue} | {r['client_peak_inflight']}, "
                    f"{1000 * r['client_max_send_lag_s']:.0f} ms |")
    return "\n".join(rows)


def interpretation(runs, meta):
    cap = meta["capacity_rps"]
    slots = meta["slots"]
    by = {(r["peer"], r["mult"]): r for r in runs}
    out = []
    mults = sorted({r["mult"] for r in runs})
    peers = [p for p in ("cosygate", "haproxy") if any(r["peer"] == p for r in runs)]
    for p in peers:
        parts = []
        for m in mults:
            r = by.get((p, m))
            if r:
                parts.append(f"{r['goodput_rps']:.1f} rps ({100 * r['goodput_rps'] / cap:.0f} %) at {m}x")
        out.append(f"- **Goodput, {p}**: " + ", ".join(parts) + f", against a theoretical capacity of "
                   f"{cap:.1f} rps.")
    worst = max(max(s["max_inflight"] for s in r["sims"]) for r in runs)
    verdict = ("neither peer ever had more than" if worst <= slots else
               "at least one run went OVER the slot count: the highest was")
    out.append(f"- **Slots respected**: {verdict} {worst if worst > slots else slots} syntheses in flight "
               f"on one backend (sim `max_inflight`, reset before each run; {slots} slots each).")
    def said(name, r):
        text = (f"{name} answered {100 * r['ok_share']:.0f} % with audio "
                f"(p50 {f(r['ok_p50_s'])} s, p99 {f(r['ok_p99_s'])} s)")
        refused = share(r, lambda k: k != "200")
        if r["sent_in_window"] - r["outcomes"].get("200", 0) > 0:
            text += f" and refused {refused:.0f} % (median refusal {f(r['err_p50_s'], '{:.3f}')} s after sending)"
        return text

    for m in mults:
        c, h = by.get(("cosygate", m)), by.get(("haproxy", m))
        parts = [said(n, r) for n, r in (("cosygate", c), ("HAProxy", h)) if r]
        if parts:
            out.append(f"- **{m}x**: " + "; ".join(parts) + ".")
    return "\n".join(out)


def excess(runs, meta):
    """What each peer did with the requests over capacity, from the most overloaded run."""
    out = []
    top = {}
    for r in runs:
        if r["peer"] not in top or r["mult"] > top[r["peer"]]["mult"]:
            top[r["peer"]] = r
    c = top.get("cosygate")
    if c:
        full = c["outcomes"].get("503 queue_full", 0)
        tout = c["outcomes"].get("503 queue_timeout", 0)
        others = {k: v for k, v in c["outcomes"].items()
                  if k not in ("200", "503 queue_full", "503 queue_timeout")}
        wait = 64 / meta["capacity_rps"] + meta["service_s"]
        ra = c.get("with_retry_after", {}).get("503 queue_full", 0)
        out.append(
            f"- **What cosygate does with the excess** ({c['mult']}x): it keeps at most 64 requests "
            f"waiting for the pool and refuses the rest at once with 503 `queue_full` "
            f"({full} requests, {ra} of them with `Retry-After`; median refusal "
            f"{f(c['err_p50_s'], '{:.3f}')} s after sending); "
            f"{tout} got 503 `queue_timeout` (no slot within `max_wait`)"
            + (f"; other outcomes: {others}" if others else "")
            + f". An accepted request waits at most about 64 / capacity + service time = "
            f"{wait:.1f} s (measured p99 {f(c['ok_p99_s'])} s); the client never had more than "
            f"{c['client_peak_inflight']} requests open.")
    h = top.get("haproxy")
    if h and h.get("haproxy"):
        st = h["haproxy"]
        refused = sum(v for k, v in h["outcomes"].items() if k != "200")
        ra = sum(v for k, v in h.get("with_retry_after", {}).items() if k != "200")
        if st["backend_qmax"] > 0:
            where = (f"each server's own queue filled to {st['server_qmax']} (`maxqueue 64`), and "
                     f"the overflow waited in the backend-wide queue, which `maxqueue` does not "
                     f"bound (peak {st['backend_qmax']} requests)")
        else:
            where = (f"the servers' own queues peaked at {st['server_qmax']} and nothing waited in "
                     f"the backend-wide queue")
        out.append(
            f"- **What HAProxy does with the excess** ({h['mult']}x): {where}; the client had up "
            f"to {h['client_peak_inflight']} requests open. `timeout queue` answered "
            f"{refused} requests with an error "
            f"({', '.join(f'{k}: {v}' for k, v in h['outcomes'].items() if k != '200')}; "
            f"{ra} with `Retry-After`), median {f(h['err_p50_s'])} s after they were sent. "
            f"The requests it served took p50 {f(h['ok_p50_s'])} s, p99 {f(h['ok_p99_s'])} s "
            f"(queue wait plus service): HAProxy serves its queue in arrival order, so once the "
            f"backlog is more than the backends can serve within the timeout, the request that "
            f"gets a slot is the oldest one that has not timed out yet.")
    return "\n".join(out)


def summary(runs, meta):
    cap = meta["capacity_rps"]
    over = [r for r in runs if r["mult"] > 1]
    if not over:
        return ""
    lo = min(r["goodput_rps"] / cap for r in over)
    hi = max(r["goodput_rps"] / cap for r in over)
    rng = f"{100 * lo:.0f}" if round(100 * lo) == round(100 * hi) else f"{100 * lo:.0f}-{100 * hi:.0f}"
    told = any(v for r in runs if r["peer"] == "cosygate"
               for k, v in r.get("with_retry_after", {}).items() if k.startswith("503"))
    if lo >= 0.95:
        head = (f"- **In short**: under overload every run delivered {rng} % of the theoretical "
                f"capacity: with the backends held at their slot count, neither peer loses goodput "
                f"to overload (and neither can add any: the simulated GPU is the bottleneck). ")
    else:
        worst = min(over, key=lambda r: r["goodput_rps"])
        head = (f"- **In short**: under overload the runs delivered {rng} % of the theoretical "
                f"capacity; the lowest was {worst['peer']} at {worst['mult']}x. ")
    return (head + "The difference is what the callers over capacity experience: how long the "
            "served requests wait, and how long a refused caller waits before it learns it should "
            "go elsewhere or retry" + (" (cosygate also says when, in `Retry-After`)." if told else "."))


def main():
    runs_dir, meta_path, out_md = sys.argv[1:4]
    runs = load(runs_dir)
    with open(meta_path) as fh:
        meta = json.load(fh)
    cap = meta["capacity_rps"]
    tbl = table(runs, cap)
    print(tbl)
    print()
    print(details(runs))
    md = f"""# Goodput under overload: cosygate vs HAProxy (issue 5)

Written by `benches/goodput.sh`; rerun it to refresh. Numbers from one run on this machine:
{meta['machine']}, {meta['date']}, cosygate at `{meta['git']}`, {meta['haproxy_version']}.

```sh
{meta['command']}
```

## Setup

- Two `cosyvoice-sim` backends, `--slots {meta['slots']} --rtf {meta['rtf']} --first-chunk-ms {meta['first_chunk_ms']} --overload slow`
  (over {meta['slots']} in flight every synthesis slows down by inflight/slots: the simulated GPU
  shares its time, so admitting more does not add throughput).
- Every request is the same SFT synthesis of a {meta['text_chars']}-character text
  ({meta['pcm_bytes']} bytes of PCM, {meta['audio_s']:.2f} s of audio). Service time of one request
  alone, direct to a backend (median of {meta['calib_n']}): **{meta['service_s']:.3f} s**.
- **Theoretical capacity** = {meta['backends']} backends x {meta['slots']} slots / {meta['service_s']:.3f} s
  = **{cap:.1f} requests/s**. Offered loads: {', '.join(f'{m}x = {m * cap:.1f} rps' for m in meta['mults'])}.
- **cosygate**: `POST /generate` (JSON), pool `cosyvoice_fastapi`, `max_concurrency: {meta['slots']}`,
  `queue: {{max_len: 64, max_wait: 10s, async_after: 60s}}` (callers stay synchronous), no cache
  (every request is synthesized), `threads: 2`, `limits.max_connections_per_ip` raised so the
  per-IP connection cap does not interfere (all load comes from one address).
- **HAProxy**: `POST /inference_sft` (the same synthesis, as the multipart form cosygate itself
  sends), `mode http`, `balance leastconn`, each server `maxconn {meta['slots']} maxqueue 64`,
  `timeout queue 10s`, `timeout server 60s`, `option httpchk GET /docs`, `nbthread 2`.
- Load: `benches/goodput/loadgen.py`, open loop (each request sent at its scheduled time on its
  own connection, whatever is still open), constant spacing, {meta['warmup_s']:.0f} s warm-up then
  {meta['duration_s']:.0f} s measured, per peer and load, one peer at a time; the backends drain
  (`/__sim/stats` `inflight` 0) and are reset between runs.
- **goodput** = 200s with the complete audio (length checked) whose answer arrived inside the
  measured window, per second. Shares, latencies (from the scheduled send time) and outcomes
  count the requests *sent* in the window, each followed to its end.

## Results

{tbl}

Details per run:

{details(runs)}

## What the numbers say

{interpretation(runs, meta)}
{excess(runs, meta)}
{summary(runs, meta)}
- Caveats: a simulated GPU (sleep-based, processor sharing), one client address, loopback, a
  2-core machine that also runs the load generator; a single run per point, no repetitions.
  Goodput slightly above 100 % is measurement error, not extra capacity: the service time
  "alone" includes the client's own connection and request overhead (the simulator's nominal
  time is {meta['first_chunk_ms'] / 1000:.1f} + {meta['rtf']} x {meta['audio_s']:.2f} = {meta['first_chunk_ms'] / 1000 + meta['rtf'] * meta['audio_s']:.3f} s), and the window's edges cut through
  {meta['backends'] * meta['slots']} parallel slots (about +-{meta['backends'] * meta['slots'] / meta['duration_s']:.1f} rps over {meta['duration_s']:.0f} s).
  This run: build {meta.get('build_s', '?')} s, benchmark {meta.get('bench_s', '?')} s; load average
  (1, 5, 15 min) {meta.get('load_before', '?')} before the benchmark and {meta.get('load_after', '?')} after it
  (the machine may be shared: the backends' timing is sleep-based, the client's worst send lag
  is in the details table).
"""
    with open(out_md, "w") as fh:
        fh.write(md)


if __name__ == "__main__":
    main()
