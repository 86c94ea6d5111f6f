#!/usr/bin/env bash
# Messages relayed per second, from submission to a sink MX, Baton vs Postfix, same run.
# Load: smtp-source (plain SMTP from 127.0.0.1, allow-listed / mynetworks). Sink: Postfix's
# smtp-sink dumping each message to a file, so "delivered" is counted where it arrived.
# Timed: from the start of smtp-source until the sink holds all messages.
# With SIGN=1 (the default) mail is DKIM-signed as users run it, RSA-2048 and Ed25519 (two
# signatures, relaxed/relaxed): Baton signs as tenant "bench" (relay.tenant_networks), and
# Postfix runs twice: plain, and with OpenDKIM as a milter signing with the same two kinds
# of key (the usual signing smarthost). SIGN=0: nobody signs, Postfix runs once.
# Usage: bench/relay.sh   (env: SESSIONS=20 MESSAGES=5000 SIZE=4096 SIGN=1 BENCH_DIR=/var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

SESSIONS=${SESSIONS:-20}
MESSAGES=${MESSAGES:-5000}
SIZE=${SIZE:-4096}
SIGN=${SIGN:-1}
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
    [[ -n $SINK_PID ]] && kill "$SINK_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

start_sink() { # DIR PORT
    mkdir -p "$1"; chmod 777 "$1"
    smtp-sink -u postfix -d "$1/%M." "127.0.0.1:$2" 1000 &
    SINK_PID=$!
    wait_port "$2" 10 || die "smtp-sink did not start"
}

stop_sink() { kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=; }

run_load() { # LABEL PORT SINKDIR -> prints msgs/s
    local label=$1 port=$2 dir=$3 t0 t1 n
    t0=$(now)
    smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f "$SENDER" -t sink@rcpt.invalid "127.0.0.1:$port" \
        || die "$label: smtp-source failed"
    local accepted
    accepted=$(now)
    for ((i = 0; i < 6000; i++)); do
        n=$(find "$dir" -type f | wc -l)
        ((n >= MESSAGES)) && break
        sleep 0.05
    done
    t1=$(now)
    ((n >= MESSAGES)) || die "$label: only $n of $MESSAGES reached the sink"
    python3 -c "import sys; t0,a,t1,m=map(float,sys.argv[1:]); print(f'{m/(t1-t0):.0f} msgs/s relayed ({m/(a-t0):.0f} msgs/s accepted), {t1-t0:.2f} s')" "$t0" "$accepted" "$t1" "$MESSAGES"
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
SINK_PORT=$(free_port)
start_sink "$WORK/sink-baton" "$SINK_PORT"
BPORT=$(free_port)
# Signing: the load's network relays as tenant "bench" (allow_networks would make its mail
# nobody's, never signed).
RELAY_NETWORKS='allow_networks = ["127.0.0.0/8"]'
if [[ $SIGN == 1 ]]; then
    RELAY_NETWORKS=$'[[relay.tenant_networks]]\nnetwork = "127.0.0.0/8"\ntenant = "bench"'
fi
cat >"$WORK/baton.toml" <<EOF
hostname = "baton.bench.localhost"
data_dir = "$WORK/baton-data"
[listen]
submission = ""
submissions = ""
relay = "127.0.0.1:$BPORT"
[relay]
$RELAY_NETWORKS
[limits]
max_connections_per_ip = 1000
[log]
filter = "warn"
[pipeline]
run_stages = true
deliver_workers = 32
[[delivery.routes]]
pattern = "*"
target = "127.0.0.1:$SINK_PORT"
EOF
if [[ $SIGN == 1 ]]; then
    "$BATON" --config "$WORK/baton.toml" domain add sender.test --tenant bench >/dev/null
fi
baton_start "$BATON" "$WORK/baton.toml" "$WORK/baton.log" "$BPORT"
log "baton: relaying $MESSAGES x $SIZE B over $SESSIONS sessions to smtp-sink :$SINK_PORT"
BATON_RESULT=$(run_load baton "$BPORT" "$WORK/sink-baton")
echo "baton:            $BATON_RESULT"
signatures baton "$WORK/sink-baton"
baton_stop
stop_sink

# ---- Postfix: a private instance relaying everything to the same kind of sink; with a
# milter port, OpenDKIM signs on the way in.
# Runs in this shell (not in $(...)), so the EXIT trap stops whatever it started; sets
# PF_RESULT.
run_postfix() { # LABEL [MILTERS]
    local label=$1 milters=${2:-} pdir pport
    SINK_PORT=$(free_port)
    start_sink "$WORK/sink-$label" "$SINK_PORT"
    pport=$(free_port)
    pdir="$WORK/$label"
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
    PF_RESULT=$(run_load "$label" "$pport" "$WORK/sink-$label")
    signatures "$label" "$WORK/sink-$label"
    postfix_stop
    stop_sink
}

run_postfix postfix
POSTFIX_RESULT=$PF_RESULT
echo "postfix:          $POSTFIX_RESULT"
OPENDKIM_RESULT=
if [[ $SIGN == 1 ]]; then
    RSA_PORT=$(free_port)
    opendkim_start "$WORK/opendkim-rsa" "$RSA_PORT" sender.test rsa
    ED_PORT=$(free_port)
    opendkim_start "$WORK/opendkim-ed" "$ED_PORT" sender.test ed
    run_postfix postfix-opendkim "inet:127.0.0.1:$RSA_PORT, inet:127.0.0.1:$ED_PORT"
    OPENDKIM_RESULT=$PF_RESULT
    echo "postfix+opendkim: $OPENDKIM_RESULT"
    opendkim_stop
fi

python3 - "$BATON_RESULT" "$POSTFIX_RESULT" "$OPENDKIM_RESULT" <<'PY'
import sys
b = float(sys.argv[1].split()[0]); p = float(sys.argv[2].split()[0])
print(f"ratio baton/postfix (relayed): {b / p:.2f}")
if sys.argv[3]:
    o = float(sys.argv[3].split()[0])
    print(f"ratio baton/postfix+opendkim (relayed, both signing): {b / o:.2f}")
PY
