#!/usr/bin/env bash
# What the gateway adds to a miss (issue 15): latency of POST /generate straight to a
# cosyvoice-sim, through cosygate (the answer stored and checked whole, and `"stream": true`),
# through HAProxy in front of the same sim, and through a bare Pingora proxy
# (`examples/plain_proxy.rs`: Pingora's own cost, without anything cosygate does), in interleaved rounds, closed loop on one connection
# (wrk -c1) and open loop at a fixed rate (oha -q). "Added" = the path's percentile minus the
# direct call's, per round; the medians over rounds are reported.
#
#   benches/miss.sh          (also `scripts/bench.sh miss`)
#
# The sim answers at once (--rtf 0, --first-chunk-ms 0) a ~24 KB WAV, so the proxies' own work
# is what differs. cosygate: `threads: 1`, a `generate_json` pool (the sim's /generate), no cache
# section (every request goes to the backend; what the cache adds to a miss is
# benches/cache_miss.sh's subject). HAProxy 2.6: `nbthread 1`, `http-reuse always`. Both pinned to
# the last core; wrk/oha and the sim share core 0 (the sim's work is the same on every path).
#
# Knobs: BENCH_ROUNDS (3), BENCH_DURATION (seconds per closed-loop run, 5), BENCH_OPEN_DURATION
# (seconds per open-loop run, 10), BENCH_RATE (open-loop requests/s, 400: at 1000 the sim and
# the client sharing core 0 queue by themselves, direct p50 4.5 ms instead of 1.7 ms), BENCH_OPEN_CONNECTIONS
# (oha -c, 32), BENCH_TEXT_CHARS (8: ~24 KB of WAV), BENCH_OPEN (1; 0: skip the open loop),
# BENCH_RAW (file for raw lines "mode path round p50_ms p99_ms rps"), BENCH_NO_BUILD,
# BENCH_PIN, BENCH_KEEP_TMP.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5}
OPEN_DURATION=${BENCH_OPEN_DURATION:-10}
RATE=${BENCH_RATE:-400}
OPEN_CONNS=${BENCH_OPEN_CONNECTIONS:-32}
CHARS=${BENCH_TEXT_CHARS:-8}
OPEN=${BENCH_OPEN:-1}
RAW=${BENCH_RAW:-}

ensure_packages haproxy=haproxy wrk=wrk curl=curl python3=python3
if ((OPEN == 1)) && ! command -v oha >/dev/null 2>&1; then
    [[ -x $HOME/.cargo/bin/oha ]] || { say "cargo install oha --locked"; cargo install oha --locked --quiet; }
    PATH=$HOME/.cargo/bin:$PATH
fi
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
build_release
need_exec "$GW" "$SIM" "$PLAIN_PROXY"
make_tmp cosygate-miss
pin_cores

SIM_PORT=$(free_port)
GW_PORT=$(free_port)
HA_PORT=$(free_port)
PLAIN_PORT=$(free_port)
SERVER_CPU_SAVED=$SERVER_CPU
SERVER_CPU=$LOAD_CPU # the sim shares core 0 with the load generator
spawn "$TMP/sim.log" "$SIM" --listen "127.0.0.1:$SIM_PORT" --speakers 中文女 --rtf 0 --first-chunk-ms 0 --json-health
SIM_PID=${PIDS[-1]}
SERVER_CPU=$SERVER_CPU_SAVED
wait_http "http://127.0.0.1:$SIM_PORT/health" cosyvoice-sim "$SIM_PID" "$TMP/sim.log"

{
    gw_yaml_head gw "$GW_PORT" 1
    cat <<EOF
  limits: { max_connections_per_ip: 100000 }
  pools:
    sim:
      protocol: generate_json
      speakers: [中文女]
      timeout: 10s
      max_concurrency: 256
      backends:
        - addr: 127.0.0.1:$SIM_PORT
EOF
} >"$TMP/gw.yaml"
RUST_LOG=${RUST_LOG:-warn} gw_start gw
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend tts
    bind 127.0.0.1:$HA_PORT
    default_backend sim
backend sim
    server sim 127.0.0.1:$SIM_PORT
EOF
"$HAPROXY" -c -q -f "$TMP/haproxy.cfg" || die "haproxy refused its config"
spawn "$TMP/haproxy.log" "$HAPROXY" -db -f "$TMP/haproxy.cfg"
HA_PID=${PIDS[-1]}
spawn "$TMP/plain.log" "$PLAIN_PROXY" "127.0.0.1:$PLAIN_PORT" "127.0.0.1:$SIM_PORT"
PLAIN_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$GW_PORT/health" cosygate "$GW_PID" "$TMP/gw.log"
wait_http "http://127.0.0.1:$PLAIN_PORT/health" pingora "$PLAIN_PID" "$TMP/plain.log"
wait_http "http://127.0.0.1:$HA_PORT/health" haproxy "$HA_PID" "$TMP/haproxy.log"

TEXT=$(python3 -c 'import sys; n = int(sys.argv[1]); print(("Hello there, the miss path. " * n)[:n].strip() or "Hi")' "$CHARS")
printf '{"mode":"sft","spk_id":"中文女","text":"%s"}' "$TEXT" >"$TMP/store.json"
printf '{"mode":"sft","spk_id":"中文女","text":"%s","stream":true}' "$TEXT" >"$TMP/stream.json"
for b in store stream; do
    printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nlocal f = io.open("%s", "rb")\nwrk.body = f:read("*all")\nf:close()\n' "$TMP/$b.json" >"$TMP/$b.lua"
done

