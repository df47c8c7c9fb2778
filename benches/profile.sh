#!/usr/bin/env bash
# Where cosygate's time goes (issue 15): `perf record` on the gateway while wrk drives one path,
# then the split kernel / cosygate / libc, the hottest symbols, and the system calls per request
# (`strace -c` over a second run). Three paths, the ones RESULTS.md compares with nginx and HAProxy:
#
#     hit     memory hit of a small sft request (~195 KB WAV), wrk -c16
#     miss    the miss path (no cache, a `generate_json` pool, ~24 KB answer), wrk -c1
#     zs-hit  memory hit of a zero-shot request with a 3 s prompt (~128 KB body), wrk -c16
#
#   benches/profile.sh        (also `scripts/bench.sh profile`)
#
# Needs `perf` (Debian: linux-perf) and `strace`, installed when missing; perf must be allowed
# to watch the process (kernel.perf_event_paranoid <= 1, or root). The release build keeps
# line tables (`[profile.release] debug = "line-tables-only"`), so symbols resolve.
# Knobs: BENCH_DURATION (seconds of perf per path, 5), BENCH_TOP (symbols listed, 20),
# BENCH_NO_BUILD, BENCH_PIN, BENCH_KEEP_TMP.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION=${BENCH_DURATION:-5}
TOP=${BENCH_TOP:-20}
ensure_packages wrk=wrk curl=curl python3=python3 strace=strace perf=linux-perf
build_release
need_exec "$GW" "$SIM"
make_tmp cosygate-profile
pin_cores

SIM_PORT=$(free_port)
spawn "$TMP/sim.log" "$SIM" --listen "127.0.0.1:$SIM_PORT" --speakers 英文女 --rtf 0 --first-chunk-ms 0 --json-health
wait_http "http://127.0.0.1:$SIM_PORT/health" cosyvoice-sim "${PIDS[-1]}" "$TMP/sim.log"
HIT_PORT=$(free_port)
MISS_PORT=$(free_port)
pool() {
    cat <<EOF
  pools:
    sim:
      protocol: $1
      speakers: [英文女]
      sample_rate: 24000
      timeout: 10s
      max_concurrency: 256
      backends:
        - addr: 127.0.0.1:$SIM_PORT
EOF
}
{
    gw_yaml_head gw-hit "$HIT_PORT" 1
    echo "  cache: { memory: { max: 256MiB } }"
    pool cosyvoice_fastapi
} >"$TMP/gw-hit.yaml"
{
    gw_yaml_head gw-miss "$MISS_PORT" 1
    echo "  limits: { max_connections_per_ip: 100000 }"
    pool generate_json
} >"$TMP/gw-miss.yaml"
export RUST_LOG=${RUST_LOG:-info}
for g in gw-hit gw-miss; do
    gw_check "$g"
    spawn "$TMP/$g.log" "$GW" -c "$TMP/$g.yaml"
done
wait_http "http://127.0.0.1:$HIT_PORT/health" gw-hit "${PIDS[1]}" "$TMP/gw-hit.log"
wait_http "http://127.0.0.1:$MISS_PORT/health" gw-miss "${PIDS[2]}" "$TMP/gw-miss.log"
HIT_PID=${PIDS[1]}
MISS_PID=${PIDS[2]}

# The requests: the cache_hit part's small body and zero-shot body, the miss part's body.
printf '{"mode":"sft","spk_id":"英文女","text":"%s"}' \
    "Sentence 00000 of the cache benchmark comes back from the cache again, and again, and again." >"$TMP/hit.json"
printf '{"mode":"sft","spk_id":"英文女","text":"Hello th"}' >"$TMP/miss.json"
zero_shot_body "$TMP/zs-hit.json"
for b in hit miss zs-hit; do
    printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nlocal f = io.open("%s", "rb")\nwrk.body = f:read("*all")\nf:close()\n' "$TMP/$b.json" >"$TMP/$b.lua"
done
# Warm the hits (and check they are hits).
for b in hit zs-hit; do
    for _ in 1 2; do
        curl -sS --max-time 30 -D "$TMP/$b.h" -o /dev/null -H 'Content-Type: application/json' \
            --data-binary "@$TMP/$b.json" "http://127.0.0.1:$HIT_PORT/generate"
    done
    grep -qi '^x-cache: HIT' "$TMP/$b.h" || { cat "$TMP/$b.h" >&2; die "$b: the second request was not a HIT"; }
done

# profile NAME PORT PID CONNECTIONS: the perf profile and system calls of one path (PORT: its gateway)
profile() {
    local name=$1 pid=$3 conns=$4 url="http://127.0.0.1:$2/generate"
    # perf during one run
    on_load_cpu wrk -t1 -c"$conns" -d"$((DURATION + 2))s" -s "$TMP/$name.lua" "$url" >"$TMP/$name.wrk" &
    local load=$!
    sleep 1
    perf record -q -F 1999 -p "$pid" -o "$TMP/$name.perf" -- sleep "$DURATION" >/dev/null 2>&1 ||
        die "perf record failed (kernel.perf_event_paranoid is $(cat /proc/sys/kernel/perf_event_paranoid); run as root or lower it)"
    wait "$load"
    # system calls per request during a second run, strace attached before wrk starts
    strace -c -f -p "$pid" -o "$TMP/$name.strace" >/dev/null 2>&1 &
    local tracer=$!
    sleep 0.5
    on_load_cpu wrk -t1 -c"$conns" -d"${DURATION}s" -s "$TMP/$name.lua" "$url" >"$TMP/$name.wrk2"
    kill -INT "$tracer"
    wait "$tracer" || true
    local traced
    traced=$(awk '/requests in/ {print $1}' "$TMP/$name.wrk2")
    echo "### $name: $(awk '/Requests\/sec/ {printf "%.0f requests/s", $2}' "$TMP/$name.wrk") (wrk -c$conns, under perf)"
    echo
    echo "Where the samples fall:"
    perf report -i "$TMP/$name.perf" --no-children --sort dso --stdio 2>/dev/null | awk '/^ +[0-9]/ && n++ < 5 {printf "  %-8s %s\n", $1, $2}'
    echo
    echo "Hottest $TOP symbols (self time):"
    perf report -i "$TMP/$name.perf" --no-children --sort dso,symbol --stdio 2>/dev/null |
        awk -v top="$TOP" '/^ +[0-9]/ && n++ < top {pct = $1; dso = $2; $1 = ""; $2 = ""; $3 = ""; sub(/^ +/, ""); sub(/ +- +- *$/, ""); printf "  %-7s %-10s %s\n", pct, dso, substr($0, 1, 110)}'
    echo
    python3 - "$TMP/$name.strace" "$traced" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
calls = {}
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total",):
        calls[f[-1]] = int(f[3])
hot = {k: v for k, v in calls.items() if k not in ("epoll_wait", "clock_nanosleep", "futex")}
per = ", ".join("%s %.2f" % (k, v / max(n, 1)) for k, v in sorted(hot.items(), key=lambda kv: -kv[1])[:6])
waits = ", ".join("%s %.2f" % (k, calls[k] / max(n, 1)) for k in ("epoll_wait", "futex") if k in calls)
print("System calls per request (strace -c over %d requests, slowed by strace): %s; waits: %s" % (n, per, waits or "none"))
PY
    echo
}

echo "perf profiles of cosygate (one worker thread, pinned); $(machine)"
echo
profile hit "$HIT_PORT" "$HIT_PID" 16
profile miss "$MISS_PORT" "$MISS_PID" 1
profile zs-hit "$HIT_PORT" "$HIT_PID" 16
