"""Greeting, HELO/EHLO per listener, dot-unstuffing, the null sender, a whole transaction in
one write, pipelining inside TLS after AUTH, and the command-line length boundary."""

import base64
import smtplib
import socket
import subprocess

from conftest import RawClient, client_tls, code, open_transaction


class ImplicitTLSClient(RawClient):
    """A RawClient that starts TLS before the greeting (the submissions port)."""

    def __init__(self, addr, timeout=10):
        self.sock = client_tls().wrap_socket(socket.create_connection(addr, timeout=timeout))
        self.buf = b""
        self.greeting = self.reply()


def trusted(spawn_relay, **extra):
    return spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"], **extra})


def queued(reply: str) -> str:
    last = reply.strip().splitlines()[-1]
    assert last.startswith("250 2.0.0 Ok: queued as "), reply
    return last.rsplit(" ", 1)[-1]


def test_greeting_helo_and_ehlo_name_the_host(spawn_relay):
    relay = spawn_relay()
    c = RawClient(relay.addr("relay"))
    assert c.greeting == "220 relay.test ESMTP Baton\n", c.greeting
    assert c.cmd("HELO client.test") == "250 relay.test\n"
    ehlo = c.cmd("EHLO client.test")
    # `250-<hostname>` optionally followed by greeting text (RFC 5321 ehlo-greet).
    assert ehlo.splitlines()[0].split(" ")[0] == "250-relay.test", ehlo
    # The relay listener also offers STARTTLS in plaintext and no AUTH before TLS.
    assert "STARTTLS" in ehlo and "AUTH" not in ehlo, ehlo


def test_implicit_tls_ehlo_offers_auth_and_not_starttls(tenant_relay):
    c = ImplicitTLSClient(tenant_relay.addr("submissions"))
    assert c.greeting == "220 relay.test ESMTP Baton\n", c.greeting
    ehlo = c.cmd("EHLO client.test")
    assert "AUTH PLAIN LOGIN" in ehlo and "STARTTLS" not in ehlo, ehlo
    assert code(c.cmd("STARTTLS")) == "503 5.5.1"


def test_dot_stuffed_lines_are_stored_unstuffed(spawn_relay):
    relay = trusted(spawn_relay)
    c = open_transaction(relay)
    assert c.cmd("DATA").startswith("354")
    queue_id = queued(c.cmd("From: a@sender.test\r\nSubject: dots\r\n\r\n..leading dot\r\n...\r\nplain\r\n."))
    stored = relay.message(queue_id)
    assert stored.endswith(b"Subject: dots\r\n\r\n.leading dot\r\n..\r\nplain\r\n"), stored[-200:]


def test_null_sender_is_listed_with_an_empty_from(spawn_relay):
    relay = trusted(spawn_relay)
    c = RawClient(relay.addr("relay"))
    c.cmd("EHLO client.test")
    assert code(c.cmd("MAIL FROM:<>")) == "250 2.1.0"
    assert code(c.cmd("RCPT TO:<b@example.org>")) == "250 2.1.5"
    c.cmd("DATA")
    queue_id = queued(c.cmd("From: a@sender.test\r\nSubject: bounce\r\n\r\nnull sender\r\n."))
    [m] = relay.queue_list()
    assert m["id"] == queue_id and m["from"] == "" and m["state"] == "queued", m


def test_whole_transaction_and_quit_in_a_single_write(spawn_relay):
    relay = trusted(spawn_relay)
    c = RawClient(relay.addr("relay"))
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        b"From: a@sender.test\r\nSubject: one write\r\n\r\nall at once\r\n.\r\nQUIT\r\n"
    )
    replies = [c.reply() for _ in range(6)]
    assert replies[0].startswith("250-relay.test")
    assert [code(r) for r in replies[1:3]] == ["250 2.1.0", "250 2.1.5"]
    assert replies[3].startswith("354")
    queue_id = queued(replies[4])
    assert code(replies[5]) == "221 2.0.0"
    assert c.closed()
    [m] = relay.queue_list()
    assert m["id"] == queue_id and m["recipients"] == ["b@example.org"]


def test_pipelining_inside_tls_after_auth(tenant_relay):
    c = RawClient(tenant_relay.addr("submission"))
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").startswith("220")
    c.starttls()
    token = base64.b64encode(b"\0alice\0s3cret")
    c.send(b"EHLO client.test\r\nAUTH PLAIN " + token + b"\r\n")
    assert "AUTH PLAIN LOGIN" in c.reply()
    assert code(c.reply()) == "235 2.7.0"
    c.send(
        b"MAIL FROM:<news@acme.test>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n"
    )
    replies = [c.reply() for _ in range(4)]
    assert [code(r) for r in replies[:3]] == ["250 2.1.0", "250 2.1.5", "250 2.1.5"], replies
    assert replies[3].startswith("354")
    queue_id = queued(c.cmd("From: news@acme.test\r\nSubject: p\r\n\r\npipelined in TLS\r\n."))
    [m] = tenant_relay.queue_list()
    assert m["id"] == queue_id
    assert m["from"] == "news@acme.test"
    assert m["recipients"] == ["bob@example.org", "carol@example.net"]


def test_command_line_of_exactly_max_octets_is_accepted(spawn_relay):
    relay = trusted(spawn_relay)
    c = RawClient(relay.addr("relay"))
    line = "NOOP " + "x" * (512 - len("NOOP ") - 2)  # 512 octets with CRLF
    assert len(line) + 2 == 512
    assert code(c.cmd(line)) == "250 2.0.0"
    assert code(c.cmd(line + "x")) == "500 5.5.2"
    assert code(c.cmd("NOOP")) == "250 2.0.0"


def test_smtp_source_concurrent_sessions_are_all_queued(spawn_relay):
    relay = trusted(spawn_relay)
    host, port = relay.addr("relay")
    r = subprocess.run(
        ["/usr/sbin/smtp-source", "-c", "-s", "5", "-m", "25", "-l", "2000",
         "-f", "load@sender.test", "-t", "sink@example.org", f"{host}:{port}"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    listed = relay.queue_list()
    assert len(listed) == 25, listed
    assert all(m["recipients"] == ["sink@example.org"] and m["from"] == "load@sender.test" for m in listed)


def test_smtplib_sendmail_to_many_recipients_over_implicit_tls(tenant_relay):
    rcpts = [f"r{i}@example.org" for i in range(10)]
    with smtplib.SMTP_SSL(*tenant_relay.addr("submissions"), context=client_tls(), timeout=30) as s:
        s.login("alice", "s3cret")
        assert s.sendmail("news@acme.test", rcpts, "From: news@acme.test\r\nSubject: many\r\n\r\nx\r\n") == {}
    [m] = tenant_relay.queue_list()
    assert m["recipients"] == rcpts
