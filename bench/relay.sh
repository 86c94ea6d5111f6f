#!/usr/bin/env bash
# Messages relayed per second, from submission to a sink MX, Baton vs Postfix, same run.
# Load: smtp-source (plain SMTP from 127.0.0.1, allow-listed / mynetworks). Sink: Postfix's
# smtp-sink dumping each message to a file, so "delivered" is counted where it arrived.
# Timed: from the start of smtp-source until the sink holds all messages.
# Usage: bench/relay.sh   (env: SESSIONS=20 MESSAGES=5000 SIZE=4096 BENCH_DIR=/var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

SESSIONS=${SESSIONS:-20}
MESSAGES=${MESSAGES:-5000}
SIZE=${SIZE:-4096}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
ensure_tools
BATON=$(baton_bin "$PWD")
WORK=$(mktemp -d "$BENCH_DIR/baton-relay.XXXXXX")
chmod 755 "$WORK"
SINK_PID=
cleanup() {
    baton_stop || true
    postfix_stop || true
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
    smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@sender.invalid -t sink@rcpt.invalid "127.0.0.1:$port"
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

# ---- Baton
SINK_PORT=$(free_port)
start_sink "$WORK/sink-baton" "$SINK_PORT"
BPORT=$(free_port)
cat >"$WORK/baton.toml" <<EOF
hostname = "baton.bench.localhost"
data_dir = "$WORK/baton-data"
[listen]
submission = ""
submissions = ""
relay = "127.0.0.1:$BPORT"
[relay]
allow_networks = ["127.0.0.0/8"]
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
baton_start "$BATON" "$WORK/baton.toml" "$WORK/baton.log" "$BPORT"
log "baton: relaying $MESSAGES x $SIZE B over $SESSIONS sessions to smtp-sink :$SINK_PORT"
BATON_RESULT=$(run_load baton "$BPORT" "$WORK/sink-baton")
echo "baton:   $BATON_RESULT"
baton_stop
stop_sink

# ---- Postfix: a private instance relaying everything to the same kind of sink.
SINK_PORT=$(free_port)
start_sink "$WORK/sink-postfix" "$SINK_PORT"
PPORT=$(free_port)
PDIR="$WORK/postfix"
postfix_setup "$PDIR" "$PPORT"
# Turn accept.sh's hold-everything instance into a relay: no HOLD, no deferred transports,
# everything to the sink. Connection caching to the relayhost stays on (Postfix's default).
cat >>"$PDIR/etc/main.cf" <<EOF
smtpd_client_restrictions =
defer_transports =
relayhost = [127.0.0.1]:$SINK_PORT
EOF
cat >>"$PDIR/etc/master.cf" <<EOF
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
EOF
postfix_start "$PDIR"
wait_port "$PPORT" 30 || die "postfix did not listen"
log "postfix: relaying $MESSAGES x $SIZE B over $SESSIONS sessions to smtp-sink :$SINK_PORT"
POSTFIX_RESULT=$(run_load postfix "$PPORT" "$WORK/sink-postfix")
echo "postfix: $POSTFIX_RESULT"
postfix_stop
stop_sink

python3 - "$BATON_RESULT" "$POSTFIX_RESULT" <<'PY'
import sys
b = float(sys.argv[1].split()[0]); p = float(sys.argv[2].split()[0])
print(f"ratio baton/postfix (relayed): {b / p:.2f} (goal >= 1.5)")
PY
