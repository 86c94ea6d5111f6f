"""Free loopback ports for test servers.

Ports come from below Linux's ephemeral range (32768-60999): a port the kernel handed out by
`bind(0)` and we closed again can be taken by any outgoing connection before the server under
test binds it, which made `baton serve` fail with EADDRINUSE now and then in CI.
"""

import random
import socket

LOW, HIGH = 20000, 32000


def _bindable(ip, port, kind):
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((ip, port))
            return True
        except OSError:
            return False


def free_port(ips=("127.0.0.1",), udp=False):
    """A port that is free for TCP (and UDP if asked) on every one of `ips`."""
    for _ in range(200):
        port = random.randint(LOW, HIGH)
        kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
        if all(_bindable(ip, port, k) for ip in ips for k in kinds):
            return port
    raise RuntimeError(f"no free port in {LOW}-{HIGH} on {ips}")
