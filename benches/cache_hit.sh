#!/usr/bin/env bash
# The cache hit path (issues 4 and 15): requests per second, p50 and p99 and the server's CPU
# time per request for cached WAVs, cosygate against nginx, in the same run, on this machine:
#   small sft body (~150 B, ~200 KB WAV):
#     nginx-static  nginx serving the very same bytes as a static file (sendfile)
#     nginx-cache   nginx `proxy_cache` in front of the sim, keyed on `$request_body`
#     memory        cosygate, memory tier            disk   cosygate, disk tier
#   zero-shot body with a 3 s prompt inline (~130 KB of JSON):
#     nginx-sha     nginx `proxy_cache` keyed on the body's sha256 (njs `js_set`)
#     zs-memory     cosygate, memory tier
#
#   benches/cache_hit.sh          (also `scripts/bench.sh cache_hit`)
#
# What it does: installs nginx (with libnginx-mod-http-js) and wrk when missing (apt-get), builds
# the release binaries, starts one cosyvoice-sim, two gateways (one memory-only, one whose memory
# tier is 1 KiB so hits come from disk) and one nginx, warms each cache (a MISS, then a HIT with
# the same bytes), then runs wrk with the same threads, connections and duration against each
# target, in interleaved rounds, then one connection per target for the latency of a hit without
# queueing, and prints one table of medians. Every server listens on loopback only and has one
# worker (pinned to the last core when taskset is there; wrk gets core 0); everything started
# here is stopped on exit.
#
# Besides requests/s and latency it reports the server's CPU time per request (user + system,
# from /proc): on a shared machine other processes steal whole milliseconds from a server and
# move requests/s by 2x between runs, while CPU per request hardly moves.
#
# Knobs (environment): BENCH_ROUNDS (3), BENCH_DURATION (seconds per measurement, 6),
# BENCH_WARMUP (seconds of load before each measurement, discarded, 1), BENCH_CONNECTIONS (16),
# BENCH_TEXT_CHARS (70: the simulator makes 0.06 s of 24 kHz int16 audio per character, so 70
# characters is ~200 KB), BENCH_DISK_KEYS (256: distinct entries the disk run cycles through,
# see below), BENCH_PIN (1: pin servers and wrk to separate cores), BENCH_NO_BUILD (1: use the
# binaries in target/release as they are), BENCH_SINGLE (seconds of the one-connection latency
# run per target, 3; 0 skips it), BENCH_TARGETS (which targets, all six by default),
# BENCH_RAW (a file to write the raw per-round numbers to, "target rps p50 p99 cpu_us cpu_pct"),
# BENCH_KEEP_TMP (1: keep the temp dir with configs, logs and wrk outputs), RUST_LOG (the
# gateways' log level, default info: the access log is written as in production, to a file,
# and tells which tier each hit came from).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-6}
WARMUP=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNECTIONS:-16}
CHARS=${BENCH_TEXT_CHARS:-70}
DISK_KEYS=${BENCH_DISK_KEYS:-256}
TARGETS=${BENCH_TARGETS:-"nginx-static nginx-cache memory disk nginx-sha zs-memory"}
RAW=${BENCH_RAW:-}

# --- tools -----------------------------------------------------------------------------------
ensure_packages nginx=nginx wrk=wrk curl=curl pgrep=procps python3=python3
ensure_debs libnginx-mod-http-js
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# --- build -----------------------------------------------------------------------------------
build_release
need_exec "$GW" "$SIM"

make_tmp cosygate-bench

# --- pinning ---------------------------------------------------------------------------------
# spawn (lib.sh) starts servers on SERVER_CPU; on_load_cpu runs the load generator on LOAD_CPU.
CPUS=$(nproc)
pin_cores

# --- the simulated backend -------------------------------------------------------------------
SIM_PORT=$(free_port)
"$SIM" --listen "127.0.0.1:$SIM_PORT" --speakers 英文女 --rtf 0.01 --first-chunk-ms 5 >"$TMP/sim.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$SIM_PORT/docs" cosyvoice-sim "${PIDS[-1]}" "$TMP/sim.log"

