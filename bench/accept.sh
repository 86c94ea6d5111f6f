#!/usr/bin/env bash
# Accept throughput: Baton vs. Postfix, same load, same filesystem, both durable.
#
# Usage (from the repo root):
#   bench/accept.sh [--sessions N] [--messages N] [--size BYTES] [--rounds N]
#                   [--only baton|postfix|both] [--reuse] [--keep]
#                   [--pipeline | --no-pipeline]
# or the same through the environment:
#   SESSIONS=50 MESSAGES=20000 SIZE=4096 ROUNDS=1 ONLY=both REUSE=0 KEEP=0 PIPELINE=1 \
#   WARMUP=200 BENCH_DIR=/var/tmp BATON_BIN=target/release/baton bench/accept.sh
#
# Load: Postfix's smtp-source, SESSIONS parallel sessions sending MESSAGES
# messages of SIZE bytes of body, one recipient each. By default every message
# uses its own connection (smtp-source's default); --reuse (-d) keeps the
# connection open for the next message.
#
# Baton: target/release/baton --config CFG serve, fresh data dir, relay listener
# on 127.0.0.1:<free port>, allow_networks = ["127.0.0.0/8"],
# max_connections_per_ip raised. Its 250 comes after body + queue row are fsynced.
#
# Postfix: a private instance (postfix -c DIR, own config/queue/data dirs in
# the same work dir), smtpd on 127.0.0.1:<free port>, mynetworks 127.0.0.0/8.
# Every message is accepted with an access HOLD action, so cleanup writes and
# fsyncs the queue file (Postfix default) and files it in the hold queue, which
# nothing delivers. The system Postfix (if any) is neither used nor touched.
#
# --pipeline (the default): both servers also relay what they accept, as deployed.
# Baton runs its pipeline (pipeline.run_stages = true, the default: policy, sign,
# deliver) with one delivery route, "*" -> a Postfix smtp-sink on 127.0.0.1; Postfix
# drops the HOLD and relays through its queue manager and smtp client to its own
# smtp-sink (relayhost). The timed window is still smtp-source's run, so the rate
# is "accepted per second while relaying"; afterwards the sink must receive exactly
# WARMUP + MESSAGES messages, and the server CPU until then is reported too
# ("accept + relay" per message). --no-pipeline: accept only (Baton
# pipeline.run_stages = false, Postfix HOLD), the queue must hold WARMUP + MESSAGES.
#
# Both servers run one after the other (never together), each round with fresh
# queues. The wall time of smtp-source is measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

SESSIONS=${SESSIONS:-50}
MESSAGES=${MESSAGES:-20000}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-1}
ONLY=${ONLY:-both}
REUSE=${REUSE:-0}
KEEP=${KEEP:-0}
WARMUP=${WARMUP:-200}
PIPELINE=${PIPELINE:-1}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-900}   # --pipeline: seconds to wait for the sink to get everything
BENCH_DIR=${BENCH_DIR:-/var/tmp}
SENDER=${SENDER:-bench@sender.invalid}
# .invalid never resolves (RFC 2606): should anything ever try to deliver,
# it cannot reach any host.
RCPT=${RCPT:-sink@rcpt.invalid}

while (($#)); do
    case $1 in
        --sessions) SESSIONS=$2; shift 2 ;;
        --messages) MESSAGES=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --reuse) REUSE=1; shift ;;
        --pipeline) PIPELINE=1; shift ;;
        --no-pipeline) PIPELINE=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
case $ONLY in baton|postfix|both) ;; *) die "--only must be baton, postfix or both" ;; esac

ensure_tools
# baton reads BATON_* variables as configuration (BATON_SECTION__KEY): keep ours away from it.
BATON_BIN_ARG=${BATON_BIN:-}
unset BATON_BIN
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

WORK=$(mktemp -d "$BENCH_DIR/baton-accept.XXXXXX")
chmod 755 "$WORK"
BATON_PID=
POSTFIX_DIR=
SRC_PID=
SINK_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n ${SRC_PID:-} ]] && kill "$SRC_PID" 2>/dev/null || true
    baton_stop
    postfix_stop
    stop_sink
    if [[ $KEEP == 1 ]]; then log "kept work dir $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SRC_OPTS=(-s "$SESSIONS" -l "$SIZE" -f "$SENDER" -t "$RCPT" -M client.bench.localhost -S "bench")
[[ $REUSE == 1 ]] && SRC_OPTS+=(-d)

