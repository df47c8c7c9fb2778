#!/usr/bin/env bash
# Reloads a running cosygate with a new configuration, without dropping connections, through
# Pingora's graceful upgrade:
#
#   scripts/reload.sh -c FILE [--pid-file P] [--log L] [--bin B] [--timeout SECONDS]
#
#  1. `cosygate -t -c FILE` (YAML and the TLS certificate/key pairs). On failure: stop, exit 1;
#     the running gateway is untouched.
#  2. The running pid from --pid-file, else the config's top-level `pid_file` (Pingora's default
#     /tmp/pingora.pid). cosygate writes that file itself once it holds its listening sockets.
#  3. Starts `cosygate -u -c FILE` in the background, its stderr appended to --log L, else to the
#     file the old process's stderr goes to (/proc/PID/fd/2) when that is a regular file, else
#     to this script's own stderr (under systemd's ExecReload=: the journal).
#  4. When the new process waits on `upgrade_sock` (seen in /proc/net/unix), sends SIGQUIT to
#     the old one, which hands over its listening sockets, accepts 5 s more, then drains.
#  5. Waits (--timeout, default 30 s) until the pid file holds the new pid and GET /health
#     answers on the first `listen` address. Then prints success, exit 0.
# On a failure in 3-5 the new process is killed if still up and the script exits 1, saying
# whether the old process had already been told to quit (then it is shutting down: start
# cosygate again) or is still serving untouched.
#
# Reads the three YAML keys with plain text matching: write them literally (no ${VAR}) at the
# top level, and `- addr:` as the first line of the first listen entry, as conf/cosygate.yaml does.
set -euo pipefail

usage() {
  echo "usage: $0 -c FILE [--pid-file P] [--log L] [--bin B] [--timeout SECONDS]" >&2
  exit 2
}

conf="" pid_file="" log="" bin="" timeout=30
while [ $# -gt 0 ]; do
  case "$1" in
    -c | --conf) conf=${2:-}; shift 2 || usage ;;
    --pid-file) pid_file=${2:-}; shift 2 || usage ;;
    --log) log=${2:-}; shift 2 || usage ;;
    --bin) bin=${2:-}; shift 2 || usage ;;
    --timeout) timeout=${2:-}; shift 2 || usage ;;
    -h | --help) usage ;;
    *) echo "reload.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$conf" ] || usage
if [ -z "$bin" ]; then
  bin=$(command -v cosygate || true)
  [ -n "$bin" ] || bin=/usr/local/bin/cosygate
fi
say() { echo "reload.sh: $*" >&2; }
fail() { say "$*"; exit 1; }

# A top-level scalar `KEY: value` (comments and quotes removed), or empty.
top_key() {
  sed -n "s/^$1:[[:space:]]*//p" "$conf" | head -n 1 | sed 's/[[:space:]]#.*$//; s/[[:space:]]*$//' | tr -d "\"'"
}

# 1. The check, with everything the start will load.
if ! out=$("$bin" -t -c "$conf" 2>&1); then
  printf '%s\n' "$out" >&2
  fail "the new configuration $conf is refused (above); nothing was changed, the running gateway keeps its configuration"
fi

# 2. The running process.
[ -n "$pid_file" ] || pid_file=$(top_key pid_file)
[ -n "$pid_file" ] || pid_file=/tmp/pingora.pid
upgrade_sock=$(top_key upgrade_sock)
[ -n "$upgrade_sock" ] || upgrade_sock=/tmp/pingora_upgrade.sock
[ -r "$pid_file" ] || fail "cannot read the pid file $pid_file: is cosygate running with this configuration? nothing was changed"
old=$(tr -dc '0-9' <"$pid_file")
if [ -z "$old" ] || ! kill -0 "$old" 2>/dev/null; then
  fail "the pid file $pid_file names process '${old}', which is not running: start cosygate instead of reloading it"
fi

# The first listen address, for the health check (0.0.0.0 and [::] are asked on loopback).
listen_line=$(awk '/^[[:space:]]+listen:/ {l=1; next} l && /addr:/ {print; exit}' "$conf")
addr=$(printf '%s\n' "$listen_line" | sed 's/.*addr:[[:space:]]*//; s/[[:space:],}].*$//' | tr -d "\"'")
[ -n "$addr" ] || fail "found no '- addr:' under listen: in $conf; nothing was changed"
addr=${addr/#0.0.0.0:/127.0.0.1:}
addr=${addr/#\[::\]:/[::1]:}
scheme=http
if awk -v a="$listen_line" 'f && /^[[:space:]]*- / {exit} f && /tls:/ {t=1} $0 == a {f=1; if (/tls:/) t=1} END {exit !t}' "$conf"; then
  scheme=https
fi
health_url="$scheme://$addr/health"

# 3. The new process.
if [ -z "$log" ]; then
  old_err=$(readlink "/proc/$old/fd/2" 2>/dev/null || true)
  if [ -n "$old_err" ] && [ -f "$old_err" ]; then log=$old_err; fi
fi
if [ -n "$log" ]; then
  "$bin" -u -c "$conf" </dev/null >/dev/null 2>>"$log" &
else
  "$bin" -u -c "$conf" </dev/null >/dev/null &
fi
new=$!
quit_sent=0
on_failure() {
  say "$1"
  if kill -0 "$new" 2>/dev/null; then
    kill "$new" 2>/dev/null || true
    say "stopped the new process $new"
  fi
  if [ "$quit_sent" -eq 1 ]; then
    say "SIGQUIT had already been sent to the old process $old: it handed over its sockets and is shutting down; start cosygate again (systemctl restart cosygate) once the cause is fixed${log:+; the new process logged to $log}"
  else
    say "the old process $old was not signalled and keeps serving${log:+; the new process logged to $log}"
  fi
  exit 1
}
deadline=$((SECONDS + timeout))

# 4. SIGQUIT once the new process listens on upgrade_sock (it gives up after about 5 s).
while ! awk -v p="$upgrade_sock" '$NF == p && $4 == "00010000" {found=1} END {exit !found}' /proc/net/unix; do
  kill -0 "$new" 2>/dev/null || on_failure "the new process exited before taking over${log:+ (see $log)}"
  [ "$SECONDS" -lt "$deadline" ] || on_failure "the new process did not open $upgrade_sock within ${timeout}s"
  sleep 0.05
done
kill -QUIT "$old" || on_failure "cannot send SIGQUIT to $old"
quit_sent=1

# 5. The new process owns the pid file and answers.
while :; do
  kill -0 "$new" 2>/dev/null || on_failure "the new process $new exited during the takeover${log:+ (see $log)}"
  current=$(tr -dc '0-9' <"$pid_file" 2>/dev/null || true)
  if [ "$current" = "$new" ]; then
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$health_url" || true)
    if [ -n "$code" ] && [ "$code" != 000 ]; then
      say "reloaded: process $new serves $conf (GET $health_url: $code); the old process $old is draining"
      exit 0
    fi
  fi
  [ "$SECONDS" -lt "$deadline" ] || on_failure "the new process $new did not take over within ${timeout}s (pid file $pid_file: '${current}', $health_url not answering)"
  sleep 0.1
done
