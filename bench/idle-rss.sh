#!/usr/bin/env bash
# Memory per idle session: RSS of "baton serve" before and while it holds
# SESSIONS (default 1000) idle sessions: plaintext on the relay port, or with --tls
# sessions that completed a TLS handshake (half STARTTLS on the submission port,
# half implicit TLS on the submissions port; RSA-2048 self-signed certificate made
# in the work dir, given to Baton as [tls] cert/key and to Postfix as smtpd_tls_*).
#
# Usage (from the repo root):
#   bench/idle-rss.sh [--sessions N] [--no-ehlo] [--tls] [--with-postfix] [--keep]
# or SESSIONS=1000 EHLO=1 TLS=0 WITH_POSTFIX=0 KEEP=0 BENCH_DIR=/var/tmp BATON_BIN=... bench/idle-rss.sh
#
# Each session connects, reads the 220 greeting, sends EHLO and reads the 250
# reply (--no-ehlo: greeting only; with --tls: STARTTLS sessions send EHLO,
# STARTTLS, handshake, EHLO; implicit ones handshake, greeting, EHLO), then stays
# idle (well inside command_timeout). VmRSS and VmHWM come from /proc/<pid>/status
# of the relay. Target (issue 11): under 40 MB per 1,000 idle TLS sessions.
# --with-postfix repeats the measurement against a private Postfix instance
# (process per session): there the figure is the summed PSS (proportional set
# size, shared pages split between processes) of master and all its children,
# because summing RSS over 1,000 forked smtpd processes would count shared
# pages 1,000 times.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

SESSIONS=${SESSIONS:-1000}
EHLO=${EHLO:-1}
KEEP=${KEEP:-0}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
WITH_POSTFIX=${WITH_POSTFIX:-0}
TLS=${TLS:-0}
SETTLE=${SETTLE:-2}   # seconds to let the relay settle before each reading

while (($#)); do
    case $1 in
        --sessions) SESSIONS=$2; shift 2 ;;
        --no-ehlo) EHLO=0; shift ;;
        --with-postfix) WITH_POSTFIX=1; shift ;;
        --tls) TLS=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

EHLO_OPT=()
[[ $EHLO == 1 ]] || EHLO_OPT=(--no-ehlo)

ensure_tools
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
(($(ulimit -n) > SESSIONS + 100)) || die "open-file limit $(ulimit -n) too low for $SESSIONS sessions"

BATON=$(baton_bin "$ROOT")
# baton reads BATON_* variables as configuration (BATON_SECTION__KEY): keep ours away from it.
unset BATON_BIN
WORK=$(mktemp -d "$BENCH_DIR/baton-idle.XXXXXX")
BATON_PID=
POSTFIX_DIR=
CLIENT_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n ${CLIENT_PID:-} ]] && kill "$CLIENT_PID" 2>/dev/null && wait "$CLIENT_PID" 2>/dev/null || true
    baton_stop
    postfix_stop
    if [[ $KEEP == 1 ]]; then log "kept work dir $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

kb() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$BATON_PID/status"; }
mb() { python3 -c "print(f'{$1 / 1024:.1f}')"; }
conns() { ss -Htn state established "( sport = :$1 or sport = :${2:-$1} )" | wc -l; }

PORT=$(free_port)
baton_write_config "$WORK/baton.toml" "$WORK/data" "$PORT" $((SESSIONS + 100))
# CLIENT_OPT: where idle_clients.py connects; CPORT/CPORT2: the ports its sessions use.
CLIENT_OPT=(--port "$PORT"); CPORT=$PORT; CPORT2=$PORT; KIND="plaintext"
if [[ $TLS == 1 ]]; then
    KIND="TLS (half STARTTLS on submission, half implicit TLS on submissions)"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=baton.bench.localhost" \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null || die "openssl req failed"
    chmod 644 "$WORK/cert.pem"
    CPORT=$(free_port); CPORT2=$(free_port)
    python3 - "$WORK/baton.toml" "$CPORT" "$CPORT2" "$WORK" <<'PY'
import sys
path, sub, subs, work = sys.argv[1:]
text = open(path).read()
for key, port in (("submission  = \"\"", sub), ("submissions = \"\"", subs)):
    assert key in text, key
    text = text.replace(key, key.replace('""', f'"127.0.0.1:{port}"'))
