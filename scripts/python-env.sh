#!/usr/bin/env bash
# Prepares target/venv, the Python virtual environment of the tests that run real client
# libraries and stand-in servers (tests/python/requirements.txt). Reinstalls only when that file
# changed. Prints the interpreter's path. A package that cannot be installed is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-packages.sh
ensure_packages python3=python3

venv=target/venv
requirements=tests/python/requirements.txt
want=$(sha256sum "$requirements" | cut -c1-64)
stamp="$venv/.requirements.sha256"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
mkdir -p target
if ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
  # Debian splits venv (ensurepip) out of python3.
  minor=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "python3-venv" "python${minor}-venv" >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv --clear "$venv"
fi
echo "== installing the tests' Python packages into $venv" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" >&2
echo "$want" >"$stamp"
echo "$venv/bin/python"
