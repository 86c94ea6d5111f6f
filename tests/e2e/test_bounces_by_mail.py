"""Bounces that come back later, by mail: tenant mail goes out from per-recipient return
paths; a DSN or complaint mailed to one is taken on port 25 from anyone and suppresses that
recipient for the tenant; a forged return path is refused at RCPT."""

import json
import re
import smtplib
import time

import pytest

from awsnet import localstack, unique_name  # noqa: F401  (localstack is a fixture)
from test_aws_backend import start_aws_relay
from test_pipeline import net, show, submit  # noqa: F401  (the fixture is used by name)


@pytest.fixture
def relay(spawn_relay, net):  # noqa: F811
    dns, port, _ = net
    r = spawn_relay(**{
        "pipeline.run_stages": True,
        "delivery.port": port,
        "delivery.nameservers": [dns.addr],
        "bounces.return_path": True,
        # Mail leaves under another name than the one bounces arrive at (NAT gateways).
        "delivery.helo_name": "out.relay.test",
    })
    r.add_user("alice", "acme", "s3cret")
    out = r.cli("domain", "add", "acme.test", "--tenant", "acme").stdout
    # The records that bring bounces back here (hostname), and let SPF pass for the return
    # paths and the domain (the sending name).
    assert "bounce.acme.test  MX  10 relay.test." in out, out
    assert 'bounce.acme.test  TXT  "v=spf1 a:out.relay.test -all"' in out, out
    assert 'acme.test  TXT  "v=spf1 a:out.relay.test ~all"' in out, out
    return r


def return_path_of(sink, rcpt):
    [msg] = sink.wait_messages(1)
    assert f"X-Rcpt-Args: <{rcpt}>".encode() in msg
    path = re.search(rb"X-Mail-Args: <([^>]*)>", msg).group(1).decode()
    assert path.endswith("@bounce.acme.test") and path.startswith("b1-"), path
    return path


def return_path_of_message_to(sink, rcpt):
    [msg] = [m for m in sink.messages() if f"X-Rcpt-Args: <{rcpt}>".encode() in m]
    return re.search(rb"X-Mail-Args: <([^>]*)>", msg).group(1).decode()


def mail_to_relay(relay, rcpt, body):
    with smtplib.SMTP(*relay.addr("relay"), timeout=30) as s:
        s.ehlo("mx.example.org")
        s.mail("<>")
        code, reply = s.rcpt(rcpt)
        if code != 250:
            return code, reply.decode()
        s.data(body.encode())
        return 250, ""


DSN = """From: MAILER-DAEMON@mx.example.org
To: {path}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

The mail system could not deliver your message.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown

--B--
""".replace("\n", "\r\n")


