#!/usr/bin/env python3
"""N identical concurrent POSTs (benches/coalescing.sh): opens N connections first, releases all
requests at once (a barrier), reads every answer whole, and prints one JSON line: statuses,
X-Cache values, body sizes and the completion times (seconds from the release) of every answer.

  coalesce.py HOST PORT PATH BODY_FILE N

Standard library only; every socket has a 60 s timeout.
"""

import http.client
import json
import sys
import threading
import time


def main():
    host, port, path, body_file, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    body = open(body_file, "rb").read()
    conns = []
    for _ in range(n):
        c = http.client.HTTPConnection(host, port, timeout=60)
        c.connect()
        conns.append(c)
    barrier = threading.Barrier(n + 1)
    results = [None] * n
    start = [0.0]

    def one(i):
        c = conns[i]
        barrier.wait()
        try:
            c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            results[i] = (r.status, r.getheader("X-Cache") or "", len(data), time.monotonic() - start[0])
        except Exception as e:  # noqa: BLE001 - reported, never hidden
            results[i] = (0, repr(e), 0, time.monotonic() - start[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start[0] = time.monotonic()
    barrier.wait()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    statuses, caches, sizes = {}, {}, {}
    for status, cache, size, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        caches[cache] = caches.get(cache, 0) + 1
        sizes[str(size)] = sizes.get(str(size), 0) + 1
    times = sorted(r[3] for r in results)
    print(json.dumps({"statuses": statuses, "x_cache": caches, "sizes": sizes,
                      "first_s": times[0], "p50_s": times[len(times) // 2], "last_s": times[-1]}))


if __name__ == "__main__":
    main()
