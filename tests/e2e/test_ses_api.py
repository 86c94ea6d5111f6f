"""The SES v2-compatible API driven by boto3's own `sesv2` client: a message sent with
SendEmail arrives DKIM-signed at the test MX with the MIME structure asked for; bad
signatures, revoked keys, other tenants' senders and header injection are refused with the
error codes SES uses, and nothing is queued for them."""

import email
import json
import re
import socket
import subprocess
import time

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
        "api.tls": False,
        # The smallest budget: one largest body at a time.
        "api.max_body_memory": 1,
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
    # A revoked key stops within seconds (keys looked up are remembered for 5 s; AWS's own
    # revocation also takes a few seconds). GetAccount polls without side effects.
    api_relay.cli("key", "revoke", key_id)
    deadline = time.monotonic() + 10
    while True:
        try:
            ses.get_account()
        except ClientError as e:
            assert e.response["Error"]["Code"] == "UnrecognizedClientException", e.response
            break
        assert time.monotonic() < deadline, "a revoked key still works after 10 s"
        time.sleep(0.5)
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
    dns, _, sinks = net
    acme_key = new_key(api_relay, "acme")
    acme = sesv2(api_relay, *acme_key)
    other = sesv2(api_relay, *new_key(api_relay, "other"))
    made = acme.create_email_identity(EmailIdentity="news.test")
    assert made["IdentityType"] == "DOMAIN" and len(made["DkimAttributes"]["Tokens"]) == 2, made
    # Pending until DNS shows its DKIM records (tests/e2e/test_ses_identities.py has more).
    assert made["VerifiedForSendingStatus"] is False, made
    got = acme.get_email_identity(EmailIdentity="news.test")
    assert got["DkimAttributes"]["Tokens"] == made["DkimAttributes"]["Tokens"], got
    assert got["VerificationStatus"] == "PENDING", got
    names = sorted(i["IdentityName"] for i in acme.list_email_identities()["EmailIdentities"])
    assert names == ["acme.test", "news.test"], names
    assert error_code(lambda: acme.create_email_identity(EmailIdentity="news.test")) == "AlreadyExistsException"
    # Another tenant: acme's identities are absent to it, and it cannot take them over.
    assert [i["IdentityName"] for i in other.list_email_identities()["EmailIdentities"]] == ["other.test"]
    assert error_code(lambda: other.get_email_identity(EmailIdentity="news.test")) == "NotFoundException"
    assert error_code(lambda: other.delete_email_identity(EmailIdentity="news.test")) == "NotFoundException"
    assert error_code(lambda: other.create_email_identity(EmailIdentity="news.test")) == "BadRequestException"
    assert error_code(lambda: other.create_email_identity(EmailIdentity="relay.test")) == "BadRequestException"
    # Unproven, it does not send; once its records are published, it sends signed as
    # itself; once deleted, it no longer does.
    assert error_code(lambda: acme.send_email(**simple(sender="hello@news.test"))) == "MessageRejected"
    from test_ses_identities import publish
    publish(api_relay, acme_key, "news.test", dns)
    assert acme.get_email_identity(EmailIdentity="news.test")["VerifiedForSendingStatus"] is True
    queue_id = acme.send_email(**simple(sender="hello@news.test"))["MessageId"]
    [msg] = sinks["good"].wait_messages(1)
    assert b"d=news.test" in msg, msg[:600]
    assert "delivered" in wait_show(api_relay, queue_id, "delivered")
    acme.delete_email_identity(EmailIdentity="news.test")
    assert error_code(lambda: acme.send_email(**simple(sender="hello@news.test"))) == "MessageRejected"


def test_get_account_reports_the_tenants_quota_and_what_it_sent(api_relay, net):  # noqa: F811
    _, _, sinks = net
    acme = sesv2(api_relay, *new_key(api_relay, "acme"))
    other = sesv2(api_relay, *new_key(api_relay, "other"))
    quota = acme.get_account()["SendQuota"]
    assert quota == {"Max24HourSend": -1.0, "MaxSendRate": -1.0, "SentLast24Hours": 0.0}, quota
    api_relay.cli("tenant", "quota", "acme", "--per-day", "500", "--per-second", "7")
    ids = [acme.send_email(**simple(to=f"r{i}@example.org"))["MessageId"] for i in range(2)]
    for queue_id in ids:
        wait_show(api_relay, queue_id, "delivered")
    quota = acme.get_account()["SendQuota"]
    assert quota == {"Max24HourSend": 500.0, "MaxSendRate": 7.0, "SentLast24Hours": 2.0}, quota
    assert other.get_account()["SendQuota"]["SentLast24Hours"] == 0.0, "another tenant's count"


