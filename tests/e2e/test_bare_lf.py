"""Bare LF in message data. Python's smtplib sends a bytes message as it is, so LF-only
messages are common on submission: there they are stored with CRLF (as Postfix's
`smtpd_forbid_bare_newline = normalize`). CRLF.CRLF stays the only end of data, so every
smuggling variant is still refused there; on the port-25 listener bare LF is refused."""

import base64
import smtplib

import pytest

from conftest import RawClient, client_tls, code
from test_smuggling import VARIANTS, assert_smuggling_refused

LF_MESSAGE = b"From: news@acme.test\nTo: bob@example.org\nSubject: lf only\n\nHi Bob.\n.leading dot\n"


def submitted(relay):
    s = smtplib.SMTP(*relay.addr("submission"), timeout=30)
    s.starttls(context=client_tls())
    s.login("alice", "s3cret")
    return s


def test_smtplib_bytes_with_lf_line_endings_are_stored_with_crlf(tenant_relay):
    with submitted(tenant_relay) as s:
        assert s.sendmail("news@acme.test", ["bob@example.org"], LF_MESSAGE) == {}
    [m] = tenant_relay.queue_list()
    body = tenant_relay.message(m["id"])
    expected = LF_MESSAGE.replace(b"\n", b"\r\n")
    assert expected in body, body
    assert b"\n" not in body.replace(b"\r\n", b""), "a bare LF was stored"


def test_bare_lf_on_the_port_25_listener_is_refused(spawn_relay):
    relay = spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"]})
    with pytest.raises(smtplib.SMTPDataError) as refused:
        with smtplib.SMTP(*relay.addr("relay"), timeout=30) as s:
            s.sendmail("a@sender.test", ["b@example.org"], LF_MESSAGE)
    assert refused.value.smtp_code == 550
    assert relay.queue_list() == []
    # The same message with CRLF is fine there.
    with smtplib.SMTP(*relay.addr("relay"), timeout=30) as s:
        assert s.sendmail("a@sender.test", ["b@example.org"], LF_MESSAGE.replace(b"\n", b"\r\n")) == {}


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_smuggling_is_refused_on_submission_too(tenant_relay, variant):
    c = open_transaction_authenticated(tenant_relay)
    assert_smuggling_refused(tenant_relay, c, variant, sender=b"news@acme.test")


def open_transaction_authenticated(relay):
    """A RawClient on submission after STARTTLS, AUTH, MAIL and one RCPT."""
    c = RawClient(relay.addr("submission"))
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").startswith("220")
    c.starttls()
    c.cmd("EHLO client.test")
    token = base64.b64encode(b"\0alice\0s3cret").decode()
    assert code(c.cmd(f"AUTH PLAIN {token}")) == "235 2.7.0"
    assert code(c.cmd("MAIL FROM:<news@acme.test>")) == "250 2.1.0"
    assert code(c.cmd("RCPT TO:<bob@example.org>")) == "250 2.1.5"
    return c
