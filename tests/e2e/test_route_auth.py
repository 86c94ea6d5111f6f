"""AUTH to a smarthost route, end to end: credentials from the environment (`password_env`),
sent only after STARTTLS; a target without STARTTLS gets no credentials at all and the mail
waits (4.7.11). The next hop logs every line it receives, decrypted."""

import base64
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import RawClient, code
from ports import free_port

USER, PASSWORD = "relay-user", "correct horse"


class AuthHop:
    """A next hop that offers AUTH PLAIN (and STARTTLS if `cert` is given) and refuses MAIL
    before a successful AUTH."""

    def __init__(self, cert=None):
        self.port = free_port()
        self.tls = None
        if cert:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*cert)
        self.lines, self.messages, self.lock = [], 0, threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.running = True
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def _serve(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        conn.settimeout(30)
        f = conn.makefile("rb")
        tls = authed = False
        try:
            conn.sendall(b"220 hop.test ESMTP\r\n")
            while True:
                raw = f.readline(10000)
                if not raw:
                    return
                line = raw.rstrip(b"\r\n")
                with self.lock:
                    self.lines.append((tls, line))
                verb = line.split(b" ")[0].upper()
                if verb == b"EHLO":
                    offer = b"250-STARTTLS\r\n" if self.tls and not tls else b""
                    conn.sendall(b"250-hop.test\r\n" + offer + b"250 AUTH PLAIN LOGIN\r\n")
                elif verb == b"STARTTLS" and self.tls and not tls:
                    conn.sendall(b"220 2.0.0 go ahead\r\n")
                    conn = self.tls.wrap_socket(conn, server_side=True)
                    f, tls = conn.makefile("rb"), True
                elif verb == b"AUTH":
                    token = line.split(b" ")[2] if len(line.split(b" ")) > 2 else b""
                    ok = base64.b64decode(token) == f"\0{USER}\0{PASSWORD}".encode()
                    authed = ok
                    conn.sendall(b"235 2.7.0 ok\r\n" if ok else b"535 5.7.8 no\r\n")
                elif verb == b"MAIL":
                    conn.sendall(b"250 2.1.0 ok\r\n" if authed else b"530 5.7.0 auth first\r\n")
                elif verb == b"RCPT":
                    conn.sendall(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go\r\n")
                    while f.readline(100000) not in (b".\r\n", b""):
                        pass
                    with self.lock:
                        self.messages += 1
                    conn.sendall(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def auth_lines(self):
        with self.lock:
            return [(tls, line) for tls, line in self.lines if line.upper().startswith(b"AUTH")]

    def stop(self):
        self.running = False
        self.sock.close()


@pytest.fixture
def cert(tmp_path):
    key, crt = tmp_path / "hop.key", tmp_path / "hop.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=hop.test", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )
    return str(crt), str(key)


@pytest.fixture
def hops(cert):
    tls_hop, plain_hop = AuthHop(cert), AuthHop()
    yield tls_hop, plain_hop
    tls_hop.stop()
    plain_hop.stop()


def send(relay, rcpt):
    c = RawClient(relay.addr("relay"))
    c.cmd("EHLO client.test")
    assert code(c.cmd("MAIL FROM:<a@sender.test>")) == "250 2.1.0"
    assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
    assert c.cmd("DATA").startswith("354")
    reply = c.cmd("From: a@sender.test\r\nSubject: via smarthost\r\n\r\nhi\r\n.")
    assert code(reply) == "250 2.0.0", reply
    c.close()
    return reply.rsplit(" ", 1)[-1].strip()


def test_route_credentials_go_only_over_tls(spawn_relay, hops):
    tls_hop, plain_hop = hops
    creds = {"username": USER, "password_env": "HOP_PASSWORD"}
    relay = spawn_relay(
        env={"HOP_PASSWORD": PASSWORD},
        **{
            "pipeline.run_stages": True,
            "relay.accept_domains": ["secure.test", "plain.test"],
            "relay.allow_networks": [],
            "delivery.retry_initial": "1s",
            "delivery.routes": [
                {"pattern": "secure.test", "target": tls_hop.target, **creds},
                {"pattern": "plain.test", "target": plain_hop.target, **creds},
            ],
        },
    )
    send(relay, "bob@secure.test")
    queue_id = send(relay, "carol@plain.test")

    deadline = time.time() + 30
    while time.time() < deadline and tls_hop.messages < 1:
        time.sleep(0.1)
    assert tls_hop.messages == 1
    assert [tls for tls, _ in tls_hop.auth_lines()] == [True], tls_hop.lines

    timeline = ""
    while time.time() < deadline and "4.7.11" not in timeline:
        timeline = relay.cli("message", "show", queue_id, check=False).stdout
        time.sleep(0.2)
    assert "4.7.11" in timeline, timeline
    assert plain_hop.auth_lines() == [], plain_hop.lines
    assert plain_hop.messages == 0
    assert PASSWORD not in relay.log_text()
