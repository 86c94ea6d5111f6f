#!/usr/bin/env bash
# Builds the Lambda functions for the provided.al2023 runtime and zips each as its
# deployment package:
#
#   infra/package-functions.sh OUTDIR [STAGE...]
#
# writes OUTDIR/<stage>.zip for policy sign deliver bounce events fused api (or the STAGEs
# named), each holding one file, `bootstrap`. provided.al2023 has glibc 2.34 and this
# machine 2.36, so the binaries are linked by cargo-zigbuild against glibc 2.34's symbol
# versions (target x86_64-unknown-linux-gnu.2.34; zig from the ziglang wheel), and the
# script fails if one still references a GLIBC_ version newer than 2.34.
#
# Each crate is built in a cargo invocation of its own: features unify within one
# invocation, and each function crate turns on only its own stage's baton-functions
# feature, so built alone its binary links that stage and no other (functions/common).
# The zips are deterministic (fixed mtime and mode), so an unchanged binary gives the same
# zip and deploy.sh's content-hash key does not change.
#
# Needs cargo-zigbuild and zig: scripts/install-test-deps.sh installs both (pinned) into
# infra/.venv-zig.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -ge 1 ]] || { echo "usage: $0 OUTDIR [STAGE...]" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
shift
STAGES=("$@")
((${#STAGES[@]})) || STAGES=(policy sign deliver bounce events fused api)

# shellcheck source=infra/zigbuild.sh
source "$ROOT/infra/zigbuild.sh"
BIN_DIR=$TARGET_OUT/lambda

cd "$ROOT"
for stage in "${STAGES[@]}"; do
    crate=baton-fn-$stage
    echo "== $crate ($TARGET, profile lambda)"
    cargo zigbuild --profile lambda --target "$TARGET" --locked -p "$crate"
    bin=$BIN_DIR/$crate
    newest=$(check_glibc "$bin")
    python3 - "$bin" "$OUT/$stage.zip" <<'PY'
import os, sys, zipfile
binary, dest = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
info.create_system = 3  # Unix, so Lambda keeps the mode below
info.external_attr = (0o100755 & 0xFFFF) << 16
info.compress_type = zipfile.ZIP_DEFLATED
tmp = dest + ".tmp"
with open(binary, "rb") as f, zipfile.ZipFile(tmp, "w") as z:
    z.writestr(info, f.read(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
os.replace(tmp, dest)
PY
    printf '%s: binary %s bytes, zip %s bytes, newest GLIBC_%s\n' "$stage" \
        "$(stat -c %s "$bin")" "$(stat -c %s "$OUT/$stage.zip")" "$newest"
done