# --- the two gateways ------------------------------------------------------------------------
# gateway_conf NAME PORT CACHE_YAML
gateway_conf() {
    {
        gw_yaml_head "$1" "$2" 1 # one worker thread: the figures are per core
        cat <<EOF
  cache: $3
  pools:
    sim:
      protocol: cosyvoice_fastapi
      model: cosyvoice3
      speakers: [英文女]   # the sim offers this preset voice (CosyVoice3 ships none)
      sample_rate: 24000
      timeout: 30s
      backends:
        - addr: 127.0.0.1:$SIM_PORT
EOF
    } >"$TMP/$1.yaml"
    gw_check "$1"
}

MEM_PORT=$(free_port)
DISK_PORT=$(free_port)
mkdir -p "$TMP/disk-cache"
gateway_conf gw-memory "$MEM_PORT" "{ memory: { max: 256MiB } }"
gateway_conf gw-disk "$DISK_PORT" "{ memory: { max: 1KiB }, disk: { path: $TMP/disk-cache, max: 1GiB } }"
export RUST_LOG=${RUST_LOG:-info}
spawn "$TMP/gw-memory.log" "$GW" -c "$TMP/gw-memory.yaml"
spawn "$TMP/gw-disk.log" "$GW" -c "$TMP/gw-disk.yaml"
wait_http "http://127.0.0.1:$MEM_PORT/health" gw-memory "${PIDS[1]}" "$TMP/gw-memory.log"
wait_http "http://127.0.0.1:$DISK_PORT/health" gw-disk "${PIDS[2]}" "$TMP/gw-disk.log"

# --- the requests, the warm-up, the checks ---------------------------------------------------
# SFT requests: no prompt audio, so the body stays small (~150 bytes) and the answer is what is
# measured. Every text has exactly CHARS characters, so every WAV has the same size. Key 0 is the
# hot key of the memory run; keys 1..DISK_KEYS are cycled through in the disk run.
mkdir -p "$TMP/bodies"
for i in $(seq 0 "$DISK_KEYS"); do
    printf -v t 'Sentence %05d of the cache benchmark comes back from the cache again, and again, and again, and again, and again, and again.' "$i"
    t=${t:0:CHARS}
    [[ $t == *" " ]] && t="${t% }a"
    printf '{"mode":"sft","spk_id":"英文女","text":"%s"}\n' "$t" >"$TMP/bodies/$i.json"
