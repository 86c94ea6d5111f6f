#!/usr/bin/env bash
# SES v2 API sends per second next to SMTP submissions per second, same relay, same run.
#
# Usage (from the repo root):
#   bench/api.sh [--messages N] [--concurrency N] [--size BYTES] [--rounds N] [--keep]
# or through the environment: MESSAGES=5000 CONCURRENCY=16 SIZE=4096 ROUNDS=3 WARMUP=200
#   BENCH_DIR=/var/tmp BATON_BIN=target/release/baton bench/api.sh
#
# One `baton serve` per round (embedded backend, fresh data dir, accept only:
# pipeline.run_stages = false, as in bench/accept.sh) with the relay listener and the
# API listener (plain HTTP on loopback, api.tls = false) both on 127.0.0.1.
# - SMTP: Postfix's smtp-source, CONCURRENCY sessions, MESSAGES messages of SIZE bytes,
#   connections reused (-d), as an application's mail library with a pool would.
# - API: the AWS SDK for Rust (crates/baton/examples/ses_load.rs): one client, its
#   keep-alive pool, every request SigV4-signed, CONCURRENCY requests in flight, MESSAGES
#   SendEmail calls with SIZE bytes of text (Simple content, built into MIME by Baton).
# Both answer only after the body and the queue entry are durable (fsync). The two loads
# run one after the other against the same relay; the queue must then hold exactly what
# was sent. Reports msgs/s per round, the medians, and API / SMTP.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

MESSAGES=${MESSAGES:-5000}
CONCURRENCY=${CONCURRENCY:-16}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-200}
KEEP=${KEEP:-0}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
SENDER=bench@sender.test
RCPT=sink@rcpt.invalid

