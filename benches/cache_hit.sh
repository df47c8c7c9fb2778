#!/usr/bin/env bash
# The cache hit path, measured (issue 4): requests per second, p50 and p99 for a ~200 KB WAV
# answered from the memory tier and from the disk tier, against nginx serving the very same
# bytes as a static file, in the same run, on this machine.
#
#   benches/cache_hit.sh
#
# What it does: installs nginx and wrk when missing (apt-get), builds the release binaries,
# starts one cosyvoice-sim and two gateways (one memory-only, one whose memory tier is 1 KiB so
# hits come from disk), warms each with one request (MISS) and checks the next is a HIT with the
# same bytes, writes those bytes to a file that nginx serves, then runs wrk with the same
# threads, connections and duration against each target, in interleaved rounds (nginx, memory,
# disk, nginx, ...), then one connection per target for the latency of a hit without queueing,
# and prints one table of medians. Every server listens on loopback only and has one worker
# (pinned to the last core when taskset is there; wrk gets core 0); everything started here is
# stopped on exit. About 90 s after the build.
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
# run per target, 3; 0 skips it), BENCH_KEEP_TMP (1: keep the temp dir with configs,
# logs and wrk outputs), RUST_LOG (the gateways' log level, default info: the access log is
# written as in production, to a file, and tells which tier each hit came from).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-6}
WARMUP=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNECTIONS:-16}
CHARS=${BENCH_TEXT_CHARS:-70}
PIN=${BENCH_PIN:-1}
DISK_KEYS=${BENCH_DISK_KEYS:-256}

# --- tools -----------------------------------------------------------------------------------
ensure_packages nginx=nginx wrk=wrk curl=curl pgrep=procps
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# --- build -----------------------------------------------------------------------------------
build_release
need_exec "$GW" "$SIM"

make_tmp cosygate-bench

# --- pinning ---------------------------------------------------------------------------------
# spawn (lib.sh) starts servers on SERVER_CPU; on_load_cpu runs the load generator on LOAD_CPU.
CPUS=$(nproc)
SERVER_CPU=""
LOAD_CPU=""
if [[ $PIN == 1 && $CPUS -ge 2 ]] && command -v taskset >/dev/null 2>&1; then
    SERVER_CPU=$((CPUS - 1))
    LOAD_CPU=0
fi
on_load_cpu() { if [[ -n $LOAD_CPU ]]; then taskset -c "$LOAD_CPU" "$@"; else "$@"; fi; }

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
    "$GW" -t -c "$TMP/$1.yaml" >"$TMP/$1.check" 2>&1 || { cat "$TMP/$1.check" >&2; die "$1 config refused"; }
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

header() { tr -d '\r' <"$1" | awk -v h="$2" 'tolower($1) == tolower(h) ":" { print $2 }' | tail -1; }

# post NAME PORT N: the N-th request (key 0) to a gateway; prints X-Cache (and the tier when
# the gateway sends X-Cache-Tier).
post() {
    local out="$TMP/$1.$3"
    curl -sS --max-time 30 -D "$out.h" -o "$out.wav" -H 'Content-Type: application/json' \
        --data-binary "@$TMP/bodies/0.json" "http://127.0.0.1:$2/generate"
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

# --- nginx with the same bytes ---------------------------------------------------------------
NGX=$TMP/nginx
mkdir -p "$NGX/www" "$NGX/logs"
cp "$TMP/gw-memory.1.wav" "$NGX/www/hit.wav"
chmod 755 "$TMP" "$NGX" "$NGX/www" && chmod 644 "$NGX/www/hit.wav" # workers may run as nobody
NGINX_PORT=$(free_port)
cat >"$NGX/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log;
events {}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types { audio/wav wav; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { root $NGX/www; }
    }
}
EOF
spawn "$NGX/logs/stdout.log" "$NGINX" -e "$NGX/logs/error.log" -p "$NGX" -c "$NGX/nginx.conf"
wait_http "http://127.0.0.1:$NGINX_PORT/hit.wav" nginx "${PIDS[-1]}" "$NGX/logs/error.log"
curl -sS -o "$TMP/nginx.wav" "http://127.0.0.1:$NGINX_PORT/hit.wav"
cmp -s "$TMP/nginx.wav" "$TMP/gw-memory.1.wav" || die "nginx serves other bytes"

