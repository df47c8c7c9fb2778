#!/usr/bin/env bash
# Runs cosygate's whole test suite on a fresh machine: installs what the tests need when it is
# missing (cmake for Pingora's zlib-ng, cargo-nextest, and promtool and amtool for the monitoring
# files' checks), checks formatting and clippy (warnings are errors), builds the whole workspace
# (the gateway's integration tests run the simulator's binary, `sim/`), then runs every test of
# every package with one summary (tests/monitoring.rs runs `promtool check rules`, `promtool test
# rules` and `amtool check-config` there, failing when a tool is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/ensure-packages.sh
ensure_packages cmake=cmake cc=build-essential curl=curl redis-server=redis-server espeak-ng=espeak-ng protoc=protobuf-compiler \
  chromium=chromium promtool=prometheus amtool=prometheus-alertmanager openssl=openssl \
  systemd-analyze=systemd
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "== installing $component"
    rustup component add "$component"
  fi
done

echo "== the tests' Python environment (target/venv)"
scripts/python-env.sh >/dev/null
echo "== formatting (cargo fmt --check)"
cargo fmt --all -- --check
echo "== lints (cargo clippy, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== building"
cargo build --workspace --all-targets
echo "== testing"
cargo nextest run --workspace --no-fail-fast "$@"
