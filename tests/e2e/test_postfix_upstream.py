"""A real Postfix relaying through Baton as its smarthost: STARTTLS required, SASL AUTH PLAIN
with the tenant's credentials, then the message sits in Baton's queue with Postfix's trace."""

import os
import shutil
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port

MASTER_CF = """\
{port} inet n  -       n       -       -       smtpd
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
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = upstream.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {dir}/maillog
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
relayhost = [127.0.0.1]:{baton_port}
smtp_tls_security_level = encrypt
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:alice:s3cret
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_sasl_mechanism_filter = plain
"""


@pytest.fixture
def postfix_upstream(tenant_relay):
    for tool in ("postfix", "postconf"):
        assert shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}"), f"{tool} missing: run scripts/install-test-deps.sh"
    # Postfix's daemons run as the postfix user and must reach their directories; pytest's
    # tmp_path lives under a root-only 0700 directory.
    base = Path(tempfile.mkdtemp(prefix="baton-e2e-postfix-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    for sub in ("etc", "queue", "data"):
        (base / sub).mkdir()
    shutil.chown(base / "data", "postfix", "postfix")
    port = free_port()
    (base / "etc" / "main.cf").write_text(MAIN_CF.format(dir=base, baton_port=tenant_relay.ports["submission"]))
    (base / "etc" / "master.cf").write_text(MASTER_CF.format(port=f"127.0.0.1:{port}"))
    r = subprocess.run(["postfix", "-c", str(base / "etc"), "check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    subprocess.run(["postfix", "-c", str(base / "etc"), "start"], check=True, capture_output=True)
    try:
        yield ("127.0.0.1", port), base
    finally:
        subprocess.run(["postfix", "-c", str(base / "etc"), "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_postfix_relays_through_baton_with_starttls_and_auth(tenant_relay, postfix_upstream):
    addr, base = postfix_upstream
    deadline = time.time() + 15
    while True:
        try:
            s = smtplib.SMTP(*addr, timeout=10)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    with s:
        s.sendmail(
            "news@acme.test",
            ["bob@example.org"],
            "From: news@acme.test\r\nTo: bob@example.org\r\nSubject: via postfix\r\n\r\nrelayed\r\n",
        )
    deadline = time.time() + 30
    queued = []
    while time.time() < deadline and not queued:
        queued = tenant_relay.queue_list()
        time.sleep(0.3)
    log = (base / "maillog").read_text(errors="replace") if (base / "maillog").exists() else ""
    assert queued, f"Postfix did not hand the message to Baton. Postfix log:\n{log[-3000:]}"
    [m] = queued
    assert m["from"] == "news@acme.test" and m["recipients"] == ["bob@example.org"]
    assert m["tenant"] == "acme"
    body = tenant_relay.message(m["id"]).decode()
    received = body.split("\r\n", 5)
    assert "ESMTPSA" in "\r\n".join(received[:5]), body[:400]
    assert "Authenticated sender: alice tenant acme" in body
    assert "by upstream.test (Postfix)" in body, "Postfix's own trace header is kept"
    assert "status=sent" in log and "relay=127.0.0.1" in log