def curl_sigv4(url, key_id, secret, *args):
    out = subprocess.run(
        ["curl", "-sS", "-k", "--aws-sigv4", "aws:amz:us-east-1:ses", "--user", f"{key_id}:{secret}",
         "-w", "\n%{http_code} %{http_version}", *args, url],
        capture_output=True, text=True, timeout=30, check=True).stdout
    body, _, status = out.rpartition("\n")
    return body, status


def test_the_api_speaks_https_with_http2_and_http1(spawn_relay):
    api_port = free_port()
    relay = spawn_relay(**{"listen.api": f"0.0.0.0:{api_port}"})  # TLS is the default
    key_id, secret = new_key(relay)
    url = f"https://127.0.0.1:{api_port}/v2/email/account"
    body, status = curl_sigv4(url, key_id, secret, "--http2")
    assert status == "200 2" and '"SentLast24Hours":0' in body.replace(" ", ""), (status, body)
    body, status = curl_sigv4(url, key_id, secret, "--http1.1")
    assert status == "200 1.1", (status, body)
    # A wrong secret: refused over HTTP/2 as well.
    body, status = curl_sigv4(url, key_id, secret + "x", "--http2")
    assert status == "403 2", (status, body)
    # Plain HTTP on a TLS port gets nowhere.
    plain = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://127.0.0.1:{api_port}/v2/email/account"],
                           capture_output=True, text=True, timeout=30)
    assert plain.stdout in ("000", ""), plain