# --- load ------------------------------------------------------------------------------------
to_ms() { # wrk's "1.23ms", "456.78us", "1.02s" -> milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

# cpu_ticks PID: user + system CPU ticks of a process and its children's live processes (nginx's
# worker is a child of its master).
TICK_HZ=$(getconf CLK_TCK)
cpu_ticks() {
    local total=0 pid t
    for pid in "$1" $(pgrep -P "$1" || true); do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

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

# median NAME COLUMN: the median of one column of $TMP/results.NAME
median() {
    awk -v c="$2" '{print $c}' "$TMP/results.$1" | sort -g |
        awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

tier_counts() { # memory and disk hits in a gateway's access log
    echo "$(grep -c '"cache":"HIT","cache_tier":"memory"' "$1" || true) $(grep -c '"cache":"HIT","cache_tier":"disk"' "$1" || true)"
}

LOAD1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD1" -v n="$CPUS" 'BEGIN {exit !(l > n * 0.5)}'; then
    say "warning: load average $LOAD1 on $CPUS CPUs before the runs: other work is running, requests/s and latencies will be disturbed (CPU us/request much less)"
fi
say "load: $ROUNDS rounds of wrk -t1 -c$CONNS -d${DURATION}s --latency per target (each after ${WARMUP}s of warm-up load), servers with one worker${SERVER_CPU:+ on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU}"
NGINX_PID=${PIDS[3]} MEM_PID=${PIDS[1]} DISK_PID=${PIDS[2]}
DISK_FROM_MEM=0 DISK_FROM_DISK=0
for round in $(seq "$ROUNDS"); do
    run nginx "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/hit.wav"
    run memory "$MEM_PID" "http://127.0.0.1:$MEM_PORT/generate" -s "$TMP/hot.lua"
    read -r before_mem before_disk < <(tier_counts "$TMP/gw-disk.log")
    run disk "$DISK_PID" "http://127.0.0.1:$DISK_PORT/generate" -s "$TMP/disk.lua"
    read -r after_mem after_disk < <(tier_counts "$TMP/gw-disk.log")
    DISK_FROM_MEM=$((DISK_FROM_MEM + after_mem - before_mem))
    DISK_FROM_DISK=$((DISK_FROM_DISK + after_disk - before_disk))
    say "round $round: requests/s nginx $(tail -1 "$TMP/results.nginx" | cut -d' ' -f1), memory $(tail -1 "$TMP/results.memory" | cut -d' ' -f1), disk $(tail -1 "$TMP/results.disk" | cut -d' ' -f1)"
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
if ((SINGLE > 0)); then
    S_NGINX=$(single nginx "http://127.0.0.1:$NGINX_PORT/hit.wav")
    S_MEMORY=$(single memory "http://127.0.0.1:$MEM_PORT/generate" -s "$TMP/hot.lua")
    S_DISK=$(single disk "http://127.0.0.1:$DISK_PORT/generate" -s "$TMP/disk.lua")
fi

# --- report ----------------------------------------------------------------------------------
row() { echo "$1|$(median "$2" 1)|$(median "$2" 2)|$(median "$2" 3)|$(median "$2" 4)"; }
echo
echo "cache hit path: $CL-byte WAV; medians of $ROUNDS rounds of wrk -t1 -c$CONNS -d${DURATION}s per target;"
echo "$CPUS CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), servers with one worker"
echo
awk -v bytes="$CL" -v a="$(row "nginx GET static file (sendfile)" nginx)" \
    -v b="$(row "cosygate POST, memory hit" memory)" -v c="$(row "cosygate POST, disk hit" disk)" 'BEGIN {
    split(a, A, "|")
    printf "| %-32s | %10s | %6s | %6s | %6s | %10s | %11s | %11s |\n", "target", "requests/s", "p50 ms", "p99 ms", "MB/s", "CPU us/req", "rps : nginx", "CPU : nginx"
    printf "|%s|%s|%s|%s|%s|%s|%s|%s|\n", "----------------------------------", "-----------:", "-------:", "-------:", "-------:", "-----------:", "------------:", "------------:"
    n = split(a "\n" b "\n" c, rows, "\n")
    for (i = 1; i <= n; i++) {
        split(rows[i], R, "|")
        printf "| %-32s | %10.0f | %6.2f | %6.2f | %6.0f | %10.0f | %11.2f | %11.1f |\n", R[1], R[2], R[3], R[4], R[2] * bytes / 1e6, R[5], R[2] / A[2], R[5] / A[5]
    }
}'
echo
echo "MB/s counts WAV bytes only (requests/s x $CL / 10^6). CPU us/req: the server's user + system"
echo "time over the measured run / requests answered (nginx: master + worker)."
for name in nginx memory disk; do
    printf '%-6s per round (requests/s, p50 ms, p99 ms, CPU us/req, %% of a core):' "$name"
    awk '{printf "  [%s %s %s %s %s%%]", $1, $2, $3, $4, $5}' "$TMP/results.$name"
    echo
done
if ((SINGLE > 0)); then
    echo "one connection (wrk -c1 -d${SINGLE}s), p50 / p99 ms (requests/s): nginx $(awk '{printf "%s / %s (%s)", $1, $2, $3}' <<<"$S_NGINX"), memory hit $(awk '{printf "%s / %s (%s)", $1, $2, $3}' <<<"$S_MEMORY"), disk hit $(awk '{printf "%s / %s (%s)", $1, $2, $3}' <<<"$S_DISK")."
fi
echo "gw-disk hits during its runs: $DISK_FROM_DISK from disk, $DISK_FROM_MEM from memory (access log)."
echo "gw-memory hits, whole run: $mem_mem from memory, $mem_disk from disk (access log)."
if ((DISK_FROM_MEM > DISK_FROM_DISK / 100)); then
    echo "note: more than 1% of gw-disk's hits came from its 1 KiB memory tier"
fi
echo "peak RSS: gw-memory $(awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$MEM_PID/status"), gw-disk $(awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$DISK_PID/status")."
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
