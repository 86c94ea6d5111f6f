#!/usr/bin/env bash
# Lambda zip sizes and cold-start time to the first Runtime API request.
#
#   bench/lambda.sh [--runs N]
#
# Measures what deploys: infra/package-functions.sh builds every function as it ships
# (profile lambda: opt-level z, fat LTO, stripped; each linking only its stage; glibc 2.34
# via cargo-zigbuild) and zips it as `bootstrap`. Each bootstrap is then started RUNS times
# against a minimal Lambda Runtime API (tests/e2e/lambda_api.py), timing process start to
# its first GET /runtime/invocation/next. Goals: < 3 MB zipped, < 50 ms.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-20}
[[ ${1:-} == --runs ]] && RUNS=$2
cd "$ROOT"
FUNCTIONS=(policy sign deliver bounce events fused api)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
infra/package-functions.sh "$WORK" "${FUNCTIONS[@]}" >"$WORK/package.log" 2>&1 ||
    { cat "$WORK/package.log" >&2; exit 1; }
echo "== Lambda functions $(date -u +%Y-%m-%dT%H:%M:%SZ), profile lambda, $(nproc) cores"
for f in "${FUNCTIONS[@]}"; do
    mkdir -p "$WORK/$f"
    (cd "$WORK/$f" && python3 -c 'import zipfile, sys; zipfile.ZipFile(sys.argv[1]).extract("bootstrap")' "$WORK/$f.zip")
    chmod 755 "$WORK/$f/bootstrap"
    zipped=$(python3 -c "print(f'{$(stat -c %s "$WORK/$f.zip") / 1e6:.2f}')")
    printf '%-8s binary %5.1f MB  zipped %4.2f MB\n' "$f" \
        "$(python3 -c "print($(stat -c %s "$WORK/$f/bootstrap") / 1e6)")" "$zipped"
    bench_result "lambda_zip_$f" MB "$zipped" "" - lower
done
PYTHONPATH="$ROOT/tests/e2e" python3 - "$RUNS" "$WORK" "${FUNCTIONS[@]}" <<'PY'
import os, statistics, sys, time
from lambda_api import RuntimeApi, start_function
runs, work, functions = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
starts = open(os.path.join(work, "starts"), "w")
env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
       "BATON_STORAGE__BACKEND": "aws", "AWS_EC2_METADATA_DISABLED": "true",
       # deliver refuses to start with the placeholder hostname (baton.localhost)
       "BATON_HOSTNAME": "relay.bench.example"}
for f in functions:
    ms = []
    for _ in range(runs):
        api = RuntimeApi()
        proc, started = start_function(os.path.join(work, f, "bootstrap"), api, env, os.devnull)
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
