#!/usr/bin/env bash
# Do large inputs stall the worker threads? (issue 9): the latency of GET /health on the
# gateway's 2 worker threads, alone and while BENCH_LOADERS clients POST ~10 MB /generate
# bodies back to back (JSON parse, base64 decode and WAV check of each; every one ends in 422
# prompt_too_long, so no backend time is involved), for this build and, when BENCH_BEFORE
# names another cosygate binary (e.g. one built from the commit before the change), for that
# one too, in alternating rounds of the same run.
#
#   benches/large_inputs.sh
#   BENCH_BEFORE=/tmp/cosygate-before benches/large_inputs.sh
#
# The probe sends one GET /health every 20 ms on its own keep-alive connection
# (benches/large_inputs_probe.py) and reports p50/p90/p99/max; the loaders' count of validated
# bodies tells the validation throughput. Latency figures move with other load on the machine:
# run it on a quiet machine, and read the medians over rounds. About 2 minutes after the build.
#
# Knobs (environment): BENCH_ROUNDS (3), BENCH_SECONDS (per measurement, 10), BENCH_LOADERS (4),
# BENCH_NO_BUILD (1: use target/release as it is), BENCH_BEFORE (see above), BENCH_KEEP_TMP.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_EACH=${BENCH_SECONDS:-10}
LOADERS=${BENCH_LOADERS:-4}

ensure_packages curl=curl python3=python3

build_release
BINS=("$GW")
NAMES=(this)
if [[ -n ${BENCH_BEFORE:-} ]]; then
    BINS+=("$BENCH_BEFORE")
    NAMES+=(before)
fi
need_exec "${BINS[@]}" "$SIM"

make_tmp cosygate-bench

SIM_PORT=$(free_port)
spawn "$TMP/sim.log" "$SIM" --listen "127.0.0.1:$SIM_PORT" --rtf 0.01
wait_http "http://127.0.0.1:$SIM_PORT/docs" cosyvoice-sim "${PIDS[-1]}" "$TMP/sim.log"

# A ~10 MB body: 39 s of 48 kHz stereo prompt audio, over the 30 s limit, so the gateway reads,
# parses, decodes and checks all of it and then answers 422 prompt_too_long.
python3 - "$TMP/body.json" <<'EOF'
import base64, io, json, os, sys, wave
rate, seconds = 48000, 39
buf = io.BytesIO()
with wave.open(buf, "wb") as w:
    w.setnchannels(2); w.setsampwidth(2); w.setframerate(rate); w.writeframes(os.urandom(rate * seconds * 4))
body = {"text": "Hello there.", "mode": "zero_shot", "prompt_text": "A long prompt.",
        "prompt_audio": base64.b64encode(buf.getvalue()).decode()}
open(sys.argv[1], "w").write(json.dumps(body))
EOF
say "body: $(stat -c %s "$TMP/body.json") bytes"

PORTS=()
for i in "${!BINS[@]}"; do
    port=$(free_port)
    {
        gw_yaml_head "gw$i" "$port"
        cat <<EOF
EOF
        gw_fastapi_pool
    } >"$TMP/gw$i.yaml"
    RUST_LOG=warn spawn "$TMP/gw$i.log" "${BINS[$i]}" -c "$TMP/gw$i.yaml"
    wait_http "http://127.0.0.1:$port/health" "gateway ${NAMES[$i]}" "${PIDS[-1]}" "$TMP/gw$i.log"
    PORTS+=("$port")
done

declare -A RESULTS
for round in $(seq "$ROUNDS"); do
    for i in "${!BINS[@]}"; do
        for load in 0 "$LOADERS"; do
            line=$(python3 "$ROOT/benches/large_inputs_probe.py" --target "127.0.0.1:${PORTS[$i]}" \
                --body "$TMP/body.json" --loaders "$load" --seconds "$SECONDS_EACH")
            say "round $round ${NAMES[$i]} loaders=$load: p50 p90 p99 max probes bodies = $line"
            RESULTS[${NAMES[$i]}/$load]+="$line"$'\n'
        done
    done
done

# median COLUMN LINES: the median of one column over the rounds.
median() { awk -v c="$1" 'NF {print $c}' <<<"$2" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "GET /health latency on 2 worker threads, alone and with $LOADERS clients sending ~10 MB bodies (medians of $ROUNDS rounds of ${SECONDS_EACH} s; $(nproc) cores)"
echo
echo "| gateway | large bodies in flight | p50 ms | p90 ms | p99 ms | max ms | bodies validated per s |"
echo "|---|---|---|---|---|---|---|"
for name in "${NAMES[@]}"; do
    for load in 0 "$LOADERS"; do
        lines=${RESULTS[$name/$load]}
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$load" "$(median 1 "$lines")" "$(median 2 "$lines")" \
            "$(median 3 "$lines")" "$(median 4 "$lines")" \
            "$(awk -v s="$SECONDS_EACH" -v b="$(median 6 "$lines")" 'BEGIN { printf "%.1f", b / s }')"
    done
done
