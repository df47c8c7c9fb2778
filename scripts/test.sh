#!/usr/bin/env bash
# Runs cosygate's whole test suite on a fresh machine: installs what the tests need when it is
# missing (cmake for Pingora's zlib-ng, cargo-nextest), then runs every test with one summary.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "== building"
cargo build --all-targets
echo "== testing"
cargo nextest run --no-fail-fast "$@"
