"""The SES v2-compatible API driven by boto3's own `sesv2` client: a message sent with
SendEmail arrives DKIM-signed at the test MX with the MIME structure asked for; bad
signatures, revoked keys, other tenants' senders and header injection are refused with the
error codes SES uses, and nothing is queued for them."""

import email
import re

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ports import free_port
from test_pipeline import dkim_verify, net, wait_show  # noqa: F401  (net is a fixture)


@pytest.fixture
def api_relay(spawn_relay, net):  # noqa: F811
    dns, port, _ = net
    api_port = free_port()
    relay = spawn_relay(**{
        "pipeline.run_stages": True,
        "delivery.port": port,
        "delivery.nameservers": [dns.addr],
        "listen.api": f"127.0.0.1:{api_port}",
    })
    out = relay.cli("domain", "add", "acme.test", "--tenant", "acme").stdout
    for name, value in re.findall(r'^(\S+)\s+TXT\s+"(.*)"\s*$', out, re.M):
        dns.txt(name, value.replace('" "', ""))
    relay.cli("domain", "add", "other.test", "--tenant", "other")
    relay.api = f"http://127.0.0.1:{api_port}"
    return relay


def new_key(relay, tenant="acme"):
    out = relay.cli("key", "create", "--tenant", tenant).stdout
    key_id = re.search(r"aws_access_key_id = (\S+)", out).group(1)
    secret = re.search(r"aws_secret_access_key = (\S+)", out).group(1)
    return key_id, secret


def sesv2(relay, key_id, secret):
    return boto3.client(
        "sesv2", endpoint_url=relay.api, region_name="us-east-1",
        aws_access_key_id=key_id, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def simple(subject="hello", sender="news@acme.test", to="bob@example.org", headers=()):
    return dict(
        FromEmailAddress=sender,
        Destination={"ToAddresses": [to]},
        Content={"Simple": {
            "Subject": {"Data": subject},
            "Body": {"Text": {"Data": "plain words"}, "Html": {"Data": "<p>html words</p>"}},
            "Headers": list(headers),
        }},
    )


def error_code(call):
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["Error"]["Code"]


def test_send_email_arrives_signed_with_the_mime_asked_for(api_relay, net):  # noqa: F811
    dns, _, sinks = net
    ses = sesv2(api_relay, *new_key(api_relay))
    out = ses.send_email(**simple(headers=[{"Name": "X-Campaign", "Value": "autumn"}]))
    queue_id = out["MessageId"]
    [msg] = sinks["good"].wait_messages(1)
    results, sigs = dkim_verify(msg, dns)
    assert len(sigs) == 2 and results == [True, True], results
    parsed = email.message_from_bytes(msg)
    assert parsed["Subject"] == "hello" and parsed["X-Campaign"] == "autumn", parsed.items()
    assert parsed.get_content_type() == "multipart/alternative", parsed.get_content_type()
    kinds = [p.get_content_type() for p in parsed.get_payload()]
    assert kinds == ["text/plain", "text/html"], kinds
    assert "delivered" in wait_show(api_relay, queue_id, "delivered")


def test_bad_requests_are_refused_with_ses_error_codes_and_nothing_is_queued(api_relay, net):  # noqa: F811
    _, _, sinks = net
    key_id, secret = new_key(api_relay)
    ses = sesv2(api_relay, key_id, secret)
    assert error_code(lambda: sesv2(api_relay, key_id, secret + "x").send_email(**simple())) == "SignatureDoesNotMatch"
    assert error_code(lambda: sesv2(api_relay, "BTN" + "A" * 17, secret).send_email(**simple())) == "UnrecognizedClientException"
    # Another tenant's domain, as sender: refused as SES refuses unverified identities.
    assert error_code(lambda: ses.send_email(**simple(sender="news@other.test"))) == "MessageRejected"
    # Header injection, in the subject, a custom header's value and an address.
    assert error_code(lambda: ses.send_email(**simple(subject="hi\r\nBcc: x@evil.test"))) == "BadRequestException"
    assert error_code(lambda: ses.send_email(**simple(headers=[{"Name": "X-A", "Value": "1\r\nBcc: x@evil.test"}]))) == "BadRequestException"
    assert error_code(lambda: ses.send_email(**simple(headers=[{"Name": "Bcc", "Value": "x@evil.test"}]))) == "BadRequestException"
    assert error_code(lambda: ses.send_email(**simple(to="bob@example.org>\r\nRCPT TO:<x@evil.test"))) == "BadRequestException"
    # A revoked key stops at once.
    api_relay.cli("key", "revoke", key_id)
    assert error_code(lambda: ses.send_email(**simple())) == "UnrecognizedClientException"
    assert sinks["good"].messages() == [], "nothing refused may be queued"
    listed = api_relay.cli("key", "list").stdout
    assert key_id in listed and secret not in listed, listed
