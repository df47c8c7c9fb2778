#!/usr/bin/env bash
# A runaway backend, measured (issue 9): the gateway's peak RSS (VmHWM in /proc/PID/status)
# while its backend streams PCM forever, against the same gateway serving normal requests, in
# the same run. Without a cap the gateway buffered the endless answer (7 GB seen); with
# `max_audio_seconds` it reads at most what the request can produce, then drops the connection.
#
#   benches/runaway_backend.sh
#
# What it does: builds the release binaries, starts one cosyvoice-sim and one gateway
# (`max_audio_seconds` = BENCH_MAX_AUDIO, no cache, no retries, breaker off so every attack
# request reaches the runaway backend), then
#   1. normal: BENCH_REQUESTS sft requests of BENCH_TEXT_CHARS characters (the sim makes 0.06 s
#      of audio per character), BENCH_CONCURRENCY at a time; reads VmHWM and VmRSS;
#   2. attack: arms the sim's `endless` fault for BENCH_REQUESTS requests and sends as many,
#      BENCH_CONCURRENCY at a time; every answer must be 502 backend_failed; reads VmHWM and
#      VmRSS again, and how many bytes the sim pushed.
# Prints one table. Everything listens on loopback; everything started here is stopped on exit.
#
# Knobs (environment): BENCH_REQUESTS (40), BENCH_CONCURRENCY (4), BENCH_MAX_AUDIO (seconds,
# default 120: the pool default), BENCH_TEXT_CHARS (50, about 3 s of audio; 190 with
# BENCH_MAX_AUDIO=12 makes normal answers as long as the cap allows), BENCH_NO_BUILD (1: use
# target/release as it is), BENCH_KEEP_TMP (1: keep configs and logs).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REQUESTS=${BENCH_REQUESTS:-40}
CONC=${BENCH_CONCURRENCY:-4}
MAX_AUDIO=${BENCH_MAX_AUDIO:-120}
CHARS=${BENCH_TEXT_CHARS:-50}

ensure_packages curl=curl
build_release
need_exec "$GW" "$SIM"
make_tmp cosygate-runaway

# --- servers ---------------------------------------------------------------------------------
SIM_PORT=$(free_port)
"$SIM" --listen "127.0.0.1:$SIM_PORT" --speakers 中文女 --rtf 0.01 --first-chunk-ms 5 \
    >"$TMP/sim.out" 2>"$TMP/sim.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$SIM_PORT/docs" cosyvoice-sim "${PIDS[-1]}" "$TMP/sim.log"

GW_PORT=$(free_port)
{
    gw_yaml_head gw "$GW_PORT"
    cat <<EOF
  pools:
    cosyvoice:
      protocol: cosyvoice_fastapi
      speakers: [中文女]
      max_audio_seconds: $MAX_AUDIO
      max_concurrency: 16
      retry: { attempts: 0 }
      circuit_breaker: { failures: 0 }
      backends:
        - addr: 127.0.0.1:$SIM_PORT
EOF
} >"$TMP/gw.yaml"
RUST_LOG=warn "$GW" -c "$TMP/gw.yaml" >"$TMP/gw.out" 2>"$TMP/gw.log" &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/health" cosygate "$GW_PID" "$TMP/gw.log"

# --- load ------------------------------------------------------------------------------------
# Sends $REQUESTS requests, $CONC at a time; writes "status seconds" lines to $1.
TEXT="Request {} $(printf 'reads a sentence aloud. %.0s' $(seq 10))"
TEXT=${TEXT:0:$CHARS}
run() {
    local out=$1
    seq "$REQUESTS" | xargs -P "$CONC" -I{} curl -s -o /dev/null -w '%{http_code} %{time_total}\n' \
        -H 'Content-Type: application/json' \
        --data "{\"text\":\"$TEXT\",\"mode\":\"sft\",\"spk_id\":\"中文女\"}" \
        "http://127.0.0.1:$GW_PORT/generate" >"$out"
}
summary() { # file -> "n_ok n_total median_seconds max_seconds"
    sort -k2 -n "$1" | awk -v want="$2" '{n++; t[n]=$2; if ($1==want) ok++} END {printf "%d/%d %.3f %.3f", ok, n, t[int((n+1)/2)], t[n]}'
}

say "baseline"
BASE_HWM=$(proc_kib VmHWM "$GW_PID")
say "normal: $REQUESTS requests, $CONC at a time"
run "$TMP/normal.txt"
NORMAL_HWM=$(proc_kib VmHWM "$GW_PID")
NORMAL_RSS=$(proc_kib VmRSS "$GW_PID")
read -r NORMAL_OK NORMAL_MED NORMAL_MAX <<<"$(summary "$TMP/normal.txt" 200)"

say "attack: the backend streams forever for $REQUESTS requests"
curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
    --data "{\"kind\":\"endless\",\"count\":$REQUESTS}" "http://127.0.0.1:$SIM_PORT/__sim/fault"
run "$TMP/attack.txt"
ATTACK_HWM=$(proc_kib VmHWM "$GW_PID")
ATTACK_RSS=$(proc_kib VmRSS "$GW_PID")
read -r ATTACK_OK ATTACK_MED ATTACK_MAX <<<"$(summary "$TMP/attack.txt" 502)"
CAP_BYTES=$(awk -v s="$MAX_AUDIO" 'BEGIN {printf "%d", s * 24000 * 2 + 4096}')

printf '\nrunaway backend: max_audio_seconds %s (cap %.2f MB per answer), %s requests, %s at a time, normal text %s chars\n' \
    "$MAX_AUDIO" "$(awk -v b="$CAP_BYTES" 'BEGIN {print b/1e6}')" "$REQUESTS" "$CONC" "$CHARS"
printf '| phase | answers as expected | median s | max s | gateway VmHWM MB | VmRSS after MB |\n'
printf '|---|---|---|---|---|---|\n'
printf '| idle (after start) | - | - | - | %.1f | - |\n' "$(awk -v k="$BASE_HWM" 'BEGIN {print k/1024}')"
printf '| normal (200 + WAV) | %s | %s | %s | %.1f | %.1f |\n' "$NORMAL_OK" "$NORMAL_MED" "$NORMAL_MAX" \
    "$(awk -v k="$NORMAL_HWM" 'BEGIN {print k/1024}')" "$(awk -v k="$NORMAL_RSS" 'BEGIN {print k/1024}')"
printf '| endless backend (502) | %s | %s | %s | %.1f | %.1f |\n' "$ATTACK_OK" "$ATTACK_MED" "$ATTACK_MAX" \
    "$(awk -v k="$ATTACK_HWM" 'BEGIN {print k/1024}')" "$(awk -v k="$ATTACK_RSS" 'BEGIN {print k/1024}')"
printf '\npeak RSS added by the attack over normal: %.1f MB (bound: %s concurrent answers x %.1f MB cap)\n' \
    "$(awk -v a="$ATTACK_HWM" -v n="$NORMAL_HWM" 'BEGIN {print (a-n)/1024}')" "$CONC" \
    "$(awk -v b="$CAP_BYTES" 'BEGIN {print b/1e6}')"
[[ ${ATTACK_OK%%/*} == "$REQUESTS" ]] || die "not every attack request got 502 (see $TMP)"
