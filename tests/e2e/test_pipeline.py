"""The whole relay: swaks submits to `baton serve`, the pipeline signs and delivers to real
MXs (smtp-sink on 127.0.0.x found through a test DNS server), retries, bounces, suppresses."""

import json
import re
import smtplib
import subprocess
import time

import dkim
import pytest

from conftest import client_tls, code, open_transaction
from mailnet import Sink, TestDns, free_port_for

RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

GOOD, TEMPFAIL, HARDFAIL, SENDER_MX, DEAD = "127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"
SLOW, DROP = "127.0.0.15", "127.0.0.16"


@pytest.fixture
def net():
    dns = TestDns()
    port = free_port_for([GOOD, TEMPFAIL, HARDFAIL, SENDER_MX, SLOW, DROP])
    sinks = {
        "good": Sink(GOOD, port).start(),
        "tempfail": Sink(TEMPFAIL, port, ["-r", "rcpt"]).start(),
        "hardfail": Sink(HARDFAIL, port, ["-f", "rcpt"]).start(),
        "sender": Sink(SENDER_MX, port).start(),
        # Waits 5 s before answering DATA; the relay's command timeout is 2 s.
        "slow": Sink(SLOW, port, ["-w", "5"]).start(),
        # Hangs up after the end of the message without a reply.
        "drop": Sink(DROP, port, ["-q", "."]).start(),
    }
    for domain, ip in (
        ("example.org", GOOD),
        ("tempfail.test", TEMPFAIL),
        ("hardfail.test", HARDFAIL),
        ("acme.test", SENDER_MX),
        ("slow.test", SLOW),
        ("drop.test", DROP),
        ("tlsonly.test", GOOD),
    ):
        dns.mx(domain, (10, f"mx.{domain}"))
        dns.a(f"mx.{domain}", ip)
    dns.mx("backup.test", (10, "down.backup.test"), (20, "up.backup.test"))
    dns.a("down.backup.test", DEAD)
    dns.a("up.backup.test", GOOD)
    dns.mx("nullmx.test", (0, "."))
    yield dns, port, sinks
    for s in sinks.values():
        s.cleanup()
    dns.stop()


@pytest.fixture
def relay(spawn_relay, net):
    dns, port, _ = net
    r = spawn_relay(
        **{
            "pipeline.run_stages": True,
            "delivery.port": port,
            "delivery.nameservers": [dns.addr],
            "delivery.retry_initial": "1s",
            "delivery.retry_max": "2s",
            "delivery.delay_notice_after": "3s",
            "delivery.command_timeout": "2s",
            "delivery.data_timeout": "2s",
            # smtp-sink offers no STARTTLS: mail for tlsonly.test must wait, never go in clear.
            "delivery.routes": [{"pattern": "tlsonly.test", "require_tls": True}],
            "delivery.connect_timeout": "2s",
            "relay.allow_networks": ["127.0.0.0/8"],
        }
    )
    r.add_user("alice", "acme", "s3cret")
    out = r.cli("domain", "add", "acme.test", "--tenant", "acme").stdout
    # Publish what `domain add` told us to publish.
    for name, value in re.findall(r'^(\S+)\s+TXT\s+"(.*)"\s*$', out, re.M):
        dns.txt(name, value.replace('" "', ""))
    return r


