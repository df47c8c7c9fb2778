#!/usr/bin/env bash
# Goodput under overload (issue 5): completed requests per second when the offered load is 1x, 2x
# and 4x the pool's theoretical capacity (backends x GPU slots / service time), for cosygate and,
# in the same run, for HAProxy with per-server `maxconn` + `maxqueue` + `timeout queue` in front
# of the same simulated backends. Writes benches/RESULTS-goodput.md.
#
#   benches/goodput.sh
#
# What it does: installs haproxy (and curl, python3) with apt-get when missing; builds the
# release binaries; starts two cosyvoice-sim backends (8 slots, rtf 0.5, slow-down over
# capacity); measures the service time of one request alone (median of 3, direct to a backend)
# and derives the capacity; starts cosygate (max_concurrency 8, queue 64 / 10 s, no cache) and
# HAProxy (leastconn, maxconn 8, maxqueue 64, timeout queue 10s) in front of both; then for each
# load and each peer, one at a time, runs the open-loop client benches/goodput/loadgen.py (every
# request on time on its own connection, whatever is still open) for a warm-up and a measured
# window, waits until the backends are idle, and records goodput, refusals, latency of the
# successes and the backends' peak concurrency. Everything listens on 127.0.0.1 and is stopped
# on exit. About 4-5 minutes after the build.
#
# Knobs (environment): BENCH_DURATION (measured seconds per run, 20), BENCH_WARMUP (seconds sent
# before the window, 12: at m x capacity a FIFO queue with a 10 s timeout still serves every
# request sent in the first 10/(m-1) s, so HAProxy reaches its steady state after 10 s at 2x),
# BENCH_MULTS ("1 2 4"), BENCH_TEXT_CHARS (20: 0.06 s of audio per character), BENCH_RTF (0.5),
# BENCH_SLOTS (8), BENCH_PEERS ("cosygate haproxy"; "haproxy" alone runs without the gateway),
# BENCH_NO_BUILD (1: use target/release as it is), BENCH_RESULTS (the report file,
# benches/RESULTS-goodput.md; empty: none), BENCH_RAW_DIR (a directory to copy each run's JSON
# and meta.json to, for scripts/bench.sh), BENCH_KEEP_TMP (1: keep logs and configs).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION=${BENCH_DURATION:-20}
WARMUP=${BENCH_WARMUP:-12}
MULTS=${BENCH_MULTS:-"1 2 4"}
CHARS=${BENCH_TEXT_CHARS:-20}
RTF=${BENCH_RTF:-0.5}
SLOTS=${BENCH_SLOTS:-8}
FIRST_CHUNK_MS=100
PEERS=${BENCH_PEERS:-"cosygate haproxy"}
RESULTS=${BENCH_RESULTS-$ROOT/benches/RESULTS-goodput.md}
COMMAND="benches/goodput.sh"
for v in BENCH_DURATION BENCH_WARMUP BENCH_MULTS BENCH_TEXT_CHARS BENCH_RTF BENCH_SLOTS BENCH_PEERS; do
    [[ -n ${!v:-} ]] && COMMAND="$v=\"${!v}\" $COMMAND"
done
LOADGEN=$ROOT/benches/goodput/loadgen.py
REPORT=$ROOT/benches/goodput/report.py
START=$(date +%s)

# --- tools -----------------------------------------------------------------------------------
ensure_packages haproxy=haproxy curl=curl python3=python3
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
PY=python3

# --- build -----------------------------------------------------------------------------------
build_release
BUILD_S=0
[[ ${BENCH_NO_BUILD:-0} == 1 ]] || BUILD_S=$(($(date +%s) - START))
BENCH_START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
need_exec "$SIM"
[[ $PEERS != *cosygate* || -x $GW ]] || die "no $GW"

make_tmp cosygate-goodput
WAIT_HTTP_S=15 # for wait_http (lib.sh)

json() { # json FIELD < JSON: one top-level field
    $PY -c 'import json, sys; v = json.load(sys.stdin)[sys.argv[1]]; print(json.dumps(v) if isinstance(v, (dict, list)) else v)' "$1"
}