# run_load PORT OUTPREFIX SERVER_PID: warm-up, then the timed run. Sets ELAPSED
# and CPU (server CPU seconds during the timed run, all its processes).
run_load() {
    local port=$1 out=$2 spid=$3 t0 t1 rc c0 c1
    if ((WARMUP > 0)); then
        smtp-source "${SRC_OPTS[@]}" -m "$WARMUP" "127.0.0.1:$port" >"$out.warmup.log" 2>&1 \
            || { cat "$out.warmup.log" >&2; die "smtp-source warm-up failed against port $port"; }
    fi
    c0=$(cpu_ticks "$spid")
    C0=$c0
    t0=$(now)
    set +e
    smtp-source "${SRC_OPTS[@]}" -m "$MESSAGES" "127.0.0.1:$port" >"$out.log" 2>&1 &
    SRC_PID=$!
    wait "$SRC_PID"; rc=$?
    set -e
    SRC_PID=
    t1=$(now)
    c1=$(cpu_ticks "$spid")
    CPU=$(python3 -c "print(f'{($c1 - $c0) / $(getconf CLK_TCK):.2f}')")
    ELAPSED=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
    if ((rc != 0)) || [[ -s $out.log ]]; then
        log "smtp-source exit=$rc, output:"
        head -n 20 "$out.log" >&2
        ((rc == 0)) || die "smtp-source failed (see above)"
    fi
}

# wait_sink DIR COUNT: until DIR holds COUNT messages (or DRAIN_TIMEOUT); prints the count.
wait_sink() {
    local n=0 i
    for ((i = 0; i < DRAIN_TIMEOUT * 4; i++)); do
        n=$(find "$1" -type f | wc -l)
        ((n >= $2)) && break
        sleep 0.25
    done
    echo "$n"
}
# drained SERVER_PID SINKDIR: waits for the sink to hold WARMUP + MESSAGES; sets COUNT and
# CPU_ALL (server CPU seconds from the start of the timed run until the last arrived).
drained() {
    COUNT=$(wait_sink "$2" $((WARMUP + MESSAGES)))
    CPU_ALL=$(python3 -c "print(f'{($(cpu_ticks "$1") - $C0) / $(getconf CLK_TCK):.2f}')")
}

rate() { python3 -c "print(f'{$1 / $2:.0f}')"; }
cpu_ms() { python3 -c "print(f'{$1 * 1000 / $MESSAGES:.3f}')"; }

declare -a PF_RATES=() BT_RATES=() PF_CPU=() BT_CPU=() PF_CPU_ALL=() BT_CPU_ALL=()
PF_FS="" BT_FS="" BATON=""

bench_postfix() {
    local r=$1 dir="$WORK/postfix.$1" port count
    port=$(free_port)
    postfix_setup "$dir" "$port"
    if [[ $PIPELINE == 1 ]]; then
        # Relay everything to the sink instead of holding it (as bench/relay.sh does).
        start_sink "$dir/sink"
        postconf -c "$dir/etc" -e "smtpd_client_restrictions =" "defer_transports =" \
            "relayhost = [127.0.0.1]:$SINK_PORT"
        printf '%s\n' "smtp      unix  -       -       n       -       -       smtp" \
            "relay     unix  -       -       n       -       -       smtp" >>"$dir/etc/master.cf"
    fi
    postfix_start "$dir"
    wait_port "$port" 30 || die "postfix smtpd did not listen on 127.0.0.1:$port"
    log "round $r: postfix on 127.0.0.1:$port, queue $dir/queue$([[ $PIPELINE == 1 ]] && echo ", relaying to smtp-sink :$SINK_PORT")"
    local master; master=$(tr -dc 0-9 <"$dir/queue/pid/master.pid")
    run_load "$port" "$WORK/postfix.$r.smtp-source" "$master"
    local expect=$((WARMUP + MESSAGES)) what
    if [[ $PIPELINE == 1 ]]; then
        drained "$master" "$dir/sink"
        count=$COUNT; what="relayed to the sink"
        PF_CPU_ALL+=("$(cpu_ms "$CPU_ALL")")
    else
        sleep 0.5   # let the last cleanup finish its rename
        count=$(postfix_count "$dir"); what="queue count"
        local delivered; delivered=$(postfix_delivered "$dir")
        [[ ${delivered:-0} == 0 ]] || { postfix_stop; die "postfix attempted $delivered deliveries"; }
    fi
    PF_FS=$(df -T "$dir/queue" | awk 'NR==2 {print $1" "$2" "$7}')
    postfix_stop
    stop_sink
    [[ $count == "$expect" ]] || die "postfix: $what $count messages, expected $expect"
    local r_
    r_=$(rate "$MESSAGES" "$ELAPSED")
    PF_RATES+=("$r_")
    PF_CPU+=("$(cpu_ms "$CPU")")
    printf 'round %d  postfix  %6d msgs in %8.3f s = %6s msgs/s   server CPU %7.2f s = %s ms/msg   (%s %d = %d warm-up + %d)%s\n' \
        "$r" "$MESSAGES" "$ELAPSED" "$r_" "$CPU" "$(cpu_ms "$CPU")" "$what" "$count" "$WARMUP" "$MESSAGES" \
        "$([[ $PIPELINE == 1 ]] && echo "; accept + relay CPU ${PF_CPU_ALL[-1]} ms/msg")"
    [[ $KEEP == 1 ]] || rm -rf "$dir"
}

