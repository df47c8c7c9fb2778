#!/usr/bin/env bash
# Coalescing (issue 15): N (100) identical concurrent misses, released at once on N open
# connections, to cosygate (memory cache, one synthesis per key) and to nginx with
# `proxy_cache_lock on` in front of the same cosyvoice-sim, in interleaved rounds, each round a
# new text. Reports the backend calls the sim counted (`/__sim/stats`), and when the first, the
# median and the last answer arrived against the backend's own time for that request alone.
#
#   benches/coalescing.sh       (also `scripts/bench.sh coalescing`)
#
# Both servers have one worker, pinned to the last core; the sim (--rtf 0.1, first chunk after
# 200 ms: ~0.5 s for the text) and the client run on core 0. cosygate: `threads: 1`, a
# `generate_json` pool (the sim's /generate), `cache: { memory: { max: 64MiB } }`. nginx:
# `proxy_cache` keyed on `$request_body`, `proxy_cache_methods POST`, `proxy_cache_lock on`,
# `proxy_cache_lock_timeout 30s` (waiting requests look again every 500 ms; nginx's own figure).
#
# Knobs: BENCH_CONCURRENCY (100), BENCH_ROUNDS (3), BENCH_TEXT_CHARS (50), BENCH_RAW (file for
# raw lines "peer round backend_calls first_s p50_s last_s backend_s ok"), BENCH_NO_BUILD,
# BENCH_PIN, BENCH_KEEP_TMP.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N=${BENCH_CONCURRENCY:-100}
ROUNDS=${BENCH_ROUNDS:-3}
CHARS=${BENCH_TEXT_CHARS:-50}
RAW=${BENCH_RAW:-}
ensure_packages nginx=nginx curl=curl python3=python3
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build_release
need_exec "$GW" "$SIM"
make_tmp cosygate-coalescing
pin_cores
ulimit -n 4096 2>/dev/null || true

SIM_PORT=$(free_port)
GW_PORT=$(free_port)
NGINX_PORT=$(free_port)
SERVER_CPU_SAVED=$SERVER_CPU
SERVER_CPU=$LOAD_CPU # the sim shares core 0 with the client
spawn "$TMP/sim.log" "$SIM" --listen "127.0.0.1:$SIM_PORT" --speakers 中文女 --rtf 0.1 --first-chunk-ms 200 --slots 128 --json-health
SIM_PID=${PIDS[-1]}
SERVER_CPU=$SERVER_CPU_SAVED
wait_http "http://127.0.0.1:$SIM_PORT/health" cosyvoice-sim "$SIM_PID" "$TMP/sim.log"
{
    gw_yaml_head gw "$GW_PORT" 1
    cat <<EOF
  cache: { ttl: 1h, memory: { max: 64MiB } }
  pools:
    sim:
      protocol: generate_json
      speakers: [中文女]
      timeout: 30s
      max_concurrency: 128
      backends:
        - addr: 127.0.0.1:$SIM_PORT
EOF
} >"$TMP/gw.yaml"
RUST_LOG=${RUST_LOG:-warn} gw_start gw
NGX=$TMP/nginx
mkdir -p "$NGX/cache" "$NGX/tmp"
cat >"$NGX/nginx.conf" <<EOF
worker_processes 1;
daemon off;
user root;
pid $NGX/nginx.pid;
error_log $NGX/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    proxy_cache_path $NGX/cache levels=1:2 keys_zone=tts:16m max_size=1g inactive=1h use_temp_path=off;
    upstream sim { server 127.0.0.1:$SIM_PORT; keepalive 16; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        client_body_buffer_size 1m;
        client_body_in_single_buffer on;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_read_timeout 30s;
        location = /generate {
            proxy_cache tts;
            proxy_cache_methods POST;
            proxy_cache_key \$request_body;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            proxy_cache_lock_age 30s;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
            add_header X-Cache \$upstream_cache_status always;
            proxy_pass http://sim/generate;
        }
        location = /health { return 200 ok; }
    }
}
EOF
spawn "$NGX/stdout.log" "$NGINX" -e "$NGX/error.log" -p "$NGX" -c "$NGX/nginx.conf"
NGINX_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$GW_PORT/health" cosygate "$GW_PID" "$TMP/gw.log"
wait_http "http://127.0.0.1:$NGINX_PORT/health" nginx "$NGINX_PID" "$NGX/error.log"

json() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
sim_calls() { curl -fsS --max-time 2 "http://127.0.0.1:$SIM_PORT/__sim/stats" | json requests; }
sim_idle() {
    for _ in $(seq 300); do
        [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$SIM_PORT/__sim/stats" | json inflight) == 0 ]] && return 0
        sleep 0.1
    done
    die "the sim did not go idle"
}
# body FILE TAG: a request of exactly CHARS characters of text, unique per TAG
body() {
    python3 - "$1" "$2" "$CHARS" <<'PY'
import json, sys
t = ("Coalescing " + sys.argv[2] + ", the same sentence asked for by everyone at once. " * 4)[: int(sys.argv[3])].strip()
open(sys.argv[1], "w").write(json.dumps({"mode": "sft", "spk_id": "中文女", "text": t}, ensure_ascii=False))
PY
}
# The backend's time for one such request alone, direct (median of 3, each a new text).
for i in 1 2 3; do
    body "$TMP/alone.json" "alone$i"
    curl -sS -o /dev/null -w '%{time_total}\n' -H 'Content-Type: application/json' --data-binary "@$TMP/alone.json" \
        "http://127.0.0.1:$SIM_PORT/generate"
done >"$TMP/alone.txt"
BACKEND_S=$(median_col "$TMP/alone.txt" 1)
say "backend time for one request alone (direct, median of 3): $BACKEND_S s"

for round in $(seq "$ROUNDS"); do
    for peer in cosygate nginx; do
        port=$GW_PORT
        [[ $peer == nginx ]] && port=$NGINX_PORT
        body "$TMP/body.json" "$peer-$round-$RANDOM"
        sim_idle
        before=$(sim_calls)
        python3 "$ROOT/benches/coalesce.py" 127.0.0.1 "$port" /generate "$TMP/body.json" "$N" >"$TMP/$peer.$round.json"
        sim_idle
        calls=$(($(sim_calls) - before))
        r=$(cat "$TMP/$peer.$round.json")
        ok=$(json statuses <<<"$r" | python3 -c 'import ast, sys; print(ast.literal_eval(sys.stdin.read()).get("200", 0))')
        line="$peer $round $calls $(json first_s <<<"$r") $(json p50_s <<<"$r") $(json last_s <<<"$r") $BACKEND_S $ok"
        echo "$line" >>"$TMP/results"
        [[ -z $RAW ]] || echo "$line" >>"$RAW"
        say "$peer round $round: $calls backend calls, $ok of $N answered 200, X-Cache $(json x_cache <<<"$r"), last answer after $(json last_s <<<"$r") s"
        ((ok == N)) || die "$peer: $((N - ok)) answers were not 200: $r"
    done
done

echo
echo "coalescing: $N identical concurrent misses per round, $ROUNDS rounds, a new text each; backend alone $BACKEND_S s; $(machine)"
echo
echo "| server | backend calls (per round) | first answer s | median answer s | last answer s | last - backend alone ms |"
echo "|---|---|---:|---:|---:|---:|"
for peer in cosygate nginx; do
    awk -v p="$peer" '$1 == p' "$TMP/results" >"$TMP/r.$peer"
    awk '{print ($6 - $7) * 1000}' "$TMP/r.$peer" >"$TMP/d.$peer"
    printf '| %s | %s | %.3f | %.3f | %.3f | %.0f |\n' "$peer" "$(awk '{printf "%s ", $3}' "$TMP/r.$peer" | sed 's/ $//')" \
        "$(median_col "$TMP/r.$peer" 4)" "$(median_col "$TMP/r.$peer" 5)" "$(median_col "$TMP/r.$peer" 6)" "$(median_col "$TMP/d.$peer" 1)"
done