text += f'\n[tls]\ncert = "{work}/cert.pem"\nkey = "{work}/key.pem"\n'
open(path, "w").write(text)
PY
    CLIENT_OPT=(--tls both --port "$CPORT" --tls-port "$CPORT2")
fi
baton_start "$BATON" "$WORK/baton.toml" "$WORK/serve.log" "$PORT"
wait_port "$CPORT" 30 && wait_port "$CPORT2" 30 || die "baton did not listen on $CPORT/$CPORT2"
sleep "$SETTLE"
RSS0=$(kb VmRSS); HWM0=$(kb VmHWM); THR0=$(kb Threads)

"$ROOT/bench/idle_clients.py" "${CLIENT_OPT[@]}" -n "$SESSIONS" "${EHLO_OPT[@]}" \
    --ready-file "$WORK/ready" >"$WORK/clients.log" 2>&1 &
CLIENT_PID=$!
for ((i = 0; i < 1200; i++)); do
    [[ -s $WORK/ready ]] && break
    kill -0 "$CLIENT_PID" 2>/dev/null || { cat "$WORK/clients.log" >&2; die "client script exited early"; }
    sleep 0.1
done
[[ -s $WORK/ready ]] || die "sessions not established within 120 s"
read -r _ OPENED _ FAILED <"$WORK/ready"
sleep "$SETTLE"
RSS1=$(kb VmRSS); HWM1=$(kb VmHWM); THR1=$(kb Threads); FDS1=$(ls "/proc/$BATON_PID/fd" | wc -l)
ESTAB=$(conns "$CPORT" "$CPORT2")

kill -TERM "$CLIENT_PID" 2>/dev/null || true
wait "$CLIENT_PID" 2>/dev/null || true
CLIENT_PID=
sleep "$SETTLE"
RSS2=$(kb VmRSS)

DELTA=$((RSS1 - RSS0))
PER1000=$(python3 -c "print(f'{$DELTA / 1024 * 1000 / max($OPENED, 1):.1f}')")
PERSESS=$(python3 -c "print(f'{$DELTA * 1024 / max($OPENED, 1) / 1024:.1f}')")

echo "== idle RSS benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $(nproc) cores, kernel $(uname -r); baton: $BATON"
echo "sessions: $OPENED $KIND open ($FAILED failed), $([[ $EHLO == 1 ]] && echo 'greeting + EHLO' || echo 'greeting only'), server-side established: $ESTAB, relay fds: $FDS1"
printf 'RSS before:            %8s MB  (VmHWM %s MB, %s threads)\n' "$(mb "$RSS0")" "$(mb "$HWM0")" "$THR0"
printf 'RSS with %d idle:     %8s MB  (VmHWM %s MB, %s threads)\n' "$OPENED" "$(mb "$RSS1")" "$(mb "$HWM1")" "$THR1"
printf 'RSS after they closed: %8s MB\n' "$(mb "$RSS2")"
printf 'delta: %s MB per 1,000 idle sessions (%s KB per session)\n' "$PER1000" "$PERSESS"
if grep -q warning "$WORK/clients.log"; then cat "$WORK/clients.log" >&2; fi
((FAILED == 0)) || { cat "$WORK/clients.log" >&2; die "$FAILED sessions failed"; }
METRIC=idle_rss; [[ $TLS == 1 ]] && METRIC=idle_tls_rss
[[ $EHLO == 1 ]] || METRIC+="_no_ehlo"
if [[ $TLS == 1 ]]; then
    python3 -c "import sys; v=float(sys.argv[1]); print(f'target: under 40 MB per 1,000 idle TLS sessions: {\"met\" if v < 40 else \"MISSED\"} ({v} MB)')" "$PER1000"
fi

if ((WITH_POSTFIX != 1)); then
    bench_result "$METRIC" MB/1000sessions "$PER1000" "" - lower
    exit 0
fi
baton_stop

