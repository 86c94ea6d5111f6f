"""A real Postfix as the receiving MX: Baton finds it through DNS, upgrades with STARTTLS
(opportunistic TLS) and Postfix stores the message in a mailbox."""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from mailnet import TestDns, free_port_for

MX_IP = "127.0.0.17"

MASTER_CF = """\
{listen} inet n  -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
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

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.postfix-mx.test
mydestination =
# 127.0.0.17 is routed to lo but not an interface address, which inet_interfaces insists on;
# master.cf binds the listener to it instead.
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {dir}/maillog
smtpd_tls_security_level = may
smtpd_tls_cert_file = {dir}/etc/cert.pem
smtpd_tls_key_file = {dir}/etc/key.pem
smtpd_tls_received_header = yes
virtual_mailbox_domains = postfix-mx.test
virtual_mailbox_base = {dir}/mail
virtual_mailbox_maps = static:inbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
smtp_dns_support_level = disabled
"""


@pytest.fixture
def postfix_mx():
    base = Path(tempfile.mkdtemp(prefix="baton-e2e-postfix-mx-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    for sub in ("etc", "queue", "data", "mail"):
        (base / sub).mkdir()
    pw = pwd.getpwnam("postfix")
    shutil.chown(base / "data", "postfix", "postfix")
    shutil.chown(base / "mail", "postfix", "postfix")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mx.postfix-mx.test",
         "-keyout", str(base / "etc" / "key.pem"), "-out", str(base / "etc" / "cert.pem")],
        check=True, capture_output=True,
    )
    port = free_port_for([MX_IP])
    (base / "etc" / "main.cf").write_text(MAIN_CF.format(dir=base, ip=MX_IP, uid=pw.pw_uid, gid=pw.pw_gid))
    (base / "etc" / "master.cf").write_text(MASTER_CF.format(listen=f"{MX_IP}:{port}"))
    r = subprocess.run(["postfix", "-c", str(base / "etc"), "check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    subprocess.run(["postfix", "-c", str(base / "etc"), "start"], check=True, capture_output=True)
    try:
        yield port, base
    finally:
        subprocess.run(["postfix", "-c", str(base / "etc"), "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_delivery_to_a_real_postfix_over_starttls(spawn_relay, postfix_mx):
    port, base = postfix_mx
    dns = TestDns()
    try:
        dns.mx("postfix-mx.test", (10, "mx.postfix-mx.test"))
        dns.a("mx.postfix-mx.test", MX_IP)
        relay = spawn_relay(
            **{
                "pipeline.run_stages": True,
                "delivery.port": port,
                "delivery.nameservers": [dns.addr],
                "relay.allow_networks": ["127.0.0.0/8"],
            }
        )
        r = subprocess.run(
            ["swaks", "--server", "%s:%d" % relay.addr("relay"), "--from", "news@sender.test",
             "--to", "olga@postfix-mx.test", "--h-Subject", "to a real postfix"],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        queue_id = re.search(r"queued as (\S+)", r.stdout).group(1)
        mailbox = base / "mail" / "inbox"
        deadline = time.time() + 30
        while time.time() < deadline and not (mailbox.exists() and b"to a real postfix" in mailbox.read_bytes()):
            time.sleep(0.3)
        log = (base / "maillog").read_text(errors="replace") if (base / "maillog").exists() else ""
        assert mailbox.exists(), f"nothing delivered; postfix log:\n{log[-3000:]}"
        stored = mailbox.read_bytes()
        assert b"to a real postfix" in stored
        # Postfix records the TLS session in its Received: header when STARTTLS was used.
        assert b"with ESMTPS" in stored, stored[:800]
        assert re.search(rb"\(using TLSv1\.[23]", stored), stored[:800]
        timeline = relay.cli("message", "show", queue_id).stdout
        assert "delivered" in timeline and "mx.postfix-mx.test" in timeline, timeline
    finally:
        dns.stop()
