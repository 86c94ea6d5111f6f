"""SMTP command injection through DSN parameters, end to end: an unauthenticated client on
the relay listener tries to smuggle CR LF into ENVID and ORCPT (xtext `+0D+0A`), hoping the
relay decodes them and writes them onto its next-hop session as extra commands. The next hop
is a raw server that logs every line it receives: it is the witness."""

import socket
import threading
import time

import pytest

from conftest import RawClient, code
from ports import free_port


class LoggingHop:
    """A next hop offering PIPELINING and DSN that logs every line, commands and data."""

    def __init__(self, ip="127.0.0.1"):
        self.ip = ip
        self.port = free_port((ip,))
        self.lines = []
        self.messages = 0
        self.lock = threading.Lock()
        self.sock = socket.create_server((ip, self.port))
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def target(self):
        return f"{self.ip}:{self.port}"

    def _serve(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _log(self, line):
        with self.lock:
            self.lines.append(line)

    def _session(self, conn):
        conn.settimeout(30)
        f = conn.makefile("rb")

        def send(text):
            conn.sendall(text.encode() + b"\r\n")

        try:
            send("220 hop.test ESMTP")
            while True:
                raw = f.readline(100000)
                if not raw:
                    return
                line = raw.rstrip(b"\r\n")
                self._log(line)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    send("250-hop.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 DSN")
                elif verb in (b"MAIL", b"RCPT", b"RSET"):
                    send("250 2.0.0 Ok")
                elif verb == b"DATA":
                    send("354 go ahead")
                    while True:
                        raw = f.readline(100000)
                        if not raw:
                            return
                        self._log(raw.rstrip(b"\r\n"))
                        if raw == b".\r\n":
                            break
                    with self.lock:
                        self.messages += 1
                    send("250 2.0.0 Ok: queued")
                elif verb == b"QUIT":
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.1 Not implemented")
        except OSError:
            return
        finally:
            conn.close()

    def commands(self):
        """Lines received outside DATA, in order."""
        with self.lock:
            lines = list(self.lines)
        out, in_data = [], False
        for line in lines:
            if in_data:
                in_data = line != b"."
                continue
            out.append(line)
            in_data = line.upper() == b"DATA"
        return out

    def wait_messages(self, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if self.messages >= n:
                    return
            time.sleep(0.1)
        raise AssertionError(f"expected {n} message(s) at the next hop:\n{self.commands()}")

    def stop(self):
        self.running = False
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def hop():
    h = LoggingHop()
    yield h
    h.stop()


@pytest.fixture
def relay(spawn_relay, hop):
    return spawn_relay(
        **{
            "pipeline.run_stages": True,
            "relay.accept_domains": ["inbound.test"],
            "relay.allow_networks": [],
            "delivery.routes": [{"pattern": "inbound.test", "target": hop.target}],
        }
    )


def test_crlf_in_dsn_parameters_never_reaches_the_next_hop(relay, hop):
    c = RawClient(relay.addr("relay"))
    assert code(c.cmd("EHLO attacker.test")).startswith("250")
    # ENVID decoding to "x\r\nRCPT TO:<victim@elsewhere.test>": refused, not decoded onward.
    reply = c.cmd("MAIL FROM:<a@sender.test> ENVID=x+0D+0ARCPT+20TO:<victim@elsewhere.test>")
    assert code(reply) == "501 5.5.4", reply
    assert code(c.cmd("MAIL FROM:<a@sender.test>")) == "250 2.1.0"
    reply = c.cmd("RCPT TO:<bob@inbound.test> ORCPT=rfc822;b+0D+0ARSET")
    assert code(reply) == "501 5.5.4", reply
    assert code(c.cmd("RSET")).startswith("250")

    # A clean transaction whose parameters need xtext: they must arrive encoded, type kept.
    assert code(c.cmd("MAIL FROM:<a@sender.test> ENVID=abc+2Bdef")) == "250 2.1.0"
    reply = c.cmd("RCPT TO:<bob@inbound.test> NOTIFY=FAILURE ORCPT=rfc822;b+2Bc@inbound.test")
    assert code(reply) == "250 2.1.5", reply
    assert code(c.cmd("RCPT TO:<carol@inbound.test>")) == "250 2.1.5"
    assert c.cmd("DATA").startswith("354")
    reply = c.cmd("From: a@sender.test\r\nSubject: clean\r\n\r\nhello\r\n.")
    assert code(reply) == "250 2.0.0", reply
    c.cmd("QUIT")
    c.close()

    hop.wait_messages(1)
    commands = hop.commands()
    mails = [line for line in commands if line.upper().startswith(b"MAIL")]
    rcpts = [line for line in commands if line.upper().startswith(b"RCPT")]
    assert len(mails) == 1, commands
    assert b" ENVID=abc+2Bdef" in mails[0], mails
    assert len(rcpts) == 2, commands
    [bob] = [r for r in rcpts if b"<bob@inbound.test>" in r]
    assert b" ORCPT=rfc822;b+2Bc@inbound.test" in bob, bob
    assert b" NOTIFY=FAILURE" in bob, bob
    [carol] = [r for r in rcpts if b"<carol@inbound.test>" in r]
    assert b"ORCPT" not in carol, carol
    everything = b"\n".join(hop.lines)
    assert b"victim" not in everything, commands
    assert all(not line.upper().startswith(b"RSET") for line in commands), commands
