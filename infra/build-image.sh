#!/usr/bin/env bash
# Builds the edge gateway's container image without a container daemon:
#
#   infra/build-image.sh OUTDIR
#
# writes OUTDIR/baton-gateway.oci.tar, an OCI image layout in a tar (what `podman load -i`,
# `skopeo copy oci-archive:...` and deploy.sh's push take). The image is one layer: the
# `baton` binary at /usr/local/bin/baton (without its debug info), the shared libraries it
# loads (from ldd: libc, libm, the dynamic loader), the CA bundle, a minimal /etc/passwd and /etc/group,
# and /tmp. Entrypoint /usr/local/bin/baton, Cmd ["serve"] (the task definition passes the
# same), ports 25, 465 and 587.
#
# `baton` is built like the functions, with cargo-zigbuild against glibc 2.34's symbol
# versions (it then runs on any glibc >= 2.34; the layer carries this machine's), and the
# build fails if it needs a newer one. The archive is deterministic: sorted entries, owner
# 0:0, fixed mtimes, gzip without a timestamp, so the same binary gives the same digests.
#
# The user: 65532 (nonroot), not root. The gateway listens on 25, 465 and 587, below 1024,
# which needs CAP_NET_BIND_SERVICE, and Fargate lets a task definition add no capability
# but SYS_PTRACE. NET_BIND_SERVICE is in the default set Fargate (like Docker) gives a
# container, i.e. in its bounding set, so a file capability on the binary
# (security.capability = cap_net_bind_service+ep, a PAX xattr record on its tar entry) raises
# it when the non-root user executes baton. The process gets that one capability and
# nothing else root would have. A runtime started with --cap-drop ALL refuses to execute the
# binary (the capability is outside the bounding set): run it with the default set, or give
# it unprivileged listen ports instead (BATON_LISTEN__RELAY etc.).
#
# infra/Dockerfile builds the same image with Docker.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -eq 1 ]] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

# shellcheck source=infra/zigbuild.sh
source "$ROOT/infra/zigbuild.sh"
BIN=$TARGET_OUT/release/baton
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[[ -f $CA_BUNDLE ]] || { echo "no CA bundle at $CA_BUNDLE (apt-get install ca-certificates)" >&2; exit 1; }

cd "$ROOT"
echo "== baton ($TARGET, profile release)"
cargo zigbuild --release --target "$TARGET" --locked -p baton
check_glibc "$BIN" >/dev/null

# What the dynamic loader maps, as ldd resolves it here: "name => /path (addr)" lines and
# the loader's own "/path (addr)" line; the vDSO has no file.
LIBS=$(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
[[ -n $LIBS ]] || { echo "ldd found no libraries for $BIN" >&2; exit 1; }

# The release profile keeps line tables (~200 MB of DWARF in baton): the image gets the
# binary without them; its symbols stay, so a panic's backtrace still names functions.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
objcopy --strip-debug "$BIN" "$WORK/baton"

python3 - "$WORK/baton" "$CA_BUNDLE" "$OUT/baton-gateway.oci.tar" $LIBS <<'PY'
import gzip, hashlib, io, json, os, struct, sys, tarfile

binary, ca_bundle, dest, libs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
MTIME = 0
UID = 65532

# security.capability, VFS_CAP_REVISION_2: cap_net_bind_service (bit 10) permitted and,
# through the effective flag, effective at exec.
CAP_XATTR = struct.pack("<5I", 0x02000000 | 0x1, 1 << 10, 0, 0, 0)

entries = {}  # path in the image -> (TarInfo, bytes or None)


def add_dir(path, mode=0o755):
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        p = "/".join(parts[:i])
        if p not in entries:
            ti = tarfile.TarInfo(p)
            ti.type, ti.mode = tarfile.DIRTYPE, mode if i == len(parts) else 0o755
            entries[p] = (ti, None)


def add_file(path, data, mode=0o644, pax=None):
    path = path.strip("/")
    add_dir(os.path.dirname(path))
    ti = tarfile.TarInfo(path)
    ti.size, ti.mode = len(data), mode
    if pax:
        ti.pax_headers = pax
    entries[path] = (ti, data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


add_file(
    "usr/local/bin/baton",
    read(binary),
    0o755,
    # PAX xattr record; the value's bytes are all < 0x80, so it is plain UTF-8.
    {"SCHILY.xattr.security.capability": CAP_XATTR.decode("ascii")},
)
for lib in libs:
    # Stored under the path ldd printed (the loader's is the binary's PT_INTERP), with the
    # content of the file its symlinks lead to.
    add_file(lib, read(os.path.realpath(lib)), 0o755)
add_file("etc/ssl/certs/ca-certificates.crt", read(ca_bundle))
add_file(
    "etc/passwd",
    b"root:x:0:0:root:/root:/sbin/nologin\n"
    b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
)
add_file("etc/group", b"root:x:0:\nnonroot:x:65532:\n")
add_file("etc/nsswitch.conf", b"hosts: files dns\n")
add_dir("tmp", 0o1777)
add_dir("home/nonroot", 0o700)
add_dir("root", 0o700)

raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for path in sorted(entries):
        ti, data = entries[path]
        ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = MTIME, 0, 0, "", ""
        if path == "home/nonroot":
            ti.uid = ti.gid = UID
        tar.addfile(ti, io.BytesIO(data) if data is not None else None)
layer_tar = raw.getvalue()
gz = io.BytesIO()
with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=9, mtime=0, filename="") as g:
    g.write(layer_tar)
layer_gz = gz.getvalue()


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


config = canonical({
    "architecture": "amd64",
    "os": "linux",
    "created": "1970-01-01T00:00:00Z",
    "config": {
        "User": f"{UID}:{UID}",
        "Entrypoint": ["/usr/local/bin/baton"],
        "Cmd": ["serve"],
        "ExposedPorts": {"25/tcp": {}, "465/tcp": {}, "587/tcp": {}},
        "Env": [
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        ],
        "WorkingDir": "/",
        "Labels": {
            "org.opencontainers.image.title": "baton-gateway",
            "org.opencontainers.image.description": "Baton SMTP relay: the edge gateway (baton serve)",
        },
    },
    "rootfs": {"type": "layers", "diff_ids": [digest(layer_tar)]},
    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "infra/build-image.sh"}],
})
manifest = canonical({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": digest(config),
        "size": len(config),
    },
    "layers": [{
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": digest(layer_gz),
        "size": len(layer_gz),
    }],
})
index = canonical({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(manifest),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "baton-gateway:latest"},
    }],
})

files = {
    "oci-layout": canonical({"imageLayoutVersion": "1.0.0"}),
    "index.json": index,
}
for blob in (layer_gz, config, manifest):
    files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
tmp = dest + ".tmp"
with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
    for d in ("blobs", "blobs/sha256"):
        ti = tarfile.TarInfo(d)
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
        tar.addfile(ti)
    for name in sorted(files):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(files[name]), 0o644, MTIME
        tar.addfile(ti, io.BytesIO(files[name]))
os.replace(tmp, dest)
print(f"{dest}: manifest {digest(manifest)}, layer {len(layer_gz)} bytes gzipped "
      f"({len(layer_tar)} bytes), {len(libs)} libraries")
PY