def raw_request(port, headers, body=b"", wait=10.0):
    """Sends the request line and headers (and `body`), then reads what comes back within
    `wait` seconds without sending more; returns (status line, socket)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    head = "POST /v2/email/outbound-emails HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode() + body)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    return data.split(b"\r\n", 1)[0].decode(), sock


def auth_header(key_id):
    day = time.strftime("%Y%m%d", time.gmtime())
    return {
        "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "Authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/{day}/us-east-1/ses/aws4_request, "
                         f"SignedHeaders=host;x-amz-date, Signature={'0' * 64}",
    }


def test_bodies_are_read_only_for_real_keys_and_within_the_memory_budget(api_relay):
    """An unknown key, a stale date or an oversized length is refused from the headers alone,
    before the body is sent; a real key id gets its body read, but only as many at once as
    the budget (at least one largest body) allows: the next gets 429."""
    port = int(api_relay.api.rsplit(":", 1)[1])
    key_id, _ = new_key(api_relay)
    big = {"Content-Length": str(50_000_000), "Content-Type": "application/json"}
    status, s1 = raw_request(port, {**auth_header("BTN" + "A" * 17), **big})
    assert status.startswith("HTTP/1.1 403"), status
    stale = auth_header(key_id)
    stale["X-Amz-Date"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 3600))
    stale["Authorization"] = stale["Authorization"].replace(
        time.strftime("%Y%m%d", time.gmtime()), time.strftime("%Y%m%d", time.gmtime(time.time() - 3600)))
    status, s2 = raw_request(port, {**stale, **big})
    assert status.startswith("HTTP/1.1 403"), status
    status, s3 = raw_request(port, {**auth_header(key_id), "Content-Length": str(60_000_000)})
    assert status.startswith("HTTP/1.1 400"), status
    # A real key id and a large declared body: the server waits for the body (no answer
    # yet), holding its share of the budget; a second one at the same time gets 429.
    status, held = raw_request(port, {**auth_header(key_id), **big}, wait=2.0)
    assert status == "", f"the first large body is read, not answered early: {status}"
    status, s4 = raw_request(port, {**auth_header(key_id), **big})
    assert status.startswith("HTTP/1.1 429"), status
    held.close()
    # Once the first is gone, the budget is back: a small signed-wrong request is read and
    # refused on its signature.
    time.sleep(0.5)
    status, s5 = raw_request(port, {**auth_header(key_id), "Content-Length": "2"}, body=b"{}")
    assert status.startswith("HTTP/1.1 403"), status
    for s in (s1, s2, s3, s4, s5):
        s.close()


def signed_call(relay, key_id, secret, method, path, body):
    """A request signed as the SDKs sign it (botocore's SigV4Auth), with a body they would
    never send: unknown fields, malformed JSON. Returns (status, error type, message)."""
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = AWSRequest(method=method, url=relay.api + path, data=data,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key_id, secret), "ses", "us-east-1").add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(prepared.url, data=data, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, None, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-amzn-ErrorType"), json.loads(e.read() or b"{}").get("message", "")


def test_every_validation_error_is_a_400_that_names_it_and_queues_nothing(api_relay, net):  # noqa: F811
    _, _, sinks = net
    key_id, secret = new_key(api_relay)
    ses = sesv2(api_relay, key_id, secret)
    send = "/v2/email/outbound-emails"
    ok = simple()
    cases = [
        ({**ok, "Bogus": 1}, "Bogus"),
        ({**ok, "Destination": {"ToAddresses": ["bob@example.org"], "BccAdresses": []}}, "BccAdresses"),
        (b"{not json", "request body"),
        ({**ok, "Destination": {"ToAddresses": []}}, "Destination"),
        ({**ok, "FromEmailAddress": "not an address"}, "not an address"),
        ({**ok, "Destination": {"ToAddresses": ["bob@example.org\x00"]}}, "ToAddresses"),
        ({**ok, "Content": {}}, "Content"),
    ]
    for body, named in cases:
        status, kind, message = signed_call(api_relay, key_id, secret, "POST", send, body)
        assert (status, kind) == (400, "BadRequestException"), (body, status, kind, message)
        assert named.lower() in message.lower(), (body, message)
    # More than SES's 50 recipients, through boto3 itself.
    many = {**ok, "Destination": {"ToAddresses": [f"r{i}@example.org" for i in range(51)]}}
    assert error_code(lambda: ses.send_email(**many)) == "BadRequestException"
    # The same refusals for the other operations' bodies.
    status, kind, message = signed_call(api_relay, key_id, secret, "PUT", "/v2/email/suppression/addresses",
                                        {"EmailAddress": "a@example.org", "Reason": "BOUNCE", "Extra": True})
    assert (status, kind) == (400, "BadRequestException") and "Extra" in message, (status, kind, message)
    status, kind, message = signed_call(api_relay, key_id, secret, "PUT", "/v2/email/suppression/addresses",
                                        {"EmailAddress": "a@example.org", "Reason": "ANNOYED"})
    assert (status, kind) == (400, "BadRequestException"), (status, kind, message)
    assert json.loads(api_relay.cli("queue", "list", "--json").stdout) == [], "nothing refused may be queued"
    assert sinks["good"].messages() == []


def test_a_key_holds_only_its_share_of_the_body_budget_and_requests_without_bodies_none(spawn_relay):
    """Key ids are not secret. One key's large bodies, held open by a slow sender, take at
    most a quarter of the budget (at least one largest body): the same key's next large body
    gets 429, while another key's large body is still read, and its GetAccount answers."""
    api_port = free_port()
    relay = spawn_relay(**{"listen.api": f"127.0.0.1:{api_port}", "api.tls": False,
                           "api.max_body_memory": 400 * 1024 * 1024})
    relay.api = f"http://127.0.0.1:{api_port}"
    (a, _), (b, b_secret) = new_key(relay, "acme"), new_key(relay, "other")
    big = {"Content-Length": str(50_000_000), "Content-Type": "application/json"}
    status, held_a = raw_request(api_port, {**auth_header(a), **big}, wait=2.0)
    assert status == "", status
    status, refused = raw_request(api_port, {**auth_header(a), **big})
    assert status.startswith("HTTP/1.1 429"), status
    status, held_b = raw_request(api_port, {**auth_header(b), **big}, wait=2.0)
    assert status == "", f"another key's body is read: {status}"
    quota = sesv2(relay, b, b_secret).get_account()["SendQuota"]
    assert quota["SentLast24Hours"] == 0.0, quota
    for s in (held_a, refused, held_b):
        s.close()


def test_silent_connections_are_closed_and_one_address_cannot_take_every_slot(spawn_relay):
    """A connection that never sends a byte (nor finishes choosing HTTP/2) is closed after
    the idle time (before, it stayed open for good: the read below would time out); one
    address may hold limits.max_connections_per_ip connections, the next is closed while
    those are still served, and once one goes, the address is served again."""
    api_port = free_port()
    relay = spawn_relay(**{"listen.api": f"127.0.0.1:{api_port}", "api.tls": False,
                           "limits.command_timeout": "5s", "limits.max_connections_per_ip": 3})
    relay.api = f"http://127.0.0.1:{api_port}"
    key = new_key(relay)

    def closed(sock, first=b""):
        sock.sendall(first)
        sock.settimeout(30)
        return sock.recv(100) == b""

    silent = socket.create_connection(("127.0.0.1", api_port))
    half_h2 = socket.create_connection(("127.0.0.1", api_port))
    assert closed(silent) and closed(half_h2, b"PRI * HTTP/2.0\r\n")
    silent.close(), half_h2.close()
    held = [socket.create_connection(("127.0.0.1", api_port)) for _ in range(3)]
    extra = socket.create_connection(("127.0.0.1", api_port))
    assert closed(extra), "the fourth from one address is closed"
    extra.close()
    # The three held ones were not closed: one of them is still served.
    held[0].sendall(b"GET /v2/email/account HTTP/1.1\r\nHost: x\r\n\r\n")
    held[0].settimeout(30)
    assert held[0].recv(100).startswith(b"HTTP/1.1 403"), "a held connection is still served"
    for s in held:
        s.close()
    time.sleep(0.3)
    assert sesv2(relay, *key).get_account()["SendQuota"]["SentLast24Hours"] == 0.0