done
cp "$TMP/bodies/0.json" "$TMP/hot.lines"
for i in $(seq 1 "$DISK_KEYS"); do cat "$TMP/bodies/$i.json"; done >"$TMP/disk.lines"
# The zero-shot body: 3 s of 16 kHz mono int16 prompt (a 96 KB WAV, 128 KB of base64), one line.
zero_shot_body "$TMP/bodies/zs.json"
cp "$TMP/bodies/zs.json" "$TMP/zs.lines"
ZS_BODY_BYTES=$(($(stat -c %s "$TMP/bodies/zs.json") - 1))
# LUA LINES: a wrk script sending one POST per line of LINES, cycled in order (one wrk thread,
# one counter).
post_lua() {
    cat <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
for line in io.lines("$1") do bodies[#bodies + 1] = line end
assert(#bodies > 0, "no request bodies in $1")
local i = 0
request = function()
    i = i % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[i])
end
EOF
}
post_lua "$TMP/hot.lines" >"$TMP/hot.lua"
post_lua "$TMP/disk.lines" >"$TMP/disk.lua"
post_lua "$TMP/zs.lines" >"$TMP/zs.lua"

header() { tr -d '\r' <"$1" | awk -v h="$2" 'tolower($1) == tolower(h) ":" { print $2 }' | tail -1; }

# post NAME PORT N [BODY [PATH]]: the N-th request (BODY: 0, the hot key, by default) to a
# server; prints X-Cache (and the tier when the gateway sends X-Cache-Tier).
post() {
    local out="$TMP/$1.$3"
    curl -sS --max-time 30 -D "$out.h" -o "$out.wav" -H 'Content-Type: application/json' \
        --data-binary "@$TMP/bodies/${4:-0}.json" "http://127.0.0.1:$2${5:-/generate}"
    local status
    status=$(head -1 "$out.h" | awk '{print $2}')
    [[ $status == 200 ]] || { cat "$out.h" "$out.wav" >&2; die "$1: request $3 answered $status"; }
    echo "$(header "$out.h" X-Cache)$(t=$(header "$out.h" X-Cache-Tier); [[ -n $t ]] && echo "/$t")"
}

for gw in gw-memory gw-disk; do
    port=$MEM_PORT
    [[ $gw == gw-disk ]] && port=$DISK_PORT
    first=$(post "$gw" "$port" 1)
    [[ $first == MISS* ]] || die "$gw: the first request was X-Cache: $first, not MISS"
    second=$(post "$gw" "$port" 2)
    [[ $second == HIT* ]] || die "$gw: the second request was X-Cache: $second, not HIT"
    cmp -s "$TMP/$gw.1.wav" "$TMP/$gw.2.wav" || die "$gw: the HIT differs from the MISS"
    say "$gw: first $first, then $second"
done
cmp -s "$TMP/gw-memory.1.wav" "$TMP/gw-disk.1.wav" || die "the two gateways answered different WAVs"
WAV_BYTES=$(stat -c %s "$TMP/gw-memory.1.wav")
CL=$(header "$TMP/gw-memory.2.h" Content-Length)
[[ $CL == "$WAV_BYTES" ]] || die "Content-Length $CL but $WAV_BYTES bytes received"
say "WAV: Content-Length $CL bytes ($CHARS characters of text)"
first=$(post zs-memory "$MEM_PORT" 1 zs)
second=$(post zs-memory "$MEM_PORT" 2 zs)
[[ $first == MISS* && $second == HIT* ]] || die "zs-memory: X-Cache $first then $second, not MISS then HIT"
cmp -s "$TMP/zs-memory.1.wav" "$TMP/zs-memory.2.wav" || die "zs-memory: the HIT differs from the MISS"
ZS_WAV_BYTES=$(stat -c %s "$TMP/zs-memory.1.wav")
say "zs-memory: $ZS_BODY_BYTES-byte body, $ZS_WAV_BYTES-byte WAV, first $first, then $second"

# The disk gateway gets DISK_KEYS more entries (one synthesis each, 16 at a time). Its memory
# tier is 1 KiB, yet every disk hit is promoted into it, and moka drops an entry larger than the
# whole tier only at its next maintenance pass (measured with one hot key: 98% of the "disk"
# gateway's hits then came from memory, one disk read per ~50 hits). Cycling through DISK_KEYS
# keys brings each request back to a key only after DISK_KEYS - 1 other requests, long after it
# was evicted again; the access log's tier counts below check that.
say "gw-disk: storing $DISK_KEYS more entries"
warm_start=$(date +%s.%N)
seq 1 "$DISK_KEYS" | xargs -P 16 -I{} curl -sS -o /dev/null -w '%{http_code} %{size_download}\n' \
    --max-time 60 -H 'Content-Type: application/json' --data-binary "@$TMP/bodies/{}.json" \
    "http://127.0.0.1:$DISK_PORT/generate" >"$TMP/disk-warm.txt"
bad=$(awk -v cl="$CL" '$1 != 200 || $2 != cl' "$TMP/disk-warm.txt" | wc -l)
((bad == 0)) || { sort "$TMP/disk-warm.txt" | uniq -c >&2; die "gw-disk: $bad warm-up answers were not 200 with $CL bytes"; }
# Entries are stored after their answer: wait (10 s at most) for the disk to catch up.
for _ in $(seq 100); do
    stored=$(find "$TMP/disk-cache" -name '*.entry' | wc -l)
    ((stored == DISK_KEYS + 1)) && break
    sleep 0.1
done
((stored == DISK_KEYS + 1)) || die "gw-disk has $stored entries on disk, not $((DISK_KEYS + 1))"
say "gw-disk: $stored entries on disk ($(du -sm "$TMP/disk-cache" | cut -f1) MB), stored in $(awk -v a="$warm_start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"

# --- nginx: the same bytes as a file, and proxy_cache in front of the same sim ----------------
# One worker, like the gateways. nginx-cache keys on $request_body (fine for a small body; above
# ~64 KB the key no longer fits the cache file's header, see benches/README.md); nginx-sha keys
# on the body's sha256 computed by njs, the fair way to cache a large body. Both cache in files
# (the page cache serves them, with sendfile), valid 1 h, POST admitted, the body read into one
# in-memory buffer (njs and $request_body need it there).
NGX=$TMP/nginx
mkdir -p "$NGX/www" "$NGX/logs" "$NGX/cache" "$NGX/tmp"
cp "$TMP/gw-memory.1.wav" "$NGX/www/hit.wav"
chmod 755 "$TMP" "$NGX" "$NGX/www" && chmod 644 "$NGX/www/hit.wav" # workers may run as nobody
cat >"$NGX/key.js" <<'JS'
const crypto = require('crypto');
function bodySha256(r) {
    return crypto.createHash('sha256').update(r.requestText || '').digest('hex');
}
export default { bodySha256 };
JS
NGINX_PORT=$(free_port)
cat >"$NGX/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_http_js_module.so;
worker_processes 1;
daemon off;
user root;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log;
events {}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types { audio/wav wav; }
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    js_import main from $NGX/key.js;
    js_set \$body_sha256 main.bodySha256;
    proxy_cache_path $NGX/cache levels=1:2 keys_zone=tts:16m max_size=1g inactive=1h use_temp_path=off;
    upstream sim { server 127.0.0.1:$SIM_PORT; keepalive 16; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        client_max_body_size 16m;
        client_body_buffer_size 1m;
        client_body_in_single_buffer on;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_cache tts;
        proxy_cache_methods POST;
        proxy_cache_valid 200 1h;
        proxy_cache_lock on;
        proxy_ignore_headers Cache-Control Expires Set-Cookie;
        add_header X-Cache \$upstream_cache_status always;
        location / { root $NGX/www; }
        location = /generate { proxy_cache_key \$request_body; proxy_pass http://sim/generate; }
        location = /generate-sha { proxy_cache_key \$body_sha256; proxy_pass http://sim/generate; }
    }
}
CONF
spawn "$NGX/logs/stdout.log" "$NGINX" -e "$NGX/logs/error.log" -p "$NGX" -c "$NGX/nginx.conf"
NGINX_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$NGINX_PORT/hit.wav" nginx "$NGINX_PID" "$NGX/logs/error.log"
curl -sS -o "$TMP/nginx.wav" "http://127.0.0.1:$NGINX_PORT/hit.wav"
cmp -s "$TMP/nginx.wav" "$TMP/gw-memory.1.wav" || die "nginx serves other bytes"
# nginx_warm NAME BODY PATH GW_WAV: MISS then HIT with the same bytes; says whether they are the
# gateway's bytes (the sim's /generate and the gateway's WAV may differ in header details).
nginx_warm() {
    local first second
    first=$(post "$1" "$NGINX_PORT" 1 "$2" "$3")
    second=$(post "$1" "$NGINX_PORT" 2 "$2" "$3")
    [[ $first == MISS && $second == HIT ]] || die "$1: X-Cache $first then $second, not MISS then HIT"
    cmp -s "$TMP/$1.1.wav" "$TMP/$1.2.wav" || die "$1: the HIT differs from the MISS"
    local same="the same bytes as cosygate's"
    cmp -s "$TMP/$1.1.wav" "$4" || same="$(stat -c %s "$TMP/$1.1.wav") bytes, cosygate's $(stat -c %s "$4")"
    say "$1: first $first, then $second; $same"
}
nginx_warm nginx-cache 0 /generate "$TMP/gw-memory.1.wav"
nginx_warm nginx-sha zs /generate-sha "$TMP/zs-memory.1.wav"

# --- load ------------------------------------------------------------------------------------
# run NAME PID URL [wrk args...]: one measurement; appends "rps p50_ms p99_ms cpu_us cpu_pct"
# to $TMP/results.NAME. cpu_us: server CPU microseconds per request (user + system time of the
# server's processes over the measured run / requests answered); cpu_pct: of one core.
run() {
    local name=$1 pid=$2 url=$3
    shift 3
    if ((WARMUP > 0)); then
        on_load_cpu wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$@" "$url" >/dev/null
    fi
    local f=$TMP/wrk.$name.$round.txt t0 t1
    t0=$(cpu_ticks "$pid")
    on_load_cpu wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url" >"$f"
    t1=$(cpu_ticks "$pid")
    if grep -q 'Non-2xx\|Socket errors' "$f"; then
        cat "$f" >&2
        die "$name: errors during the run"
    fi
    local rps p50 p99 requests
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")
    requests=$(awk '$2 == "requests" && $3 == "in" {print $1}' "$f")
    [[ -n $rps && -n $p50 && -n $p99 && -n $requests ]] || { cat "$f" >&2; die "$name: cannot read wrk's output"; }
    awk -v rps="$rps" -v p50="$p50" -v p99="$p99" -v d=$((t1 - t0)) -v hz="$TICK_HZ" -v n="$requests" -v s="$DURATION" \
        'BEGIN {printf "%.0f %.3f %.3f %.1f %.0f\n", rps, p50, p99, d / hz * 1e6 / n, d / hz / s * 100}' >>"$TMP/results.$name"
}

median() { median_col "$TMP/results.$1" "$2"; } # median NAME COLUMN

tier_counts() { # memory and disk hits in a gateway's access log
    echo "$(grep -c '"cache":"HIT","cache_tier":"memory"' "$1" || true) $(grep -c '"cache":"HIT","cache_tier":"disk"' "$1" || true)"
}

LOAD1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD1" -v n="$CPUS" 'BEGIN {exit !(l > n * 0.5)}'; then
    say "warning: load average $LOAD1 on $CPUS CPUs before the runs: other work is running, requests/s and latencies will be disturbed (CPU us/request much less)"
fi
say "load: $ROUNDS rounds of wrk -t1 -c$CONNS -d${DURATION}s --latency per target (each after ${WARMUP}s of warm-up load), servers with one worker${SERVER_CPU:+ on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU}"
MEM_PID=${PIDS[1]} DISK_PID=${PIDS[2]}
# target NAME: sets T_PID, T_URL and T_ARGS (wrk's extra arguments), T_BYTES (answer bytes).
target() {
    T_ARGS=()
    T_BYTES=$CL
    case $1 in
        nginx-static) T_PID=$NGINX_PID T_URL="http://127.0.0.1:$NGINX_PORT/hit.wav" ;;
        nginx-cache) T_PID=$NGINX_PID T_URL="http://127.0.0.1:$NGINX_PORT/generate" T_ARGS=(-s "$TMP/hot.lua") ;;
        memory) T_PID=$MEM_PID T_URL="http://127.0.0.1:$MEM_PORT/generate" T_ARGS=(-s "$TMP/hot.lua") ;;
        disk) T_PID=$DISK_PID T_URL="http://127.0.0.1:$DISK_PORT/generate" T_ARGS=(-s "$TMP/disk.lua") ;;
        nginx-sha) T_PID=$NGINX_PID T_URL="http://127.0.0.1:$NGINX_PORT/generate-sha" T_ARGS=(-s "$TMP/zs.lua") T_BYTES=$ZS_WAV_BYTES ;;
        zs-memory) T_PID=$MEM_PID T_URL="http://127.0.0.1:$MEM_PORT/generate" T_ARGS=(-s "$TMP/zs.lua") T_BYTES=$ZS_WAV_BYTES ;;
        *) die "unknown target $1 (BENCH_TARGETS)" ;;
    esac
}
DISK_FROM_MEM=0 DISK_FROM_DISK=0
for round in $(seq "$ROUNDS"); do
    line="round $round, requests/s:"
    for t in $TARGETS; do
        target "$t"
        [[ $t == disk ]] && read -r before_mem before_disk < <(tier_counts "$TMP/gw-disk.log")
        run "$t" "$T_PID" "$T_URL" "${T_ARGS[@]}"
        if [[ $t == disk ]]; then
            read -r after_mem after_disk < <(tier_counts "$TMP/gw-disk.log")
            DISK_FROM_MEM=$((DISK_FROM_MEM + after_mem - before_mem))
            DISK_FROM_DISK=$((DISK_FROM_DISK + after_disk - before_disk))
        fi
        [[ -n $RAW ]] && echo "$t $round $(tail -1 "$TMP/results.$t") $T_BYTES" >>"$RAW"
        line+=" $t $(tail -1 "$TMP/results.$t" | cut -d' ' -f1)"
    done
    say "$line"
