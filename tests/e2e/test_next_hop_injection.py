"""SMTP command injection through DSN parameters, end to end: an unauthenticated client on
the relay listener tries to smuggle CR LF into ENVID and ORCPT (xtext `+0D+0A`), hoping the
relay decodes them and writes them onto its next-hop session as extra commands. The next hop
is a raw server that logs every line it receives: it is the witness."""

import pytest

from conftest import RawClient, code
from nexthop import NextHop


@pytest.fixture
def hop():
    h = NextHop()
    yield h
    h.stop()


@pytest.fixture
def relay(spawn_relay, hop):
    return spawn_relay(
        **{
            "pipeline.run_stages": True,
            "relay.accept_domains": ["inbound.test"],
            "relay.allow_networks": [],
            "delivery.routes": [{"pattern": "inbound.test", "target": hop.target}],
        }
    )


def test_crlf_in_dsn_parameters_never_reaches_the_next_hop(relay, hop):
    c = RawClient(relay.addr("relay"))
    assert code(c.cmd("EHLO attacker.test")).startswith("250")
    # ENVID decoding to "x\r\nRCPT TO:<victim@elsewhere.test>": refused, not decoded onward.
    reply = c.cmd("MAIL FROM:<a@sender.test> ENVID=x+0D+0ARCPT+20TO:<victim@elsewhere.test>")
    assert code(reply) == "501 5.5.4", reply
    assert code(c.cmd("MAIL FROM:<a@sender.test>")) == "250 2.1.0"
    reply = c.cmd("RCPT TO:<bob@inbound.test> ORCPT=rfc822;b+0D+0ARSET")
    assert code(reply) == "501 5.5.4", reply
    assert code(c.cmd("RSET")).startswith("250")

    # A clean transaction whose parameters need xtext: they must arrive encoded, type kept.
    assert code(c.cmd("MAIL FROM:<a@sender.test> ENVID=abc+2Bdef")) == "250 2.1.0"
    reply = c.cmd("RCPT TO:<bob@inbound.test> NOTIFY=FAILURE ORCPT=rfc822;b+2Bc@inbound.test")
    assert code(reply) == "250 2.1.5", reply
    assert code(c.cmd("RCPT TO:<carol@inbound.test>")) == "250 2.1.5"
    assert c.cmd("DATA").startswith("354")
    reply = c.cmd("From: a@sender.test\r\nSubject: clean\r\n\r\nhello\r\n.")
    assert code(reply) == "250 2.0.0", reply
    c.cmd("QUIT")
    c.close()

    hop.wait_messages(1)
    commands = hop.commands()
    mails = [line for line in commands if line.upper().startswith(b"MAIL")]
    rcpts = [line for line in commands if line.upper().startswith(b"RCPT")]
    assert len(mails) == 1, commands
    assert b" ENVID=abc+2Bdef" in mails[0], mails
    assert len(rcpts) == 2, commands
    [bob] = [r for r in rcpts if b"<bob@inbound.test>" in r]
    assert b" ORCPT=rfc822;b+2Bc@inbound.test" in bob, bob
    assert b" NOTIFY=FAILURE" in bob, bob
    [carol] = [r for r in rcpts if b"<carol@inbound.test>" in r]
    assert b"ORCPT" not in carol, carol
    everything = b"\n".join(hop.lines)
    assert b"victim" not in everything, commands
    assert all(not line.upper().startswith(b"RSET") for line in commands), commands
