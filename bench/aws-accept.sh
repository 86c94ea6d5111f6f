#!/usr/bin/env bash
# Accept throughput through the AWS backend on LocalStack, against the raw rate of the same
# S3 PutObject + SQS SendMessage calls made without the gateway (crates/baton-aws/examples/
# raw_accept.rs, through the same S3BlobStore and SqsQueue), so the gateway's own overhead
# shows. Both runs use the same LocalStack and DynamoDB Local, one after the other.
#
#   bench/aws-accept.sh [--sessions N] [--messages N] [--size BYTES] [--rounds N]
#
# Baton: `baton serve` with storage.backend = "aws", pipeline.run_stages = false (accept
# only), relay listener with allow_networks; load from Postfix's smtp-source.
#
# LocalStack and DynamoDB Local are started through localstack/start.sh (left alone when
# already running) and left running when the script exits, so that other benchmarks and
# tests reuse them; localstack/stop.sh stops them. The script stops only what it started
# itself: baton (and its work dir). Each round provisions fresh resources under a new prefix.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

SESSIONS=${SESSIONS:-20}
MESSAGES=${MESSAGES:-2000}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-100}
while (($#)); do
    case $1 in
        --sessions) SESSIONS=$2; shift 2 ;;
        --messages) MESSAGES=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
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
(cd "$ROOT" && cargo build --release -q -p baton-aws --example raw_accept >&2)
RAW="$ROOT/target/release/examples/raw_accept"

WORK=$(mktemp -d /var/tmp/baton-aws-accept.XXXXXX)
BATON_PID=
# Stops baton and removes the work dir; LocalStack and DynamoDB Local stay up (see above).
trap 'baton_stop; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

write_config() { # FILE PREFIX PORT
    cat >"$1" <<EOF
hostname = "baton.bench.localhost"
data_dir = "$WORK/data"
[listen]
submission = ""
submissions = ""
relay = "127.0.0.1:$3"
[relay]
allow_networks = ["127.0.0.0/8"]
[limits]
max_connections_per_ip = $((SESSIONS * 4 + 100))
[storage]
backend = "aws"
[aws]
region = "us-east-1"
endpoint_url = "$ENDPOINT"
dynamodb_endpoint_url = "$DYNAMODB"
force_path_style = true
bucket = "$2"
prefix = "$2"
[pipeline]
run_stages = false
EOF
}

queued() { # CFG: messages on the intake queue
    "$BATON" --config "$1" queue list --json |
        python3 -c 'import json,sys; print(sum(q["visible"] + q["in_flight"] + q["delayed"] for q in json.load(sys.stdin) if q["queue"] == "intake"))'
}

rate() { python3 -c "print(f'{$1 / $2:.0f}')"; }
declare -a GW=() RAWR=()
echo "== AWS-backend accept benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $(nproc) cores; LocalStack $(cat "$ROOT/localstack/.venv/.installed") + DynamoDB Local on this host"
echo "load: smtp-source -s $SESSIONS -m $MESSAGES -l $SIZE (new connection per message), warm-up $WARMUP; raw: $SESSIONS tasks"
for ((r = 1; r <= ROUNDS; r++)); do
    prefix="bench-$r-$RANDOM$RANDOM"
    port=$(free_port)
    write_config "$WORK/baton.toml" "$prefix" "$port"
    "$BATON" --config "$WORK/baton.toml" aws provision >/dev/null
    baton_start "$BATON" "$WORK/baton.toml" "$WORK/serve.log" "$port"
    smtp-source -s "$SESSIONS" -l "$SIZE" -f bench@sender.invalid -t sink@rcpt.invalid -m "$WARMUP" "127.0.0.1:$port" >/dev/null 2>&1 ||
        die "warm-up failed"
    t0=$(now)
    smtp-source -s "$SESSIONS" -l "$SIZE" -f bench@sender.invalid -t sink@rcpt.invalid -m "$MESSAGES" "127.0.0.1:$port" >"$WORK/src.log" 2>&1 ||
        { cat "$WORK/src.log" >&2; die "smtp-source failed"; }
    t1=$(now)
    baton_stop
    n=$(queued "$WORK/baton.toml")
    [[ $n == $((WARMUP + MESSAGES)) ]] || die "intake queue holds $n messages, expected $((WARMUP + MESSAGES))"
    elapsed=$(python3 -c "print($t1 - $t0)")
    g=$(rate "$MESSAGES" "$elapsed")
    GW+=("$g")
    printf 'round %d  gateway  %d msgs in %.3f s = %s msgs/s (intake queue: %d)\n' "$r" "$MESSAGES" "$elapsed" "$g" "$n"

    rprefix="raw-$r-$RANDOM$RANDOM"
    write_config "$WORK/raw.toml" "$rprefix" "$port"
    "$BATON" --config "$WORK/raw.toml" aws provision >/dev/null
    out=$("$RAW" "$ENDPOINT" "$DYNAMODB" "$rprefix" "$SESSIONS" "$MESSAGES" "$SIZE")
    echo "round $r  $out"
    RAWR+=("$(sed -E 's/.* = ([0-9]+) msgs\/s/\1/' <<<"$out")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
g=$(median "${GW[@]}")
w=$(median "${RAWR[@]}")
echo "== result (median of $ROUNDS)"
echo "gateway: $g msgs/s   raw PutObject+SendMessage: $w msgs/s   gateway/raw = $(python3 -c "print(f'{$g / $w:.2f}')")"
rounds() { local IFS=';'; echo "$*"; }
bench_result aws_accept "msgs/s" "$g" "$w" "raw PutObject+SendMessage" higher "$(rounds "${GW[@]}")" "$(rounds "${RAWR[@]}")"
