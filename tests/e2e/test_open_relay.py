"""Never an open relay: unauthenticated clients reach only accepted domains, and none of the
classic routing tricks gets a message out; tenants send only as their own domains."""

import smtplib

import pytest

from conftest import RawClient, client_tls, code

TRICKS = {
    "plain-foreign-domain": ("<x@elsewhere.test>", "554 5.7.1"),
    "percent-hack": ("<x%elsewhere.test@inbound.test>", "550 5.7.1"),
    "bang-path": ("<elsewhere.test!x@inbound.test>", "550 5.7.1"),
    "source-route": ("<@inbound.test:x@elsewhere.test>", "550 5.7.1"),
    "quoted-at": ('<"x@elsewhere.test"@inbound.test>', "550 5.7.1"),
    "ip-literal": ("<x@[127.0.0.1]>", "554 5.7.1"),
    "ipv6-literal": ("<x@[IPv6:::1]>", "554 5.7.1"),
}


@pytest.fixture
def inbound_relay(spawn_relay):
    return spawn_relay(**{"relay.accept_domains": ["inbound.test"], "relay.allow_networks": []})


def send_raw(relay, rcpt):
    c = RawClient(relay.addr("relay"))
    c.cmd("EHLO stranger.test")
    assert code(c.cmd("MAIL FROM:<s@stranger.test>")) == "250 2.1.0"
    reply = c.cmd(f"RCPT TO:{rcpt}")
    data = c.cmd("DATA")
    if data.startswith("354"):
        c.cmd("From: a@sender.test\r\nSubject: x\r\n\r\ny\r\n.")
    c.cmd("QUIT")
    return reply, data


@pytest.mark.parametrize("rcpt,expected", TRICKS.values(), ids=TRICKS.keys())
def test_relay_trick_is_refused(inbound_relay, rcpt, expected):
    reply, data = send_raw(inbound_relay, rcpt)
    assert code(reply) == expected, reply
    assert code(data) == "554 5.5.1", "DATA without a valid recipient must fail"
    assert inbound_relay.queue_list() == []


def test_mail_for_an_accepted_domain_is_taken(inbound_relay):
    reply, data = send_raw(inbound_relay, "<x@Inbound.Test>")
    assert code(reply) == "250 2.1.5"
    [m] = inbound_relay.queue_list()
    assert m["recipients"] == ["x@inbound.test"]


def test_submission_requires_auth_for_mail(inbound_relay):
    c = RawClient(inbound_relay.addr("submission"))
    c.cmd("EHLO x")
    assert code(c.cmd("MAIL FROM:<s@stranger.test>")) == "530 5.7.0"
    c.cmd("STARTTLS")
    c.starttls()
    c.cmd("EHLO x")
    assert code(c.cmd("MAIL FROM:<s@stranger.test>")) == "530 5.7.0"


def test_allow_listed_network_may_relay_anywhere(spawn_relay):
    relay = spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"]})
    reply, _ = send_raw(relay, "<x@elsewhere.test>")
    assert code(reply) == "250 2.1.5"
    assert len(relay.queue_list()) == 1


def test_tenant_may_only_send_as_its_own_domains(tenant_relay):
    with smtplib.SMTP(*tenant_relay.addr("submission"), timeout=30) as s:
        s.starttls(context=client_tls())
        s.ehlo()
        s.login("alice", "s3cret")
        refused = s.mail("ceo@bank.example")
        assert refused[0] == 553 and refused[1].startswith(b"5.7.1"), refused
        s.rset()
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail(
                "news@acme.test",
                ["bob@example.org"],
                "From: CEO <ceo@bank.example>\r\nSubject: wire money\r\n\r\nnow\r\n",
            )
        assert e.value.smtp_code == 553 and e.value.smtp_error.startswith(b"5.7.1")
        # Its own domain in both places goes through.
        assert s.sendmail("news@acme.test", ["bob@example.org"], "From: News <news@acme.test>\r\n\r\nok\r\n") == {}
    assert len(tenant_relay.queue_list()) == 1
