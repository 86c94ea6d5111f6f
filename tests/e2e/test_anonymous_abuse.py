"""What an unauthenticated client on the relay listener must never make us do: sign with a
tenant's key, suppress an address, or bounce to an address it may have forged. Mail for an
accepted domain goes to a route (an internal server) that logs every line it receives."""

import json
import smtplib
import time

import pytest

from conftest import RawClient, client_tls, code
from nexthop import NextHop


@pytest.fixture
def nexthop():
    hop = NextHop(refuse=("gone@",))
    yield hop
    hop.stop()


@pytest.fixture
def relay(spawn_relay, nexthop):
    r = spawn_relay(
        **{
            "pipeline.run_stages": True,
            "relay.accept_domains": ["inbound.test"],
            "relay.allow_networks": [],
            "delivery.routes": [{"pattern": "inbound.test", "target": nexthop.target}],
            "delivery.retry_initial": "1s",
        }
    )
    r.add_user("alice", "acme", "s3cret")
    r.add_domain("acme.test", "acme")
    return r


def anonymous(relay, mail_from, rcpt, message):
    c = RawClient(relay.addr("relay"))
    assert c.cmd("EHLO attacker.test").startswith("250")
    assert code(c.cmd(f"MAIL FROM:<{mail_from}>")) == "250 2.1.0"
    assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
    assert c.cmd("DATA").startswith("354")
    reply = c.cmd(message.replace("\n", "\r\n") + "\r\n.")
    c.cmd("QUIT")
    c.close()
    return reply


def timeline(relay, queue_id, needle, timeout=30):
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = relay.cli("message", "show", queue_id, check=False).stdout
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared:\n{text}")


def test_anonymous_mail_with_a_tenant_domain_in_from_is_never_signed(relay, nexthop):
    reply = anonymous(relay, "ceo@acme.test", "staff@inbound.test",
                      "From: CEO <ceo@acme.test>\nSubject: wire the money\n\npay now")
    assert code(reply) == "250 2.0.0", reply
    queue_id = reply.rsplit(" ", 1)[-1].strip()
    # The same message submitted by the tenant itself is signed: the check can fail.
    with smtplib.SMTP(*relay.addr("submission"), timeout=10) as s:
        s.starttls(context=client_tls())
        s.login("alice", "s3cret")
        s.sendmail("ceo@acme.test", ["staff@inbound.test"],
                   b"From: CEO <ceo@acme.test>\r\nSubject: real\r\n\r\nhello\r\n")
    messages = nexthop.wait_messages(2)
    by_subject = {b"wire the money" in m[2]: m[2] for m in messages}
    assert b"DKIM-Signature" not in by_subject[True], by_subject[True][:400]
    assert b"DKIM-Signature" in by_subject[False]
    assert "not submitted by a tenant" in timeline(relay, queue_id, "not signed")


def test_anonymous_mail_without_one_from_is_refused_before_250(relay, nexthop):
    for header in ("Subject: no author", "From: a@x.test\nFrom: b@x.test\nSubject: two"):
        reply = anonymous(relay, "a@x.test", "staff@inbound.test", header + "\n\nbody")
        assert code(reply) == "550 5.6.0", reply
    assert nexthop.messages == [] and relay.queue_list() == []


def test_anonymous_mail_refused_downstream_suppresses_nobody_and_bounces_nothing(relay, nexthop):
    # The forged sender is at the accepted domain, so a DSN would reach the logging next hop.
    reply = anonymous(relay, "victim@inbound.test", "gone@inbound.test",
                      "From: victim@inbound.test\nSubject: secret\n\nbody to reflect")
    assert code(reply) == "250 2.0.0", reply
    queue_id = reply.rsplit(" ", 1)[-1].strip()
    timeline(relay, queue_id, "no DSN")
    assert json.loads(relay.cli("suppression", "list", "--json").stdout) == []
    # The next hop refused the recipient and saw no message at all: no backscatter.
    assert any(b"RCPT TO:<gone@inbound.test>" in l for l in nexthop.commands())
    assert nexthop.messages == []
    # And a later message to the same address is still attempted, not suppressed.
    reply = anonymous(relay, "other@x.test", "gone@inbound.test", "From: other@x.test\n\nagain")
    second = reply.rsplit(" ", 1)[-1].strip()
    text = timeline(relay, second, "failed")
    assert "suppression" not in text, text


def test_a_network_bound_to_a_tenant_relays_as_that_tenant(spawn_relay, nexthop):
    """An allow-listed network is nobody's; one the config binds to a tenant is that tenant's."""
    relay = spawn_relay(
        **{
            "pipeline.run_stages": True,
            "relay.tenant_networks": [{"network": "127.0.0.0/8", "tenant": "acme"}],
            "delivery.routes": [{"pattern": "*", "target": nexthop.target}],
        }
    )
    relay.add_domain("acme.test", "acme")
    reply = anonymous(relay, "app@acme.test", "someone@example.org",
                      "From: App <app@acme.test>\nSubject: bound\n\nhello")
    assert code(reply) == "250 2.0.0", reply
    [(_, _, data)] = nexthop.wait_messages(1)
    assert data.count(b"DKIM-Signature:") == 2, data[:600]
    queue_id = reply.rsplit(" ", 1)[-1].strip()
    assert "d=acme.test" in timeline(relay, queue_id, "signed")