done
read -r mem_mem mem_disk < <(tier_counts "$TMP/gw-memory.log")

# One connection, one request at a time: the latency of a hit without queueing behind others
# (under 16 connections the p50 is mostly time spent waiting for the other 15).
SINGLE=${BENCH_SINGLE:-3}
single() { # single NAME URL [wrk args...]: "p50_ms p99_ms rps" with one connection
    local name=$1 url=$2 f=$TMP/wrk.$1.single.txt
    shift 2
    on_load_cpu wrk -t1 -c1 -d"${SINGLE}s" --latency "$@" "$url" >"$f"
    grep -q 'Non-2xx\|Socket errors' "$f" && { cat "$f" >&2; die "$name: errors during the one-connection run"; }
    echo "$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")") $(to_ms "$(awk '$1 == "99%" {print $2}' "$f")") $(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$f")"
}
declare -A SINGLE_OF=()
if ((SINGLE > 0)); then
    for t in $TARGETS; do
        target "$t"
        SINGLE_OF[$t]=$(single "$t" "$T_URL" "${T_ARGS[@]}")
        [[ -n $RAW ]] && echo "single-$t 0 ${SINGLE_OF[$t]}" >>"$RAW"
    done
fi

# --- report ----------------------------------------------------------------------------------
label() {
    case $1 in
        nginx-static) echo "nginx GET static file (sendfile)" ;;
        nginx-cache) echo "nginx proxy_cache, small body" ;;
        memory) echo "cosygate memory hit, small body" ;;
        disk) echo "cosygate disk hit, small body" ;;
        nginx-sha) echo "nginx proxy_cache sha256 (njs), zero-shot" ;;
        zs-memory) echo "cosygate memory hit, zero-shot" ;;
    esac
}
echo
echo "cache hit path: small sft body $(stat -c %s "$TMP/bodies/0.json") B -> $CL-byte WAV; zero-shot body $ZS_BODY_BYTES B -> $ZS_WAV_BYTES-byte WAV;"
echo "medians of $ROUNDS rounds of wrk -t1 -c$CONNS -d${DURATION}s per target; $(machine); servers with one worker"
echo
printf '| %-42s | %10s | %6s | %6s | %6s | %10s |\n' target requests/s "p50 ms" "p99 ms" MB/s "CPU us/req"
echo "|---|---:|---:|---:|---:|---:|"
for t in $TARGETS; do
    target "$t"
    awk -v l="$(label "$t")" -v r="$(median "$t" 1)" -v p="$(median "$t" 2)" -v q="$(median "$t" 3)" -v c="$(median "$t" 4)" -v b="$T_BYTES" \
        'BEGIN { printf "| %-42s | %10.0f | %6.2f | %6.2f | %6.0f | %10.0f |\n", l, r, p, q, r * b / 1e6, c }'
