#!/usr/bin/env bash
# What an idle keep-alive connection costs (issue 9): the gateway's RSS with N idle HTTP/1.1
# and N idle HTTP/2 (h2c) connections, against nginx holding the same N in the same run, and
# the throughput of large request bodies (5 MB prompts) through the gateway against the
# simulator called directly with the same bodies.
#
#   benches/idle_connections.sh
#
# What it does: installs nginx when missing (apt-get), raises `ulimit -n`, builds the release
# binaries, starts one cosyvoice-sim, then for each protocol a fresh gateway (2 threads) and a
# fresh nginx (2 workers), and for each: reads its RSS (VmRSS, summed over nginx's master and workers),
# opens N connections with benches/idle_hold.py (spread over BENCH_SOURCES loopback source
# addresses, 127.0.0.2 on, so no per-address cap is what limits them), sends one GET /health on
# each and reads the answer, waits 2 s, reads the RSS again and checks how many connections are
# still open, then closes them. Per connection = (RSS after - RSS before) / connections open.
# Then BENCH_BODIES sequential POST /generate with a ~5 MB body (zero_shot, 20 s of 48 kHz
# stereo prompt audio, `Cache-Control: no-store`) through the gateway, and the same bodies sent
# straight to the simulator's own /generate, in alternating rounds; prints MB/s of request body.
# Every server listens on loopback only; everything started here is stopped on exit. About
# two minutes after the build at N=10000.
#
# Knobs (environment): BENCH_CONNECTIONS (N, 10000), BENCH_SOURCES (200 source addresses: 50
# each at N=10000, under the older builds' per-IP cap of 64 too),
# BENCH_BODIES (bodies per round, 10), BENCH_ROUNDS (3), BENCH_NO_BUILD (1: use target/release
# as it is), BENCH_GATEWAY (another cosygate binary to measure instead, e.g. one built from an
# older commit, for before/after figures), BENCH_KEEP_TMP (1: keep the temp dir).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N=${BENCH_CONNECTIONS:-10000}
SOURCES=${BENCH_SOURCES:-200}
BODIES=${BENCH_BODIES:-10}
ROUNDS=${BENCH_ROUNDS:-3}

# --- tools -----------------------------------------------------------------------------------
ensure_packages nginx=nginx curl=curl python3=python3 pgrep=procps
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
WANT_FDS=$((N + 4096))
ulimit -n "$WANT_FDS" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= WANT_FDS)) || die "need ulimit -n >= $WANT_FDS for $N connections (hard limit $(ulimit -Hn))"

# --- build -----------------------------------------------------------------------------------
build_release
GW=${BENCH_GATEWAY:-$GW}
need_exec "$GW" "$SIM"

make_tmp cosygate-bench

# --- the servers -----------------------------------------------------------------------------
SIM_PORT=$(free_port)
spawn "$TMP/sim.log" "$SIM" --listen "127.0.0.1:$SIM_PORT" --rtf 0.001 --first-chunk-ms 0
wait_http "http://127.0.0.1:$SIM_PORT/docs" cosyvoice-sim "${PIDS[-1]}" "$TMP/sim.log"

GW_PORT=$(free_port)
{
    gw_yaml_head gw "$GW_PORT"
    cat <<EOF
  # Idle connections must outlive the measurement: header_timeout is the keep-alive idle timeout.
  limits: { header_timeout: 300s, max_body: 16MiB }
EOF
    gw_fastapi_pool
} >"$TMP/gw.yaml"
NG_H1=$(free_port)
NG_H2=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 2;
worker_rlimit_nofile $WANT_FDS;
user root;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections $WANT_FDS; }
http {
    access_log off;
    keepalive_timeout 300s;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$NG_H1;
        location = /health { default_type application/json; return 200 '{"status":"ok"}'; }
    }
    server {
        listen 127.0.0.1:$NG_H2 http2;
        location = /health { default_type application/json; return 200 '{"status":"ok"}'; }
    }
}
EOF

# Each measurement gets freshly started servers, so memory freed by the previous one (which an
# allocator keeps) does not hide what the next one costs. SERVER_PIDS: what to measure.
start_gateway() {
    RUST_LOG=warn "$GW" -c "$TMP/gw.yaml" >>"$TMP/gw.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_http "http://127.0.0.1:$GW_PORT/health" cosygate "$GW_PID" "$TMP/gw.log"
    SERVER_PIDS=("$GW_PID")
}
stop_gateway() {
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
}
start_nginx() {
    "$NGINX" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log" -g 'daemon off;' >>"$TMP/nginx.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_http "http://127.0.0.1:$NG_H1/health" nginx "$NGINX_PID" "$TMP/nginx-error.log"
    # shellcheck disable=SC2207
    SERVER_PIDS=("$NGINX_PID" $(pgrep -P "$NGINX_PID"))
}
stop_nginx() {
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
}

