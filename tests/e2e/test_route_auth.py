"""AUTH to a smarthost route, end to end: credentials from the environment (`password_env`),
sent only after STARTTLS; a target without STARTTLS gets no credentials at all and the mail
waits (4.7.11). The next hop logs every line it receives, decrypted."""

import subprocess
import time

import pytest

from conftest import RawClient, code
from nexthop import NextHop

USER, PASSWORD = "relay-user", "correct horse"


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
    tls_hop = NextHop(cert=cert, auth=(USER, PASSWORD))
    plain_hop = NextHop(auth=(USER, PASSWORD))
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

    tls_hop.wait_messages(1)
    assert [tls for tls, _ in tls_hop.auth_lines()] == [True], tls_hop.lines
    deadline = time.time() + 30

    timeline = ""
    while time.time() < deadline and "4.7.11" not in timeline:
        timeline = relay.cli("message", "show", queue_id, check=False).stdout
        time.sleep(0.2)
    assert "4.7.11" in timeline, timeline
    assert plain_hop.auth_lines() == [], plain_hop.lines
    assert plain_hop.messages == []
    assert PASSWORD not in relay.log_text()
