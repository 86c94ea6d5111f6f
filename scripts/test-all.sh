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
cargo build --release --locked -p baton -p baton-fn-policy -p baton-fn-sign -p baton-fn-deliver -p baton-fn-bounce -p baton-fn-events -p baton-fn-fused -p baton-fn-api
# The Rust SDK example the SES API tests run (tests/e2e/test_ses_cli.py).
cargo build --release --locked -p baton --example ses_send
# The deployment artifacts tests/e2e/test_packaging.py checks: the Lambda zips and the
# gateway's OCI image, built for glibc 2.34 with cargo-zigbuild.
infra/package-functions.sh target/package
infra/build-image.sh target/package

# The AWS-backend tests need LocalStack and DynamoDB Local; start them unless they already
# run, and stop what we started when done.
if ! localstack/health.sh >/dev/null 2>&1; then
    trap 'localstack/stop.sh' EXIT
fi
localstack/start.sh
cargo test --workspace --locked
E2E_BATON_BIN="$PWD/target/release/baton" .venv-tests/bin/pytest -q -p no:cacheprovider tests/e2e "$@"
scripts/fuzz.sh 20
