"""A private Postfix instance for tests (its own config, queue and log under /var/tmp), used
as an upstream relaying through Baton or as a receiving MX."""

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

MASTER_CF = """\
{listen} inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
virtual   unix  -       n       n       -       -       virtual
postlog   unix-dgram n  -       n       -       1       postlogd
"""

COMMON_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {dir}/maillog
smtp_dns_support_level = disabled
"""


@contextmanager
def private_postfix(listen, main_cf, setup=None):
    """Starts Postfix with smtpd on `listen` ("ip:port") and `main_cf` (a template that may
    use {dir}) after the common settings; `setup(base)` may prepare files first. Yields the
    instance's base directory; stops and removes it afterwards."""
    for tool in ("postfix", "postconf"):
        assert shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}"), f"{tool} missing: run scripts/install-test-deps.sh"
    # Postfix's daemons run as the postfix user and must reach their directories; pytest's
    # tmp_path lives under a root-only 0700 directory.
    base = Path(tempfile.mkdtemp(prefix="baton-e2e-postfix-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    for sub in ("etc", "queue", "data"):
        (base / sub).mkdir()
    shutil.chown(base / "data", "postfix", "postfix")
    if setup:
        setup(base)
    (base / "etc" / "main.cf").write_text((COMMON_MAIN_CF + main_cf).format(dir=base))
    (base / "etc" / "master.cf").write_text(MASTER_CF.format(listen=listen))
    etc = str(base / "etc")
    try:
        r = subprocess.run(["postfix", "-c", etc, "check"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        subprocess.run(["postfix", "-c", etc, "start"], check=True, capture_output=True)
        yield base
    finally:
        subprocess.run(["postfix", "-c", etc, "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
