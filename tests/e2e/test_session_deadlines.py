"""Deadlines a client cannot stretch: a command line trickled in one byte at a time, and a
session kept busy forever."""

import threading
import time

from conftest import RawClient, code


def trusted(spawn_relay, **extra):
    return spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"], **extra})


def test_trickled_command_line_is_cut_off(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.command_timeout": "1s"})
    c = RawClient(relay.addr("relay"), timeout=8)
    assert c.greeting.startswith("220 ")
    stop = threading.Event()

    def trickle():
        # One byte every 200 ms: every read is well within command_timeout, the line never is.
        for b in b"NOOP " * 40:
            if stop.is_set():
                return
            try:
                c.sock.send(bytes([b]))
            except OSError:
                return
            time.sleep(0.2)

    writer = threading.Thread(target=trickle)
    writer.start()
    try:
        reply = c.reply()  # the socket timeout (8 s) bounds the wait
        assert code(reply) == "421 4.4.2", reply
        assert c.closed()
    finally:
        stop.set()
        writer.join()


def test_active_session_ends_at_max_session_time(spawn_relay):
    relay = trusted(spawn_relay, **{"limits.max_session_time": "2s"})
    c = RawClient(relay.addr("relay"))
    assert code(c.cmd("EHLO client.test")).startswith("250")
    replies = []
    for _ in range(200):
        replies.append(c.cmd("NOOP"))
        if not replies[-1].startswith("250"):
            break
        time.sleep(0.1)
    assert code(replies[-1]) == "421 4.4.2", replies[-1]
    assert len(replies) > 1  # the session was active until then
    assert c.closed()
