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


def test_the_suppression_list_through_the_api_is_the_pipelines_and_the_tenants_own(api_relay, net):  # noqa: F811
    _, _, sinks = net
    acme = sesv2(api_relay, *new_key(api_relay, "acme"))
    other = sesv2(api_relay, *new_key(api_relay, "other"))
    acme.put_suppressed_destination(EmailAddress="gone@example.org", Reason="BOUNCE")
    acme.put_suppressed_destination(EmailAddress="angry@example.org", Reason="COMPLAINT")
    got = acme.get_suppressed_destination(EmailAddress="gone@example.org")["SuppressedDestination"]
    assert (got["EmailAddress"], got["Reason"]) == ("gone@example.org", "BOUNCE"), got
    listed = acme.list_suppressed_destinations()["SuppressedDestinationSummaries"]
    assert sorted((s["EmailAddress"], s["Reason"]) for s in listed) == [
        ("angry@example.org", "COMPLAINT"), ("gone@example.org", "BOUNCE")], listed
    only = acme.list_suppressed_destinations(Reasons=["COMPLAINT"])["SuppressedDestinationSummaries"]
    assert [s["EmailAddress"] for s in only] == ["angry@example.org"], only
    # Another tenant sees nothing of acme's, and cannot delete it: absent, not forbidden.
    assert other.list_suppressed_destinations()["SuppressedDestinationSummaries"] == []
    assert error_code(lambda: other.get_suppressed_destination(EmailAddress="gone@example.org")) == "NotFoundException"
    assert error_code(lambda: other.delete_suppressed_destination(EmailAddress="gone@example.org")) == "NotFoundException"
    # The pipeline honours it: mail to gone@ is accepted and not sent.
    queue_id = acme.send_email(**simple(to="gone@example.org"))["MessageId"]
    assert "suppress" in wait_show(api_relay, queue_id, "suppress")
    assert sinks["good"].messages() == []
    acme.delete_suppressed_destination(EmailAddress="gone@example.org")
    assert error_code(lambda: acme.get_suppressed_destination(EmailAddress="gone@example.org")) == "NotFoundException"
    assert error_code(lambda: acme.put_suppressed_destination(EmailAddress="x@example.org\r\nX: y", Reason="BOUNCE")) == "BadRequestException"


def test_identities_are_the_tenants_domains_and_only_theirs(api_relay, net):  # noqa: F811
    _, _, sinks = net
    acme = sesv2(api_relay, *new_key(api_relay, "acme"))
    other = sesv2(api_relay, *new_key(api_relay, "other"))
    made = acme.create_email_identity(EmailIdentity="news.test")
    assert made["IdentityType"] == "DOMAIN" and len(made["DkimAttributes"]["Tokens"]) == 2, made
    got = acme.get_email_identity(EmailIdentity="news.test")
    assert got["DkimAttributes"]["Tokens"] == made["DkimAttributes"]["Tokens"], got
    names = sorted(i["IdentityName"] for i in acme.list_email_identities()["EmailIdentities"])
    assert names == ["acme.test", "news.test"], names
    assert error_code(lambda: acme.create_email_identity(EmailIdentity="news.test")) == "AlreadyExistsException"
    # Another tenant: acme's identities are absent to it, and it cannot take them over.
    assert [i["IdentityName"] for i in other.list_email_identities()["EmailIdentities"]] == ["other.test"]
    assert error_code(lambda: other.get_email_identity(EmailIdentity="news.test")) == "NotFoundException"
    assert error_code(lambda: other.delete_email_identity(EmailIdentity="news.test")) == "NotFoundException"
    assert error_code(lambda: other.create_email_identity(EmailIdentity="news.test")) == "BadRequestException"
    assert error_code(lambda: other.create_email_identity(EmailIdentity="relay.test")) == "BadRequestException"
    # The new identity sends, signed as itself; once deleted, it no longer does.
    queue_id = acme.send_email(**simple(sender="hello@news.test"))["MessageId"]
    [msg] = sinks["good"].wait_messages(1)
    assert b"d=news.test" in msg, msg[:600]
    assert "delivered" in wait_show(api_relay, queue_id, "delivered")
    acme.delete_email_identity(EmailIdentity="news.test")
    assert error_code(lambda: acme.send_email(**simple(sender="hello@news.test"))) == "MessageRejected"
