#!/usr/bin/env bash
# Coverage-guided fuzzing with afl.rs + AFL++ on the stable toolchain (rustc's sancov
# instrumentation; no nightly-only AFL++ plugins, so no CMPLOG).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Installs cargo-afl (which builds AFL++) if missing, builds the targets in fuzz/ into
# target/fuzz, then runs each target for SECONDS (default 60) from its seed corpus, one
# after the other, and prints executions/s and coverage. Exits non-zero if a target finds
# a crash (printing the input and its panic) or a reproducible hang, or if AFL++ fails.
# Findings stay in fuzz/out/<target>/default/{crashes,hangs} until the next run. Replay one:
#   target/fuzz/release/<target> < fuzz/out/<target>/default/crashes/id:...
# (BATON_FUZZ_TRACE=1 prints the SMTP conversation of an smtp_session input).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-60}"
shift || true
ALL_TARGETS=(smtp_session address config reply_reader bounce_parse)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL_TARGETS[@]}")
CARGO_AFL_VERSION=0.18.2

ROOT="$PWD"
export CARGO_TARGET_DIR="$ROOT/target/fuzz"
OUT="$ROOT/fuzz/out"
BIN="$CARGO_TARGET_DIR/release"

# cargo-afl; installing it builds AFL++ (a C compiler and make are enough without plugins).
if [ "$(cargo afl --version 2>/dev/null | awk '{print $2}')" != "$CARGO_AFL_VERSION" ]; then
    echo "fuzz: installing cargo-afl $CARGO_AFL_VERSION"
    cargo install cargo-afl --version "=$CARGO_AFL_VERSION" --locked --quiet
fi
# Builds AFL++ for this rustc if it is not built yet (says so and fails harmlessly if it is).
cargo afl config --build >/dev/null 2>&1 || true

started=$(date +%s)
(cd fuzz && cargo afl build --release --locked --quiet)
echo "fuzz: build took $(($(date +%s) - started)) s"

# A shared machine: no CPU pinning, no frequency-governor or core_pattern checks; plain logs.
export AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_UI=1 AFL_NO_CRASH_README=1
mkdir -p "$OUT"

child=""
stop_child() {
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
}
trap stop_child EXIT
trap 'stop_child; exit 130' INT TERM

stat() { awk -F' *: ' -v k="$1" '$1 == k {print $2}' "$2"; }

failed=0
summary=()
for t in "${TARGETS[@]}"; do
    rm -rf "${OUT:?}/$t"
    mkdir -p "$OUT/$t"
    export BATON_FUZZ_TMPDIR="$OUT/$t"
    echo "fuzz: $t for ${SECONDS_EACH} s"
    # `timeout` signals its whole process group (cargo-afl and afl-fuzz) if -V overruns.
    timeout --kill-after=10 "$((SECONDS_EACH + 120))" \
        cargo afl fuzz -V "$SECONDS_EACH" -t 2000 \
        -i "fuzz/corpus/$t" -o "$OUT/$t" -x "fuzz/dict/$t.dict" \
        -- "$BIN/$t" >"$OUT/$t.log" 2>&1 &
    child=$!
    rc=0
    wait "$child" || rc=$?
    child=""
    stats="$OUT/$t/default/fuzzer_stats"
    if [ "$rc" != 0 ] || [ ! -f "$stats" ]; then
        echo "fuzz: $t: afl-fuzz failed (exit $rc); end of $OUT/$t.log:"
        tail -n 30 "$OUT/$t.log"
        failed=1
        continue
    fi
    summary+=("$(printf '%-13s %10s execs %9s/s  edges %6s/%-6s map %8s  corpus %5s  stability %s' \
        "$t" "$(stat execs_done "$stats")" "$(stat execs_per_sec "$stats")" \
        "$(stat edges_found "$stats")" "$(stat total_edges "$stats")" \
        "$(stat bitmap_cvg "$stats")" "$(stat corpus_count "$stats")" \
        "$(stat stability "$stats")")")
    for f in "$OUT/$t/default/crashes"/id:*; do
        [ -e "$f" ] || continue
        echo "fuzz: $t: CRASH $f"
        "$BIN/$t" <"$f" 2>&1 | grep -E "panicked|assert|left|right" | head -n 8 | sed 's/^/    /' || true
        failed=1
    done
    for f in "$OUT/$t/default/hangs"/id:*; do
        [ -e "$f" ] || continue
        if timeout 10 "$BIN/$t" <"$f" >/dev/null 2>&1; then
            echo "fuzz: $t: slow input (not a hang when replayed alone): $f"
        else
            echo "fuzz: $t: HANG $f"
            failed=1
        fi
    done
done

echo "fuzz: results (${SECONDS_EACH} s each)"
for line in "${summary[@]}"; do echo "  $line"; done
rm -f "$OUT"/*/baton-fuzz-config-*.toml
if [ "$failed" != 0 ]; then
    echo "fuzz: FAILED"
    exit 1
fi
echo "fuzz: ${#summary[@]} passed, 0 failed"