# --- idle connections ------------------------------------------------------------------------
LAST=$(python3 -c "import ipaddress; print(ipaddress.ip_address('127.0.0.2') + $SOURCES - 1)")
ROWS=()
# idle NAME PORT PROTO: one row of the table, for the processes in SERVER_PIDS.
idle() {
    local name=$1 port=$2 proto=$3
    local before after line open failed alive
    before=$(proc_kib VmRSS "${SERVER_PIDS[@]}")
    coproc HOLD { python3 "$ROOT/benches/idle_hold.py" --target "127.0.0.1:$port" --proto "$proto" --n "$N" --sources "127.0.0.2-$LAST"; }
    read -r -t 300 line <&"${HOLD[0]}" || die "$name $proto: the connections were not opened within 300 s"
    read -r _ open failed <<<"$line"
    sleep 2
    after=$(proc_kib VmRSS "${SERVER_PIDS[@]}")
    echo check >&"${HOLD[1]}"
    read -r -t 30 line <&"${HOLD[0]}" || die "$name $proto: no liveness answer"
    alive=${line#alive }
    # shellcheck disable=SC1083,SC2093 # closes the coprocess's input (fd in HOLD[1])
    exec {HOLD[1]}>&-
    wait "$HOLD_PID" 2>/dev/null || true
    ROWS+=("$(awk -v n="$name" -v p="$proto" -v o="$open" -v f="$failed" -v a="$alive" -v b="$before" -v r="$after" \
        'BEGIN { printf "| %s | %s | %d | %d | %d | %.1f | %.1f | %.2f |", n, p, o, f, a, b/1024, r/1024, (r-b)/(o>0?o:1) }')")
    say "${ROWS[-1]}"
}

say "idle connections: N=$N over $SOURCES source addresses"
for proto in h1 h2; do
    start_gateway
    idle cosygate "$GW_PORT" "$proto"
    stop_gateway
    start_nginx
    idle nginx "$([[ $proto == h1 ]] && echo "$NG_H1" || echo "$NG_H2")" "$proto"
    stop_nginx
done
start_gateway

# --- large bodies ----------------------------------------------------------------------------
python3 - "$TMP/body.json" <<'EOF'
import base64, io, json, random, struct, sys, wave
rate, seconds = 48000, 20
rng = random.Random(7)
frames = b"".join(struct.pack("<hh", rng.randint(-8000, 8000), rng.randint(-8000, 8000)) for _ in range(rate * seconds))
buf = io.BytesIO()
with wave.open(buf, "wb") as w:
    w.setnchannels(2); w.setsampwidth(2); w.setframerate(rate); w.writeframes(frames)
body = {"text": "Hello there.", "mode": "zero_shot", "prompt_text": "A twenty second prompt.",
        "prompt_audio": base64.b64encode(buf.getvalue()).decode()}
open(sys.argv[1], "w").write(json.dumps(body))
EOF
BODY_BYTES=$(stat -c %s "$TMP/body.json")
# bodies URL: BODIES sequential POSTs, each must be 200; prints request-body MB/s.
bodies() {
    local start end code
    start=$(date +%s.%N)
    for _ in $(seq "$BODIES"); do
        code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 60 -H 'Content-Type: application/json' \
            -H 'Cache-Control: no-store' --data-binary "@$TMP/body.json" "$1")
        [[ $code == 200 ]] || die "POST $1 answered $code"
    done
    end=$(date +%s.%N)
    awk -v n="$BODIES" -v b="$BODY_BYTES" -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", n * b / (e - s) / 1e6 }'
}
say "large bodies: $BODIES × $BODY_BYTES bytes per round, $ROUNDS rounds"
GW_MBS=()
SIM_MBS=()
for _ in $(seq "$ROUNDS"); do
    GW_MBS+=("$(bodies "http://127.0.0.1:$GW_PORT/generate")")
    SIM_MBS+=("$(bodies "http://127.0.0.1:$SIM_PORT/generate")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo
echo "Idle keep-alive connections (N=$N, $SOURCES source addresses; $(nproc) cores; gateway: $GW)"
echo
echo "| server | protocol | open | failed | still open after 2 s | RSS before (MiB) | RSS with them (MiB) | KiB per connection |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Large bodies: $BODY_BYTES-byte POST /generate, $BODIES sequential per round, median of $ROUNDS rounds"
echo
echo "| path | request body MB/s (median) | rounds |"
echo "|---|---|---|"
printf '| through cosygate | %.1f | %s |\n' "$(median "${GW_MBS[@]}")" "$(printf '%.1f ' "${GW_MBS[@]}")"
printf '| simulator directly | %.1f | %s |\n' "$(median "${SIM_MBS[@]}")" "$(printf '%.1f ' "${SIM_MBS[@]}")"
