"""SIGTERM: no new connections, open transactions may finish, nothing acknowledged is lost."""

import signal
import socket
import time

from conftest import RawClient, code, open_transaction


def test_sigterm_lets_a_transaction_finish_and_keeps_what_was_accepted(spawn_relay):
    relay = spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"], "limits.shutdown_grace": "10s"})
    done = open_transaction(relay)
    done.cmd("DATA")
    first = done.cmd("From: a@sender.test\r\nSubject: before\r\n\r\naccepted before SIGTERM\r\n.")
    assert "queued as" in first

    busy = open_transaction(relay)
    idle = RawClient(relay.addr("relay"))

    started = time.time()
    relay.proc.send_signal(signal.SIGTERM)
    assert code(idle.reply()) == "421 4.3.2", "an idle session is told at once"
    time.sleep(0.3)
    try:
        socket.create_connection(relay.addr("relay"), timeout=2).close()
        accepting = True
    except OSError:
        accepting = False
    assert not accepting, "still accepting connections after SIGTERM"

    assert busy.cmd("DATA").startswith("354")
    second = busy.cmd("From: a@sender.test\r\nSubject: during\r\n\r\nfinished during shutdown\r\n.")
    assert "queued as" in second
    assert code(busy.reply()) == "421 4.3.2"
    assert relay.proc.wait(timeout=15) == 0
    assert time.time() - started < 10

    # Both acknowledged messages are there after a restart on the same data directory.
    relay.start()
    ids = {m["id"] for m in relay.queue_list()}
    assert ids == {first.rsplit(" ", 1)[-1].strip(), second.rsplit(" ", 1)[-1].strip()}


def test_grace_period_ends_unfinished_data_without_acknowledging(spawn_relay):
    relay = spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"], "limits.shutdown_grace": "1s"})
    c = open_transaction(relay)
    c.cmd("DATA")
    c.send(b"From: a@sender.test\r\nSubject: never finished\r\n\r\npartial")
    relay.proc.send_signal(signal.SIGTERM)
    assert code(c.reply()) == "421 4.3.2"
    assert relay.proc.wait(timeout=15) == 0
    relay.start()
    assert relay.queue_list() == []
