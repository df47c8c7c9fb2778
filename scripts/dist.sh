#!/usr/bin/env bash
# Builds the distribution binaries: `cargo build --profile dist` (Cargo.toml's `[profile.dist]`:
# the release profile with fat LTO, one codegen unit, symbols and debug info stripped; panics
# still unwind, so one request's panic cannot end the process), then prints where they are and
# their sizes. Needs what any build needs (cmake and a C compiler for Pingora's zlib-ng, protoc
# for the gRPC code: scripts/test.sh installs them). Slower than a release build (one codegen
# unit, whole-program LTO): about 10 minutes on 2 cores.
#
#   scripts/dist.sh            # cosygate and cosyvoice-sim
#   scripts/dist.sh --bloat    # and where cosygate's bytes go, per crate (installs cargo-bloat)
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/ensure-packages.sh
ensure_packages cmake=cmake cc=build-essential protoc=protobuf-compiler

cargo build --profile dist --locked -p cosygate -p cosyvoice-sim

dir="${CARGO_TARGET_DIR:-target}/dist"
echo "== distribution binaries (stripped) in $dir/"
for bin in cosygate cosyvoice-sim; do
  printf '%-14s %10d bytes  %s\n' "$bin" "$(stat -c %s "$dir/$bin")" "$dir/$bin"
done

if [[ "${1:-}" == "--bloat" ]]; then
  if ! cargo bloat --version >/dev/null 2>&1; then
    echo "== installing cargo-bloat"
    cargo install cargo-bloat --locked
  fi
  # cargo-bloat reads symbols, which the dist profile strips: this is the same build unstripped
  # (one more full LTO build; the shipped binary is the one above).
  echo "== cosygate's .text, per crate"
  CARGO_PROFILE_DIST_STRIP=false cargo bloat --profile dist --locked -p cosygate --bin cosygate --crates -n 20
fi
