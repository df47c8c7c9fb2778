#!/usr/bin/env bash
# What a zero-shot prompt costs on a cache hit (issues 14 and 15): the same cached sentence asked
# for with its 3 s prompt inline (~190 KB of base64 in the JSON body) and with the prompt
# registered once as a voice (`voice_id`, a ~110-byte body), measured with wrk against one
# gateway in the same run: requests/s and the gateway's CPU time per request (from /proc).
#
#   benches/prompt_cost.sh          (builds the release binaries; about 30 s after the build)
#
# Knobs: BENCH_DURATION (seconds per run, 5), BENCH_ROUNDS (2), BENCH_NO_BUILD=1, BENCH_KEEP_TMP=1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-2}
ensure_packages curl=curl python3=python3 wrk=wrk
build_release
need_exec "$GW" "$SIM"
make_tmp cosygate-prompt-cost
SIM_PORT=$(free_port)
GW_PORT=$(free_port)
spawn "$TMP/sim.log" "$SIM" --listen "127.0.0.1:$SIM_PORT" --speakers "中文女" --rtf 0.01 --first-chunk-ms 5
SIM_PID=${PIDS[-1]}
{
    gw_yaml_head gw "$GW_PORT" 1
    cat <<EOF
  cache: { ttl: 1h, memory: { max: 64MiB } }
  voices: { path: $TMP/voices, allow_anonymous: true }
EOF
    gw_fastapi_pool
} >"$TMP/gw.yaml"
mkdir -p "$TMP/voices"
spawn "$TMP/gw.log" env RUST_LOG=warn "$GW" -c "$TMP/gw.yaml"
GW_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$SIM_PORT/docs" cosyvoice-sim "$SIM_PID" "$TMP/sim.log"
wait_http "http://127.0.0.1:$GW_PORT/health" cosygate "$GW_PID" "$TMP/gw.log"

# The prompt: 3 s of a 24 kHz mono tone; the inline body, the registration, the wrk scripts.
python3 - "$TMP" <<'EOF'
import base64, json, math, struct, sys
tmp = sys.argv[1]
rate, n = 24000, 72000
pcm = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * i / rate))) for i in range(n))
wav = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(pcm)) + pcm
audio = base64.b64encode(wav).decode()
text, transcript = "Hello there, a zero shot cached sentence.", "This is what the prompt says."
open(f"{tmp}/inline.json", "w").write(json.dumps({"text": text, "prompt_text": transcript, "prompt_audio": audio}))
open(f"{tmp}/register.json", "w").write(json.dumps({"name": "bench", "prompt_audio": audio, "prompt_text": transcript}))
for name in ("inline", "voice"):
    open(f"{tmp}/{name}.lua", "w").write(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{tmp}/{name}.json", "rb")\nwrk.body = f:read("*all")\nf:close()\n')
EOF
VOICE_ID=$(curl -fsS -H 'Content-Type: application/json' --data-binary @"$TMP/register.json" \
    "http://127.0.0.1:$GW_PORT/v1/voices" | python3 -c 'import json, sys; print(json.load(sys.stdin)["voice_id"])')
printf '{"text":"Hello there, a zero shot cached sentence.","voice_id":"%s"}' "$VOICE_ID" >"$TMP/voice.json"
for name in inline voice; do
    # Warm: the first is a MISS (both share one cache key), the next must be a HIT.
    curl -fsS -o /dev/null -H 'Content-Type: application/json' --data-binary @"$TMP/$name.json" "http://127.0.0.1:$GW_PORT/generate"
    curl -fsS -o /dev/null -D "$TMP/$name.h" -H 'Content-Type: application/json' --data-binary @"$TMP/$name.json" "http://127.0.0.1:$GW_PORT/generate"
    grep -qi '^x-cache: HIT' "$TMP/$name.h" || die "$name: the warm-up did not make a cache hit"
done
TICK=$(getconf CLK_TCK)
echo "| body | round | requests/s | gateway CPU per request |"
echo "|---|---|---:|---:|"
for round in $(seq "$ROUNDS"); do
    for name in inline voice; do
        before=$(cpu_ticks "$GW_PID")
        wrk -t1 -c8 -d"${DURATION}s" -s "$TMP/$name.lua" "http://127.0.0.1:$GW_PORT/generate" >"$TMP/wrk.$name"
        after=$(cpu_ticks "$GW_PID")
        requests=$(grep -oP '\d+(?= requests in)' "$TMP/wrk.$name")
        rps=$(grep -oP '(?<=Requests/sec:)\s*[\d.]+' "$TMP/wrk.$name" | tr -d ' ')
        us=$(( (after - before) * 1000000 / TICK / requests ))
        label=$([[ $name == inline ]] && echo "prompt inline (~190 KB)" || echo "voice_id (~110 B)")
        echo "| $label | $round | $rps | $us µs |"
    done
done
echo
echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo). Command: benches/prompt_cost.sh"
