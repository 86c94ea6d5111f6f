"""A real Postfix relaying through Baton as its smarthost: STARTTLS required, SASL AUTH PLAIN
with the tenant's credentials, then the message sits in Baton's queue with Postfix's trace."""

import smtplib
import time

import pytest

from conftest import free_port
from private_postfix import private_postfix

UPSTREAM_MAIN_CF = """\
myhostname = upstream.test
inet_interfaces = 127.0.0.1
smtpd_relay_restrictions = permit_mynetworks, reject
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
    port = free_port()
    # {dir} stays a template for private_postfix; only the port is filled in here.
    main_cf = UPSTREAM_MAIN_CF.replace("{baton_port}", str(tenant_relay.ports["submission"]))
    with private_postfix(f"127.0.0.1:{port}", main_cf) as base:
        yield ("127.0.0.1", port), base


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
    assert "Authenticated sender" not in body, "the login name is not handed to recipients"
    assert "by upstream.test (Postfix)" in body, "Postfix's own trace header is kept"
    assert "status=sent" in log and "relay=127.0.0.1" in log
