"""A real Postfix as the receiving MX: Baton finds it through DNS, upgrades with STARTTLS
(opportunistic TLS) and Postfix stores the message in a mailbox."""

import json
import pwd
import re
import shutil
import subprocess
import time

import pytest

from mailnet import TestDns, free_port_for
from private_postfix import private_postfix

MX_IP = "127.0.0.17"

MX_MAIN_CF = """\
myhostname = mx.postfix-mx.test
# 127.0.0.17 is routed to lo but not an interface address, which inet_interfaces insists on;
# master.cf binds the listener to it instead.
inet_interfaces = all
smtpd_tls_security_level = may
smtpd_tls_cert_file = {dir}/etc/cert.pem
smtpd_tls_key_file = {dir}/etc/key.pem
smtpd_tls_received_header = yes
virtual_mailbox_domains = postfix-mx.test
virtual_mailbox_base = {dir}/mail
virtual_mailbox_maps = static:inbox
virtual_uid_maps = static:UID
virtual_gid_maps = static:GID
"""


def make_mailbox_and_certificate(base):
    (base / "mail").mkdir()
    shutil.chown(base / "mail", "postfix", "postfix")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mx.postfix-mx.test",
         "-keyout", str(base / "etc" / "key.pem"), "-out", str(base / "etc" / "cert.pem")],
        check=True, capture_output=True,
    )


@pytest.fixture
def postfix_mx():
    pw = pwd.getpwnam("postfix")
    port = free_port_for([MX_IP])
    main_cf = MX_MAIN_CF.replace("UID", str(pw.pw_uid)).replace("GID", str(pw.pw_gid))
    with private_postfix(f"{MX_IP}:{port}", main_cf, setup=make_mailbox_and_certificate) as base:
        yield port, base


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


BOUNCING_MX_MAIN_CF = MX_MAIN_CF + """\
# Accepted at RCPT, then bounced by the error transport: the DSN comes hours later in real
# life, a moment later here, and goes to the envelope sender through Baton's port 25.
transport_maps = inline:{{ {{gone@postfix-mx.test=error:5.1.1 mailbox unavailable}} }}
relayhost = [127.0.0.1]:RELAYPORT
# Else smtpd refuses at RCPT what the error transport would bounce.
smtpd_reject_unlisted_recipient = no
"""


def test_a_real_postfix_mx_accepts_then_bounces_to_the_return_path(spawn_relay):
    from test_pipeline import submit
    dns = TestDns()
    pw = pwd.getpwnam("postfix")
    port = free_port_for([MX_IP])
    try:
        dns.mx("postfix-mx.test", (10, "mx.postfix-mx.test"))
        dns.a("mx.postfix-mx.test", MX_IP)
        relay = spawn_relay(**{
            "pipeline.run_stages": True,
            "delivery.port": port,
            "delivery.nameservers": [dns.addr],
            "bounces.return_path": True,
            # The bounce comes from an MTA that is nobody's: unauthenticated, not allow-listed.
            "relay.allow_networks": [],
        })
        relay.add_user("alice", "acme", "s3cret")
        relay.cli("domain", "add", "acme.test", "--tenant", "acme")
        main_cf = (BOUNCING_MX_MAIN_CF.replace("UID", str(pw.pw_uid)).replace("GID", str(pw.pw_gid))
                   .replace("RELAYPORT", str(relay.addr("relay")[1])))
        with private_postfix(f"{MX_IP}:{port}", main_cf, setup=make_mailbox_and_certificate) as base:
            first = submit(relay, "gone@postfix-mx.test")
            deadline = time.time() + 60
            entries = []
            while time.time() < deadline and not entries:
                time.sleep(0.5)
                entries = [s for s in json.loads(relay.cli("suppression", "list", "--json").stdout)
                           if s["key"] == "acme/gone@postfix-mx.test"]
            log = (base / "maillog").read_text(errors="replace") if (base / "maillog").exists() else ""
            assert entries, f"no suppression; postfix log:\n{log[-3000:]}\n{relay.cli('message', 'show', first).stdout}"
            assert entries[0]["queue_id"] == first and "5.1.1" in entries[0]["reason"], entries
            # Postfix had taken it: the relay saw 250, and learned otherwise from the DSN.
            timeline = relay.cli("message", "show", first).stdout
            assert "delivered" in timeline and "bounced" in timeline, timeline
            events = [e["eventType"] for e in json.loads(relay.cli("events", "--json").stdout)
                      if e["mail"]["messageId"] == first]
            assert events == ["Send", "Delivery", "Bounce"], events
    finally:
        dns.stop()
