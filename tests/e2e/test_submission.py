"""Submission with real clients: swaks and smtplib, STARTTLS and implicit TLS, AUTH."""

import smtplib
import subprocess

from conftest import RawClient, client_tls, code

MESSAGE = "From: news@acme.test\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\nHi Bob.\r\n"


def swaks(*args):
    r = subprocess.run(["swaks", "--hide-informational", *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def queued_id(transcript):
    for line in transcript.splitlines():
        if "queued as" in line:
            return line.rsplit(" ", 1)[-1].strip()
    raise AssertionError(f"no 'queued as' in:\n{transcript}")


def test_swaks_starttls_auth_plain_and_login_are_queued(tenant_relay):
    host, port = tenant_relay.addr("submission")
    ids = []
    for mech in ("PLAIN", "LOGIN"):
        rc, out = swaks(
            "--server", f"{host}:{port}", "--tls", "--auth", mech,
            "--auth-user", "alice", "--auth-password", "s3cret",
            "--from", "news@acme.test", "--to", "bob@example.org", "--h-From", "news@acme.test",
        )
        assert rc == 0, out
        ids.append(queued_id(out))
    listed = {m["id"]: m for m in tenant_relay.queue_list()}
    for queue_id in ids:
        assert listed[queue_id]["from"] == "news@acme.test"
        assert listed[queue_id]["recipients"] == ["bob@example.org"]
        assert listed[queue_id]["state"] == "queued"
        body = tenant_relay.message(queue_id).decode()
        first = body.split("\r\n\t")[0]
        assert first.startswith("Received: from "), body[:300]
        received = body.split("\r\n", 5)
        header = "\r\n".join(received[:5])
        assert f"with ESMTPSA id {queue_id}" in header
        # The login name and the client's address are nobody else's business (Postfix
        # leaves them out too): no "Authenticated sender", no [127.0.0.1].
        assert "alice" not in header and "Authenticated sender" not in header, header
        assert "127.0.0.1" not in header, header
        assert "using TLSv1.3" in header


def test_smtplib_starttls_login_sendmail(tenant_relay):
    with smtplib.SMTP(*tenant_relay.addr("submission"), timeout=30) as s:
        s.ehlo("client.test")
        s.starttls(context=client_tls())
        s.ehlo("client.test")
        s.login("alice", "s3cret")
        refused = s.sendmail("news@acme.test", ["bob@example.org", "carol@example.net"], MESSAGE)
        assert refused == {}
    [m] = tenant_relay.queue_list()
    assert m["recipients"] == ["bob@example.org", "carol@example.net"]
    assert m["tenant"] == "acme"
    assert tenant_relay.message(m["id"]).endswith(MESSAGE.encode())


def test_implicit_tls_with_smtplib_and_swaks(tenant_relay):
    with smtplib.SMTP_SSL(*tenant_relay.addr("submissions"), context=client_tls(), timeout=30) as s:
        s.login("alice", "s3cret")
        s.sendmail("news@acme.test", ["bob@example.org"], MESSAGE)
    host, port = tenant_relay.addr("submissions")
    rc, out = swaks(
        "--server", f"{host}:{port}", "--tlsc", "--auth", "PLAIN",
        "--auth-user", "alice", "--auth-password", "s3cret",
        "--from", "news@acme.test", "--to", "bob@example.org", "--h-From", "news@acme.test",
    )
    assert rc == 0, out
    assert len(tenant_relay.queue_list()) == 2


def test_ehlo_offers_starttls_before_tls_and_auth_only_after(tenant_relay):
    c = RawClient(tenant_relay.addr("submission"))
    before = c.cmd("EHLO client.test")
    for ext in ("PIPELINING", "SIZE 52428800", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN", "STARTTLS"):
        assert ext in before, before
    assert "AUTH" not in before
    assert code(c.cmd("AUTH PLAIN AGFsaWNlAHMzY3JldA==")) == "538 5.7.11"
    assert c.cmd("STARTTLS").startswith("220 2.0.0")
    c.starttls()
    after = c.cmd("EHLO client.test")
    assert "AUTH PLAIN LOGIN" in after and "STARTTLS" not in after, after


def test_starttls_discards_pipelined_plaintext_and_resets_state(tenant_relay):
    c = RawClient(tenant_relay.addr("submission"))
    c.cmd("EHLO client.test")
    # CVE-2011-0411: a NOOP injected behind STARTTLS in the same packet must never be answered.
    c.send(b"STARTTLS\r\nNOOP\r\n")
    assert c.reply().startswith("220 2.0.0")
    c.starttls()
    # The first reply inside TLS belongs to our next command, not to the injected NOOP.
    assert code(c.cmd("MAIL FROM:<news@acme.test>")) == "503 5.5.1", "EHLO must be required again"
    assert c.cmd("EHLO client.test").startswith("250-")


def test_wrong_password_and_unknown_user_get_the_same_535(tenant_relay):
    replies = []
    for user, password in (("alice", "wrong"), ("mallory", "s3cret")):
        with smtplib.SMTP(*tenant_relay.addr("submission"), timeout=30) as s:
            s.starttls(context=client_tls())
            s.ehlo()
            try:
                s.login(user, password)
            except smtplib.SMTPAuthenticationError as e:
                replies.append((e.smtp_code, e.smtp_error))
    assert len(replies) == 2
    assert replies[0] == replies[1] == (535, b"5.7.8 Authentication credentials invalid")


def test_repeated_auth_failures_lock_out_with_421(spawn_relay):
    relay = spawn_relay(**{"limits.max_auth_failures_per_ip": 3})
    relay.add_user("alice", "acme", "s3cret")
    c = RawClient(relay.addr("submission"))
    c.cmd("EHLO x")
    c.cmd("STARTTLS")
    c.starttls()
    c.cmd("EHLO x")
    bad = "AUTH PLAIN AGFsaWNlAHdyb25n"  # \0alice\0wrong
    assert [code(c.cmd(bad)) for _ in range(3)] == ["535 5.7.8"] * 3
    # Past the limit even the right password is refused and the connection ends.
    assert code(c.cmd("AUTH PLAIN AGFsaWNlAHMzY3JldA==")) == "421 4.7.0"
    assert c.closed()
    assert relay.queue_list() == []
