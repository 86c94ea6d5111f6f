#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v swaks >/dev/null || need_apt+=(swaks)
command -v smtp-source >/dev/null || need_apt+=(postfix)
command -v openssl >/dev/null || need_apt+=(openssl)
# Postfix's SMTP client needs the Cyrus PLAIN module to authenticate to Baton (e2e test).
dpkg -s libsasl2-modules >/dev/null 2>&1 || need_apt+=(libsasl2-modules)
if ((${#need_apt[@]})); then
    echo "installing: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The postfix package would ask about its own mail setup: the defaults are fine, we
    # only need its tools (smtp-source, smtp-sink, postconf).
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections || true
    apt-get update -qq || true
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv-tests/bin/pytest ]; then
    python3 -m venv .venv-tests
fi
.venv-tests/bin/pip install -q -r tests/e2e/requirements.txt
