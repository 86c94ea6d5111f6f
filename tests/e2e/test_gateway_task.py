"""The gateway as the deployed ECS task starts it, behind a PROXY protocol v2 sender.

infra/template.yaml is deployed to moto (tests/e2e/moto_stack.py); the gateway container's
command, environment and secrets are read back from the task definition moto registered,
and the release `baton` binary is started with exactly those, the secrets resolved from
(moto's) Secrets Manager the way ECS injects them. The only additions are what the task
role and AWS's endpoints give a real task: credentials and the endpoints of LocalStack and
DynamoDB Local. The test asserts it adds and never replaces.

The load balancer is played by this test: it connects from an address inside the stack's
public subnets (put on the loopback interface for the test) and sends the PROXY v2 header an
NLB sends, then speaks SMTP through smtplib.
"""

import json
import os
import smtplib
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from awsnet import AWS_ENV, DYNAMODB, ENDPOINT, client, unique_name
from conftest import BATON
from moto_stack import MotoServer, deploy_stack
from procs import stop_process

# A client on the Internet, as the NLB names it.
CLIENT = ("203.0.113.50", 41000)


def v2_header(client_addr, lb_addr):
    """PROXY v2, PROXY command, TCP over IPv4 (haproxy proxy-protocol.txt, 2.2)."""
    body = socket.inet_aton(client_addr[0]) + socket.inet_aton(lb_addr[0])
    body += struct.pack("!HH", client_addr[1], lb_addr[1])
    return b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def self_signed(tmp: Path, host):
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=DNS:{host}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert.read_text(), key.read_text()


def ecs_secret_value(moto, value_from):
    """What ECS puts in the variable: `arn:...:secret:NAME:JSON_KEY:STAGE:VERSION`."""
    parts = value_from.split(":")
    arn, json_key = ":".join(parts[:7]), parts[7] if len(parts) > 7 else ""
    secret = moto.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    return json.loads(secret)[json_key] if json_key else secret


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """The stack on moto; the gateway container's command and environment, resolved."""
    tmp = tmp_path_factory.mktemp("gateway-task")
    moto = MotoServer(tmp / "moto.log").start()
    try:
        prefix = unique_name()
        cert, key = self_signed(tmp, "relay.example.com")
        arn = moto.client("secretsmanager").create_secret(
            Name=f"{prefix}-gateway-tls", SecretString=json.dumps({"cert": cert, "key": key}))["ARN"]
        stack = deploy_stack(moto, f"{prefix}-stack", prefix, f"{prefix}-code", TlsSecretArn=arn)
        container = stack.gateway_container()
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        secrets = {s["name"]: ecs_secret_value(moto, s["valueFrom"]) for s in container.get("secrets", [])}
        assert not set(env) & set(secrets), "a variable both plain and secret"
        return {
            "command": container["command"],
            "env": {**env, **secrets},
            "tmp": tmp,
        }
    finally:
        moto.stop()


@pytest.fixture(scope="module")
def lb_address(task):
    """An address inside the first public subnet, on lo for the test, removed afterwards."""
    cidrs = json.loads(task["env"]["BATON_LISTEN__PROXY_PROTOCOL_FROM"])
    net = cidrs[0].split("/")[0].rsplit(".", 1)[0]
    addr = f"{net}.77"
    r = subprocess.run(["ip", "addr", "add", f"{addr}/32", "dev", "lo"], capture_output=True, text=True)
    assert r.returncode == 0, f"expected to add {addr} to lo (the test runs as root): {r.stderr}"
    yield addr
    subprocess.run(["ip", "addr", "del", f"{addr}/32", "dev", "lo"], capture_output=True)


