"""Each Lambda function's real binary (`main.rs` included) driven through a minimal Lambda
Runtime API with SQS events built from real LocalStack queue messages: policy, sign and
deliver carry a submitted message to the MX; bounce dead-letters a record it cannot decode."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from awsnet import aws_env_vars, client, queue_arn, queue_depth, receive, sqs_event, unique_name
from lambda_api import RuntimeApi, start_function
from test_aws_backend import start_aws_relay
from test_pipeline import dkim_verify, net, submit, wait_show  # noqa: F401  (net is a fixture)

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = Path(os.environ.get("E2E_FUNCTIONS_DIR", REPO / "target" / "release"))


@pytest.fixture
def functions(tmp_path):
    running = []

    def start(stage, env):
        binary = FUNCTIONS / f"baton-fn-{stage}"
        assert binary.exists(), f"{binary} missing: cargo build --release -p baton-fn-{stage}"
        api = RuntimeApi(timeout_s=300 if stage == "deliver" else 30)
        proc, started = start_function(str(binary), api, env, tmp_path / f"{stage}.log")
        running.append((proc, api))
        return api, proc, started

    yield start
    for proc, api in running:
        proc.kill()
        proc.wait()
        api.stop()


def log_lines(tmp_path, stage):
    return (tmp_path / f"{stage}.log").read_text(errors="replace").splitlines()


def test_policy_sign_and_deliver_functions_carry_a_message_to_the_mx(spawn_relay, net, localstack, functions, tmp_path):
    dns, port, sinks = net
    name = unique_name()
    gateway = start_aws_relay(spawn_relay, net, name, **{"pipeline.run_stages": False})
    queue_id = submit(gateway, "quinn@example.org")
    env = {
        **aws_env_vars(name),
        "BATON_DELIVERY__PORT": str(port),
        "BATON_DELIVERY__NAMESERVERS": f'["{dns.addr}"]',
        "BATON_LOG__FILTER": "info,baton_pipeline=debug",
    }

    for stage, queue in (("policy", "intake"), ("sign", "sign"), ("deliver", "deliver")):
        messages = receive(name, queue)
        api, proc, started = functions(stage, env)
        kind, body = api.invoke(sqs_event(messages, queue_arn(name, queue)))
        assert kind == "response", body
        assert json.loads(body) == {"batchItemFailures": []}, body
        print(f"{stage}: first Runtime API request {1000 * (api.first_next_at - started):.1f} ms after start")
        assert queue_depth(name, queue) == 0, f"{queue}: the handled record was not deleted"

    [msg] = sinks["good"].wait_messages(1)
    results, _ = dkim_verify(msg, dns)
    assert results == [True, True], results
    wait_show(gateway, queue_id, "delivered")
    # Structured logs: every line JSON, the stage's lines carry stage, message id and tenant.
    lines = [json.loads(line) for line in log_lines(tmp_path, "policy") if line.strip()]
    in_stage = [x for x in lines if x.get("span", {}).get("name") == "stage"]
    assert in_stage, lines
    assert all(x["span"]["stage"] == "intake" and x["span"]["queue_id"] == queue_id and x["span"]["tenant"] == "acme"
               for x in in_stage), in_stage


def test_bounce_function_dead_letters_an_undecodable_record_instead_of_retrying(spawn_relay, net, localstack, functions):
    name = unique_name()
    start_aws_relay(spawn_relay, net, name, **{"pipeline.run_stages": False})
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=f"{name}-bounce")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="this is not a bounce job")
    messages = receive(name, "bounce")
    api, _, _ = functions("bounce", aws_env_vars(name))
    kind, body = api.invoke(sqs_event(messages, queue_arn(name, "bounce")))
    assert kind == "response" and json.loads(body) == {"batchItemFailures": []}, body
    assert queue_depth(name, "bounce") == 0
    [dead] = receive(name, "bounce-dlq")
    assert dead["Body"] == "this is not a bounce job"
    assert "undecodable" in dead["MessageAttributes"]["dead_letter_reason"]["StringValue"]


def test_deliver_and_bounce_functions_refuse_a_placeholder_hostname(tmp_path):
    """Deployed without a Hostname, EHLO and DSNs would say baton.localhost: refuse to start."""
    env = {k: v for k, v in aws_env_vars("placeholder").items() if k != "BATON_HOSTNAME"}
    for stage in ("deliver", "bounce"):
        r = subprocess.run([str(FUNCTIONS / f"baton-fn-{stage}")], env=env, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0, r.stdout + r.stderr
        assert "placeholder" in r.stdout + r.stderr, r.stdout + r.stderr
