"""Time to first audio, streamed: straight from a cosyvoice-sim backend (CosyVoice's FastAPI
route, raw PCM) and through cosygate (`/generate` with "stream": true), interleaved, each
request with a new text (a cache miss). Prints one Markdown table.

    python3 benches/stream_ttfb.py GATEWAY_PORT SIM_PORT ROUNDS

First audio = the first byte of PCM: through the gateway the first body byte after its
44-byte WAV header, straight from the backend the first body byte (FastAPI sends its headers
at once, before any audio). Plain sockets, HTTP/1.1, one new connection per request."""

import json
import socket
import statistics
import sys
import time
import urllib.parse

MARKER = "You are a helpful assistant.<|endofprompt|>"


def first_audio(port, raw, skip):
    """Seconds until the first audio byte and until the end of the response."""
    s = socket.create_connection(("127.0.0.1", port))
    t0 = time.perf_counter()
    s.sendall(raw)
    buf, first, head_end = b"", None, None
    while True:
        data = s.recv(65536)
        if not data:
            break
        buf += data
        if head_end is None and b"\r\n\r\n" in buf:
            head_end = buf.index(b"\r\n\r\n") + 4
        if head_end is not None and first is None:
            # Chunked: the first chunk's size line precedes its data.
            body = buf[head_end:]
            if b"\r\n" in body:
                size_line, rest = body.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size and len(rest) > skip or size > skip:
                    first = time.perf_counter() - t0
        if buf.endswith(b"\r\n0\r\n\r\n"):
            break
    end = time.perf_counter() - t0
    s.close()
    return first, end


def via_gateway(port, text):
    body = json.dumps({"text": text, "mode": "sft", "spk_id": "中文女", "stream": True}).encode()
    raw = (
        b"POST /generate HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    return first_audio(port, raw, 44)


def direct(port, text):
    body = urllib.parse.urlencode({"tts_text": MARKER + text, "spk_id": "中文女"}).encode()
    raw = (
        b"POST /inference_sft HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    return first_audio(port, raw, 0)


def main():
    gw_port, sim_port, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    results = {"direct": [], "cosygate": []}
    for i in range(rounds):
        text = f"第{i}轮测试。" + "今天天气很好，我们一起去公园散步吧。" * 6
        for name, call, port in (("direct", direct, sim_port), ("cosygate", via_gateway, gw_port)):
            first, end = call(port, text + name)
            results[name].append((first, end))
    print("| path | first audio p50 | first audio p90 | whole answer p50 |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        firsts = sorted(r[0] for r in rows if r[0] is not None)
        ends = sorted(r[1] for r in rows)
        p90 = firsts[int(len(firsts) * 0.9) - 1] if firsts else float("nan")
        print(
            f"| {name} | {statistics.median(firsts) * 1000:.1f} ms | {p90 * 1000:.1f} ms "
            f"| {statistics.median(ends) * 1000:.1f} ms |"
        )
    d = [g[0] - r[0] for g, r in zip(results["cosygate"], results["direct"]) if g[0] and r[0]]
    print(f"\ncosygate adds {statistics.median(d) * 1000:.2f} ms (median of the paired differences) "
          f"to the time to first audio, over {len(d)} pairs.")


main()
