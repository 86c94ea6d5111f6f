"""AUTH replies the contract spells out beyond success and 535: unknown mechanism, cancel,
bad base64, AUTH twice, STARTTLS twice, lockouts per user and across connections."""

import base64
import smtplib

from conftest import RawClient, client_tls, code


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def tls_session(relay, listener="submission"):
    """A RawClient on the submission port after EHLO, STARTTLS and EHLO again."""
    c = RawClient(relay.addr(listener))
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").startswith("220 2.0.0")
    c.starttls()
    assert "AUTH PLAIN LOGIN" in c.cmd("EHLO client.test")
    return c


def test_unknown_mechanism_cancel_and_bad_base64(tenant_relay):
    c = tls_session(tenant_relay)
    assert code(c.cmd("AUTH CRAM-MD5")) == "504 5.5.4"
    # Cancelled exchange: the client answers the 334 challenge with "*".
    assert c.cmd("AUTH LOGIN").startswith("334 ")
    assert code(c.cmd("*")) == "501 5.0.0"
    assert code(c.cmd("AUTH PLAIN !!!not-base64!!!")) == "501 5.5.2"
    assert c.cmd("AUTH PLAIN").startswith("334")
    assert code(c.cmd("%%%")) == "501 5.5.2"
    # The session is still usable and the right credentials still work.
    assert code(c.cmd("AUTH PLAIN " + b64("\0alice\0s3cret"))) == "235 2.7.0"


def test_auth_when_already_authenticated_is_503(tenant_relay):
    c = tls_session(tenant_relay)
    reply = c.cmd("AUTH PLAIN " + b64("\0alice\0s3cret"))
    assert reply == "235 2.7.0 Authentication successful\n", reply
    assert code(c.cmd("AUTH PLAIN " + b64("\0alice\0s3cret"))) == "503 5.5.1"
    assert code(c.cmd("MAIL FROM:<news@acme.test>")) == "250 2.1.0"
    assert code(c.cmd("AUTH LOGIN")) == "503 5.5.1"


def test_auth_login_exchange_via_smtplib(tenant_relay):
    with smtplib.SMTP(*tenant_relay.addr("submission"), timeout=30) as s:
        s.starttls(context=client_tls())
        s.ehlo("client.test")
        s.user, s.password = "alice", "s3cret"
        rc, msg = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert (rc, msg) == (235, b"2.7.0 Authentication successful")
        s.mail("news@acme.test")
        s.rcpt("bob@example.org")
        rc, msg = s.data(b"From: news@acme.test\r\nSubject: login\r\n\r\nvia AUTH LOGIN\r\n")
        assert rc == 250 and msg.startswith(b"2.0.0 Ok: queued as "), msg
        queue_id = msg.decode().rsplit(" ", 1)[-1]
    [m] = tenant_relay.queue_list()
    assert m["id"] == queue_id and m["recipients"] == ["bob@example.org"]


def test_starttls_inside_tls_is_503(tenant_relay):
    c = tls_session(tenant_relay)
    assert code(c.cmd("STARTTLS")) == "503 5.5.1"
    assert code(c.cmd("NOOP")) == "250 2.0.0"


def test_auth_is_refused_on_a_new_connection_after_ip_lockout(spawn_relay):
    relay = spawn_relay(**{"limits.max_auth_failures_per_ip": 3})
    relay.add_user("alice", "acme", "s3cret")
    c = tls_session(relay)
    bad = "AUTH PLAIN " + b64("\0alice\0wrong")
    replies = [code(c.cmd(bad)) for _ in range(4)]
    assert "421 4.7.0" in replies, replies
    # Within auth_failure_window a fresh connection from the same IP cannot authenticate
    # either, not even with the right password (otherwise guessing just reconnects).
    c2 = RawClient(relay.addr("submission"))
    if code(c2.greeting) != "421 4.7.0":
        c2.cmd("EHLO client.test")
        assert c2.cmd("STARTTLS").startswith("220")
        c2.starttls()
        c2.cmd("EHLO client.test")
        reply = c2.cmd("AUTH PLAIN " + b64("\0alice\0s3cret"))
        assert code(reply) == "421 4.7.0", reply
    assert c2.closed()


def test_too_many_failures_for_one_user_lock_that_user_out(spawn_relay):
    relay = spawn_relay(**{"limits.max_auth_failures_per_user": 2, "limits.max_auth_failures_per_ip": 100})
    relay.add_user("alice", "acme", "s3cret")
    relay.add_user("bob", "acme", "hunter22")
    seen = []
    for _ in range(3):
        c = tls_session(relay)
        seen.append(code(c.cmd("AUTH PLAIN " + b64("\0alice\0wrong"))))
        c.close()
        if seen[-1] == "421 4.7.0":
            break
    assert seen[0] == "535 5.7.8" and seen[-1] == "421 4.7.0", seen
    # Another user from the same IP is not affected by alice's lockout.
    c = tls_session(relay)
    assert code(c.cmd("AUTH PLAIN " + b64("\0bob\0hunter22"))) == "235 2.7.0"
