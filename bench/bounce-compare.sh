#!/usr/bin/env bash
# Baton's bounce parser next to flufl.bounce (PyPI) on the same files: both bounce corpora
# (crates/baton-bounce/tests/corpora), a table per corpus with the agreement of the two
# parsers' failed-recipient sets, each parser's agreement with the label CSVs, and the files
# where they disagree (issue 9). A report, not a test: it fails only if something cannot run.
#
#   bench/bounce-compare.sh [--all]        (--all lists every file, not only disagreements)
#
# flufl.bounce is installed into .venv-bench (git-ignored; FLUFL_BOUNCE_VERSION, default
# 6.0.0). Baton's side is `baton bounce parse` if target/release/baton (or BATON_BIN) has
# that command, else the crate's bounce_json example (cargo build --release; same JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
FLUFL_BOUNCE_VERSION="${FLUFL_BOUNCE_VERSION:-6.0.0}"
VENV="$ROOT/.venv-bench"
CORPORA="$ROOT/crates/baton-bounce/tests/corpora"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -c 'import ensurepip, venv' 2>/dev/null ||
        { echo "bounce-compare: python3 venv/ensurepip missing: apt-get install python3-venv" >&2; exit 1; }
    python3 -m venv "$VENV"
fi
if [ "$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("flufl.bounce"))' 2>/dev/null)" != "$FLUFL_BOUNCE_VERSION" ]; then
    echo "bounce-compare: installing flufl.bounce==$FLUFL_BOUNCE_VERSION into .venv-bench" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check "flufl.bounce==$FLUFL_BOUNCE_VERSION"
fi

baton=("${BATON_BIN:-$ROOT/target/release/baton}" bounce parse)
if ! [ -x "${baton[0]}" ] || ! "${baton[@]}" --help >/dev/null 2>&1; then
    cargo build -q --release -p baton-bounce --example bounce_json
    baton=("$ROOT/target/release/examples/bounce_json")
fi
echo "Baton: ${baton[*]#"$ROOT/"}    flufl.bounce: $FLUFL_BOUNCE_VERSION (Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'))"
echo

json=$(mktemp)
trap 'rm -f "$json"' EXIT
# baton bounce parse exits non-zero when a file could not be parsed, after printing
# {"file","error"} for it and the reports of all others; those are counted below.
rc=0
"${baton[@]}" "$CORPORA"/flufl-bounce/*.txt "$CORPORA"/mail-deliverystatus-bounceparser/*.msg >"$json" || rc=$?
[ -s "$json" ] || { echo "bounce-compare: Baton printed nothing (exit $rc)" >&2; exit 1; }
"$VENV/bin/python" bench/bounce_compare.py --baton-json "$json" --corpora "$CORPORA" "$@"
