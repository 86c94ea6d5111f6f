#!/usr/bin/env bash
# AWS requests per delivered message, and what a million messages cost at AWS list prices.
#
#   bench/aws-requests.sh [--messages N] [--sessions N] [--size BYTES] [--fused]
#   (env: MESSAGES=1000 SESSIONS=10 SIZE=4096 FUSED=0 MEMORY_MB=512 RETENTION_DAYS=14
#    LAMBDA_MS=<ms per invocation>: the duration priced; default: as measured here, where
#    every DynamoDB and S3 call goes to LocalStack on the same two cores)
#
# Runs `baton serve` with storage.backend = "aws" and pipeline.run_stages = true on LocalStack
# (S3, SQS) and DynamoDB Local: the local runner plays Lambda's SQS event source mapping, each
# non-empty batch handed to a stage function counting as one invocation. Mail is signed as
# users run it (tenant "bench" bound to 127.0.0.0/8 by relay.tenant_networks, RSA-2048 and
# Ed25519 keys from `baton domain add`), one recipient per message, delivered to Postfix's
# smtp-sink through a route. The script waits until the sink holds every message and every
# queue is empty, stops baton, and reads the two lines baton logs at shutdown: the requests
# it sent to AWS (by service and operation, DynamoDB with consumed capacity units and a
# breakdown per ledger table) and the Lambda invocations per stage. Start-up requests (queue
# URL look-ups, the relay's DKIM keys) are counted with the message traffic; idle polling
# (`ReceiveMessage(empty)`) is shown but left out of the per-message cost: it costs by the
# hour, whatever the traffic.
#
# Prices: the README ("What a message costs on AWS") lists them. Printed: requests per delivered
# message per service and operation, Lambda invocations and records per message, the cost per
# million messages with the arithmetic, and bench_result lines (bench/lib.sh).
#
# Leaves LocalStack and DynamoDB Local running (localstack/stop.sh stops them); stops the
# smtp-sink and baton it started and removes its work dir. There is no Postfix side: Postfix
# makes no AWS requests; the comparison is the issue's budget (one S3 PUT and one GET).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

MESSAGES=${MESSAGES:-1000}
SESSIONS=${SESSIONS:-10}
SIZE=${SIZE:-4096}
FUSED=${FUSED:-0}
MEMORY_MB=${MEMORY_MB:-512}
LAMBDA_MS=${LAMBDA_MS:-}
RETENTION_DAYS=${RETENTION_DAYS:-14}
while (($#)); do
    case $1 in
        --messages) MESSAGES=$2; shift 2 ;;
        --sessions) SESSIONS=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --fused) FUSED=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done