bench_baton() {
    local r=$1 dir="$WORK/baton.$1" port count
    port=$(free_port)
    mkdir -p "$dir"
    baton_write_config "$dir/baton.toml" "$dir/data" "$port" $((SESSIONS * 4 + 100))
    if [[ $PIPELINE == 1 ]]; then
        # The pipeline runs (the default) and delivers everything to the sink.
        start_sink "$dir/sink"
        python3 - "$dir/baton.toml" "$SINK_PORT" <<'PY'
import sys
path, port = sys.argv[1], sys.argv[2]
text = open(path).read()
assert "run_stages = false" in text
text = text.replace("run_stages = false", "run_stages = true")
text += f'\n[[delivery.routes]]\npattern = "*"\ntarget = "127.0.0.1:{port}"\n'
open(path, "w").write(text)
PY
    fi
    log "round $r: baton on 127.0.0.1:$port, data dir $dir/data$([[ $PIPELINE == 1 ]] && echo ", pipeline relaying to smtp-sink :$SINK_PORT")"
    baton_start "$BATON" "$dir/baton.toml" "$dir/serve.log" "$port"
    run_load "$port" "$WORK/baton.$r.smtp-source" "$BATON_PID"
    local expect=$((WARMUP + MESSAGES)) what
    if [[ $PIPELINE == 1 ]]; then
        drained "$BATON_PID" "$dir/sink"
        count=$COUNT; what="relayed to the sink"
        BT_CPU_ALL+=("$(cpu_ms "$CPU_ALL")")
    else
        count=$(baton_count_from "$BATON" "$dir/baton.toml" "$SENDER") || count=""
        what="queue count"
    fi
    BT_FS=$(df -T "$dir/data" | awk 'NR==2 {print $1" "$2" "$7}')
    baton_stop
    stop_sink
    [[ -n $count ]] || count=$(baton_count_from "$BATON" "$dir/baton.toml" "$SENDER")
    if [[ $count != "$expect" ]]; then
        grep -iE 'error|warn' "$dir/serve.log" | head -n 20 >&2 || true
        die "baton: $what $count messages from $SENDER, expected $expect"
    fi
    # (the self-signed certificate notice at start is expected: no cert is configured)
    if grep -E '\b(ERROR|WARN)\b' "$dir/serve.log" | grep -qv 'self-signed'; then
        log "baton logged warnings/errors during the run:"
        grep -E '\b(ERROR|WARN)\b' "$dir/serve.log" | grep -v 'self-signed' | head -n 10 >&2
    fi
    local r_
    r_=$(rate "$MESSAGES" "$ELAPSED")
    BT_RATES+=("$r_")
    BT_CPU+=("$(cpu_ms "$CPU")")
    printf 'round %d  baton    %6d msgs in %8.3f s = %6s msgs/s   server CPU %7.2f s = %s ms/msg   (%s %d = %d warm-up + %d)%s\n' \
        "$r" "$MESSAGES" "$ELAPSED" "$r_" "$CPU" "$(cpu_ms "$CPU")" "$what" "$count" "$WARMUP" "$MESSAGES" \
        "$([[ $PIPELINE == 1 ]] && echo "; accept + relay CPU ${BT_CPU_ALL[-1]} ms/msg")"
    [[ $KEEP == 1 ]] || rm -rf "$dir"
}

# baton_count_from BIN CFG SENDER: queued messages (any state) from SENDER;
# bounces (null sender) the relay might generate are not counted.
baton_count_from() {
    "$1" --config "$2" queue list --json \
        | python3 -c 'import json,sys; s=sys.argv[1]; print(sum(1 for m in json.load(sys.stdin) if m.get("from")==s))' "$3"
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }

if [[ $ONLY != postfix ]]; then BATON=$(BATON_BIN=$BATON_BIN_ARG baton_bin "$ROOT"); fi

