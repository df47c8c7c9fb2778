#!/usr/bin/env bash
# What a cache MISS adds to a request's latency: N requests with new texts through the cache
# (memory + disk + Redis), then N more with `Cache-Control: no-store` (the same synthesis, no
# cache at all), interleaved. The difference of the medians is the cache's cost on a miss.
#
#   benches/cache_miss.sh [N]       (default 40; needs redis-server and curl; builds debug)
#
# Starts its own redis-server, cosyvoice-sim and cosygate on free loopback ports, in a temp
# directory (the disk tier lives there, on the same filesystem as $TMPDIR), and stops them.
set -euo pipefail
N=${1:-40}
cd "$(dirname "$0")/.."
cargo build -q --bins
BIN=target/debug
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(port); SPORT=$(port); GPORT=$(port)

redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
PIDS+=($!)
"$BIN/cosyvoice-sim" --listen "127.0.0.1:$SPORT" --speakers "中文女" --rtf 0.01 --first-chunk-ms 5 \
    >"$DIR/sim.log" 2>&1 &
PIDS+=($!)
cat >"$DIR/cosygate.yaml" <<EOF
threads: 2
pid_file: $DIR/cosygate.pid
upgrade_sock: $DIR/upgrade.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
cosygate:
  listen:
    - addr: 127.0.0.1:$GPORT
  cache: { ttl: 1h, memory: { max: 256MiB }, disk: { path: $DIR/cache, max: 1GiB }, redis: { url: "redis://127.0.0.1:$RPORT", timeout: 1s } }
  pools:
    cosyvoice:
      protocol: cosyvoice_fastapi
      speakers: [中文女]
      backends:
        - addr: 127.0.0.1:$SPORT
EOF
"$BIN/cosygate" -c "$DIR/cosygate.yaml" >"$DIR/gw.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$GPORT/health" >/dev/null 2>&1 && break
    sleep 0.1
done

# One request with a new text; prints its total time in seconds. $1: label, $2: extra header.
one() {
    local body="{\"text\":\"Bench $1 $i $RANDOM$RANDOM, a sentence of ordinary length for one miss.\",\"mode\":\"sft\",\"spk_id\":\"中文女\"}"
    curl -s -o /dev/null -w '%{time_total}\n' -H 'Content-Type: application/json' ${2:+-H "$2"} \
        --data-binary "$body" "http://127.0.0.1:$GPORT/generate"
}
# Misses and bypasses interleaved, so a change in the machine's load hits both alike, with a
# pause after each, so a store running after its answer does not slow the next request.
for i in $(seq 5); do one warmup "Cache-Control: no-store" >/dev/null; done
for i in $(seq "$N"); do
    echo "miss $(one miss "")"
    sleep 0.2
    echo "bypass $(one bypass "Cache-Control: no-store")"
    sleep 0.2
done >"$DIR/times"
for label in miss bypass; do
    grep "^$label " "$DIR/times" | cut -d' ' -f2 | sort -n | awk -v l="$label" \
        '{a[NR]=$1} END {printf "%-7s median %6.2f ms  p90 %6.2f ms  (n=%d)\n", l, a[int((NR+1)/2)]*1000, a[int(NR*0.9)]*1000, NR}'
done