# ---- the same against Postfix (process per session)
pss_kb() {  # summed PSS and RSS (kB) of the Postfix master and its children
    local m=$1 p pss=0 rss=0 v
    for p in "$m" $(pgrep -P "$m" || true); do
        v=$(awk '$1 == "Pss:" {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) && pss=$((pss + ${v:-0}))
        v=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$p/status" 2>/dev/null) && rss=$((rss + ${v:-0}))
    done
    echo "$pss $rss $(($(pgrep -P "$m" | wc -l) + 1))"
}
PPORT=$(free_port)
postfix_setup "$WORK/postfix" "$PPORT"
postconf -c "$WORK/postfix/etc" -e "default_process_limit = $((SESSIONS + 100))" "smtpd_timeout = 600s"
P_CLIENT_OPT=(--port "$PPORT"); PPORT1=$PPORT; PPORT2=$PPORT
if [[ $TLS == 1 ]]; then
    # The same certificate; STARTTLS offered on one smtpd, TLS wrapper mode on another,
    # no session cache (Baton keeps none either); tlsmgr for the PRNG.
    PPORT1=$(free_port); PPORT2=$(free_port)
    postconf -c "$WORK/postfix/etc" -e "smtpd_tls_cert_file = $WORK/cert.pem" \
        "smtpd_tls_key_file = $WORK/key.pem" "smtpd_tls_security_level = may" \
        "smtpd_tls_session_cache_database ="
    printf '%s\n' "127.0.0.1:$PPORT1 inet n  -       n       -       -       smtpd" \
        "127.0.0.1:$PPORT2 inet n  -       n       -       -       smtpd -o smtpd_tls_wrappermode=yes" \
        "tlsmgr    unix  -       -       n       1000?   1       tlsmgr" >>"$WORK/postfix/etc/master.cf"
    P_CLIENT_OPT=(--tls both --port "$PPORT1" --tls-port "$PPORT2")
fi
postfix_start "$WORK/postfix"
for p_ in "$PPORT" "$PPORT1" "$PPORT2"; do
    wait_port "$p_" 30 || die "postfix smtpd did not listen on 127.0.0.1:$p_"
done
MASTER=$(tr -dc 0-9 <"$WORK/postfix/queue/pid/master.pid")
sleep "$SETTLE"
read -r P_PSS0 P_RSS0 P_N0 < <(pss_kb "$MASTER")
rm -f "$WORK/ready"
"$ROOT/bench/idle_clients.py" "${P_CLIENT_OPT[@]}" -n "$SESSIONS" "${EHLO_OPT[@]}" \
    --timeout 120 --ready-file "$WORK/ready" >"$WORK/clients.postfix.log" 2>&1 &
CLIENT_PID=$!
for ((i = 0; i < 3000; i++)); do
    [[ -s $WORK/ready ]] && break
    kill -0 "$CLIENT_PID" 2>/dev/null || { cat "$WORK/clients.postfix.log" >&2; die "client script exited early"; }
    sleep 0.1
done
[[ -s $WORK/ready ]] || die "postfix sessions not established within 300 s"
read -r _ P_OPENED _ P_FAILED <"$WORK/ready"
sleep "$SETTLE"
read -r P_PSS1 P_RSS1 P_N1 < <(pss_kb "$MASTER")
kill -TERM "$CLIENT_PID" 2>/dev/null || true
wait "$CLIENT_PID" 2>/dev/null || true
CLIENT_PID=
postfix_stop
P_PER1000=$(python3 -c "print(f'{($P_PSS1 - $P_PSS0) / 1024 * 1000 / max($P_OPENED, 1):.1f}')")
echo "== postfix $(postconf -d -h mail_version) with the same $SESSIONS idle $KIND sessions ($P_OPENED open, $P_FAILED failed)"
printf 'PSS before:            %8s MB  (%d processes, summed RSS %s MB)\n' "$(mb "$P_PSS0")" "$P_N0" "$(mb "$P_RSS0")"
printf 'PSS with %d idle:     %8s MB  (%d processes, summed RSS %s MB)\n' "$P_OPENED" "$(mb "$P_PSS1")" "$P_N1" "$(mb "$P_RSS1")"
printf 'delta: %s MB PSS per 1,000 idle sessions\n' "$P_PER1000"
if grep -q warning "$WORK/clients.postfix.log"; then cat "$WORK/clients.postfix.log" >&2; fi
((P_FAILED == 0)) || { cat "$WORK/clients.postfix.log" >&2; die "$P_FAILED postfix sessions failed"; }
echo "ratio postfix/baton (memory per idle session): $(python3 -c "print(f'{$P_PER1000 / max($PER1000, 0.01):.0f}')")x"
bench_result "$METRIC" MB/1000sessions "$PER1000" "$P_PER1000" postfix lower
