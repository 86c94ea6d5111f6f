"""Limits not covered in test_limits.py: the total connection cap, the DATA timeout, an
idle timeout mid-transaction, and limits set through environment overrides."""

import time

from conftest import RawClient, code, open_transaction


def trusted(spawn_relay, **extra):
    return spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"], **extra})


def test_total_connection_cap_gives_421_4_3_2(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.max_connections": 2})
    time.sleep(0.3)  # let the harness's readiness probes finish closing
    a = RawClient(relay.addr("relay"))
    b = RawClient(relay.addr("submission"))
    assert a.greeting.startswith("220 ") and b.greeting.startswith("220 ")
    third = RawClient(relay.addr("relay"))
    assert code(third.greeting) == "421 4.3.2", third.greeting
    assert third.closed()
    a.close()
    b.close()


def test_data_timeout_gives_421_and_queues_nothing(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.data_timeout": "1s"})
    c = open_transaction(relay)
    assert c.cmd("DATA").startswith("354")
    c.send(b"From: a@sender.test\r\nSubject: stalled\r\n\r\nhalf a mess")
    assert code(c.reply()) == "421 4.4.2"
    assert c.closed()
    assert relay.queue_list() == []


def test_idle_timeout_mid_transaction_queues_nothing(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.command_timeout": "1s"})
    c = open_transaction(relay)
    assert code(c.reply()) == "421 4.4.2"
    assert c.closed()
    assert relay.queue_list() == []


def test_environment_override_sets_a_limit(spawn_relay, monkeypatch):
    monkeypatch.setenv("BATON_LIMITS__MAX_RECIPIENTS", "2")
    relay = trusted(spawn_relay)
    c = open_transaction(relay, rcpts=2)
    assert code(c.cmd("RCPT TO:<r9@example.org>")) == "452 4.5.3"
    c.cmd("DATA")
    assert "queued as" in c.cmd("From: a@sender.test\r\nSubject: env\r\n\r\nx\r\n.")
    [m] = relay.queue_list()
    assert m["recipients"] == ["r0@example.org", "r1@example.org"]
