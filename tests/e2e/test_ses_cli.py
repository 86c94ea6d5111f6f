"""The SES v2 API as applications and operators reach it, on both backends: the AWS CLI
(`aws sesv2 ... --endpoint-url`) drives the operations, and a Rust program with
aws-sdk-sesv2 (crates/baton/examples/ses_send.rs) sends one message. Each message arrives
DKIM-signed at the test MX with the MIME structure asked for."""

import email
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from awsnet import AWS_ENV, unique_name
from ports import free_port
from test_aws_backend import start_aws_relay
from test_pipeline import dkim_verify, net, wait_show  # noqa: F401  (net is a fixture)

REPO = Path(__file__).resolve().parents[2]
AWS_CLI = REPO / ".venv-tests" / "bin" / "aws"


def example(name):
    """One of crates/baton's examples, as `cargo test --workspace` builds them (a client: the
    debug build is enough), or from E2E_EXAMPLES_DIR."""
    path = Path(os.environ.get("E2E_EXAMPLES_DIR", REPO / "target" / "debug" / "examples")) / name
    assert path.exists(), f"{path} missing: cargo build -p baton --example {name}"
    return path


@pytest.fixture(params=["embedded", "aws"])
def relay(request, spawn_relay, net):  # noqa: F811
    dns, port, _ = net
    api_port = free_port()
    api = {"listen.api": f"127.0.0.1:{api_port}", "api.tls": False}
    if request.param == "aws":
        request.getfixturevalue("localstack")
        r = start_aws_relay(spawn_relay, net, unique_name(), **api)
    else:
        r = spawn_relay(**{"pipeline.run_stages": True, "delivery.port": port,
                           "delivery.nameservers": [dns.addr], **api})
        out = r.cli("domain", "add", "acme.test", "--tenant", "acme").stdout
        for name, value in re.findall(r'^(\S+)\s+TXT\s+"(.*)"\s*$', out, re.M):
            dns.txt(name, value.replace('" "', ""))
    r.api = f"http://127.0.0.1:{api_port}"
    out = r.cli("key", "create", "--tenant", "acme").stdout
    r.key_env = {
        "AWS_ACCESS_KEY_ID": re.search(r"aws_access_key_id = (\S+)", out).group(1),
        "AWS_SECRET_ACCESS_KEY": re.search(r"aws_secret_access_key = (\S+)", out).group(1),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    return r


def sesv2(relay, *args, ok=True):
    """`aws sesv2 ARGS` against the relay; the parsed JSON answer (or the failed run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run = subprocess.run(
        [str(AWS_CLI), "sesv2", *args, "--endpoint-url", relay.api, "--region", "us-east-1",
         "--output", "json", "--cli-read-timeout", "20"],
        env={**env, **relay.key_env}, capture_output=True, text=True, timeout=60)
    if not ok:
        assert run.returncode != 0, run.stdout
        return run
    assert run.returncode == 0, f"aws sesv2 {args[0]}: {run.stderr}"
    return json.loads(run.stdout) if run.stdout.strip() else {}


def test_the_aws_cli_drives_the_api(relay, net):  # noqa: F811
    dns, _, sinks = net
    assert sesv2(relay, "get-account")["SendQuota"]["SentLast24Hours"] == 0
    made = sesv2(relay, "create-email-identity", "--email-identity", "news.test")
    tokens = made["DkimAttributes"]["Tokens"]
    assert made["IdentityType"] == "DOMAIN" and len(tokens) == 2, made
    got = sesv2(relay, "get-email-identity", "--email-identity", "news.test")
    assert got["DkimAttributes"]["Tokens"] == tokens, got
    names = sorted(i["IdentityName"] for i in sesv2(relay, "list-email-identities")["EmailIdentities"])
    assert names == ["acme.test", "news.test"], names

    sesv2(relay, "put-suppressed-destination", "--email-address", "gone@example.org", "--reason", "BOUNCE")
    got = sesv2(relay, "get-suppressed-destination", "--email-address", "gone@example.org")
    assert got["SuppressedDestination"]["Reason"] == "BOUNCE", got
    listed = sesv2(relay, "list-suppressed-destinations")["SuppressedDestinationSummaries"]
    assert [s["EmailAddress"] for s in listed] == ["gone@example.org"], listed
    sesv2(relay, "delete-suppressed-destination", "--email-address", "gone@example.org")
    assert "NotFoundException" in sesv2(relay, "get-suppressed-destination", "--email-address",
                                        "gone@example.org", ok=False).stderr

    content = {"Simple": {"Subject": {"Data": "from the CLI"},
                          "Body": {"Text": {"Data": "plain"}, "Html": {"Data": "<p>html</p>"}}}}
    sent = sesv2(relay, "send-email", "--from-email-address", "hello@acme.test",
                 "--destination", json.dumps({"ToAddresses": ["bob@example.org"]}),
                 "--content", json.dumps(content))
    [msg] = sinks["good"].wait_messages(1)
    results, sigs = dkim_verify(msg, dns)
    assert len(sigs) == 2 and results == [True, True], results
    parsed = email.message_from_bytes(msg)
    assert parsed["Subject"] == "from the CLI" and parsed.get_content_type() == "multipart/alternative"
    assert "delivered" in wait_show(relay, sent["MessageId"], "delivered")

    sesv2(relay, "delete-email-identity", "--email-identity", "news.test")
    refused = sesv2(relay, "send-email", "--from-email-address", "hello@news.test",
                    "--destination", json.dumps({"ToAddresses": ["bob@example.org"]}),
                    "--content", json.dumps(content), ok=False)
    assert "MessageRejected" in refused.stderr, refused.stderr


def test_the_aws_cli_drives_templates_and_bulk_sends(relay, net):  # noqa: F811
    dns, _, sinks = net
    template = {"Subject": "Hello {{name}}", "Text": "Dear {{name}}, {{what}}.",
                "Html": "<p>Dear {{name}}</p>"}
    sesv2(relay, "create-email-template", "--template-name", "welcome",
          "--template-content", json.dumps(template))
    got = sesv2(relay, "get-email-template", "--template-name", "welcome")
    assert got["TemplateContent"] == template, got
    template["Text"] = "Dear {{name}}, {{what}}!"
    sesv2(relay, "update-email-template", "--template-name", "welcome",
          "--template-content", json.dumps(template))
    listed = sesv2(relay, "list-email-templates")["TemplatesMetadata"]
    assert [t["TemplateName"] for t in listed] == ["welcome"], listed
    rendered = sesv2(relay, "test-render-email-template", "--template-name", "welcome",
                     "--template-data", json.dumps({"name": "<Ann>", "what": "hi"}))["RenderedTemplate"]
    assert "Subject: Hello <Ann>" in rendered and "&lt;Ann&gt;" in rendered, rendered

    sent = sesv2(relay, "send-email", "--from-email-address", "news@acme.test",
                 "--destination", json.dumps({"ToAddresses": ["ann@example.org"]}),
                 "--content", json.dumps({"Template": {"TemplateName": "welcome",
                                                       "TemplateData": json.dumps({"name": "Ann", "what": "hi"})}}))
    bulk = sesv2(relay, "send-bulk-email", "--from-email-address", "news@acme.test",
                 "--default-content", json.dumps({"Template": {"TemplateName": "welcome",
                                                               "TemplateData": json.dumps({"what": "hello"})}}),
                 "--bulk-email-entries", json.dumps([
                     {"Destination": {"ToAddresses": [f"{n}@example.org"]},
                      "ReplacementEmailContent": {"ReplacementTemplate": {
                          "ReplacementTemplateData": json.dumps({"name": n})}}} for n in ("bo", "cy")]))
    results = bulk["BulkEmailEntryResults"]
    assert [r["Status"] for r in results] == ["SUCCESS", "SUCCESS"], results
    msgs = sinks["good"].wait_messages(3)
    subjects = sorted(email.message_from_bytes(m)["Subject"] for m in msgs)
    assert subjects == ["Hello Ann", "Hello bo", "Hello cy"], subjects
    for m in msgs:
        results_, sigs = dkim_verify(m, dns)
        assert len(sigs) == 2 and results_ == [True, True], results_
    for queue_id in [sent["MessageId"]] + [r["MessageId"] for r in results]:
        assert "delivered" in wait_show(relay, queue_id, "delivered")
    sesv2(relay, "delete-email-template", "--template-name", "welcome")
    assert "NotFoundException" in sesv2(relay, "get-email-template", "--template-name", "welcome",
                                        ok=False).stderr


def test_a_rust_program_with_aws_sdk_sesv2_sends_one_message(relay, net):  # noqa: F811
    dns, _, sinks = net
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run = subprocess.run([str(example("ses_send")), "news@acme.test", "carol@example.org"],
                         env={**env, **relay.key_env, "BATON_API": relay.api},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    queue_id = run.stdout.strip()
    [msg] = sinks["good"].wait_messages(1)
    results, sigs = dkim_verify(msg, dns)
    assert len(sigs) == 2 and results == [True, True], results
    parsed = email.message_from_bytes(msg)
    assert parsed["Subject"] == "from the Rust SDK", parsed.items()
    assert [p.get_content_type() for p in parsed.get_payload()] == ["text/plain", "text/html"]
    assert "delivered" in wait_show(relay, queue_id, "delivered")
