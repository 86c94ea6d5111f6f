#!/usr/bin/env bash
# Everything CI runs: installs the test dependencies (LocalStack and DynamoDB Local too),
# lints the CloudFormation template (cfn-lint), builds, runs the Rust tests, then the
# end-to-end suite against the release binaries with real SMTP clients, on the embedded
# backend and on LocalStack.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
infra/lint.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# One optimised build of each artifact, the ones we ship, and the e2e suite runs those: the
# Lambda zips' bootstraps (lambda profile) and the gateway image's `baton` (release), both
# linked by cargo-zigbuild for glibc 2.34 (tests/e2e/test_packaging.py checks them).
infra/package-functions.sh target/package
infra/build-image.sh target/package
SHIPPED=target/x86_64-unknown-linux-gnu

# The AWS-backend tests need LocalStack and DynamoDB Local; start them unless they already
# run, and stop what we started when done.
if ! localstack/health.sh >/dev/null 2>&1; then
    trap 'localstack/stop.sh' EXIT
fi
localstack/start.sh
cargo test --workspace --locked
# The SDK example tests/e2e/test_ses_cli.py runs was built by cargo test (target/debug).
E2E_BATON_BIN="$PWD/$SHIPPED/release/baton" E2E_FUNCTIONS_DIR="$PWD/$SHIPPED/lambda" \
    .venv-tests/bin/pytest -q -p no:cacheprovider tests/e2e "$@"
scripts/fuzz.sh 20
