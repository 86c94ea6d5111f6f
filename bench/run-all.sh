#!/usr/bin/env bash
# Runs every benchmark in turn with its defaults (or the environment's
# overrides, see each script) and keeps a copy of the output.
#   bench/run-all.sh [OUTPUT_FILE]      (default: bench/results/<UTC time>.txt)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ).txt}
mkdir -p "$(dirname "$OUT")"
{
    echo "### bench/accept.sh (new connection per message)"
    "$ROOT/bench/accept.sh"
    echo
    echo "### bench/accept.sh --reuse (one connection per session)"
    "$ROOT/bench/accept.sh" --reuse
    echo
    echo "### bench/idle-rss.sh --with-postfix"
    "$ROOT/bench/idle-rss.sh" --with-postfix
    echo
    echo "### bench/aws-accept.sh (AWS backend on LocalStack vs raw PutObject+SendMessage)"
    "$ROOT/bench/aws-accept.sh"
    echo
    echo "### bench/api.sh (SES v2 API sends/s next to SMTP submissions/s, same relay)"
    "$ROOT/bench/api.sh"
    echo
    echo "### bench/lambda.sh (function sizes, start to first Runtime API request)"
    "$ROOT/bench/lambda.sh"
} 2>&1 | tee "$OUT"
echo "saved to $OUT"
