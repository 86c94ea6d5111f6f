# Sourced by infra/package-functions.sh and infra/build-image.sh: cargo-zigbuild for
# provided.al2023's glibc (2.34; this machine has 2.36) and the check that a binary built
# so references no newer GLIBC_ symbol version. Expects ROOT (the repository).
# shellcheck shell=bash

# glibc of provided.al2023: the newest symbol version a binary may reference.
GLIBC=2.34
TARGET=x86_64-unknown-linux-gnu.$GLIBC
export PATH="$ROOT/infra/.venv-zig/bin:$PATH"
if ! command -v cargo-zigbuild >/dev/null || ! python3 -c 'import ziglang' 2>/dev/null; then
    echo "cargo-zigbuild or ziglang missing: run scripts/install-test-deps.sh" >&2
    exit 1
fi
# cargo-zigbuild drops the glibc suffix from the output directory.
TARGET_OUT=${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu

# check_glibc BINARY: prints the newest GLIBC_x.y it references; fails if there is none
# (not a glibc binary?) or it is newer than $GLIBC.
check_glibc() {
    local newest
    newest=$(objdump -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -n 1)
    if [[ -z $newest ]]; then
        echo "$1: no GLIBC symbol versions found (objdump -T): not a glibc binary?" >&2
        return 1
    fi
    if [[ $(printf '%s\n%s\n' "$GLIBC" "$newest" | sort -V | tail -n 1) != "$GLIBC" ]]; then
        echo "$1 needs GLIBC_$newest, newer than provided.al2023's $GLIBC:" >&2
        objdump -T "$1" | grep -F "GLIBC_$newest" >&2 || true
        return 1
    fi
    echo "$newest"
}
