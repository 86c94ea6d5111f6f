#!/usr/bin/env bash
# Peak memory while large messages are relayed: CLIENTS (default 4) clients at once each send
# one SIZE_MB (default 25) MB message through `baton serve`, which relays them to a Postfix
# smtp-sink. The relay's VmRSS is sampled every 50 ms from before the first byte until the
# sink holds all the messages; reported: peak RSS growth = peak minus the RSS just before
# sending, in MB. Target (issue 11): under 32 MB. Postfix relays the same messages to its
# own sink in the same run (summed PSS of master and all its children, sampled the same way:
# a process per session and per delivery, so RSS summed would count shared pages again
# and again).
#
# Usage (from the repo root):
#   bench/large-rss.sh [--clients N] [--size-mb N] [--no-postfix] [--keep]
# or CLIENTS=4 SIZE_MB=25 SIGN=1 WITH_POSTFIX=1 KEEP=0 BENCH_DIR=/var/tmp BATON_BIN=... bench/large-rss.sh
#
# SIGN=1 (the default) relays as users run it: the load's network is tenant "bench"
# (relay.tenant_networks), whose domain has DKIM keys, so Baton signs every message
# (RSA-2048 and Ed25519) on the way; SIGN=0 relays for an allow-listed network (unsigned).
# Postfix does not sign (no OpenDKIM here; bench/relay.sh compares signing throughput).
# Clients: python smtplib, one thread each, plain SMTP from 127.0.0.1; each message has
# 76-character text lines, one From header and its own Message-ID.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

CLIENTS=${CLIENTS:-4}
SIZE_MB=${SIZE_MB:-25}
SIGN=${SIGN:-1}
WITH_POSTFIX=${WITH_POSTFIX:-1}
KEEP=${KEEP:-0}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
SETTLE=${SETTLE:-2}
TIMEOUT=${TIMEOUT:-600}   # seconds for the sink to get every message
SENDER=bench@sender.test
RCPT=sink@rcpt.invalid

while (($#)); do
    case $1 in
        --clients) CLIENTS=$2; shift 2 ;;
        --size-mb) SIZE_MB=$2; shift 2 ;;
        --no-postfix) WITH_POSTFIX=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

ensure_tools
BATON=$(baton_bin "$ROOT")
# baton reads BATON_* variables as configuration (BATON_SECTION__KEY): keep ours away from it.
unset BATON_BIN
WORK=$(mktemp -d "$BENCH_DIR/baton-large.XXXXXX")
chmod 755 "$WORK"
BATON_PID=
POSTFIX_DIR=
SINK_PID=
SAMPLER_PID=
SEND_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in ${SEND_PID:-} ${SAMPLER_PID:-}; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    baton_stop
    postfix_stop
    stop_sink
    if [[ $KEEP == 1 ]]; then log "kept work dir $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# The sampler: every 50 ms one line "<epoch seconds> <kB>" for PID: its VmRSS (mode rss), or
# the summed PSS of PID and all its descendants (mode pss). Runs until killed.
cat >"$WORK/sampler.py" <<'PY'
import os, sys, time
mode, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def children(p):
    kids = []
    try:
        for t in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{t}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids

def field(path, name):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

def sample():
    if mode == "rss":
        return field(f"/proc/{pid}/status", "VmRSS:")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += field(f"/proc/{p}/smaps_rollup", "Pss:")
        todo += children(p)
    return total

with open(out, "w", buffering=1) as f:
    while True:
        f.write(f"{time.time():.3f} {sample()}\n")
        time.sleep(0.05)
PY

# The message: SIZE_MB MB in all, headers included, lines of 76 characters.
python3 - "$WORK/message.eml" "$SIZE_MB" "$SENDER" "$RCPT" <<'PY'
import sys
path, mb, sender, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
head = (f"From: Bench <{sender}>\r\nTo: <{rcpt}>\r\nSubject: large message\r\n"
        "Date: Wed, 02 Dec 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n").encode()
