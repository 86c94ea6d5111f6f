#!/usr/bin/env bash
# Lambda bootstrap sizes and cold-start time to the first Runtime API request.
#
#   bench/lambda.sh [--runs N]
#
# Builds the four functions with the `lambda` profile (opt-level s, fat LTO, stripped),
# zips each as `bootstrap` like a provided.al2023 deployment package, and starts each binary
# RUNS times against a minimal Lambda Runtime API (tests/e2e/lambda_api.py), timing process
# start to its first GET /runtime/invocation/next. Goals: < 8 MB zipped, < 50 ms.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-20}
[[ ${1:-} == --runs ]] && RUNS=$2
cd "$ROOT"
cargo build -q --profile lambda -p baton-fn-policy -p baton-fn-sign -p baton-fn-deliver -p baton-fn-bounce -p baton-fn-events
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "== Lambda functions $(date -u +%Y-%m-%dT%H:%M:%SZ), profile lambda, $(nproc) cores"
for f in policy sign deliver bounce; do
    cp "target/lambda/baton-fn-$f" "$WORK/bootstrap"
    (cd "$WORK" && rm -f fn.zip && python3 -c 'import zipfile; z=zipfile.ZipFile("fn.zip","w",zipfile.ZIP_DEFLATED,compresslevel=9); z.write("bootstrap"); z.close()')
    zipped=$(python3 -c "print(f'{$(stat -c %s "$WORK/fn.zip") / 1e6:.2f}')")
    printf '%-8s binary %5.1f MB  zipped %4.2f MB\n' "$f" \
        "$(python3 -c "print($(stat -c %s "$WORK/bootstrap") / 1e6)")" "$zipped"
    bench_result "lambda_zip_$f" MB "$zipped" "" - lower
done
PYTHONPATH="$ROOT/tests/e2e" python3 - "$RUNS" "$WORK/starts" <<'PY'
import os, statistics, sys, time
from lambda_api import RuntimeApi, start_function
runs = int(sys.argv[1])
starts = open(sys.argv[2], "w")
env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
       "BATON_STORAGE__BACKEND": "aws", "AWS_EC2_METADATA_DISABLED": "true",
       # deliver refuses to start with the placeholder hostname (baton.localhost)
       "BATON_HOSTNAME": "relay.bench.example"}
for f in ("policy", "sign", "deliver", "bounce"):
    ms = []
    for _ in range(runs):
        api = RuntimeApi()
        proc, started = start_function(f"target/lambda/baton-fn-{f}", api, env, os.devnull)
        deadline = time.monotonic() + 10
        while api.first_next_at is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        proc.kill(); proc.wait(); api.stop()
        assert api.first_next_at is not None, f"{f} never asked for an invocation"
        ms.append(1000 * (api.first_next_at - started))
    print(f"{f:<8} start -> first /invocation/next: median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms ({runs} runs)")
    starts.write(f"{f} {statistics.median(ms):.1f} {';'.join(f'{x:.1f}' for x in ms)}\n")
PY
while read -r f median all; do
    bench_result "lambda_start_$f" ms "$median" "" - lower "$all"
done <"$WORK/starts"
