#!/usr/bin/env bash
# Makes a self-signed certificate and key for local use and tests: `scripts/make-cert.sh [DIR]`
# writes DIR/cert.pem and DIR/key.pem (DIR defaults to conf/tls, created if missing). ECDSA P-256,
# CN localhost, SAN DNS:localhost and IP:127.0.0.1, valid 365 days; a server (not CA)
# certificate, which rustls clients accept when told to trust this very file. Clients must trust cert.pem
# explicitly (curl --cacert DIR/cert.pem). Not for production: use your CA's certificate there.
set -euo pipefail

dir=${1:-conf/tls}
if ! command -v openssl >/dev/null 2>&1; then
  echo "make-cert.sh: openssl is not installed (Debian: apt-get install openssl)" >&2
  exit 1
fi
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=critical,digitalSignature" \
  -addext "extendedKeyUsage=serverAuth" \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
chmod 644 "$dir/cert.pem"
echo "make-cert.sh: wrote $dir/cert.pem and $dir/key.pem (self-signed, CN=localhost)"