echo "== accept benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load: smtp-source -s $SESSIONS -m $MESSAGES -l $SIZE$([[ $REUSE == 1 ]] && echo ' -d (connection reuse)' || echo ' (new connection per message)'), warm-up $WARMUP, rounds $ROUNDS"
if [[ $PIPELINE == 1 ]]; then
    echo "mode: --pipeline: both relay what they accept to an smtp-sink (Baton: pipeline.run_stages = true, route * -> sink; Postfix: relayhost = sink)"
else
    echo "mode: --no-pipeline: accept only (Baton: pipeline.run_stages = false; Postfix: HOLD)"
fi
echo "postfix: $(postconf -d -h mail_version 2>/dev/null); baton: ${BATON:-n/a}"
for ((r = 1; r <= ROUNDS; r++)); do
    [[ $ONLY == baton ]] || bench_postfix "$r"
    [[ $ONLY == postfix ]] || bench_baton "$r"
done

echo "== result (median of $ROUNDS round(s))"
echo "fsync: both acknowledge with 250 only after the message is fsynced (Postfix default; Baton by design)"
[[ -n $PF_FS ]] && echo "postfix queue filesystem: $PF_FS"
[[ -n $BT_FS ]] && echo "baton   data  filesystem: $BT_FS"
PF=""; BT=""
((${#PF_RATES[@]})) && { PF=$(median "${PF_RATES[@]}"); echo "postfix: $PF msgs/s  (rounds: ${PF_RATES[*]}); server CPU ms/msg: ${PF_CPU[*]}"; }
((${#BT_RATES[@]})) && { BT=$(median "${BT_RATES[@]}"); echo "baton:   $BT msgs/s  (rounds: ${BT_RATES[*]}); server CPU ms/msg: ${BT_CPU[*]}"; }
if [[ -n $PF && -n $BT ]]; then
    per_round=$(python3 -c "
import statistics
b=[$(IFS=,; echo "${BT_RATES[*]}")]; p=[$(IFS=,; echo "${PF_RATES[*]}")]
r=[x/y for x,y in zip(b,p)]
print(' '.join(f'{x:.2f}' for x in r), '; median', f'{statistics.median(r):.2f}')")
    echo "ratio baton/postfix: $(python3 -c "print(f'{$BT / $PF:.2f}')") (of the medians; per round: $per_round)"
fi

# Server CPU per message: medians, and the RESULT lines for bench/run-all.sh's CSV.
median_f() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
rounds() { local IFS=';'; echo "$*"; }
TAG=""
[[ $REUSE == 1 ]] && TAG+="_reuse"
[[ $PIPELINE == 1 ]] || TAG+="_no_pipeline"
PFC=""; BTC=""; PFA=""; BTA=""
((${#PF_CPU[@]})) && PFC=$(median_f "${PF_CPU[@]}")
((${#BT_CPU[@]})) && BTC=$(median_f "${BT_CPU[@]}")
((${#PF_CPU_ALL[@]})) && PFA=$(median_f "${PF_CPU_ALL[@]}")
((${#BT_CPU_ALL[@]})) && BTA=$(median_f "${BT_CPU_ALL[@]}")
if [[ -n $PFC && -n $BTC ]]; then
    echo "server CPU per message while accepting (median): postfix $PFC ms, baton $BTC ms = $(python3 -c "print(f'{$PFC / max($BTC, 1e-9):.1f}')")x less"
fi
if [[ -n $PFA && -n $BTA ]]; then
    echo "server CPU per message, accept + relay until the sink had all (median): postfix $PFA ms (rounds: ${PF_CPU_ALL[*]}), baton $BTA ms (rounds: ${BT_CPU_ALL[*]}) = $(python3 -c "print(f'{$PFA / max($BTA, 1e-9):.1f}')")x less"
fi
if [[ $ONLY == both ]]; then
    bench_result "accept$TAG" msgs/s "$BT" "$PF" postfix higher "$(rounds "${BT_RATES[@]}")" "$(rounds "${PF_RATES[@]}")"
    bench_result "accept_cpu$TAG" ms/msg "$BTC" "$PFC" postfix lower "$(rounds "${BT_CPU[@]}")" "$(rounds "${PF_CPU[@]}")"
    if [[ $PIPELINE == 1 ]]; then
        bench_result "accept_relay_cpu$TAG" ms/msg "$BTA" "$PFA" postfix lower "$(rounds "${BT_CPU_ALL[@]}")" "$(rounds "${PF_CPU_ALL[@]}")"
    fi
fi