while (($#)); do
    case $1 in
        --messages) MESSAGES=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

ensure_tools
BATON=$(baton_bin "$ROOT")
# baton reads BATON_* variables as configuration (BATON_SECTION__KEY): keep ours away from it.
unset BATON_BIN
LOAD="$ROOT/target/release/examples/ses_load"
if [[ ! -x $LOAD || $LOAD -ot $ROOT/crates/baton/examples/ses_load.rs ]]; then
    log "building the API load: cargo build --release -p baton --example ses_load"
    (cd "$ROOT" && cargo build --release -p baton --example ses_load >&2) || die "build failed"
fi

WORK=$(mktemp -d "$BENCH_DIR/baton-api.XXXXXX")
BATON_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    baton_stop
    if [[ $KEEP == 1 ]]; then log "kept work dir $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

declare -a SMTP_RATES=() API_RATES=() SMTP_CPU=() API_CPU=() SMTP_CLIENT=() API_CLIENT=()
# The load generator's CPU per message (user + system), in ms.
client_ms() { python3 -c "import sys; u, s = open(sys.argv[1]).read().split()[-2:]; print(f'{(float(u) + float(s)) * 1000 / $MESSAGES:.3f}')" "$WORK/client.cpu"; }
# Server CPU per message during one load, in ms.
cpu_ms() { python3 -c "print(f'{($2 - $1) * 1000 / $(getconf CLK_TCK) / $MESSAGES:.3f}')"; }
rate() { python3 -c "print(f'{$1 / $2:.0f}')"; }
median_f() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# api_load PORT COUNT: ses_load's elapsed seconds; dies unless all COUNT were accepted.
api_load() {
    local out
    out=$(BATON_API="http://127.0.0.1:$1" AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET \
        AWS_EC2_METADATA_DISABLED=true /usr/bin/time -f "%U %S" -o "$WORK/client.cpu" \
        "$LOAD" "$SENDER" "$RCPT" "$2" "$CONCURRENCY" "$SIZE" 2>"$WORK/load.err") \
        || { head -n 20 "$WORK/load.err" >&2; die "ses_load failed"; }
    [[ $out == "sent $2 of $2 in "* ]] || { head -n 20 "$WORK/load.err" >&2; die "ses_load: $out"; }
    awk '{print $(NF-1)}' <<<"$out"
}

smtp_load() {
    local t0 t1
    t0=$(now)
    /usr/bin/time -f "%U %S" -o "$WORK/client.cpu" \
        smtp-source -s "$CONCURRENCY" -d -l "$SIZE" -f "$SENDER" -t "$RCPT" -M client.bench.localhost \
        -S bench -m "$2" "127.0.0.1:$1" >"$WORK/smtp-source.log" 2>&1 \
        || { cat "$WORK/smtp-source.log" >&2; die "smtp-source failed"; }
    t1=$(now)
    python3 -c "print(f'{$t1 - $t0:.3f}')"
}

round() {
    local r=$1 dir="$WORK/round.$1" port api cfg elapsed count
    port=$(free_port); api=$(free_port)
    mkdir -p "$dir"; cfg="$dir/baton.toml"
    baton_write_config "$cfg" "$dir/data" "$port" $((CONCURRENCY * 4 + 100))
    python3 - "$cfg" "$api" <<'PY'
import sys
path, port = sys.argv[1], sys.argv[2]
text = open(path).read().replace('relay       = ', f'api = "127.0.0.1:{port}"\nrelay       = ')
open(path, "w").write(text + '\n[api]\ntls = false\n')
PY
    "$BATON" --config "$cfg" domain add sender.test --tenant bench >/dev/null
    local keys; keys=$("$BATON" --config "$cfg" key create --tenant bench)
    KEY_ID=$(awk '/aws_access_key_id/ {print $3}' <<<"$keys")
    SECRET=$(awk '/aws_secret_access_key/ {print $3}' <<<"$keys")
    baton_start "$BATON" "$cfg" "$dir/serve.log" "$port"
    wait_port "$api" 30 || die "the API did not listen on 127.0.0.1:$api"
    api_load "$api" "$WARMUP" >/dev/null
    smtp-source -s 4 -d -l "$SIZE" -f "$SENDER" -t "$RCPT" -m "$WARMUP" "127.0.0.1:$port" >/dev/null 2>&1
    # Alternate which goes first, so neither always meets a fuller data dir.
    local first=smtp second=api
    ((r % 2 == 0)) && { first=api; second=smtp; }
    local c0 c1
    for kind in $first $second; do
        c0=$(cpu_ticks "$BATON_PID")
        if [[ $kind == smtp ]]; then
            elapsed=$(smtp_load "$port" "$MESSAGES"); SMTP_RATES+=("$(rate "$MESSAGES" "$elapsed")")
            c1=$(cpu_ticks "$BATON_PID"); SMTP_CPU+=("$(cpu_ms "$c0" "$c1")"); SMTP_CLIENT+=("$(client_ms)")
            printf 'round %d  smtp  %6d msgs in %8.3f s = %6s msgs/s   server CPU %s ms/msg, client %s ms/msg\n' "$r" "$MESSAGES" "$elapsed" "${SMTP_RATES[-1]}" "${SMTP_CPU[-1]}" "${SMTP_CLIENT[-1]}"
        else
            elapsed=$(api_load "$api" "$MESSAGES"); API_RATES+=("$(rate "$MESSAGES" "$elapsed")")
            c1=$(cpu_ticks "$BATON_PID"); API_CPU+=("$(cpu_ms "$c0" "$c1")"); API_CLIENT+=("$(client_ms)")
            printf 'round %d  api   %6d msgs in %8.3f s = %6s msgs/s   server CPU %s ms/msg, client %s ms/msg\n' "$r" "$MESSAGES" "$elapsed" "${API_RATES[-1]}" "${API_CPU[-1]}" "${API_CLIENT[-1]}"
        fi
    done
    count=$(baton_count "$BATON" "$cfg")
    baton_stop
    local expect=$((2 * (WARMUP + MESSAGES)))
    [[ $count == "$expect" ]] || die "the queue holds $count messages, expected $expect"
    [[ $KEEP == 1 ]] || rm -rf "$dir"
}

echo "== API vs SMTP accept benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load: $MESSAGES messages of $SIZE bytes, $CONCURRENCY at a time, warm-up $WARMUP, rounds $ROUNDS"
for ((r = 1; r <= ROUNDS; r++)); do round "$r"; done
S=$(median "${SMTP_RATES[@]}"); A=$(median "${API_RATES[@]}")
echo "== result (median of $ROUNDS round(s))"
echo "smtp (smtp-source -d):      $S msgs/s   rounds: ${SMTP_RATES[*]}"
echo "api  (aws-sdk-sesv2, SigV4): $A msgs/s   rounds: ${API_RATES[*]}"
echo "ratio api / smtp: $(python3 -c "print(f'{$A / $S:.2f}')")x"
echo "server CPU per message (median): smtp $(median_f "${SMTP_CPU[@]}") ms, api $(median_f "${API_CPU[@]}") ms"
echo "client CPU per message (median): smtp-source $(median_f "${SMTP_CLIENT[@]}") ms, aws-sdk-sesv2 $(median_f "${API_CLIENT[@]}") ms"
echo "(client and server share this machine's $(nproc) cores)"
rounds() { local IFS=';'; echo "$*"; }
bench_result api_send msgs/s "$A" "$S" smtp higher "$(rounds "${API_RATES[@]}")" "$(rounds "${SMTP_RATES[@]}")"
bench_result api_server_cpu ms/msg "$(median_f "${API_CPU[@]}")" "$(median_f "${SMTP_CPU[@]}")" smtp lower \
    "$(rounds "${API_CPU[@]}")" "$(rounds "${SMTP_CPU[@]}")"
