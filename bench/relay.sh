#!/usr/bin/env bash
# Messages relayed per second, from submission to a sink MX, Baton vs Postfix, same run.
# Load: smtp-source (plain SMTP from 127.0.0.1, allow-listed / mynetworks). Sink: Postfix's
# smtp-sink dumping each message to a file, so "delivered" is counted where it arrived.
# Timed: from the start of smtp-source until the sink holds all messages.
# With SIGN=1 (the default) mail is DKIM-signed as users run it, RSA-2048 and Ed25519 (two
# signatures, relaxed/relaxed): Baton signs as tenant "bench" (relay.tenant_networks), and
# Postfix runs twice: plain, and with OpenDKIM as a milter signing with the same two kinds
# of key (the usual signing smarthost). SIGN=0: nobody signs, Postfix runs once.
# Usage: bench/relay.sh   (env: SESSIONS=20 MESSAGES=5000 SIZE=4096 SIGN=1 ROUNDS=3 WARMUP=200
#        FUSED=true BENCH_DIR=/var/tmp). Each round runs Baton, Postfix, Postfix+OpenDKIM in turn
#        with fresh queues; medians are reported, and the server CPU per message.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

SESSIONS=${SESSIONS:-20}
MESSAGES=${MESSAGES:-5000}
SIZE=${SIZE:-4096}
SIGN=${SIGN:-1}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-200}
# FUSED=false: Baton's per-stage pipeline (a queue per stage) instead of the fused path.
FUSED=${FUSED:-true}
SENDER=bench@sender.test
BENCH_DIR=${BENCH_DIR:-/var/tmp}
ensure_tools
BATON=$(baton_bin "$PWD")
# baton reads BATON_* variables as configuration: keep the bench's own away from it.
unset BATON_BIN
WORK=$(mktemp -d "$BENCH_DIR/baton-relay.XXXXXX")
chmod 755 "$WORK"
SINK_PID=
OPENDKIM_PIDS=()
cleanup() {
    baton_stop || true
    postfix_stop || true
    opendkim_stop || true
    stop_sink
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM


# run_load LABEL PORT SINKDIR PID...: a warm-up of WARMUP messages (relayed before the
# clock starts), then MESSAGES timed from smtp-source's start until the sink has them all.
# Prints "<relayed msgs/s> <accepted msgs/s> <server CPU ms per message> <seconds>"; the CPU
# is that of the PIDs given (and their children) during the timed part.
run_load() {
    local label=$1 port=$2 dir=$3
    shift 3
    if ((WARMUP > 0)); then
        smtp-source -s "$SESSIONS" -m "$WARMUP" -l "$SIZE" -f "$SENDER" -t sink@rcpt.invalid "127.0.0.1:$port" \
            || die "$label: smtp-source (warm-up) failed"
        wait_sink_files "$label" "$dir" "$WARMUP"
    fi
    local c0=0 c1=0 pid t0 accepted t1
    for pid in "$@"; do c0=$((c0 + $(cpu_ticks "$pid"))); done
    t0=$(now)
    smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f "$SENDER" -t sink@rcpt.invalid "127.0.0.1:$port" \
        || die "$label: smtp-source failed"
    accepted=$(now)
    wait_sink_files "$label" "$dir" $((WARMUP + MESSAGES))
    t1=$(now)
    for pid in "$@"; do c1=$((c1 + $(cpu_ticks "$pid"))); done
    python3 -c "import sys,os; t0,a,t1,m,c=map(float,sys.argv[1:]); hz=os.sysconf('SC_CLK_TCK'); print(f'{m/(t1-t0):.0f} {m/(a-t0):.0f} {c/hz*1000/m:.3f} {t1-t0:.2f}')" \
        "$t0" "$accepted" "$t1" "$MESSAGES" $((c1 - c0))
}

# signatures LABEL DIR: the DKIM signature algorithms in one message at the sink, so the
# output shows that each side signed as configured.
signatures() {
    local f
    f=$(find "$2" -type f -print -quit)
    [[ -n $f ]] || return 0
    log "$1 signed with: $(grep -o 'a=[a-z0-9-]*;' "$f" | tr -d ';' | sort | tr '\n' ' ')"
}

# ---- Baton
run_baton() { # ROUND: sets BATON_RESULT
    local r=$1 bport
    start_sink "$WORK/sink-baton-$r"
    bport=$(free_port)
    baton_relay_config "$WORK/baton-$r.toml" "$WORK/baton-data-$r" "$bport" "$SINK_PORT" \
        "$RELAY_NETWORKS" "$FUSED" 32
    if [[ $SIGN == 1 ]]; then
        "$BATON" --config "$WORK/baton-$r.toml" domain add sender.test --tenant bench >/dev/null
    fi
    baton_start "$BATON" "$WORK/baton-$r.toml" "$WORK/baton-$r.log" "$bport"
    log "baton (round $r, fused=$FUSED): relaying $MESSAGES x $SIZE B over $SESSIONS sessions to smtp-sink :$SINK_PORT"
    BATON_RESULT=$(run_load baton "$bport" "$WORK/sink-baton-$r" "$BATON_PID")
    signatures baton "$WORK/sink-baton-$r"
    baton_stop
    stop_sink
    rm -rf "$WORK/sink-baton-$r" "$WORK/baton-data-$r"
}
# Signing: the load's network relays as tenant "bench" (allow_networks would make its mail
# nobody's, never signed).
RELAY_NETWORKS='allow_networks = ["127.0.0.0/8"]'
if [[ $SIGN == 1 ]]; then
    RELAY_NETWORKS=$'[[relay.tenant_networks]]\nnetwork = "127.0.0.0/8"\ntenant = "bench"'
fi

# ---- Postfix: a private instance relaying everything to the same kind of sink; with a
# milter port, OpenDKIM signs on the way in.
# Runs in this shell (not in $(...)), so the EXIT trap stops whatever it started; sets
# PF_RESULT.
run_postfix() { # LABEL ROUND [MILTERS]
    local label=$1 r=$2 milters=${3:-} pdir pport
    start_sink "$WORK/sink-$label-$r"
    pport=$(free_port)
    pdir="$WORK/$label-$r"
    postfix_setup "$pdir" "$pport"
    # Turn accept.sh's hold-everything instance into a relay: no HOLD, no deferred
    # transports, everything to the sink. Connection caching to the relayhost stays on.
    postconf -c "$pdir/etc" -e "smtpd_client_restrictions =" "defer_transports =" \
        "relayhost = [127.0.0.1]:$SINK_PORT"
    if [[ -n $milters ]]; then
        postconf -c "$pdir/etc" -e "smtpd_milters = $milters" "milter_default_action = tempfail"
    fi
    printf '%s\n' "smtp      unix  -       -       n       -       -       smtp" \
        "relay     unix  -       -       n       -       -       smtp" >>"$pdir/etc/master.cf"
    postfix_start "$pdir"
    wait_port "$pport" 30 || die "postfix did not listen"
    log "$label: relaying $MESSAGES x $SIZE B over $SESSIONS sessions to smtp-sink :$SINK_PORT"
    # The CPU of master and its children (smtpd, cleanup, qmgr, smtp), and of OpenDKIM.
    PF_RESULT=$(run_load "$label" "$pport" "$WORK/sink-$label-$r" "$(postfix_master_pid "$pdir")" "${OPENDKIM_PIDS[@]}")
    signatures "$label" "$WORK/sink-$label-$r"
    postfix_stop
    stop_sink
    rm -rf "$WORK/sink-$label-$r" "$pdir"
}

B_RUNS=() P_RUNS=() O_RUNS=()
for ((round = 1; round <= ROUNDS; round++)); do
    run_baton "$round"
    echo "round $round baton:            $BATON_RESULT"
    B_RUNS+=("$BATON_RESULT")
    run_postfix postfix "$round"
    echo "round $round postfix:          $PF_RESULT"
    P_RUNS+=("$PF_RESULT")
    if [[ $SIGN == 1 ]]; then
        RSA_PORT=$(free_port)
        opendkim_start "$WORK/opendkim-rsa-$round" "$RSA_PORT" sender.test rsa
        ED_PORT=$(free_port)
        opendkim_start "$WORK/opendkim-ed-$round" "$ED_PORT" sender.test ed
        run_postfix postfix-opendkim "$round" "inet:127.0.0.1:$RSA_PORT, inet:127.0.0.1:$ED_PORT"
        echo "round $round postfix+opendkim: $PF_RESULT"
        O_RUNS+=("$PF_RESULT")
        opendkim_stop
    fi
done
echo "(each: relayed msgs/s, accepted msgs/s, server CPU ms/msg, seconds)"

# Medians and ratios; RESULT lines for bench/run-all.sh.
join_runs() { local IFS=' '; local r out=(); for r in "$@"; do out+=("${r// /,}"); done; echo "${out[*]}"; }
SUMMARY=$(python3 - "$SIGN" "$(join_runs "${B_RUNS[@]}")" "$(join_runs "${P_RUNS[@]}")" "$(join_runs "${O_RUNS[@]}")" <<'PYEND'
import statistics, sys
sign = sys.argv[1] == "1"
def runs(arg):
    return [list(map(float, r.split(","))) for r in arg.split()] if arg else []
b, p, o = runs(sys.argv[2]), runs(sys.argv[3]), runs(sys.argv[4])
def med(rs, i): return statistics.median(r[i] for r in rs)
def rounds(rs, i): return ";".join(f"{r[i]:g}" for r in rs)
print(f"median relayed msgs/s: baton {med(b,0):.0f}, postfix {med(p,0):.0f}" + (f", postfix+opendkim {med(o,0):.0f}" if o else ""))
print(f"ratio baton/postfix (relayed): {med(b,0)/med(p,0):.2f}")
if o:
    print(f"ratio baton/postfix+opendkim (relayed, both signing): {med(b,0)/med(o,0):.2f}")
print(f"median server CPU ms/msg: baton {med(b,2):.3f}, postfix {med(p,2):.3f}" + (f", postfix+opendkim {med(o,2):.3f}" if o else ""))
tag = "signed" if sign else "unsigned"
out = [("relay_" + tag + "_msgs_per_s", "msgs/s", 0, "higher"), ("relay_" + tag + "_cpu_ms_per_msg", "ms/msg", 2, "lower")]
for metric, unit, i, better in out:
    print(f"RESULTLINE {metric} {unit} {med(b,i):g} {med(p,i):g} postfix {better} {rounds(b,i)} {rounds(p,i)}")
    if o:
        print(f"RESULTLINE {metric}_vs_opendkim {unit} {med(b,i):g} {med(o,i):g} postfix+opendkim {better} {rounds(b,i)} {rounds(o,i)}")
PYEND
)
grep -v '^RESULTLINE' <<<"$SUMMARY"
while read -r _ metric unit bv ov oname better br orr; do
    bench_result "$metric" "$unit" "$bv" "$ov" "$oname" "$better" "$br" "$orr"
done < <(grep '^RESULTLINE' <<<"$SUMMARY")
