# shellcheck shell=bash
# Sourced by every benches/*.sh script: the blocks they all share, once. Provides
#   ROOT                      the repository's root
#   say MSG / die MSG         "== MSG" on stderr / "SCRIPT.sh: MSG" on stderr and exit 1
#   ensure_packages CMD=PKG   (from scripts/ensure-packages.sh) apt-get what is missing
#   ensure_debs PKG...        apt-get the Debian packages that are not installed (dpkg -s)
#   build_release             cd to ROOT; cargo build --release -p cosygate -p cosyvoice-sim
#                             --example plain_proxy unless BENCH_NO_BUILD=1; sets GW, SIM and
#                             PLAIN_PROXY to the binaries (in BENCH_BIN_DIR when set, else
#                             ROOT/target/release; the example under examples/)
#   need_exec FILE...         die unless every FILE is an executable
#   make_tmp PREFIX           TMP (a fresh temp dir), PIDS (servers to stop) and the exit trap
#                             that stops them and removes TMP (kept with BENCH_KEEP_TMP=1)
#   spawn LOG CMD...          CMD in the background, output to LOG, pid in PIDS (on core
#                             SERVER_CPU when the script set it)
#   free_port                 a free loopback port below the ephemeral range
#   wait_http URL NAME PID LOG [CURL_ARGS...]
#                             until URL answers 200 (WAIT_HTTP_S seconds, 10) or PID (when not
#                             empty) exited; on failure shows the end of LOG and dies
#   proc_kib FIELD PID...     a /proc/PID/status field (VmRSS, VmHWM) summed over PIDs, in KiB
#   pin_cores                 SERVER_CPU (last core) and LOAD_CPU (core 0) when BENCH_PIN is not
#                             0, there are 2+ cores and taskset; on_load_cpu CMD... runs there
#   cpu_ticks PID             user + system CPU ticks of PID and its children (TICK_HZ per s)
#   to_ms VALUE               wrk's "1.23ms", "456.78us", "1.02s" in milliseconds
#   median_col FILE COLUMN    the median of one whitespace-separated column of FILE
#   machine                   one line: cores, CPU model, memory, kernel
#   gw_fastapi_pool [EXTRA]   the `pools:` part of a gateway config: one `cosyvoice_fastapi` pool
#                             on the sim at SIM_PORT (EXTRA: more lines of the pool, indented 6)
#   gw_check NAME             `cosygate -t` on TMP/NAME.yaml; on a refusal shows why and dies
#   gw_start NAME             gw_check, then cosygate on TMP/NAME.yaml (log TMP/NAME.log) as a
#                             server (spawn); its pid in GW_PID
#   zero_shot_body FILE       the zero-shot request of the cache parts (3 s of 16 kHz prompt: a 96 KB
#                             WAV, 128 KB of base64) as one JSON line in FILE
#   gw_yaml_head NAME PORT [THREADS]  the process part of a gateway config (THREADS or 2 threads, pid file and
#                             upgrade socket TMP/NAME.*, no grace) up to `listen` on PORT

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '== %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# shellcheck source-path=SCRIPTDIR source=../scripts/ensure-packages.sh
. "$ROOT/scripts/ensure-packages.sh"

# --- build -----------------------------------------------------------------------------------
build_release() {
    cd "$ROOT" || die "cannot cd to $ROOT"
    if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
        say "cargo build --release -p cosygate -p cosyvoice-sim --example plain_proxy"
        cargo build --release -p cosygate -p cosyvoice-sim --example plain_proxy --quiet
    fi
    # shellcheck disable=SC2034 # used by the scripts
    GW=${BENCH_BIN_DIR:-$ROOT/target/release}/cosygate
    # shellcheck disable=SC2034
    SIM=${BENCH_BIN_DIR:-$ROOT/target/release}/cosyvoice-sim
    # shellcheck disable=SC2034
    PLAIN_PROXY=${BENCH_BIN_DIR:-$ROOT/target/release}/examples/plain_proxy
}
ensure_debs() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    say "installing ${missing[*]}"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
need_exec() {
    local f
    for f in "$@"; do [[ -x $f ]] || die "no $f"; done
}

