#!/usr/bin/env bash
# Prints a new random API token (give it to the client) and its sha256 digest (put it in the
# config under cosygate.auth.tokens). The config never holds the token itself.
#   usage: scripts/new-token.sh [NAME]
set -euo pipefail
name="${1:-client}"
token="cgt_$(head -c 32 /dev/urandom | base64 | tr -d '=+/\n' | head -c 43)"
digest=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
echo "token (give to the client, shown once): $token"
echo "config entry:"
echo "      - { name: $name, sha256: \"$digest\", tenant: $name }"
