"""SMTP smuggling: every known end-of-data variant other than CRLF.CRLF is refused, the
session closes, and the smuggled second message never exists."""

import pytest

from conftest import RawClient, code, open_transaction

VARIANTS = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-lf": b"\r.\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-lf": b"\r\n.\n",
    "crlf-dot-cr": b"\r\n.\r",
    "crlf-dot-cr-crlf": b"\r\n.\r\r\n",
    "cr-crlf-dot-cr-crlf": b"\r\r\n.\r\r\n",
    "crlf-nul-dot-crlf": b"\r\n\x00.\r\n",
}

SMUGGLED = b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n"


def assert_smuggling_refused(relay, c, variant, sender=b"a@sender.test"):
    """After MAIL and RCPT on `c`: the variant and the smuggled message behind it are
    refused, the session ends, and nothing is queued."""
    assert c.cmd("DATA").startswith("354")
    c.send(b"From: " + sender + b"\r\nSubject: first\r\n\r\nbody" + variant + SMUGGLED)
    reply = c.reply()
    expected = "550 5.6.0" if b"\x00" in variant else "550 5.5.2"
    assert code(reply) == expected, reply
    # Nothing after the refusal is answered: the session is over.
    assert c.closed(), f"connection still open, extra replies: {c.buf!r}"
    assert b"250" not in c.buf
    assert relay.queue_list() == []


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_smuggling_variant_is_refused_and_nothing_is_queued(spawn_relay, variant):
    relay = spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"]})
    assert_smuggling_refused(relay, open_transaction(relay), variant)


def test_bare_lf_in_a_command_line_is_refused(spawn_relay):
    relay = spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"]})
    c = RawClient(relay.addr("relay"))
    c.send(b"EHLO client.test\n")
    assert code(c.reply()) == "500 5.5.2"
    c.send(b"NOOP\rNOOP\r\n")
    assert code(c.reply()) == "500 5.5.2"
    assert code(c.cmd("NOOP")) == "250 2.0.0"


def test_bare_lf_inside_bdat_is_refused(spawn_relay):
    relay = spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"]})
    c = open_transaction(relay)
    chunk = b"From: a@sender.test\r\nSubject: x\r\n\r\na\nb\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    assert code(c.reply()) == "550 5.5.2"
    assert c.closed()
    assert relay.queue_list() == []