def submit(relay, rcpt, subject="hello", sender="news@acme.test"):
    r = subprocess.run(
        [
            "swaks", "--server", "%s:%d" % relay.addr("submission"), "--tls", "--auth", "PLAIN",
            "--auth-user", "alice", "--auth-password", "s3cret", "--from", sender, "--to", rcpt,
            "--h-From", sender, "--h-Subject", subject,
        ],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return re.search(r"queued as (\S+)", r.stdout).group(1)


def show(relay, queue_id):
    # Before policy has run there is no record yet: that reads as an empty timeline.
    return relay.cli("message", "show", queue_id, check=False).stdout


def wait_show(relay, queue_id, needle, timeout=30):
    """The message's timeline once it contains `needle`."""
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = show(relay, queue_id)
        if needle in text:
            return text
        time.sleep(0.3)
    raise AssertionError(f"{needle!r} never appeared in the timeline:\n{text}")


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def dkim_verify(message, dns):
    def dnsfunc(name, timeout=5):
        records = dns.lookup_txt(name.decode() if isinstance(name, bytes) else name)
        return records[0] if records else None

    # smtp-sink prepends its own trace fields; DKIM does not cover them.
    results = []
    d = dkim.DKIM(message)
    sigs = [h for h in d.headers if h[0].lower() == b"dkim-signature"]
    for i in range(len(sigs)):
        results.append(d.verify(idx=i, dnsfunc=dnsfunc))
    return results, sigs


def publish_relay_records(relay, dns):
    """Publishes the records the relay logged when its first start made the hostname's keys."""
    records = re.findall(r'^(\S+)\s+TXT\s+"(.*)"\s*$', relay.log_text(), re.M)
    assert any(name.endswith("._domainkey.relay.test") for name, _ in records), relay.log_text()
    for name, value in records:
        dns.txt(name, value.replace('" "', ""))


def test_submitted_message_is_signed_and_delivered(relay, net):
    dns, _, sinks = net
    queue_id = submit(relay, "bob@example.org")
    [msg] = sinks["good"].wait_messages(1)
    assert b"X-Rcpt-Args: <bob@example.org>" in msg
    results, sigs = dkim_verify(msg, dns)
    assert len(sigs) == 2, "RSA and Ed25519 signatures expected"
    assert results == [True, True], results
    algos = b" ".join(s[1] for s in sigs)
    assert b"a=rsa-sha256" in algos and b"a=ed25519-sha256" in algos
    timeline = wait_show(relay, queue_id, "delivered")
    for step in ("accepted", "passed", "signed", "delivered"):
        assert step in timeline, timeline
    assert relay.queue_list() == []


def test_header_added_after_signing_breaks_the_signature(relay, net):
    dns, _, sinks = net
    submit(relay, "carol@example.org")
    [msg] = sinks["good"].wait_messages(1)
    tampered = msg.replace(b"Subject: hello", b"Subject: hello\r\nSubject: phishing", 1)
    results, _ = dkim_verify(tampered, dns)
    assert results == [False, False]


def test_temporary_failure_is_retried_until_delivered(relay, net):
    _, _, sinks = net
    queue_id = submit(relay, "dave@tempfail.test")
    wait_show(relay, queue_id, "deferred")
    [m] = relay.queue_list()
    assert m["recipient_states"][0]["status"] == "deferred"
    assert m["recipient_states"][0]["last_reply"].startswith("450")
    sinks["tempfail"].restart([])
    [msg] = sinks["tempfail"].wait_messages(1)
    assert b"X-Rcpt-Args: <dave@tempfail.test>" in msg
    timeline = wait_show(relay, queue_id, "delivered")
    assert timeline.count("deferred") >= 1


def test_permanent_failure_bounces_with_dsn_and_suppresses(relay, net):
    dns, _, sinks = net
    queue_id = submit(relay, "erin@hardfail.test")
    [dsn] = sinks["sender"].wait_messages(1)
    assert b"X-Mail-Args: <>" in dsn, "a DSN goes out from the null sender"
    assert b"X-Rcpt-Args: <news@acme.test>" in dsn
    for needle in (b"multipart/report", b"report-type=delivery-status", b"Action: failed",
                   b"Final-Recipient: rfc822; erin@hardfail.test", b"Status: 5.", b"text/rfc822-headers"):
        assert needle in dsn, needle
    # Signed with the relay's own key (d= its hostname), which verifies once the records the
    # first start logged are published.
    publish_relay_records(relay, dns)
    results, sigs = dkim_verify(dsn, dns)
    assert len(sigs) == 2 and all(re.search(rb"\bd=relay\.test;", s[1]) for s in sigs), sigs
    assert results == [True, True], results
    bounces = json.loads(relay.cli("bounce", "list", "--json").stdout)
    [b] = [b for b in bounces if b["queue_id"] == queue_id]
    assert b["recipient"] == "erin@hardfail.test" and b["hard"] and b["code"] >= 500
    assert RFC3339_MS.fullmatch(b["at"]), b["at"]
    # For people: a table with a header and the same fixed-precision times.
    table = relay.cli("bounce", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["AT", "RECIPIENT", "KIND"], table
    [row] = [line for line in table if queue_id in line]
    assert RFC3339_MS.match(row) and "erin@hardfail.test" in row and " hard " in row, row
    suppressed = relay.cli("suppression", "list").stdout.splitlines()
    assert suppressed[0].startswith("AT"), suppressed
    assert any(RFC3339_MS.match(l) and "erin@hardfail.test" in l for l in suppressed[1:]), suppressed
    # Now suppressed: the next message to erin is dropped at policy, with a reason, and never sent.
    second = submit(relay, "erin@hardfail.test", subject="again")
    timeline = wait_show(relay, second, "suppress")
    assert "suppression list" in timeline


def test_null_mx_fails_at_once(relay, net):
    _, _, sinks = net
    queue_id = submit(relay, "frank@nullmx.test")
    timeline = wait_show(relay, queue_id, "failed")
    assert "5.1.10" in timeline or "null MX" in timeline.lower(), timeline
    [dsn] = sinks["sender"].wait_messages(1)
    assert b"frank@nullmx.test" in dsn


def test_unreachable_first_mx_falls_back_to_the_next(relay, net):
    _, _, sinks = net
    submit(relay, "gina@backup.test")
    [msg] = sinks["good"].wait_messages(1)
    assert b"X-Rcpt-Args: <gina@backup.test>" in msg


def test_dsn_parameters_never_means_no_dsn(relay, net):
    _, _, sinks = net
    with smtplib.SMTP(*relay.addr("submission"), timeout=30) as s:
        s.starttls(context=client_tls())
        s.login("alice", "s3cret")
        s.ehlo()
        s.mail("news@acme.test")
        assert s.rcpt("hank@hardfail.test", ["NOTIFY=NEVER"])[0] == 250
        code_, reply = s.data(b"From: news@acme.test\r\nSubject: x\r\n\r\ny\r\n")
        assert code_ == 250, reply
    queue_id = reply.decode().rsplit(" ", 1)[-1].strip()
    timeline = wait_show(relay, queue_id, "no DSN")
    assert "NOTIFY excludes it" in timeline, timeline
    assert sinks["sender"].messages() == []


def test_unauthenticated_relay_gets_no_dsn_and_no_signature(relay, net):
    """An allow-listed network relays, but is no tenant: its mail is not signed and its
    failures are not bounced (the sender may be forged)."""
    dns, _, sinks = net
    c = open_transaction(relay, rcpts=0)
    assert code(c.cmd("RCPT TO:<olga@hardfail.test>")) == "250 2.1.5"
    assert code(c.cmd("RCPT TO:<pat@example.org>")) == "250 2.1.5"
    c.cmd("DATA")
    reply = c.cmd("From: news@acme.test\r\nSubject: x\r\n\r\ny\r\n.")
    queue_id = reply.rsplit(" ", 1)[-1].strip()
    [msg] = sinks["good"].wait_messages(1)
    assert b"DKIM-Signature" not in msg
    timeline = wait_show(relay, queue_id, "no DSN")
    assert "not an authenticated submission" in timeline, timeline
    assert sinks["sender"].messages() == []


def test_mail_claiming_the_relay_hostname_is_not_signed(relay, net):
    """The relay's key signs only what the relay wrote: a client's From at the relay's
    hostname (here MAILER-DAEMON, as on a DSN) goes out unsigned."""
    dns, _, sinks = net
    publish_relay_records(relay, dns)
    c = open_transaction(relay, rcpts=0)
    assert code(c.cmd("RCPT TO:<quinn@example.org>")) == "250 2.1.5"
    c.cmd("DATA")
    reply = c.cmd("From: Mail Delivery System <MAILER-DAEMON@relay.test>\r\nSubject: x\r\n\r\ny\r\n.")
    queue_id = reply.rsplit(" ", 1)[-1].strip()
    [msg] = sinks["good"].wait_messages(1)
    assert b"MAILER-DAEMON@relay.test" in msg
    assert b"DKIM-Signature" not in msg
    timeline = wait_show(relay, queue_id, "not signed")
    assert "not submitted by a tenant" in timeline, timeline


def test_tls_required_route_never_sends_in_plaintext(relay, net):
    _, _, sinks = net
    queue_id = submit(relay, "ivan@tlsonly.test")
    timeline = wait_show(relay, queue_id, "deferred")
    assert "TLS required but not offered" in timeline, timeline
    assert all(b"ivan@tlsonly.test" not in m for m in sinks["good"].messages())


def test_slow_peer_times_out_and_is_deferred(relay, net):
    queue_id = submit(relay, "judy@slow.test")
    timeline = wait_show(relay, queue_id, "deferred", timeout=40)
    assert "timed out" in timeline, timeline


def test_disconnect_after_data_is_deferred_not_bounced(relay, net):
    _, _, sinks = net
    queue_id = submit(relay, "kim@drop.test")
    timeline = wait_show(relay, queue_id, "deferred")
    assert "4.4.2" in timeline, timeline
    assert "failed" not in timeline.split("timeline:")[1], "a lost connection must never bounce"
    # Once the MX behaves, the retry delivers it.
    sinks["drop"].restart([])
    wait_show(relay, queue_id, "delivered", timeout=40)


def test_long_deferral_sends_one_delay_notice(relay, net):
    _, _, sinks = net
    queue_id = submit(relay, "leo@tempfail.test")
    timeline = wait_show(relay, queue_id, "DSN sent (delayed)", timeout=40)
    [notice] = sinks["sender"].wait_messages(1)
    for needle in (b"Action: delayed", b"Final-Recipient: rfc822; leo@tempfail.test", b"Status: 4.", b"Delayed Mail"):
        assert needle in notice, needle
    # Still retrying, and only one notice however many attempts follow: wait until more
    # attempts have been made (read after them, not before), then look again.
    assert "delivered" not in timeline
    attempts = lambda: show(relay, queue_id).count("deferred")
    before = attempts()
    wait_for(lambda: attempts() >= before + 2, timeout=40, what="two more attempts")
    timeline = show(relay, queue_id)
    assert "delivered" not in timeline, timeline
    assert timeline.count("DSN sent (delayed)") == 1, timeline
    assert len(sinks["sender"].messages()) == 1


def test_over_quota_mail_is_deferred_not_dropped(relay, net):
    _, _, sinks = net
    relay.cli("tenant", "quota", "acme", "--per-day", "1")
    first = submit(relay, "mia@example.org")
    second = submit(relay, "ned@example.org")
    wait_show(relay, first, "delivered")
    timeline = wait_show(relay, second, "over the daily quota")
    assert "deferred" in timeline
    listed = {m["id"]: m for m in relay.queue_list()}
    assert listed[second]["state"] == "deferred", "still queued, for tomorrow"
    assert len(sinks["good"].messages()) == 1
