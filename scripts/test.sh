#!/usr/bin/env bash
# Runs cosygate's whole test suite on a fresh machine: installs what the tests need when it is
# missing (cmake for Pingora's zlib-ng, cargo-nextest), then runs every test with one summary.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/ensure-packages.sh
ensure_packages cmake=cmake cc=build-essential curl=curl redis-server=redis-server espeak-ng=espeak-ng
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "== building"
cargo build --workspace --all-targets
echo "== testing"
cargo nextest run --workspace --no-fail-fast "$@"
