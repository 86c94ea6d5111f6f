#!/usr/bin/env bash
# Everything CI runs: installs the test dependencies, builds, runs the Rust tests, then the
# end-to-end suite against the release binary with real SMTP clients.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --release --locked -p baton
cargo test --workspace --locked
E2E_BATON_BIN="$PWD/target/release/baton" .venv-tests/bin/pytest -q -p no:cacheprovider tests/e2e "$@"