def wait_for(predicate, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def test_a_dsn_mailed_back_later_suppresses_the_recipient(relay, net):  # noqa: F811
    _, _, sinks = net
    first = submit(relay, "bob@example.org")
    path = return_path_of(sinks["good"], "bob@example.org")

    # A forged or mangled return path is refused before DATA; a valid one is taken.
    assert mail_to_relay(relay, path.replace("-0-", "-1-", 1), "x")[0] == 550
    assert mail_to_relay(relay, "postmaster@bounce.acme.test", "x")[0] == 550
    assert mail_to_relay(relay, path, DSN.format(path=path, rcpt="bob@example.org"))[0] == 250

    suppressed = wait_for(lambda: [s for s in json.loads(relay.cli("suppression", "list", "--json").stdout)
                                   if "bob@example.org" in s["key"]], "the suppression")
    assert suppressed[0]["key"] == "acme/bob@example.org" and first == suppressed[0]["queue_id"], suppressed
    assert "5.1.1" in suppressed[0]["reason"], suppressed
    assert "bounced" in show(relay, first), show(relay, first)
    # The bounce the sender would have had without our return path: passed on as our DSN.
    [forwarded] = sinks["sender"].wait_messages(1)
    assert b"X-Mail-Args: <>" in forwarded and b"X-Rcpt-Args: <news@acme.test>" in forwarded, forwarded
    assert b"Final-Recipient: rfc822; bob@example.org" in forwarded and b"Status: 5.1.1" in forwarded, forwarded
    # The tenant's events, as SES would publish them: Send, Delivery, then the Bounce.
    events = [e for e in json.loads(relay.cli("events", "--tenant", "acme", "--json").stdout)
              if e["mail"]["messageId"] == first]
    assert [e["eventType"] for e in events] == ["Send", "Delivery", "Bounce"], events
    bounce = events[-1]["bounce"]
    assert (bounce["bounceType"], bounce["bounceSubType"]) == ("Permanent", "NoEmail"), bounce
    assert bounce["bouncedRecipients"][0]["emailAddress"] == "bob@example.org", bounce
    assert events[1]["delivery"]["recipients"] == ["bob@example.org"], events[1]
    table = relay.cli("events").stdout.splitlines()
    assert table[0].split() == ["AT", "TENANT", "EVENT", "MESSAGE", "DETAIL"], table
    # The next message to bob is not sent.
    second = submit(relay, "bob@example.org", subject="again")
    # Policy suppresses before anything is sent: once the timeline says so, nothing went out.
    wait_for(lambda: "suppress" in show(relay, second), "the suppressed second message")
    assert len(sinks["good"].messages()) == 1, "the second message must not go out"

    # The operator lets mail go to bob again.
    out = relay.cli("suppression", "remove", "bob@example.org", "--tenant", "acme").stdout
    assert "removed" in out, out
    assert not suppressed_entry(relay, "bob@example.org")
    again = relay.cli("suppression", "remove", "bob@example.org", "--tenant", "acme", check=False)
    assert again.returncode == 1 and "not on tenant acme's suppression list" in again.stderr, again.stderr
    third = submit(relay, "bob@example.org", subject="welcome back")
    sinks["good"].wait_messages(2)
    wait_for(lambda: "delivered" in show(relay, third), "the third message delivered")


ARF = """From: feedback@example.org
To: {path}
Subject: complaint about message
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="B"

--B
Content-Type: text/plain

This is an email abuse report.

--B
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Rcpt-To: {rcpt}

--B
Content-Type: message/rfc822

From: news@acme.test
To: {rcpt}
Subject: hello

hi
--B--
""".replace("\n", "\r\n")


def suppressed_entry(relay, rcpt):
    return [s for s in json.loads(relay.cli("suppression", "list", "--json").stdout) if rcpt in s["key"]]


def test_an_arf_complaint_mailed_back_suppresses_the_recipient(relay, net):  # noqa: F811
    _, _, sinks = net
    first = submit(relay, "carol@example.org")
    path = return_path_of(sinks["good"], "carol@example.org")
    assert mail_to_relay(relay, path, ARF.format(path=path, rcpt="carol@example.org"))[0] == 250
    [entry] = wait_for(lambda: suppressed_entry(relay, "carol@example.org"), "the suppression")
    assert entry["reason"].startswith("complaint") and entry["queue_id"] == first, entry
    assert "complaint" in show(relay, first)


def test_a_dsn_mailed_back_suppresses_the_recipient_on_aws(spawn_relay, net, localstack):  # noqa: F811
    _, _, sinks = net
    relay = start_aws_relay(spawn_relay, net, unique_name(), **{
        "bounces.return_path": True,
        # An unauthenticated client, as a remote MTA sending the bounce is.
        "relay.allow_networks": [],
    })
    first = submit(relay, "dan@example.org")
    path = return_path_of(sinks["good"], "dan@example.org")
    assert mail_to_relay(relay, path.replace("-0-", "-1-", 1), "x")[0] == 550
    assert mail_to_relay(relay, path, DSN.format(path=path, rcpt="dan@example.org"))[0] == 250
    [entry] = wait_for(lambda: suppressed_entry(relay, "dan@example.org"), "the suppression", timeout=60)
    assert entry["key"] == "acme/dan@example.org" and entry["queue_id"] == first, entry


def test_return_paths_start_for_a_domain_once_its_bounce_mx_is_verified(spawn_relay, net):  # noqa: F811
    dns, port, sinks = net
    relay = spawn_relay(**{
        "pipeline.run_stages": True,
        "delivery.port": port,
        "delivery.nameservers": [dns.addr],
    })
    relay.add_user("alice", "acme", "s3cret")
    out = relay.cli("domain", "add", "acme.test", "--tenant", "acme").stdout
    assert "bounce.acme.test  MX  10 relay.test." in out and "domain verify acme.test" in out, out
    submit(relay, "bob@example.org")
    [msg] = sinks["good"].wait_messages(1)
    assert b"X-Mail-Args: <news@acme.test>" in msg, "no return path before the MX is verified"

    early = relay.cli("domain", "verify", "acme.test", check=False)
    assert early.returncode == 1 and "publish `bounce.acme.test  MX  10 relay.test.`" in early.stderr, early.stderr
    dns.mx("bounce.acme.test", (20, "elsewhere.test"))
    dns.a("elsewhere.test", "192.0.2.1")
    dns.a("relay.test", "127.0.0.1")
    wrong = relay.cli("domain", "verify", "acme.test", check=False)
    assert wrong.returncode == 1 and "has MX elsewhere.test, not relay.test" in wrong.stderr, wrong.stderr

    dns.mx("bounce.acme.test", (10, "relay.test"))
    ok = relay.cli("domain", "verify", "acme.test")
    assert "return paths on" in ok.stdout, ok.stdout
    submit(relay, "carol@example.org")
    sinks["good"].wait_messages(2)
    path = return_path_of_message_to(sinks["good"], "carol@example.org")
    assert path.startswith("b1-") and path.endswith("@bounce.acme.test"), path


def test_one_transaction_per_recipient_shares_one_connection(spawn_relay, tmp_path):
    from nexthop import NextHop
    hop = NextHop()
    try:
        relay = spawn_relay(**{
            "pipeline.run_stages": True,
            "bounces.return_path": True,
            "delivery.routes": [{"pattern": "*", "target": hop.target}],
        })
        relay.add_user("alice", "acme", "s3cret")
        relay.cli("domain", "add", "acme.test", "--tenant", "acme")
        rcpts = ["a@example.org", "b@example.org", "c@example.org"]
        submit(relay, ",".join(rcpts))
        hop.wait_messages(3)
        senders = {m[0] for m in hop.messages}
        assert len(hop.messages) == 3 and len(senders) == 3, hop.messages
        assert all(len(m[1]) == 1 for m in hop.messages), "one recipient per transaction"
        commands = hop.commands()
        # The pooled session is reused: one greeting, and RSET between the transactions.
        assert sum(c.upper().startswith(b"EHLO") for c in commands) == 1, commands
        assert sum(c.upper() == b"RSET" for c in commands) == 2, commands
    finally:
        hop.stop()
