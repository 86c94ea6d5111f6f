#!/usr/bin/env bash
# Bounce parsing rate of baton-bounce on one core: every message of the bounce corpora
# (crates/baton-bounce/tests/corpora, 231 files) parsed ROUNDS times, in release mode.
# Target (issue 9): at least 5,000 messages/s.
# Usage: bench/bounce-parse.sh [ROUNDS] [DIR...]   (default 200 rounds over the corpora)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p baton-bounce --example parse_bench
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
"${pin[@]}" target/release/examples/parse_bench "$@"
