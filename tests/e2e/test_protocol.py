"""Protocol features: pipelining, CHUNKING, DSN parameters, command errors."""

import json

from conftest import RawClient, code


def trusted(spawn_relay, **extra):
    return spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"], **extra})


def test_pipelined_transaction_in_one_write(spawn_relay):
    relay = trusted(spawn_relay)
    c = RawClient(relay.addr("relay"))
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.org>\r\n"
        b"RCPT TO:<c@example.org>\r\nDATA\r\n"
    )
    replies = [c.reply() for _ in range(5)]
    assert [code(r) for r in replies[1:4]] == ["250 2.1.0", "250 2.1.5", "250 2.1.5"]
    assert replies[4].startswith("354")
    c.send(b"From: a@sender.test\r\nSubject: pipelined\r\n\r\nhello\r\n.\r\nMAIL FROM:<a2@sender.test>\r\nRCPT TO:<d@example.org>\r\nDATA\r\n")
    assert "queued as" in c.reply()
    assert code(c.reply()) == "250 2.1.0"
    assert code(c.reply()) == "250 2.1.5"
    assert c.reply().startswith("354")
    assert "queued as" in c.cmd("From: a2@sender.test\r\n\r\nsecond\r\n.")
    assert code(c.cmd("QUIT")) == "221 2.0.0"
    listed = relay.queue_list()
    assert [m["recipients"] for m in listed] == [["b@example.org", "c@example.org"], ["d@example.org"]]


def test_bdat_chunks_make_one_message(spawn_relay):
    relay = trusted(spawn_relay)
    c = RawClient(relay.addr("relay"))
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@sender.test> BODY=8BITMIME")
    c.cmd("RCPT TO:<b@example.org>")
    parts = [b"From: a@sender.test\r\nSubject: chunked\r\n", b"\r\nline one\r\n", b".line two starts with a dot\r\n"]
    c.send(b"BDAT %d\r\n" % len(parts[0]) + parts[0] + b"BDAT %d\r\n" % len(parts[1]) + parts[1])
    assert c.reply() == f"250 2.0.0 {len(parts[0])} octets received\n"
    assert c.reply() == f"250 2.0.0 {len(parts[1])} octets received\n"
    c.send(b"BDAT %d LAST\r\n" % len(parts[2]) + parts[2])
    reply = c.reply()
    assert "queued as" in reply, reply
    queue_id = reply.rsplit(" ", 1)[-1].strip()
    body = relay.message(queue_id)
    assert body.endswith(b"".join(parts)), body
    # DATA is refused once BDAT started a transaction, BDAT without MAIL after reading the chunk.
    c.cmd("MAIL FROM:<a@sender.test>")
    c.cmd("RCPT TO:<b@example.org>")
    c.send(b"BDAT 3\r\nabc")
    c.reply()
    assert code(c.cmd("DATA")) == "503 5.5.1"
    c.cmd("RSET")
    c.send(b"BDAT 4 LAST\r\nQUIT")
    assert code(c.reply()) == "503 5.5.1"
    assert code(c.cmd("NOOP")) == "250 2.0.0"
    assert len(relay.queue_list()) == 1


def test_dsn_parameters_are_kept_in_the_envelope(spawn_relay):
    relay = trusted(spawn_relay)
    c = RawClient(relay.addr("relay"))
    c.cmd("EHLO client.test")
    assert code(c.cmd("MAIL FROM:<a@sender.test> RET=HDRS ENVID=QQ314159")) == "250 2.1.0"
    assert code(c.cmd("RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org")) == "250 2.1.5"
    assert code(c.cmd("RCPT TO:<c@example.org> NOTIFY=NEVER")) == "250 2.1.5"
    c.cmd("DATA")
    assert "queued as" in c.cmd("From: a@sender.test\r\nSubject: dsn\r\n\r\nx\r\n.")
    [m] = relay.queue_list()
    # The envelope itself is what the pipeline reads; check it through the queue's JSON.
    raw = relay.cli("queue", "list", "--json").stdout
    assert json.loads(raw)[0]["recipients"] == ["b@example.org", "c@example.org"]
    assert m["from"] == "a@sender.test"


def test_command_errors_have_precise_codes(spawn_relay):
    relay = trusted(spawn_relay)
    c = RawClient(relay.addr("relay"))
    assert code(c.cmd("MAIL FROM:<a@sender.test>")) == "503 5.5.1"
    c.cmd("EHLO client.test")
    assert code(c.cmd("RCPT TO:<b@example.org>")) == "503 5.5.1"
    assert code(c.cmd("DATA")) == "503 5.5.1"
    assert code(c.cmd("FROB")) == "500 5.5.1"
    assert code(c.cmd("MAIL FROM:a@sender.test")) == "501 5.5.4"
    assert code(c.cmd("MAIL FROM:<a@@sender.test>")) == "501 5.1.7"
    assert code(c.cmd("MAIL FROM:<a@sender.test> FROB=1")) == "555 5.5.4"
    assert code(c.cmd("MAIL FROM:<a@sender.test>")) == "250 2.1.0"
    assert code(c.cmd("MAIL FROM:<a@sender.test>")) == "503 5.5.1"
    assert code(c.cmd("RCPT TO:<>")) == "501 5.1.3"
    assert code(c.cmd("VRFY bob")) == "252 2.5.0"
    assert code(c.cmd("EXPN list")) == "502 5.5.1"
    assert code(c.cmd("RSET")) == "250 2.0.0"
    assert code(c.cmd("QUIT")) == "221 2.0.0"
    assert c.closed()