line = (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd" + b"\r\n")
total = mb * 1024 * 1024
with open(path, "wb") as f:
    f.write(head)
    n = total - len(head) - len(b"Message-ID: <client-0.00000000@sender.test>\r\n") - 2
    f.write(b"\r\n")
    f.write(line * (n // len(line)))
PY
MSG_BYTES=$(stat -c %s "$WORK/message.eml")

# The clients: CLIENTS threads, each one SMTP session sending one message with its own
# Message-ID; fails unless every message got 250.
cat >"$WORK/send.py" <<'PY'
import smtplib, sys, threading
port, n, path, sender, rcpt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
body = open(path, "rb").read()
errors = []

def send(i):
    data = f"Message-ID: <client-{i}.00000000@sender.test>\r\n".encode() + body
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.bench.localhost", timeout=300) as s:
            s.sendmail(sender, [rcpt], data)
    except Exception as e:  # reported below; the run fails
        errors.append(f"client {i}: {type(e).__name__}: {e}")

threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY

# wait_sink DIR: until DIR holds CLIENTS whole messages. smtp-sink stores lines ending in LF
# (one byte less per 78-byte line than sent), so a whole message is at least
# MSG_BYTES * 77/78 less a few kB.
wait_sink() {
    local i n
    for ((i = 0; i < TIMEOUT * 10; i++)); do
        n=$(find "$1" -type f -size +$((MSG_BYTES * 77 / 78 / 1024 - 4))k | wc -l)
        ((n >= CLIENTS)) && return 0
        sleep 0.1
    done
    die "only $n of $CLIENTS messages reached the sink within $TIMEOUT s"
}

# measure LABEL MODE PID PORT SINKDIR: samples PID, sends, waits for the sink; sets
# BASE_KB, PEAK_KB, SECONDS_TAKEN.
measure() {
    local label=$1 mode=$2 pid=$3 port=$4 sink=$5 t0 t1
    sleep "$SETTLE"
    python3 "$WORK/sampler.py" "$mode" "$pid" "$WORK/samples.$label" &
    SAMPLER_PID=$!
    sleep 0.5
    t0=$(now)
    log "$label: $CLIENTS clients sending $MSG_BYTES bytes each"
    python3 "$WORK/send.py" "$port" "$CLIENTS" "$WORK/message.eml" "$SENDER" "$RCPT" &
    SEND_PID=$!
    wait "$SEND_PID" || { SEND_PID=; die "$label: sending failed"; }
    SEND_PID=
    wait_sink "$sink"
    t1=$(now)
    sleep 0.2
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=
    read -r BASE_KB PEAK_KB NSAMPLES < <(python3 - "$WORK/samples.$label" "$t0" <<'PY'
import sys
t0 = float(sys.argv[2])
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
before = [kb for t, kb in rows if t < t0]
after = [kb for t, kb in rows if t >= t0]
print(int(before[-1]), int(max(after)), len(after))
PY
)
    SECONDS_TAKEN=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
}
mb() { python3 -c "print(f'{$1 / 1024:.1f}')"; }

echo "== large-message RSS benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $(nproc) cores, kernel $(uname -r); baton: $BATON"
echo "load: $CLIENTS clients at once, one message of $MSG_BYTES bytes each ($SIZE_MB MB), relayed to smtp-sink$([[ $SIGN == 1 ]] && echo ', Baton DKIM-signing (RSA-2048 + Ed25519)')"

# ---- Baton
start_sink "$WORK/sink-baton" 100
BPORT=$(free_port)
RELAY_NETWORKS='allow_networks = ["127.0.0.0/8"]'
if [[ $SIGN == 1 ]]; then
    RELAY_NETWORKS=$'[[relay.tenant_networks]]\nnetwork = "127.0.0.0/8"\ntenant = "bench"'
fi
cat >"$WORK/baton.toml" <<CONF
hostname = "baton.bench.localhost"
data_dir = "$WORK/baton-data"
[listen]
submission = ""
submissions = ""
relay = "127.0.0.1:$BPORT"
[relay]
$RELAY_NETWORKS
[log]
filter = "warn"
[pipeline]
run_stages = true
[[delivery.routes]]
pattern = "*"
target = "127.0.0.1:$SINK_PORT"
CONF
if [[ $SIGN == 1 ]]; then
    "$BATON" --config "$WORK/baton.toml" domain add sender.test --tenant bench >/dev/null
fi
baton_start "$BATON" "$WORK/baton.toml" "$WORK/baton.log" "$BPORT"
measure baton rss "$BATON_PID" "$BPORT" "$WORK/sink-baton"
B_BASE=$BASE_KB; B_PEAK=$PEAK_KB; B_SECS=$SECONDS_TAKEN; B_N=$NSAMPLES
B_HWM=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$BATON_PID/status")
if [[ $SIGN == 1 ]]; then
    f=$(find "$WORK/sink-baton" -type f -print -quit)
    log "baton signed with: $(head -c 65536 "$f" | grep -o 'a=[a-z0-9-]*;' | tr -d ';' | sort | tr '\n' ' ')"
fi
baton_stop
stop_sink
B_GROWTH=$(mb $((B_PEAK - B_BASE)))
printf 'baton:   VmRSS before %s MB, peak %s MB (VmHWM %s MB) -> growth %s MB; all %d at the sink after %s s (%d samples)\n' \
    "$(mb "$B_BASE")" "$(mb "$B_PEAK")" "$(mb "$B_HWM")" "$B_GROWTH" "$CLIENTS" "$B_SECS" "$B_N"
python3 -c "import sys; v=float(sys.argv[1]); print(f'target: peak RSS growth under 32 MB: {\"met\" if v < 32 else \"MISSED\"} ({v} MB)')" "$B_GROWTH"

if ((WITH_POSTFIX != 1)); then
    bench_result large_rss_growth MB "$B_GROWTH" "" - lower
    exit 0
fi

# ---- Postfix: a private instance relaying to its own sink (bench/relay.sh's set-up).
start_sink "$WORK/sink-postfix" 100
PPORT=$(free_port)
postfix_setup "$WORK/postfix" "$PPORT"
postconf -c "$WORK/postfix/etc" -e "smtpd_client_restrictions =" "defer_transports =" \
    "relayhost = [127.0.0.1]:$SINK_PORT"
printf '%s\n' "smtp      unix  -       -       n       -       -       smtp" \
    "relay     unix  -       -       n       -       -       smtp" >>"$WORK/postfix/etc/master.cf"
postfix_start "$WORK/postfix"
wait_port "$PPORT" 30 || die "postfix did not listen on 127.0.0.1:$PPORT"
MASTER=$(tr -dc 0-9 <"$WORK/postfix/queue/pid/master.pid")
measure postfix pss "$MASTER" "$PPORT" "$WORK/sink-postfix"
postfix_stop
stop_sink
P_GROWTH=$(mb $((PEAK_KB - BASE_KB)))
printf 'postfix: summed PSS before %s MB, peak %s MB -> growth %s MB; all %d at the sink after %s s (%d samples)\n' \
    "$(mb "$BASE_KB")" "$(mb "$PEAK_KB")" "$P_GROWTH" "$CLIENTS" "$SECONDS_TAKEN" "$NSAMPLES"
echo "ratio baton/postfix (peak growth): $(python3 -c "print(f'{$B_GROWTH / max($P_GROWTH, 0.1):.2f}')")"
bench_result large_rss_growth MB "$B_GROWTH" "$P_GROWTH" postfix lower
