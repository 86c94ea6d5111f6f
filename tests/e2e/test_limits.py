"""Every limit answers with its precise reply, and nothing over a limit is queued."""

import time

from conftest import RawClient, code, open_transaction


def trusted(spawn_relay, **extra):
    return spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"], **extra})


def test_size_declared_at_mail_over_the_limit(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.max_message_size": 10000})
    c = RawClient(relay.addr("relay"))
    assert "SIZE 10000" in c.cmd("EHLO client.test")
    assert code(c.cmd("MAIL FROM:<a@sender.test> SIZE=10001")) == "552 5.3.4"
    assert code(c.cmd("MAIL FROM:<a@sender.test> SIZE=10000")) == "250 2.1.0"


def test_message_over_the_limit_while_streaming(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.max_message_size": 10000})
    c = open_transaction(relay)
    c.cmd("DATA")
    line = b"x" * 100 + b"\r\n"
    c.send(b"From: a@sender.test\r\nSubject: big\r\n\r\n" + line * 200 + b".\r\n")
    assert code(c.reply()) == "552 5.3.4"
    assert code(c.cmd("NOOP")) == "250 2.0.0", "the session stays usable"
    assert relay.queue_list() == []


def test_too_many_recipients(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.max_recipients": 3})
    c = open_transaction(relay, rcpts=3)
    assert code(c.cmd("RCPT TO:<r4@example.org>")) == "452 4.5.3"
    c.cmd("DATA")
    assert "queued as" in c.cmd("From: a@sender.test\r\nSubject: x\r\n\r\ny\r\n.")
    [m] = relay.queue_list()
    assert len(m["recipients"]) == 3


def test_command_line_too_long(spawn_relay):
    relay = trusted(spawn_relay)
    c = RawClient(relay.addr("relay"))
    assert code(c.cmd("NOOP " + "x" * 600)) == "500 5.5.2"
    assert code(c.cmd("NOOP")) == "250 2.0.0"


def test_text_line_over_998_octets(spawn_relay):
    relay = trusted(spawn_relay)
    c = open_transaction(relay)
    c.cmd("DATA")
    reply = c.cmd("From: a@sender.test\r\nSubject: long\r\n\r\n" + "y" * 999 + "\r\n.")
    assert code(reply) == "550 5.6.0", reply
    c2 = open_transaction(relay)
    c2.cmd("DATA")
    assert "queued as" in c2.cmd("From: a@sender.test\r\nSubject: ok\r\n\r\n" + "y" * 998 + "\r\n.")
    assert len(relay.queue_list()) == 1


def test_header_section_too_large(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.max_header_size": 2000})
    c = open_transaction(relay)
    c.cmd("DATA")
    headers = "".join(f"X-Filler-{i}: {'h' * 60}\r\n" for i in range(40))
    assert code(c.cmd(headers + "\r\nbody\r\n.")) == "552 5.3.4"
    assert relay.queue_list() == []


def test_too_many_bad_commands_disconnects(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.max_bad_commands": 3})
    c = RawClient(relay.addr("relay"))
    assert code(c.cmd("FROB")) == "500 5.5.1"
    assert code(c.cmd("FROB")) == "500 5.5.1"
    # The third error is answered, then the session ends.
    assert code(c.cmd("FROB")) == "500 5.5.1"
    assert code(c.reply()) == "421 4.7.0"
    assert c.closed()


def test_idle_client_gets_421(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.command_timeout": "1s"})
    c = RawClient(relay.addr("relay"))
    c.cmd("EHLO client.test")
    assert code(c.reply()) == "421 4.4.2"
    assert c.closed()


def test_slow_sender_below_the_minimum_rate_gets_421(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.min_data_rate": 10000, "limits.data_rate_window": "1s"})
    c = open_transaction(relay)
    c.cmd("DATA")
    c.send(b"From: a@sender.test\r\nSubject: slow\r\n\r\n")
    reply = ""
    for _ in range(40):
        try:
            c.send(b"a")
        except OSError:
            break
        time.sleep(0.1)
        c.sock.settimeout(0.01)
        try:
            data = c.sock.recv(4096)
        except OSError:
            continue
        finally:
            c.sock.settimeout(10)
        reply += data.decode()
        if reply:
            break
    assert reply.startswith("421 4.4.2"), reply
    assert relay.queue_list() == []


def test_connections_per_ip_are_capped(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.max_connections_per_ip": 2})
    # The harness's readiness probes may still be closing: give them a moment.
    time.sleep(0.3)
    a = RawClient(relay.addr("relay"))
    b = RawClient(relay.addr("relay"))
    third = RawClient(relay.addr("relay"))
    assert code(third.greeting) == "421 4.7.0", third.greeting
    assert third.closed()
    a.close()
    time.sleep(0.3)
    fourth = RawClient(relay.addr("relay"))
    assert fourth.greeting.startswith("220 ")
    b.close()
