"""AUTH throttling against the release binary: parallel attempts from one address cannot
race past the lock-out, and failures from one address lock that address (or that user from
that address), never the user everywhere."""

import base64
import socket
import threading

from conftest import RawClient, client_tls, code


def plain(user, password):
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class SourcedClient(RawClient):
    """A RawClient whose socket is bound to `source` (any 127.0.0.0/8 address on loopback)."""

    def __init__(self, addr, source, timeout=30):
        self.sock = socket.create_connection(addr, timeout=timeout, source_address=(source, 0))
        self.buf = b""
        self.greeting = self.reply()


def secured(client):
    """EHLO, STARTTLS and EHLO again: ready for AUTH."""
    assert client.greeting.startswith("220 "), client.greeting
    client.cmd("EHLO client.test")
    assert client.cmd("STARTTLS").startswith("220 ")
    client.sock = client_tls().wrap_socket(client.sock, server_hostname="relay.test")
    assert "AUTH PLAIN" in client.cmd("EHLO client.test")
    return client


def test_parallel_attempts_from_one_address_check_at_most_the_limit(spawn_relay):
    relay = spawn_relay(**{"limits.max_auth_failures_per_ip": 3, "limits.auth_failure_delay": "200ms"})
    relay.add_user("alice", "acme", "s3cret")
    clients = [secured(RawClient(relay.addr("submission"), timeout=60)) for _ in range(30)]
    start = threading.Barrier(len(clients))
    replies = [None] * len(clients)

    def attempt(i, c):
        start.wait()
        replies[i] = code(c.cmd(plain("alice", "wrong")))

    threads = [threading.Thread(target=attempt, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    checked = replies.count("535 5.7.8")
    locked = replies.count("421 4.7.0")
    assert checked <= 3, f"{checked} passwords checked: {replies}"
    assert checked + locked == len(clients), replies
    for c in clients:
        c.close()


def test_failures_from_one_address_do_not_lock_the_user_out_elsewhere(spawn_relay):
    relay = spawn_relay(
        **{"limits.max_auth_failures_per_user": 2, "limits.max_auth_failures_per_ip": 100}
    )
    relay.add_user("alice", "acme", "s3cret")
    seen = []
    for _ in range(4):
        c = secured(SourcedClient(relay.addr("submission"), "127.0.0.2"))
        seen.append(code(c.cmd(plain("alice", "wrong"))))
        c.close()
    assert seen == ["535 5.7.8"] * 2 + ["421 4.7.0"] * 2, seen
    # From the attacker's address alice is locked, even with the right password...
    c = secured(SourcedClient(relay.addr("submission"), "127.0.0.2"))
    assert code(c.cmd(plain("alice", "s3cret"))) == "421 4.7.0"
    assert c.closed()
    # ...but alice from her own address only waits a little longer.
    c = secured(SourcedClient(relay.addr("submission"), "127.0.0.3"))
    assert code(c.cmd(plain("alice", "s3cret"))) == "235 2.7.0"