# path NAME: P_URL and P_BODY (the body file) of one path
path() {
    case $1 in
        direct) P_URL="http://127.0.0.1:$SIM_PORT/generate" P_BODY=store ;;
        cosygate) P_URL="http://127.0.0.1:$GW_PORT/generate" P_BODY=store ;;
        cosygate-stream) P_URL="http://127.0.0.1:$GW_PORT/generate" P_BODY=stream ;;
        haproxy) P_URL="http://127.0.0.1:$HA_PORT/generate" P_BODY=store ;;
        pingora) P_URL="http://127.0.0.1:$PLAIN_PORT/generate" P_BODY=store ;;
    esac
}
PATHS="direct cosygate cosygate-stream haproxy pingora"
BYTES=""
for p in $PATHS; do
    path "$p"
    n=$(curl -sS --max-time 10 -o "$TMP/$p.out" -w '%{http_code} %{size_download}' -H 'Content-Type: application/json' \
        --data-binary "@$TMP/$P_BODY.json" "$P_URL")
    [[ $n == 200\ * ]] || { cat "$TMP/$p.out" >&2; die "$p answered $n"; }
    BYTES+="$p ${n#200 } B; "
done
say "answers: $BYTES(text: \"$TEXT\")"

# closed P ROUND: wrk -c1 on one path; appends "p50 p99 rps" to results.closed.P
closed() {
    path "$1"
    local f=$TMP/wrk.$1.$2
    on_load_cpu wrk -t1 -c1 -d"${DURATION}s" --latency -s "$TMP/$P_BODY.lua" "$P_URL" >"$f"
    grep -q 'Non-2xx\|Socket errors' "$f" && { cat "$f" >&2; die "$1: errors during the closed-loop run"; }
    echo "$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")") $(to_ms "$(awk '$1 == "99%" {print $2}' "$f")") $(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$f")" >>"$TMP/results.closed.$1"
    [[ -z $RAW ]] || echo "closed $1 $2 $(tail -1 "$TMP/results.closed.$1")" >>"$RAW"
}
# open P ROUND: oha at RATE requests/s on one path; appends "p50 p99 rps" to results.open.P
open_loop() {
    path "$1"
    local f=$TMP/oha.$1.$2.json
    on_load_cpu oha --no-tui --output-format json -z "${OPEN_DURATION}s" -q "$RATE" -c "$OPEN_CONNS" --latency-correction \
        -m POST -H 'Content-Type: application/json' -D "$TMP/$P_BODY.json" "$P_URL" >"$f" 2>"$f.err" ||
        { cat "$f.err" >&2; die "$1: oha failed"; }
    python3 - "$f" "$1" >>"$TMP/results.open.$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
codes = r.get("statusCodeDistribution", {})
bad = {k: v for k, v in codes.items() if k != "200"}
errors = {k: v for k, v in r.get("errorDistribution", {}).items() if "deadline" not in k}  # in flight at the end
if bad or errors:
    sys.exit(f"{sys.argv[2]}: not all 200: {codes} {errors}")
p = r["latencyPercentiles"]
print("%.3f %.3f %.0f" % (p["p50"] * 1000, p["p99"] * 1000, r["summary"]["requestsPerSec"]))
PY
    [[ -z $RAW ]] || echo "open $1 $2 $(tail -1 "$TMP/results.open.$1")" >>"$RAW"
}

say "closed loop: $ROUNDS rounds of wrk -t1 -c1 -d${DURATION}s per path${SERVER_CPU:+; proxies on CPU $SERVER_CPU, wrk and the sim on CPU $LOAD_CPU}"
for round in $(seq "$ROUNDS"); do
    for p in $PATHS; do closed "$p" "$round"; done
    say "round $round, p50 ms: $(for p in $PATHS; do printf '%s %s ' "$p" "$(tail -1 "$TMP/results.closed.$p" | cut -d' ' -f1)"; done)"
done
if ((OPEN == 1)); then
    say "open loop: $ROUNDS rounds of oha -q $RATE -c $OPEN_CONNS -z ${OPEN_DURATION}s per path"
    for round in $(seq "$ROUNDS"); do
        for p in $PATHS; do open_loop "$p" "$round"; done
        say "round $round, p50 ms: $(for p in $PATHS; do printf '%s %s ' "$p" "$(tail -1 "$TMP/results.open.$p" | cut -d' ' -f1)"; done)"
    done
fi

# added MODE P COL: median over rounds of (P's value - direct's value) in the same round
added() {
    paste -d' ' "$TMP/results.$1.$2" "$TMP/results.$1.direct" | awk -v c="$3" '{print ($c - $(c + 3)) * 1000}' >"$TMP/diff"
    median_col "$TMP/diff" 1
}
echo
echo "miss path: ${BYTES%; }; medians of $ROUNDS interleaved rounds; $(machine)"
echo
echo "| mode | path | p50 ms | p99 ms | requests/s | added p50 µs | added p99 µs |"
echo "|---|---|---:|---:|---:|---:|---:|"
for mode in closed open; do
    [[ $mode == open && $OPEN != 1 ]] && continue
    for p in $PATHS; do
        f=$TMP/results.$mode.$p
        a50="" a99=""
        [[ $p == direct ]] || { a50=$(added "$mode" "$p" 1); a99=$(added "$mode" "$p" 2); }
        printf '| %s | %s | %.3f | %.3f | %.0f | %s | %s |\n' \
            "$([[ $mode == closed ]] && echo "one connection" || echo "open loop $RATE/s")" "$p" \
            "$(median_col "$f" 1)" "$(median_col "$f" 2)" "$(median_col "$f" 3)" "${a50:-–}" "${a99:-–}"
    done
done
echo
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