# --- the simulated backends ------------------------------------------------------------------
SIM_PORTS=()
for name in A B; do
    port=$(free_port)
    SIM_PORTS+=("$port")
    spawn "$TMP/sim-$name.log" "$SIM" --listen "127.0.0.1:$port" --speakers 中文女 --slots "$SLOTS" \
        --rtf "$RTF" --first-chunk-ms "$FIRST_CHUNK_MS" --overload slow
    wait_http "http://127.0.0.1:$port/docs" "cosyvoice-sim $name" "${PIDS[-1]}" "$TMP/sim-$name.log"
done

sims_idle() { # until no backend has a synthesis in flight (60 s)
    local p busy
    for _ in $(seq 600); do
        busy=0
        for p in "${SIM_PORTS[@]}"; do
            [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$p/__sim/stats" | json inflight) == 0 ]] || busy=1
        done
        ((busy == 0)) && return 0
        sleep 0.1
    done
    die "the backends did not drain within 60 s"
}
sims_reset() {
    local p
    for p in "${SIM_PORTS[@]}"; do curl -fsS --max-time 2 -X POST -o /dev/null "http://127.0.0.1:$p/__sim/reset"; done
}
sims_stats() { # a JSON list of {requests, max_inflight, inflight}, A then B
    local p sep="" out="["
    for p in "${SIM_PORTS[@]}"; do
        out+="$sep$(curl -fsS --max-time 2 "http://127.0.0.1:$p/__sim/stats")"
        sep=","
    done
    echo "$out]"
}

# --- requests and the service time -----------------------------------------------------------
TEXT=$($PY -c 'import sys; n = int(sys.argv[1]); t = ("Hello from cosygate. " * (n // 20 + 1))[:n]; print(t[:-1] + "." if t.endswith(" ") else t)' "$CHARS")
SPK="中文女"
FORM_CT=$($PY "$LOADGEN" body "$TMP/generate.json" "$TMP/sft.form" "$TEXT" "$SPK")
JSON_CT="application/json"
say "text: \"$TEXT\" (${#TEXT} characters), speaker $SPK"

CALIB_N=3
secs=()
for _ in $(seq "$CALIB_N"); do
    r=$($PY "$LOADGEN" once 127.0.0.1 "${SIM_PORTS[0]}" /inference_sft "$TMP/sft.form" "$FORM_CT")
    [[ $(json status <<<"$r") == 200 ]] || die "direct request answered: $r"
    secs+=("$(json seconds <<<"$r")")
    PCM_BYTES=$(json bytes <<<"$r")
done
SERVICE=$(printf '%s\n' "${secs[@]}" | sort -g | sed -n "$(((CALIB_N + 1) / 2))p" | awk '{ printf "%.4f", $1 }')
CAPACITY=$(awk -v s="$SERVICE" -v n="$SLOTS" 'BEGIN { printf "%.3f", 2 * n / s }')
AUDIO_S=$(awk -v b="$PCM_BYTES" 'BEGIN { printf "%.3f", b / 48000 }')
say "service time of one request alone: ${SERVICE} s (runs: ${secs[*]}), $PCM_BYTES bytes of PCM (${AUDIO_S} s of audio)"
say "theoretical capacity: 2 backends x $SLOTS slots / $SERVICE s = $CAPACITY requests/s"

# --- cosygate --------------------------------------------------------------------------------
if [[ $PEERS == *cosygate* ]]; then
    GW_PORT=$(free_port)
    cat >"$TMP/cosygate.yaml" <<EOF
threads: 2
pid_file: $TMP/cosygate.pid
upgrade_sock: $TMP/cosygate.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
cosygate:
  listen:
    - addr: 127.0.0.1:$GW_PORT
  limits:
    max_connections_per_ip: 100000
  pools:
    cosyvoice:
      protocol: cosyvoice_fastapi
      speakers: [中文女]   # the sims' preset voice (CosyVoice3 ships none)
      timeout: 60s
      max_concurrency: $SLOTS
      queue: { max_len: 64, max_wait: 10s, async_after: 60s }
      health: { interval: 1s }
      backends:
        - addr: 127.0.0.1:${SIM_PORTS[0]}
        - addr: 127.0.0.1:${SIM_PORTS[1]}
EOF
    gw_check cosygate
    RUST_LOG=${RUST_LOG:-info} spawn "$TMP/cosygate.log" "$GW" -c "$TMP/cosygate.yaml"
    GW_PID=${PIDS[-1]}
    wait_http "http://127.0.0.1:$GW_PORT/health" cosygate "$GW_PID" "$TMP/cosygate.log"
    for _ in $(seq 100); do
        [[ $(curl -sS --max-time 1 "http://127.0.0.1:$GW_PORT/health" | json backends_healthy 2>/dev/null) == 2 ]] && break
        sleep 0.1
    done
    r=$($PY "$LOADGEN" once 127.0.0.1 "$GW_PORT" /generate "$TMP/generate.json" "$JSON_CT")
    [[ $(json status <<<"$r") == 200 ]] || die "cosygate answered: $r"
    GW_BYTES=$(json bytes <<<"$r")
    ((GW_BYTES == PCM_BYTES + 44)) || die "cosygate's WAV has $GW_BYTES bytes, expected $PCM_BYTES + 44"
    say "cosygate on 127.0.0.1:$GW_PORT: one request alone $(json seconds <<<"$r") s, $GW_BYTES-byte WAV"
fi

# --- HAProxy ---------------------------------------------------------------------------------
if [[ $PEERS == *haproxy* ]]; then
    HA_PORT=$(free_port)
    HA_SOCK=$TMP/haproxy.sock
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn 8000
    stats socket $HA_SOCK mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout queue 10s

frontend tts
    bind 127.0.0.1:$HA_PORT
    maxconn 8000
    default_backend cosyvoice

backend cosyvoice
    balance leastconn
    option httpchk GET /docs
    server simA 127.0.0.1:${SIM_PORTS[0]} maxconn $SLOTS maxqueue 64 check inter 1s
    server simB 127.0.0.1:${SIM_PORTS[1]} maxconn $SLOTS maxqueue 64 check inter 1s
EOF
    "$HAPROXY" -c -q -f "$TMP/haproxy.cfg" || die "haproxy refused its config"
    spawn "$TMP/haproxy.log" "$HAPROXY" -db -f "$TMP/haproxy.cfg"
    HA_PID=${PIDS[-1]}
    ha() { $PY "$LOADGEN" haproxy "$HA_SOCK" "$1"; }
    for _ in $(seq 100); do
        if [[ -S $HA_SOCK ]] && [[ $(ha "show stat" | awk -F, '$1 == "cosyvoice" && $2 ~ /^sim/ && $18 == "UP"' | wc -l) == 2 ]]; then break; fi
        kill -0 "$HA_PID" 2>/dev/null || { cat "$TMP/haproxy.log" >&2; die "haproxy exited"; }
        sleep 0.1
    done
    r=$($PY "$LOADGEN" once 127.0.0.1 "$HA_PORT" /inference_sft "$TMP/sft.form" "$FORM_CT")
    [[ $(json status <<<"$r") == 200 && $(json bytes <<<"$r") == "$PCM_BYTES" ]] || die "haproxy answered: $r"
    say "haproxy on 127.0.0.1:$HA_PORT: one request alone $(json seconds <<<"$r") s, $PCM_BYTES bytes of PCM"
    ha_stats() { # {"backend_qmax": N, "server_qmax": [..], "server_smax": [..]} since the last clear
        ha "show stat" | $PY -c '
import csv, json, sys
rows = list(csv.reader(line for line in sys.stdin if line.strip()))
head = [h.lstrip("# ") for h in rows[0]]
rows = [dict(zip(head, r)) for r in rows[1:]]
be = [r for r in rows if r["pxname"] == "cosyvoice" and r["svname"] == "BACKEND"][0]
sv = [r for r in rows if r["pxname"] == "cosyvoice" and r["svname"].startswith("sim")]
print(json.dumps({"backend_qmax": int(be["qmax"] or 0),
                  "server_qmax": [int(r["qmax"] or 0) for r in sv],
                  "server_smax": [int(r["smax"] or 0) for r in sv]}))'
    }
fi

# --- the runs --------------------------------------------------------------------------------
mkdir -p "$TMP/runs"
sims_idle
for mult in $MULTS; do
    rate=$(awk -v c="$CAPACITY" -v m="$mult" 'BEGIN { printf "%.3f", c * m }')
    for peer in $PEERS; do
        sims_idle
        sims_reset
        case $peer in
            cosygate) target=(127.0.0.1 "$GW_PORT" /generate "$TMP/generate.json" "$JSON_CT" --expect-bytes "$GW_BYTES") ;;
            haproxy)
                ha "clear counters all" >/dev/null
                target=(127.0.0.1 "$HA_PORT" /inference_sft "$TMP/sft.form" "$FORM_CT" --expect-bytes "$PCM_BYTES")
                ;;
            *) die "unknown peer $peer" ;;
        esac
        say "$peer at ${mult}x: $rate requests/s for ${WARMUP}+${DURATION} s"
        $PY "$LOADGEN" run "${target[@]}" --rate "$rate" --warmup "$WARMUP" --duration "$DURATION" >"$TMP/run.json"
        sims_idle
        stats=$(sims_stats)
        extra="null"
        [[ $peer == haproxy ]] && extra=$(ha_stats)
        $PY - "$TMP/run.json" "$peer" "$mult" "$stats" "$extra" >"$TMP/runs/$mult-$peer.json" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))