done
echo
# ratio A B: cosygate A against peer B (requests/s and CPU per request), when both ran.
ratio() {
    [[ " $TARGETS " == *" $1 "* && " $TARGETS " == *" $2 "* ]] || return 0
    awk -v a="$1" -v b="$2" -v ra="$(median "$1" 1)" -v rb="$(median "$2" 1)" -v ca="$(median "$1" 4)" -v cb="$(median "$2" 4)" \
        'BEGIN { printf "%s : %s  requests/s %.2f, CPU per request %.2f\n", a, b, ra / rb, ca / cb }'
}
ratio memory nginx-cache
ratio memory nginx-static
ratio zs-memory nginx-sha
echo
echo "MB/s counts WAV bytes only. CPU us/req: the server's user + system time over the measured run /"
echo "requests answered (nginx: master + worker)."
for t in $TARGETS; do
    printf '%-12s per round (requests/s, p50 ms, p99 ms, CPU us/req, %% of a core):' "$t"
    awk '{printf "  [%s %s %s %s %s%%]", $1, $2, $3, $4, $5}' "$TMP/results.$t"
    echo
done
if ((SINGLE > 0)); then
    printf 'one connection (wrk -c1 -d%ss), p50 / p99 ms (requests/s):' "$SINGLE"
    for t in $TARGETS; do printf ' %s %s;' "$t" "$(awk '{printf "%s / %s (%s)", $1, $2, $3}' <<<"${SINGLE_OF[$t]}")"; done
    echo
fi
if [[ " $TARGETS " == *" disk "* ]]; then
    echo "gw-disk hits during its runs: $DISK_FROM_DISK from disk, $DISK_FROM_MEM from memory (access log)."
    if ((DISK_FROM_MEM > DISK_FROM_DISK / 100)); then
        echo "note: more than 1% of gw-disk's hits came from its 1 KiB memory tier"
    fi
fi
echo "gw-memory hits, whole run: $mem_mem from memory, $mem_disk from disk (access log)."
echo "peak RSS: gw-memory $(awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$MEM_PID/status"), gw-disk $(awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$DISK_PID/status")."
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
