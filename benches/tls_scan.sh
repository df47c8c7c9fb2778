#!/usr/bin/env bash
# What a TLS client sees of cosygate's TLS listener (issue 12): protocols, cipher suites, key
# exchange groups and the certificate, as sslscan reports them.
#
#   benches/tls_scan.sh
#
# Installs sslscan, openssl and curl when missing (apt-get), builds the debug binaries (TLS does
# not depend on the profile; BENCH_NO_BUILD=1 uses target/debug as it is), makes a self-signed
# pair with scripts/make-cert.sh, starts one cosyvoice-sim and one gateway with a cleartext and
# a TLS listener on loopback, waits until GET /health answers over TLS, runs
# `sslscan --no-colour 127.0.0.1:PORT`, prints its report, and stops everything on exit.
# BENCH_KEEP_TMP=1 keeps the temp dir (config, logs, the scan).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

ensure_packages sslscan=sslscan openssl=openssl curl=curl
cd "$ROOT"
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    say "cargo build -p cosygate -p cosyvoice-sim"
    cargo build -p cosygate -p cosyvoice-sim --quiet
fi
GW=$ROOT/target/debug/cosygate
SIM=$ROOT/target/debug/cosyvoice-sim
need_exec "$GW" "$SIM"
make_tmp cosygate-tls-scan

scripts/make-cert.sh "$TMP/tls" >/dev/null
sim_port=$(free_port)
spawn "$TMP/sim.log" "$SIM" --listen "127.0.0.1:$sim_port" --speakers 中文女
wait_http "http://127.0.0.1:$sim_port/__sim/stats" cosyvoice-sim "${PIDS[0]}" "$TMP/sim.log"

gw_port=$(free_port)
tls_port=$(free_port)
{
    gw_yaml_head gw "$gw_port" 1
    cat <<YAML
    - addr: 127.0.0.1:$tls_port
      tls: { cert: $TMP/tls/cert.pem, key: $TMP/tls/key.pem }
  pools:
    cosyvoice:
      protocol: cosyvoice_fastapi
      speakers: [中文女]
      backends:
        - addr: 127.0.0.1:$sim_port
YAML
} >"$TMP/gw.yaml"
"$GW" -t -c "$TMP/gw.yaml" >/dev/null
spawn "$TMP/gw.log" "$GW" -c "$TMP/gw.yaml"
wait_http "https://localhost:$tls_port/health" cosygate "${PIDS[1]}" "$TMP/gw.log" \
    --cacert "$TMP/tls/cert.pem" --resolve "localhost:$tls_port:127.0.0.1"

say "sslscan --no-colour 127.0.0.1:$tls_port"
sslscan --no-colour "127.0.0.1:$tls_port" | tee "$TMP/sslscan.txt"