@pytest.fixture(scope="module")
def gateway(task, localstack):
    """`baton <command>` with the task's environment plus credentials and local endpoints."""
    local = {
        **AWS_ENV,
        "BATON_AWS__ENDPOINT_URL": ENDPOINT,
        "BATON_AWS__DYNAMODB_ENDPOINT_URL": DYNAMODB,
        "BATON_AWS__FORCE_PATH_STYLE": "true",
    }
    assert not set(local) & set(task["env"]), f"the test would replace {set(local) & set(task['env'])}"
    # Only what the task sets: no inherited BATON_* and no RUST_LOG from the test's shell.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BATON_", "RUST_LOG", "AWS_"))}
    env = {**base, **task["env"], **local}

    def cli(*args, stdin=None):
        r = subprocess.run([BATON, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"baton {' '.join(args)}: {r.stdout}\n{r.stderr}"
        return r

    # The stack made these; LocalStack stands in with the same names (from the same env).
    cli("aws", "provision")
    cli("user", "add", "alice", "--tenant", "acme", "--password-stdin", stdin="s3cret\n")
    cli("domain", "add", "acme.example", "--tenant", "acme")
    log = open(task["tmp"] / "gateway.log", "wb")
    proc = subprocess.Popen([BATON, *task["command"]], env=env, stdout=log, stderr=subprocess.STDOUT)
    ports = [int(env[f"BATON_LISTEN__{k}"].rsplit(":", 1)[1]) for k in ("SUBMISSION", "SUBMISSIONS", "RELAY")]
    deadline = time.time() + 30
    while True:
        assert proc.poll() is None, f"gateway exited:\n{(task['tmp'] / 'gateway.log').read_text()}"
        try:
            for port in ports:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline, f"gateway not listening on {ports}"
            time.sleep(0.2)
    yield {"env": env, "ports": dict(zip(("submission", "submissions", "relay"), ports)), "proc": proc}
    stop_process(proc)
    log.close()


class ThroughLoadBalancer(smtplib.SMTP):
    """smtplib, connecting from the load balancer's address and sending its header first."""

    lb = None
    client = CLIENT

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout, source_address=(self.lb, 0))
        sock.sendall(v2_header(self.client, (self.lb, port)))
        return sock


def intake_envelopes(env):
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=f"{env['BATON_AWS__PREFIX']}-intake")["QueueUrl"]
    out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2, VisibilityTimeout=0)
    return [json.loads(m["Body"]) for m in out.get("Messages", [])]


def submit(smtp, subject):
    smtp.starttls()
    smtp.login("alice", "s3cret")
    msg = f"From: news@acme.example\r\nTo: bob@example.org\r\nSubject: {subject}\r\n\r\nhello\r\n"
    smtp.sendmail("news@acme.example", ["bob@example.org"], msg)
    smtp.quit()


def test_task_definition_runs_the_gateway_as_configured(task):
    assert task["command"] == ["serve"]
    env = task["env"]
    assert env["BATON_STORAGE__BACKEND"] == "aws"
    assert env["BATON_PIPELINE__RUN_STAGES"] == "false", "the functions run the stages"
    assert env["TLS_CERT_PEM"].startswith("-----BEGIN CERTIFICATE-----")
    assert env["BATON_TLS__KEY_PEM_ENV"] == "TLS_KEY_PEM"


def test_submission_through_the_load_balancer_records_the_client_it_names(gateway, lb_address):
    ThroughLoadBalancer.lb = lb_address
    with ThroughLoadBalancer("127.0.0.1", gateway["ports"]["submission"], timeout=30) as smtp:
        submit(smtp, "through the NLB")
    envelopes = [e for e in intake_envelopes(gateway["env"]) if e.get("client_ip") == CLIENT[0]]
    assert envelopes, "expected the queued envelope to carry the client the header named"


def test_the_balancer_must_send_a_header_and_nobody_else_can(gateway, lb_address):
    port = gateway["ports"]["submission"]
    # From the balancer's subnet without a header: refused before any greeting.
    with socket.create_connection(("127.0.0.1", port), 10, source_address=(lb_address, 0)) as s:
        s.sendall(b"EHLO forged\r\n")
        assert s.recv(512).startswith(b"421 4.3.5"), "a header is mandatory from the balancer"
    # From elsewhere a header is not read: the greeting comes first, and a header sent
    # anyway is refused as a command, so the connection keeps its real address.
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        assert s.recv(512).startswith(b"220 ")
        s.sendall(v2_header(CLIENT, ("127.0.0.1", port)) + b"\r\n")
        assert s.recv(512).startswith(b"500 ")
