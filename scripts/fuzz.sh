#!/usr/bin/env bash
# The long fuzzing runs: each cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS (default 600),
# two at a time, at the lowest CPU priority, on stable Rust (`-s none`: no sanitizer, so no
# nightly needed). New inputs go to fuzz/corpus/TARGET (ignored by git); the seed corpus
# tests/fuzz-corpus/TARGET is read too. Prints one line per target: executions, coverage,
# corpus size and crashes (files in fuzz/artifacts/TARGET). Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request wav multipart upstream config multipart_round_trip)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
echo "== building the targets (release, coverage instrumentation)"
nice -n 19 cargo fuzz build -s none -O

mkdir -p logs
run() {
  local t="$1"
  mkdir -p "corpus/$t" "artifacts/$t"
  nice -n 19 cargo fuzz run -s none -O "$t" "corpus/$t" "../tests/fuzz-corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
    >"logs/$t.log" 2>&1 || true
  local done_line crashes
  done_line=$(grep -E '^Done [0-9]+ runs' "logs/$t.log" | tail -1 || true)
  crashes=$(find "artifacts/$t" -type f | wc -l)
  echo "$t: ${done_line:-did not finish (see fuzz/logs/$t.log)}; $(grep -E '^#[0-9]+.*(DONE|pulse)' "logs/$t.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' || true); crashes: $crashes"
}

# Two at a time (the machine has two cores).
i=0
for t in "${targets[@]}"; do
  run "$t" &
  i=$((i + 1))
  if [ $((i % 2)) -eq 0 ]; then wait; fi
done
wait
