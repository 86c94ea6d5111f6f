#!/usr/bin/env bash
# The soak (issue 11): MESSAGES messages (default 100,000) through `baton serve` to a test MX
# (tests/e2e/soak_mx.py) that defers 1 in 20 recipients once (450, accepted when retried)
# and refuses 1 in 50 (550); every fifth message has two recipients. Mail is a tenant's
# (signed, bounced): the DSNs come back to the same MX, which counts them too.
# Waits until the relay is idle (every recipient final at the MX, every DSN in, every queue
# empty), then checks exactly: MX accepted == sent - failed, each once; refused == failed;
# deferred-then-delivered == 1 in 20; one DSN per failed recipient; the ledger (message list,
# bounce list, suppression list) shows every recipient in its planned final state; no queue
# (dead-letter queues included) holds anything. VmRSS of the relay is sampled every second:
# after warm-up (10 % of recipients final), the largest after it, and at the end.
# No Postfix comparison: the figures are Baton's own (rate under this machine's load).
# Usage: bench/soak.sh [--messages N] [--connections C] [--keep]
#        (env: MESSAGES=100000 CONNECTIONS=8 SIZE=1024 BACKLOG=4000 BENCH_DIR=/var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

MESSAGES=${MESSAGES:-100000}
CONNECTIONS=${CONNECTIONS:-8}
SIZE=${SIZE:-1024}
BACKLOG=${BACKLOG:-4000}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
KEEP=0
while (($#)); do
    case $1 in
        --messages) MESSAGES=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
command -v python3 >/dev/null || die "python3 missing"
BATON=$(baton_bin "$PWD")
# baton reads BATON_* variables as configuration: keep the bench's own away from it.
unset BATON_BIN
WORK=$(mktemp -d "$BENCH_DIR/baton-soak.XXXXXX")
MX_PID=
cleanup() {
    baton_stop || true
    if [[ -n $MX_PID ]]; then
        kill "$MX_PID" 2>/dev/null || true
        wait "$MX_PID" 2>/dev/null || true
    fi
    if ((KEEP)); then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

MX_PORT=$(free_port)
python3 tests/e2e/soak_mx.py mx --port "$MX_PORT" >"$WORK/mx.log" 2>&1 &
MX_PID=$!
wait_port "$MX_PORT" 10 || { cat "$WORK/mx.log" >&2; die "soak MX did not listen on $MX_PORT"; }

BPORT=$(free_port)
cat >"$WORK/baton.toml" <<EOF
hostname = "baton.soak.localhost"
data_dir = "$WORK/baton-data"
[listen]
submission = ""
submissions = ""
relay = "127.0.0.1:$BPORT"
[[relay.tenant_networks]]
network = "127.0.0.0/8"
tenant = "soak"
[log]
filter = "warn"
[delivery]
retry_initial = "1s"
retry_max = "2s"
[[delivery.routes]]
pattern = "*"
target = "127.0.0.1:$MX_PORT"
EOF
"$BATON" --config "$WORK/baton.toml" domain add sender.test --tenant soak >/dev/null
baton_start "$BATON" "$WORK/baton.toml" "$WORK/baton.log" "$BPORT"
log "soak: $MESSAGES messages of ~$SIZE B over $CONNECTIONS connections, relay :$BPORT -> MX :$MX_PORT"

set +e
python3 tests/e2e/soak_mx.py drive --relay-port "$BPORT" --mx-port "$MX_PORT" --messages "$MESSAGES" \
    --connections "$CONNECTIONS" --size "$SIZE" --backlog "$BACKLOG" --baton "$BATON" \
    --config "$WORK/baton.toml" --data-dir "$WORK/baton-data" --pid "$BATON_PID" --json "$WORK/result.json"
STATUS=$?
set -e
warnings=$(grep -c -E ' (WARN|ERROR) ' "$WORK/baton.log" || true)
log "baton log: $warnings WARN/ERROR lines ($WORK/baton.log)"
grep -E ' (WARN|ERROR) ' "$WORK/baton.log" | sed -E 's/[0-9]{2,}/N/g' | awk '{$1=""; print}' | sort | uniq -c \
    | sort -rn | head -5 | cut -c1-200 >&2 || true

[[ -s $WORK/result.json ]] || die "the soak driver wrote no result (exit $STATUS)"
read -r RATE CPU GROWTH VERDICT < <(python3 - "$WORK/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rate = r["messages"] / r["seconds_to_mx"] if r["seconds_to_mx"] else 0
growth = r["rss"]["growth_mb"] if r["rss"] else float("nan")
cpu = 1000 * r["cpu_seconds"] / r["messages"] if r["cpu_seconds"] is not None else float("nan")
ok = all(c["ok"] for c in r["checks"]) and r["seconds_to_idle"] is not None
print(f"{rate:.0f} {cpu:.2f} {growth:.1f} {'pass' if ok else 'fail'}")
PY
)
bench_result soak_relayed msgs/s "$RATE" "" - higher
bench_result soak_cpu_per_msg ms "$CPU" "" - lower
bench_result soak_rss_growth MB "$GROWTH" "" - lower
bench_result soak_exact_counts verdict "$VERDICT" "" - -
exit "$STATUS"