run.update({"peer": sys.argv[2], "mult": int(sys.argv[3]), "sims": json.loads(sys.argv[4]),
            "haproxy": json.loads(sys.argv[5])})
print(json.dumps(run))
EOF
        $PY -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("   offered %.1f rps, goodput %.1f rps, outcomes %s, p50/p99 of 200s %s/%s s, sims max_inflight %s%s" % (
    r["offered_rps"], r["goodput_rps"], r["outcomes"],
    "-" if r["ok_p50_s"] is None else "%.2f" % r["ok_p50_s"],
    "-" if r["ok_p99_s"] is None else "%.2f" % r["ok_p99_s"],
    [s["max_inflight"] for s in r["sims"]],
    ", haproxy %s" % r["haproxy"] if r["haproxy"] else ""))' "$TMP/runs/$mult-$peer.json" >&2
    done
done

# --- report ----------------------------------------------------------------------------------
$PY - "$TMP/meta.json" <<EOF
import json, sys
json.dump({
    "command": """$COMMAND""",
    "machine": """$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))""",
    "date": """$(date -u '+%Y-%m-%d %H:%M UTC')""",
    "git": """$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/')""",
    "haproxy_version": """$("$HAPROXY" -v | head -1 | awk '{print "HAProxy " $3}')""",
    "slots": $SLOTS, "rtf": $RTF, "first_chunk_ms": $FIRST_CHUNK_MS, "backends": 2,
    "text_chars": $CHARS, "pcm_bytes": $PCM_BYTES, "audio_s": $AUDIO_S,
    "service_s": $SERVICE, "calib_n": $CALIB_N, "capacity_rps": $CAPACITY,
    "mults": [$(echo "$MULTS" | tr ' ' ',')], "warmup_s": $WARMUP, "duration_s": $DURATION,
    "load_before": "$LOAD_BEFORE", "load_after": "$(cut -d' ' -f1-3 /proc/loadavg)",
    "peers": "$PEERS", "build_s": $BUILD_S, "bench_s": $(($(date +%s) - BENCH_START)),
}, open(sys.argv[1], "w"))
EOF
if [[ -n ${BENCH_RAW_DIR:-} ]]; then
    mkdir -p "$BENCH_RAW_DIR"
    cp "$TMP"/runs/*.json "$TMP/meta.json" "$BENCH_RAW_DIR/"
fi
echo
echo "goodput: 2 backends x $SLOTS slots, service time $SERVICE s alone, capacity $CAPACITY requests/s; ${WARMUP} s warm-up + ${DURATION} s measured per run"
echo
if [[ -n $RESULTS ]]; then
    $PY "$REPORT" "$TMP/runs" "$TMP/meta.json" "$RESULTS"
    echo
    say "wrote ${RESULTS#"$ROOT"/}"
else
    $PY "$REPORT" "$TMP/runs" "$TMP/meta.json" /dev/null
fi
say "done in $(($(date +%s) - START)) s (build $BUILD_S s)"
