#!/usr/bin/env bash
# DKIM signing rate of Baton's sign stage code (mail-auth on aws-lc-rs) for RSA-2048 and Ed25519
# on 4 KB and 100 KB messages, next to `openssl speed` on the same machine in the same run.
# Usage: bench/dkim.sh [seconds-per-case]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
command -v openssl >/dev/null || { echo "openssl missing: apt-get install openssl" >&2; exit 1; }
cargo build -q --release -p baton-pipeline --features dkim-aws-lc --example dkim_bench
echo "== Baton sign stage (mail-auth on aws-lc-rs), one core"
baton=$(target/release/examples/dkim_bench "$secs")
echo "$baton"
echo "== openssl speed -seconds $secs rsa2048 ed25519 (one core)"
ossl=$(openssl speed -seconds "$secs" rsa2048 ed25519 2>/dev/null)
rsa_openssl=$(awk '/^rsa 2048 bits/ {print $(NF-1)}' <<<"$ossl")
ed_openssl=$(awk '/253 bits EdDSA \(Ed25519\)/ {print $(NF-1)}' <<<"$ossl")
echo "openssl rsa2048 sign/s: $rsa_openssl   ed25519 sign/s: $ed_openssl"
rsa4=$(awk '/^rsa-2048 +4 KB/ {print $4}' <<<"$baton")
ed4=$(awk '/^ed25519 +4 KB/ {print $4}' <<<"$baton")
python3 - "$rsa4" "$rsa_openssl" "$ed4" "$ed_openssl" <<'PY'
import sys
rsa, rsa_o, ed, ed_o = map(float, sys.argv[1:])
print(f"RSA-2048, 4 KB message vs raw openssl sign: {rsa:.0f} / {rsa_o:.0f} = {rsa / rsa_o:.0%} (goal >= 80%)")
print(f"Ed25519,  4 KB message vs raw openssl sign: {ed:.0f} / {ed_o:.0f} = {ed / ed_o:.0%}")
PY