# --- temp dir, servers, cleanup --------------------------------------------------------------
make_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}

SERVER_CPU="" # a core to pin servers to (taskset); cache_hit.sh sets it
spawn() {
    local log=$1
    shift
    if [[ -n ${SERVER_CPU:-} ]]; then set -- taskset -c "$SERVER_CPU" "$@"; fi
    "$@" >"$log" 2>&1 &
    PIDS+=($!)
}

pin_cores() {
    local cpus
    cpus=$(nproc)
    SERVER_CPU="" LOAD_CPU=""
    if [[ ${BENCH_PIN:-1} == 1 && $cpus -ge 2 ]] && command -v taskset >/dev/null 2>&1; then
        SERVER_CPU=$((cpus - 1))
        LOAD_CPU=0
    fi
}
on_load_cpu() { if [[ -n ${LOAD_CPU:-} ]]; then taskset -c "$LOAD_CPU" "$@"; else "$@"; fi; }

# shellcheck disable=SC2034 # used by the scripts
TICK_HZ=$(getconf CLK_TCK)
cpu_ticks() {
    local total=0 pid t
    for pid in "$1" $(pgrep -P "$1" || true); do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}
median_col() {
    awk -v c="$2" '{print $c}' "$1" | sort -g |
        awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
machine() {
    echo "$(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r)"
}

# A loopback port nobody listens on (checked by connecting; the window until use is short),
# below the ephemeral range, so no client socket of the run (some open thousands) can hold it.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 12000)) || EPHEMERAL_LOW=61000
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

WAIT_HTTP_S=10
wait_http() {
    local url=$1 name=$2 pid=$3 log=$4
    shift 4
    for _ in $(seq $((WAIT_HTTP_S * 10))); do
        if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then return 0; fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            tail -20 "$log" >&2
            die "$name exited during startup"
        fi
        sleep 0.1
    done
    tail -20 "$log" >&2
    die "$name did not answer $url within $WAIT_HTTP_S s"
}

proc_kib() {
    local field=$1 pid sum=0 kb
    shift
    for pid in "$@"; do
        kb=$(awk -v k="$field" '$1 == k":" {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        sum=$((sum + ${kb:-0}))
    done
    echo "$sum"
}

gw_yaml_head() {
    cat <<EOF
threads: ${3:-2}
pid_file: $TMP/$1.pid
upgrade_sock: $TMP/$1.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
cosygate:
  listen:
    - addr: 127.0.0.1:$2
EOF
}

zero_shot_body() {
    python3 - "$1" <<'PY'
import base64, json, math, struct, sys
rate, n = 16000, 48000
pcm = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * i / rate))) for i in range(n))
wav = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(pcm)) + pcm
body = {"mode": "zero_shot", "text": "Hello there, a zero shot sentence from the cache.",
        "prompt_text": "This is what the three second prompt says.", "prompt_audio": base64.b64encode(wav).decode()}
open(sys.argv[1], "w").write(json.dumps(body) + "\n")
PY
}

gw_check() {
    "$GW" -t -c "$TMP/$1.yaml" >"$TMP/$1.check" 2>&1 || { cat "$TMP/$1.check" >&2; die "$1: cosygate refused its config"; }
}

gw_start() {
    gw_check "$1"
    spawn "$TMP/$1.log" "$GW" -c "$TMP/$1.yaml"
    # shellcheck disable=SC2034 # used by the scripts
    GW_PID=${PIDS[-1]}
}

# shellcheck disable=SC2120 # EXTRA is optional
gw_fastapi_pool() {
    printf '  pools:\n    cosyvoice:\n      protocol: cosyvoice_fastapi\n%s      backends:\n        - addr: 127.0.0.1:%s\n' \
        "${1:+$1
}" "$SIM_PORT"
}
