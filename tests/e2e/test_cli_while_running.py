"""The admin CLI against a running relay: the store is SQLite shared across processes, so a
user or domain added while `baton serve` runs is usable at once; `queue list` text format."""

import base64
import re

from conftest import RFC3339_MS, RawClient, code


def authed_session(relay, user, password):
    c = RawClient(relay.addr("submission"))
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").startswith("220")
    c.starttls()
    c.cmd("EHLO client.test")
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return c, c.cmd(f"AUTH PLAIN {token}")


def test_user_and_domain_added_while_serving_work_immediately(spawn_relay):
    relay = spawn_relay()
    c, reply = authed_session(relay, "dave", "pw-dave-1")
    assert code(reply) == "535 5.7.8", "unknown user before it is added"
    c.close()

    relay.add_user("dave", "globex", "pw-dave-1")
    c, reply = authed_session(relay, "dave", "pw-dave-1")
    assert code(reply) == "235 2.7.0", reply
    assert code(c.cmd("MAIL FROM:<dave@globex.test>")) == "553 5.7.1", "domain not yet the tenant's"

    c.close()
    relay.add_domain("globex.test", "globex")
    c, reply = authed_session(relay, "dave", "pw-dave-1")
    assert code(reply) == "235 2.7.0", reply
    assert code(c.cmd("MAIL FROM:<dave@globex.test>")) == "250 2.1.0"
    assert code(c.cmd("RCPT TO:<eve@example.org>")) == "250 2.1.5"
    c.cmd("DATA")
    reply = c.cmd("From: dave@globex.test\r\nSubject: hi\r\n\r\nx\r\n.")
    assert "queued as" in reply, reply
    queue_id = reply.strip().rsplit(" ", 1)[-1]

    # Plain `queue list`: a header, then `ID  RECEIVED  STATE  FROM  RCPT[,RCPT...]` per message.
    text = relay.cli("queue", "list").stdout.strip().splitlines()
    assert len(text) == 2, text
    assert re.split(r"\s{2,}", text[0]) == ["ID", "RECEIVED", "STATE", "FROM", "RECIPIENTS"], text
    fields = re.split(r"\s{2,}", text[1].strip())
    assert fields[0] == queue_id and RFC3339_MS.fullmatch(fields[1]), text
    assert fields[2:] == ["queued", "dave@globex.test", "eve@example.org"], text
    [m] = relay.queue_list()
    assert set(m) >= {"id", "state", "from", "recipients", "size", "received_at"}, m
    assert RFC3339_MS.fullmatch(m["received_at"]), m
    assert m["size"] > 0