ensure_tools
ENDPOINT=http://127.0.0.1:4566
DYNAMODB=http://127.0.0.1:8000
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$ROOT/localstack/install.sh" >&2
"$ROOT/localstack/start.sh" >&2
BATON=$(baton_bin "$ROOT")
# baton reads BATON_* variables as configuration: keep the bench's own away from it.
unset BATON_BIN

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/baton-aws-requests.XXXXXX")
chmod 755 "$WORK"
BATON_PID=
SINK_PID=
cleanup() {
    baton_stop || true
    stop_sink
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_sink "$WORK/sink"

PORT=$(free_port)
PREFIX="req-$RANDOM$RANDOM"
# Builds that have the fused path (pipeline.fused, listed in baton.example.toml) get the
# choice spelled out; older ones know only the per-stage functions.
FUSED_LINE=
if grep -q '^fused *=' "$ROOT/baton.example.toml"; then
    FUSED_LINE="fused = $([[ $FUSED == 1 ]] && echo true || echo false)"
elif [[ $FUSED == 1 ]]; then
    die "this build has no pipeline.fused"
fi
cat >"$WORK/baton.toml" <<EOF
hostname = "baton.bench.localhost"
data_dir = "$WORK/data"
[listen]
submission = ""
submissions = ""
relay = "127.0.0.1:$PORT"
[[relay.tenant_networks]]
network = "127.0.0.0/8"
tenant = "bench"
[limits]
max_connections_per_ip = 1000
[log]
format = "json"
filter = "warn,baton=info,baton_aws=info,baton_functions=info"
[storage]
backend = "aws"
[aws]
region = "us-east-1"
endpoint_url = "$ENDPOINT"
dynamodb_endpoint_url = "$DYNAMODB"
force_path_style = true
bucket = "$PREFIX"
prefix = "$PREFIX"
[pipeline]
run_stages = true
$FUSED_LINE
[[delivery.routes]]
pattern = "*"
target = "127.0.0.1:$SINK_PORT"
EOF
"$BATON" --config "$WORK/baton.toml" aws provision >/dev/null
"$BATON" --config "$WORK/baton.toml" domain add sender.test --tenant bench >/dev/null

echo "== AWS requests per message $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "baton: $(git -C "$ROOT" rev-parse --short HEAD) ($(git -C "$ROOT" status --porcelain | wc -l) files changed in the tree)," \
    "pipeline: $([[ $FUSED == 1 ]] && echo fused || echo per-stage functions)"
echo "load: smtp-source -s $SESSIONS -m $MESSAGES -l $SIZE, one recipient, signed as tenant bench (RSA-2048 + Ed25519)"
baton_start "$BATON" "$WORK/baton.toml" "$WORK/serve.log" "$PORT"
t0=$(now)
smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@sender.test -t sink@rcpt.invalid "127.0.0.1:$PORT" \
    >"$WORK/src.log" 2>&1 || { cat "$WORK/src.log" >&2; die "smtp-source failed"; }

queued() { # messages on the relay's queues (visible, in flight or delayed), DLQs included
    "$BATON" --config "$WORK/baton.toml" queue list --json |
        python3 -c 'import json,sys; print(sum(q["visible"] + q["in_flight"] + q["delayed"] for q in json.load(sys.stdin)))'
}
n=0
for ((i = 0; i < 1200; i++)); do
    n=$(find "$WORK/sink" -type f | wc -l)
    ((n >= MESSAGES)) && break
    kill -0 "$BATON_PID" 2>/dev/null || { tail -n 20 "$WORK/serve.log" >&2; die "baton exited"; }
    sleep 0.5
done
((n >= MESSAGES)) || die "only $n of $MESSAGES reached the sink"
t1=$(now)
# SQS's counts are approximate and lag: wait for two empty readings in a row.
empty=0
for ((i = 0; i < 120 && empty < 2; i++)); do
    q=$(queued)
    if ((q == 0)); then empty=$((empty + 1)); else empty=0; sleep 1; fi
done
((empty >= 2)) || die "queues not empty ($q messages) after the sink got all $MESSAGES"
baton_stop
signed=$(find "$WORK/sink" -type f -print -quit | xargs grep -o 'a=[a-z0-9-]*;' | tr -d ';' | sort | tr '\n' ' ')
echo "delivered: $n at the sink in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s, signed with: $signed"
grep -q '"aws requests"' "$WORK/serve.log" || { tail -n 20 "$WORK/serve.log" >&2; die "baton logged no request totals"; }

python3 - "$WORK/serve.log" "$n" "$MEMORY_MB" "$RETENTION_DAYS" "$SIZE" "$LAMBDA_MS" <<'PY' | tee "$WORK/result.txt"
import json, math, sys

log, delivered, memory_mb, retention_days, size, lambda_ms_given = sys.argv[1:]
delivered = int(delivered); memory_mb = int(memory_mb); retention_days = int(retention_days)
size = int(size)
requests = invocations = None
for line in open(log):
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    f = rec.get("fields", rec)
    msg = f.get("message", "")
    if msg == "aws requests":
        requests = f["requests"]
    elif msg.startswith("lambda invocations"):
        invocations = f["per_stage"]
if requests is None or invocations is None:
    sys.exit("no totals in the log")

# "service:Op=N" or "service:Op=N/cu=X"
ops = {}
for item in requests.split():
    name, _, rest = item.partition("=")
    count, _, cu = rest.partition("/cu=")
    service, _, op = name.partition(":")
    ops[(service, op)] = (int(count), float(cu or 0))
stages = {}
for item in invocations.split():
    name, _, rest = item.partition("=")
    parts = rest.split("/")
    stages[name] = {"invocations": int(parts[0])}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        stages[name][k] = int(v)

per = lambda x: x / delivered
print(f"\n== requests per delivered message ({delivered} messages)")
print(f"{'service':<15} {'operation':<34} {'requests':>9} {'per msg':>8} {'units/msg':>9}")
for (service, op), (count, cu) in sorted(ops.items()):
    units = f"{per(cu):9.2f}" if cu else ""
    print(f"{service:<15} {op:<34} {count:>9} {per(count):8.2f} {units}")
total = lambda s, skip=(): sum(c for (sv, op), (c, _) in ops.items() if sv == s and op not in skip)
s3 = total("s3"); sqs = total("sqs", ("ReceiveMessage(empty)",)); ddb = total("dynamodb")
empty = ops.get(("sqs", "ReceiveMessage(empty)"), (0, 0))[0]
s3_put = sum(c for (sv, op), (c, _) in ops.items() if sv == "s3" and op in
             ("PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "ListObjectsV2"))
s3_get = sum(c for (sv, op), (c, _) in ops.items() if sv == "s3" and op.startswith(("GetObject", "HeadObject")))
s3_other = s3 - s3_put - s3_get  # DeleteObject (free), bucket calls
ddb_read_ops = ("GetItem", "Query", "Scan", "BatchGetItem")
wru = sum(cu for (sv, op), (_, cu) in ops.items() if sv == "dynamodb" and op not in ddb_read_ops)
rru = sum(cu for (sv, op), (_, cu) in ops.items() if sv == "dynamodb" and op in ddb_read_ops)
inv = sum(s["invocations"] for s in stages.values())
busy_ms = sum(s.get("ms", 0) for s in stages.values())
print(f"\nS3 {per(s3):.2f}/msg (PUT-class {per(s3_put):.2f}, GET {per(s3_get):.2f}, other {per(s3_other):.2f}); "
      f"SQS {per(sqs):.2f}/msg (+ {empty} empty receives, idle polling); DynamoDB {per(ddb):.2f}/msg "
      f"({per(wru):.2f} WRU, {per(rru):.2f} RRU)")
print("\n== Lambda invocations (local runner: one per non-empty batch)")
for name, s in sorted(stages.items()):
    print(f"{name:<10} {s['invocations']:>6} invocations {per(s['invocations']):6.3f}/msg "
          f"{s.get('records', 0) / max(s['invocations'], 1):5.2f} records each, {s.get('ms', 0) / max(s['invocations'], 1):7.1f} ms each")
print(f"all        {inv:>6} invocations {per(inv):6.3f}/msg, {busy_ms / max(inv, 1):.1f} ms each on this machine")

# Prices: us-east-1 list prices, listed in the README ("What a message costs on AWS").
P_S3_PUT = 0.005 / 1000       # PUT, COPY, POST, LIST per request
P_S3_GET = 0.0004 / 1000      # GET, SELECT and others
P_SQS = 0.40 / 1e6            # standard queue, per 64 KB chunk of a request
P_WRU = 0.625 / 1e6           # on-demand write request unit (1 KB)
P_RRU = 0.125 / 1e6           # on-demand read request unit (4 KB, strongly consistent)
P_LAMBDA_REQ = 0.20 / 1e6
P_LAMBDA_GBS = 0.0000166667   # x86, per GB-second
P_S3_STORAGE = 0.023          # per GB-month, S3 Standard, first 50 TB
M = 1e6
lambda_ms = float(lambda_ms_given) if lambda_ms_given else busy_ms / max(inv, 1)
gbs = per(inv) * M * (lambda_ms / 1000) * (memory_mb / 1024)
stored_gb = M * (size + 400) / 1e9  # body + Received: header, per million messages
rows = [
    ("S3 PUT", f"{per(s3_put):.2f} x 1e6 x $0.005/1k", per(s3_put) * M * P_S3_PUT),
    ("S3 GET", f"{per(s3_get):.2f} x 1e6 x $0.0004/1k", per(s3_get) * M * P_S3_GET),
    ("SQS", f"{per(sqs):.2f} x 1e6 x $0.40/M (bodies < 64 KB: 1 chunk each)", per(sqs) * M * P_SQS),
    ("DynamoDB writes", f"{per(wru):.2f} WRU x 1e6 x $0.625/M", per(wru) * M * P_WRU),
    ("DynamoDB reads", f"{per(rru):.2f} RRU x 1e6 x $0.125/M", per(rru) * M * P_RRU),
    ("Lambda requests", f"{per(inv):.3f} x 1e6 x $0.20/M", per(inv) * M * P_LAMBDA_REQ),
    ("Lambda duration", f"{per(inv) * M:,.0f} x {lambda_ms:.1f} ms x {memory_mb} MB = {gbs:,.0f} GB-s x $0.0000166667", gbs * P_LAMBDA_GBS),
    ("S3 storage", f"{stored_gb:.2f} GB x $0.023/GB-month x {retention_days}/30", stored_gb * P_S3_STORAGE * retention_days / 30),
]
print(f"\n== cost per million messages (us-east-1 list prices; Lambda {memory_mb} MB, "
      f"{lambda_ms:.0f} ms per invocation {'(LAMBDA_MS)' if lambda_ms_given else '(as measured here)'})")
for name, how, usd in rows:
    print(f"{name:<16} ${usd:8.2f}   {how}")
cost = sum(r[2] for r in rows)
print(f"{'total':<16} ${cost:8.2f}")
# What ran, as the local runner saw it (a "fused" function, or the per-stage ones).
label = "fused" if "fused" in stages else "stages"
for metric, value, unit in [
    ("s3_requests_per_msg", per(s3), "req/msg"),
    ("s3_put_per_msg", per(s3_put), "req/msg"),
    ("s3_get_per_msg", per(s3_get), "req/msg"),
    ("sqs_requests_per_msg", per(sqs), "req/msg"),
    ("dynamodb_requests_per_msg", per(ddb), "req/msg"),
    ("dynamodb_wru_per_msg", per(wru), "WRU/msg"),
    ("dynamodb_rru_per_msg", per(rru), "RRU/msg"),
    ("lambda_invocations_per_msg", per(inv), "inv/msg"),
    ("usd_per_million", cost, "USD"),
]:
    print(f"METRIC\t{metric}_{label}\t{value:.3f}\t{unit}")
PY
# bench_result lines for run-all's CSV, from the METRIC lines above (nothing to compare with:
# Postfix makes no AWS requests).
while IFS=$'\t' read -r _ metric value unit; do
    bench_result "$metric" "$unit" "$value" "" - lower
done < <(grep '^METRIC' "$WORK/result.txt")
