#!/usr/bin/env bash
# Profiles Baton relaying signed mail (relay.sh's setup: tenant network, RSA-2048 + Ed25519,
# smtp-source to smtp-sink) with `perf record -g` on the relay's process, and prints the
# relay rate, the CPU per message and perf's top symbols. For A/B runs of a setting or of two
# builds; the numbers are not a benchmark (perf itself costs CPU: PERF=0 leaves it out).
# Usage: bench/profile.sh   (env: N=5000 BIN=target/release/baton WORKERS=32 DELAY=0s
#        FUSED=true PERF=1 BENCH_DIR=/var/tmp). perf.data goes to bench/results/perf.data.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensure_tools
BATON=${BIN:-$PWD/target/release/baton}
[[ -x $BATON ]] || die "no $BATON: cargo build --release -p baton"
# baton reads BATON_* variables as configuration.
unset BATON_BIN
N=${N:-5000}
PERF=${PERF:-1}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/baton-profile.XXXXXX")
chmod 755 "$WORK"
PERF_PID=
cleanup() {
    [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
    baton_stop || true
    stop_sink
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

start_sink "$WORK/sink"
bport=$(free_port)
baton_relay_config "$WORK/baton.toml" "$WORK/data" "$bport" "$SINK_PORT" \
    $'[[relay.tenant_networks]]\nnetwork = "127.0.0.0/8"\ntenant = "bench"' "${FUSED:-true}" "${WORKERS:-32}" \
    $'[storage]\ngroup_commit_max_delay = "'"${DELAY:-0s}"'"'
"$BATON" --config "$WORK/baton.toml" domain add sender.test --tenant bench >/dev/null
baton_start "$BATON" "$WORK/baton.toml" "$WORK/baton.log" "$bport"

load() { smtp-source -s 20 -m "$1" -l 4096 -f bench@sender.test -t sink@rcpt.invalid "127.0.0.1:$bport"; }
WARMUP=300
load "$WARMUP"
wait_sink_files profile "$WORK/sink" "$WARMUP"
mkdir -p bench/results
if [[ $PERF == 1 ]]; then
    perf record -F 999 -g -p "$BATON_PID" -o bench/results/perf.data -- sleep 100000 2>/dev/null &
    PERF_PID=$!
fi
t0=$(now)
c0=$(cpu_ticks "$BATON_PID")
s0=$(cpu_ticks "$SINK_PID")
# The load's own CPU (smtp-source, and the sink writing each message to a file) shares the
# two cores with the relay: it bounds what any relay can reach in relay.sh.
/usr/bin/time -f "%U %S" -o "$WORK/source.cpu" \
    smtp-source -s 20 -m "$N" -l 4096 -f bench@sender.test -t sink@rcpt.invalid "127.0.0.1:$bport"
wait_sink_files profile "$WORK/sink" $((WARMUP + N))
t1=$(now)
c1=$(cpu_ticks "$BATON_PID")
s1=$(cpu_ticks "$SINK_PID")
if [[ -n $PERF_PID ]]; then
    kill -INT "$PERF_PID"
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
fi
python3 - "$t0" "$t1" $((c1 - c0)) $((s1 - s0)) "$N" $(cat "$WORK/source.cpu") <<'PYEND'
import os, sys
t0, t1, baton, sink, n, su, ss = map(float, sys.argv[1:])
hz = os.sysconf("SC_CLK_TCK")
print(f"relayed {n / (t1 - t0):.0f} msgs/s, baton CPU {baton / hz * 1000 / n:.3f} ms/msg; "
      f"load CPU: smtp-source {(su + ss) * 1000 / n:.3f} ms/msg, smtp-sink {sink / hz * 1000 / n:.3f} ms/msg")
PYEND
if [[ $PERF == 1 ]]; then
    perf report -i bench/results/perf.data --no-children --sort sym -g none 2>/dev/null | grep -v '^#' | head -25
fi
