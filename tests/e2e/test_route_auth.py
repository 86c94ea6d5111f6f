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
    return self_signed(tmp_path, "hop")


def self_signed(tmp_path, name):
    """A leaf certificate for 127.0.0.1 that is its own trust anchor."""
    key, crt = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=hop.test",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:hop.test",
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-keyout", str(key), "-out", str(crt)],
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


def test_route_credentials_go_only_over_tls(spawn_relay, hops, cert):
    tls_hop, plain_hop = hops
    # The smarthost's certificate is verified (here against its own, as a private CA would
    # be configured); credentials never go to a server we could not authenticate.
    creds = {"username": USER, "password_env": "HOP_PASSWORD", "tls_ca_file": cert[0]}
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


def test_route_credentials_never_go_to_an_unverified_certificate(spawn_relay, tmp_path):
    """An attacker in the path answers STARTTLS with a certificate of its own."""
    hop = NextHop(cert=self_signed(tmp_path, "impostor"), auth=(USER, PASSWORD))
    trusted, _ = self_signed(tmp_path, "real")
    try:
        relay = spawn_relay(
            env={"HOP_PASSWORD": PASSWORD},
            **{
                "pipeline.run_stages": True,
                "relay.accept_domains": ["secure.test"],
                "relay.allow_networks": [],
                "delivery.routes": [{"pattern": "secure.test", "target": hop.target,
                                     "username": USER, "password_env": "HOP_PASSWORD",
                                     "tls_ca_file": trusted}],
            },
        )
        queue_id = send(relay, "dave@secure.test")
        deadline = time.time() + 30
        timeline = ""
        while time.time() < deadline and "deferred" not in timeline:
            timeline = relay.cli("message", "show", queue_id, check=False).stdout
            time.sleep(0.2)
        assert "deferred" in timeline, timeline
        assert any(line == b"STARTTLS" for line in hop.lines), hop.lines
        assert hop.auth_lines() == [], "credentials sent to an unverified server"
        assert hop.messages == []
    finally:
        hop.stop()
