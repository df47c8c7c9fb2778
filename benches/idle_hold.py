#!/usr/bin/env python3
"""Opens N keep-alive connections to one server, sends one GET on each (HTTP/1.1, or HTTP/2
with prior knowledge, h2c), reads the whole answer, then leaves every connection idle.

Used by benches/idle_connections.sh. Connections are spread over several loopback source
addresses (--sources 127.0.0.2-127.0.0.21) so a per-address cap is not what limits them.
Protocol on stdin/stdout, one line each:
  prints "ready OPEN FAILED" once every connection was tried,
  then on each line "check" read from stdin prints "alive N" (connections the server has not
  closed), and exits at end of input, closing them all.
Standard library only; every wait has a deadline.
"""

import argparse
import asyncio
import ipaddress
import struct
import sys

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_request(path, authority):
    # HPACK: :method GET (static 2), :scheme http (static 6), then literal :path (name index 4)
    # and :authority (name index 1), without indexing.
    block = b"\x82\x86" + b"\x04" + bytes([len(path)]) + path + b"\x01" + bytes([len(authority)]) + authority
    settings = h2_frame(0x4, 0, 0)
    headers = h2_frame(0x1, 0x5, 1, block)  # END_STREAM | END_HEADERS
    return H2_PREFACE + settings + headers


async def read_frame(reader):
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    payload = await reader.readexactly(length)
    return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload


async def h2_exchange(reader, writer, path, authority):
    writer.write(h2_request(path, authority))
    await writer.drain()
    while True:
        kind, flags, stream, _ = await read_frame(reader)
        if kind == 0x4 and not flags & 0x1:  # the server's SETTINGS: acknowledge it
            writer.write(h2_frame(0x4, 0x1, 0))
            await writer.drain()
        elif kind == 0x7:  # GOAWAY
            raise ConnectionError("GOAWAY")
        elif kind in (0x0, 0x1) and stream == 1 and flags & 0x1:  # END_STREAM on our stream
            return


async def h1_exchange(reader, writer, path, authority):
    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)


async def open_one(args, source, conns):
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(args.host, args.port, local_addr=(source, 0)), 10
        )
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        exchange = h2_exchange if args.proto == "h2" else h1_exchange
        await asyncio.wait_for(exchange(reader, writer, args.path.encode(), b"bench"), 10)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        writer.close()
        return False
    conns.append((reader, writer))
    return True


def alive(conns):
    # A connection the server closed has its EOF (or an error) fed to the reader by now.
    return sum(1 for reader, _ in conns if not reader.at_eof() and reader.exception() is None)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument("--proto", choices=["h1", "h2"], default="h1")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--sources", default="127.0.0.2-127.0.0.21")
    p.add_argument("--path", default="/health")
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args()
    args.host, port = args.target.rsplit(":", 1)
    args.port = int(port)
    first, last = (ipaddress.ip_address(a) for a in args.sources.split("-"))
    sources = [str(ipaddress.ip_address(int(first) + i)) for i in range(int(last) - int(first) + 1)]

    conns = []
    failed = 0
    for start in range(0, args.n, args.batch):
        batch = [open_one(args, sources[i % len(sources)], conns) for i in range(start, min(args.n, start + args.batch))]
        failed += sum(1 for ok in await asyncio.gather(*batch) if not ok)
    print(f"ready {len(conns)} {failed}", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        if line.strip() == "check":
            print(f"alive {alive(conns)}", flush=True)
    for _, writer in conns:
        writer.close()


if __name__ == "__main__":
    asyncio.run(main())
