#!/usr/bin/env bash
# Sourced by the scripts that set up a fresh machine: `ensure_packages COMMAND=PACKAGE ...`
# installs, with apt-get, the Debian package of every COMMAND not found on PATH (or in /usr/sbin),
# running `apt-get update` once first. Nothing happens when everything is there.
ensure_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%=*}
    pkg=${pair#*=}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
