#!/usr/bin/env bash
# Time to first audio of a streamed synthesis (issue 14): straight from a cosyvoice-sim backend
# (CosyVoice's FastAPI route) and through cosygate (`/generate` with "stream": true), each
# request a cache miss with its own text, the two interleaved in the same run.
#
#   benches/stream_ttfb.sh [ROUNDS]     (default 20; builds the release binaries)
#
# The sim answers the first chunk after 200 ms plus the synthesis of the first segment (rtf
# 0.05, about 0.8 s) and the next one 0.8 s later, as CosyVoice's server does per segment.
# Knobs: BENCH_NO_BUILD=1 (use target/release as it is), BENCH_KEEP_TMP=1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=${1:-20}
ensure_packages curl=curl python3=python3
build_release
need_exec "$GW" "$SIM"
make_tmp cosygate-ttfb
SIM_PORT=$(free_port)
GW_PORT=$(free_port)
spawn "$TMP/sim.log" "$SIM" --listen "127.0.0.1:$SIM_PORT" --speakers "中文女" --rtf 0.05 --first-chunk-ms 200
SIM_PID=${PIDS[-1]}
{
    gw_yaml_head gw "$GW_PORT"
    cat <<EOF
  cache: { ttl: 1h, memory: { max: 64MiB } }
EOF
    gw_fastapi_pool "      speakers: [中文女]"
} >"$TMP/gw.yaml"
spawn "$TMP/gw.log" env RUST_LOG=warn "$GW" -c "$TMP/gw.yaml"
GW_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$SIM_PORT/docs" cosyvoice-sim "$SIM_PID" "$TMP/sim.log"
wait_http "http://127.0.0.1:$GW_PORT/health" cosygate "$GW_PID" "$TMP/gw.log"
say "$ROUNDS rounds, interleaved"
python3 "$ROOT/benches/stream_ttfb.py" "$GW_PORT" "$SIM_PORT" "$ROUNDS"
echo
echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo). Command: benches/stream_ttfb.sh $ROUNDS"
