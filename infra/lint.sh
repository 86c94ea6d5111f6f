#!/usr/bin/env bash
# Lints the CloudFormation template with cfn-lint (pinned in infra/requirements-lint.txt,
# installed into infra/.venv-lint by scripts/install-test-deps.sh). Any finding fails the run:
# errors, warnings (W3037, say, is a misspelt IAM action) and the informational checks too,
# in every region, since the stack may go to any. Fix the template; where a rule must be
# ignored, ignore it on that resource only (Metadata: cfn-lint: config: ignore_checks) with a
# one-line comment saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

lint=infra/.venv-lint/bin/cfn-lint
[ -x "$lint" ] || { echo "infra/lint.sh: $lint missing (run scripts/install-test-deps.sh)" >&2; exit 1; }
"$lint" --regions ALL_REGIONS --include-checks I --non-zero-exit-code informational \
    -- infra/template.yaml
echo "cfn-lint $("$lint" --version | awk '{print $2}'): infra/template.yaml clean"
