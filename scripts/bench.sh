#!/usr/bin/env bash
# The benchmark harness (issue 15): one command on a fresh machine. Installs what it needs
# (apt-get: wrk, nginx with libnginx-mod-http-js, haproxy, gnuplot-nox; `cargo install oha
# --locked` for the open-loop runs of `miss`), builds the release binaries once, runs the parts,
# each interleaving cosygate and its peer, then writes benches/RESULTS.md and the plots
# docs/bench-*.png from the raw numbers in benches/results/.
#
#   scripts/bench.sh                 every part, in this order:
#   scripts/bench.sh PART...         only these: cache_hit miss overload coalescing idle stream_ttfb
#   scripts/bench.sh report          only rewrite RESULTS.md and the plots from benches/results/
#
#   cache_hit    benches/cache_hit.sh: cached WAVs, small sft and zero-shot bodies, against nginx
#                (static file, proxy_cache keyed on the body, keyed on its sha256 via njs)
#   miss         benches/miss.sh: added latency over a direct call, against HAProxy
#   overload     benches/goodput.sh: goodput at 1x, 2x, 4x capacity, against HAProxy's queue
#   coalescing   benches/coalescing.sh: 100 identical misses, against nginx proxy_cache_lock
#   idle         benches/idle_connections.sh: RSS of 10,000 idle keep-alive connections, and nginx's
#   stream_ttfb  benches/stream_ttfb.sh: time to first audio, direct and through cosygate
#
# Each part writes its output to benches/results/PART.txt (and its raw numbers to PART.raw or
# PART/); a part run alone replaces only its own files, and the report is rebuilt from all of
# them (each part's section says when it ran). The parts' own knobs (BENCH_DURATION, BENCH_ROUNDS,
# ...; see each script's header) pass through; BENCH_NO_BUILD=1 skips the build, BENCH_BIN_DIR
# uses binaries from elsewhere, BENCH_OUT moves benches/results, BENCH_STREAM_ROUNDS (20) is
# stream_ttfb's round count, and BENCH_<PART>_<KNOB> sets a knob for one part only (e.g.
# BENCH_OVERLOAD_DURATION=10 BENCH_CACHE_HIT_ROUNDS=5). On a shared machine, read the "load" lines: RESULTS.md shows the
# load average before and after each part.
set -euo pipefail
# shellcheck source=benches/lib.sh disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/../benches/lib.sh"
ALL="cache_hit miss overload coalescing idle stream_ttfb profile"
OUT=${BENCH_OUT:-$ROOT/benches/results}
PARTS=("$@")
((${#PARTS[@]} > 0)) || read -r -a PARTS <<<"$ALL"
REPORT_ONLY=0
[[ ${PARTS[*]} == report ]] && REPORT_ONLY=1
for p in "${PARTS[@]}"; do
    [[ $REPORT_ONLY == 1 || " $ALL " == *" $p "* ]] || die "unknown part $p (parts: $ALL, or report)"
done
COMMAND="scripts/bench.sh${*:+ $*}"
for v in $(compgen -e | grep '^BENCH_' | sort); do COMMAND="$v=${!v} $COMMAND"; done

# --- tools -----------------------------------------------------------------------------------
ensure_debs wrk nginx libnginx-mod-http-js haproxy gnuplot-nox curl python3 procps linux-perf strace
if [[ " ${PARTS[*]} " == *" miss "* ]] && ! command -v oha >/dev/null 2>&1; then
    if [[ ! -x $HOME/.cargo/bin/oha ]]; then
        say "cargo install oha --locked"
        cargo install oha --locked --quiet
    fi
fi
export PATH=$HOME/.cargo/bin:$PATH

# --- the binaries, once ----------------------------------------------------------------------
if ((REPORT_ONLY == 0)); then
    build_release
    need_exec "$GW" "$SIM"
    export BENCH_NO_BUILD=1
    [[ -n ${BENCH_BIN_DIR:-} ]] && export BENCH_BIN_DIR
fi

# --- the parts -------------------------------------------------------------------------------
mkdir -p "$OUT"
# part NAME SCRIPT [ARGS...]: runs one part with its raw file, output to OUT/NAME.txt, and a
# OUT/NAME.meta with when it ran, the load before and after, the command and the commit.
part() {
    local name=$1
    shift
    local start load0
    start=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
    load0=$(cut -d' ' -f1-3 /proc/loadavg)
    rm -rf "${OUT:?}/$name.raw" "${OUT:?}/$name"
    say "part $name: $*"
    local t0=$SECONDS
    # BENCH_<PART>_<KNOB> (e.g. BENCH_OVERLOAD_DURATION=10) is BENCH_<KNOB> for that part alone.
    local envs=() v prefix
    prefix=BENCH_${name^^}_
    for v in $(compgen -e | grep "^$prefix" || true); do envs+=("BENCH_${v#"$prefix"}=${!v}"); done
    if ! env "${envs[@]}" BENCH_RAW="$OUT/$name.raw" "$@" >"$OUT/$name.txt.new" 2>"$OUT/$name.log"; then
        tail -30 "$OUT/$name.log" >&2
        die "part $name failed (output in ${OUT#"$ROOT"/}/$name.log)"
    fi
    mv "$OUT/$name.txt.new" "$OUT/$name.txt"
    {
        echo "started: $start"
        echo "seconds: $((SECONDS - t0))"
        echo "load_before: $load0"
        echo "load_after: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "script: ${*#"$ROOT"/}"
        echo "command: $COMMAND"
        echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/')"
        echo "binaries: ${GW#"$ROOT"/}, ${SIM#"$ROOT"/}"
        echo "machine: $(machine)"
        echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>/dev/null | head -1 | awk '{print "HAProxy " $3}'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), $(oha --version 2>/dev/null || echo 'no oha')"
    } >"$OUT/$name.meta"
    say "part $name: done in $((SECONDS - t0)) s"
}
if ((REPORT_ONLY == 0)); then
    for p in "${PARTS[@]}"; do
        case $p in
            cache_hit) part cache_hit "$ROOT/benches/cache_hit.sh" ;;
            miss) part miss "$ROOT/benches/miss.sh" ;;
            overload) BENCH_RAW_DIR="$OUT/overload" part overload "$ROOT/benches/goodput.sh" ;;
            coalescing) part coalescing "$ROOT/benches/coalescing.sh" ;;
            idle) part idle "$ROOT/benches/idle_connections.sh" ;;
            stream_ttfb) part stream_ttfb "$ROOT/benches/stream_ttfb.sh" "${BENCH_STREAM_ROUNDS:-20}" ;;
            profile) part profile "$ROOT/benches/profile.sh" ;;
        esac
    done
fi

# --- the report ------------------------------------------------------------------------------
python3 "$ROOT/benches/report.py" "$OUT" "$ROOT/benches/RESULTS.md" "$ROOT/docs"
say "wrote benches/RESULTS.md and docs/bench-*.png"
