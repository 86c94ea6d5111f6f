"""The SES v2 API function's real binary (`baton-fn-api`) driven through the Lambda Runtime
API with function-URL events (payload format 2.0) carrying requests signed with botocore's
SigV4 signer, against LocalStack and DynamoDB Local: keys made by `baton key create` on the
AWS backend work, accepted mail is in the bucket and the intake queue with the caller's
source address, and refusals keep SES's error types through lambda_http."""

import base64
import json
import re

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from awsnet import AWS_ENV, REGION, aws_env_vars, aws_settings, client, queue_depth, receive, unique_name
from test_lambda_functions import functions  # noqa: F401  (a fixture)

# A function URL's host: what the client signs and Lambda passes on as the Host header.
HOST = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws"
SOURCE_IP = "198.51.100.23"


def signed(method, path, key_id, secret, body=b"", query=""):
    """The headers botocore's own SigV4 signer sets for this request (service "ses")."""
    url = f"https://{HOST}{path}" + (f"?{query}" if query else "")
    headers = {"Content-Type": "application/json"} if body else {}
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(Credentials(key_id, secret), "ses", REGION).add_auth(request)
    out = {k.lower(): v for k, v in request.headers.items()}
    out["host"] = HOST
    if body:
        out["content-length"] = str(len(body))
    return out


def url_event(method, path, headers, body=b"", query="", base64_body=False):
    """The event Lambda sends for a function URL request (payload format 2.0)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": HOST.split(".")[0],
            "domainName": HOST,
            "domainPrefix": HOST.split(".")[0],
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": SOURCE_IP, "userAgent": "e2e"},
            "requestId": "e2e",
            "routeKey": "$default",
            "stage": "$default",
            "time": "02/Dec/2026:14:00:00 +0000",
            "timeEpoch": 1796220000000,
        },
        "body": (base64.b64encode(body).decode() if base64_body else body.decode()) if body else None,
        "isBase64Encoded": base64_body,
    }


def call(api, event):
    """Invokes the function; returns (status, lower-cased headers, JSON body)."""
    kind, raw = api.invoke(event)
    assert kind == "response", raw
    out = json.loads(raw)
    body = out.get("body") or ""
    if out.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    headers = {k.lower(): v for k, v in (out.get("headers") or {}).items()}
    return out["statusCode"], headers, json.loads(body) if body else None


def send_email_body(subject="hello from lambda"):
    return json.dumps({
        "FromEmailAddress": "news@acme.test",
        "Destination": {"ToAddresses": ["bob@example.org"]},
        "Content": {"Simple": {"Subject": {"Data": subject}, "Body": {"Text": {"Data": "plain words"}}}},
    }).encode()


def bodies_in_bucket(name):
    out = client("s3").list_objects_v2(Bucket=name, Prefix="messages/")
    return [o["Key"] for o in out.get("Contents", [])]


def test_api_function_answers_signed_function_url_requests_and_refuses_bad_signatures(spawn_relay, localstack, functions):  # noqa: F811
    name = unique_name()
    admin = spawn_relay(env=AWS_ENV, start=False, **aws_settings(name))
    admin.cli("aws", "provision")
    admin.cli("domain", "add", "acme.test", "--tenant", "acme")
    out = admin.cli("key", "create", "--tenant", "acme").stdout
    key_id = re.search(r"aws_access_key_id = (\S+)", out).group(1)
    secret = re.search(r"aws_secret_access_key = (\S+)", out).group(1)
    api, _, _ = functions("api", aws_env_vars(name))
    path = "/v2/email/outbound-emails"
    body = send_email_body()

    # Refused: a wrong secret, and a body changed after signing (sent base64-encoded, as a
    # function URL passes bodies it does not take for text). SES's error type survives
    # lambda_http's response conversion, and nothing is stored or queued.
    status, headers, answer = call(api, url_event("POST", path, signed("POST", path, key_id, secret + "x", body), body))
    assert (status, headers.get("x-amzn-errortype")) == (403, "SignatureDoesNotMatch"), (status, headers, answer)
    tampered = send_email_body("jello from lambda")
    assert len(tampered) == len(body)
    status, headers, answer = call(api, url_event("POST", path, signed("POST", path, key_id, secret, body), tampered,
                                                  base64_body=True))
    assert (status, headers.get("x-amzn-errortype")) == (403, "SignatureDoesNotMatch"), (status, headers, answer)
    # The Host header is part of what was signed: another host's request does not verify.
    elsewhere = {**signed("GET", "/v2/email/account", key_id, secret), "host": "elsewhere.lambda-url.us-east-1.on.aws"}
    status, headers, _ = call(api, url_event("GET", "/v2/email/account", elsewhere))
    assert (status, headers.get("x-amzn-errortype")) == (403, "SignatureDoesNotMatch"), (status, headers)
    assert queue_depth(name, "intake") == 0, "nothing refused may be queued"
    assert bodies_in_bucket(name) == [], "nothing refused may be stored"

    # GetAccount: signed over the function URL's Host and the raw path.
    status, headers, answer = call(api, url_event("GET", "/v2/email/account", signed("GET", "/v2/email/account", key_id, secret)))
    assert status == 200, (status, headers, answer)
    assert answer["SendingEnabled"] is True and "SendQuota" in answer, answer

    # A query string is signed as sent too (ListSuppressedDestinations with Reason).
    query = "Reason=BOUNCE&PageSize=10"
    status, _, answer = call(api, url_event("GET", "/v2/email/suppression/addresses",
                                            signed("GET", "/v2/email/suppression/addresses", key_id, secret, query=query),
                                            query=query))
    assert status == 200 and answer["SuppressedDestinationSummaries"] == [], (status, answer)

    # A percent-encoded path (the SDKs encode @ in a path as %40) verifies as the client
    # signed it: the function URL's rawPath reaches the router unchanged.
    put = json.dumps({"EmailAddress": "gone@example.org", "Reason": "BOUNCE"}).encode()
    suppressed = "/v2/email/suppression/addresses"
    status, _, answer = call(api, url_event("PUT", suppressed, signed("PUT", suppressed, key_id, secret, put), put))
    assert status == 200, (status, answer)
    one = suppressed + "/gone%40example.org"
    status, _, answer = call(api, url_event("GET", one, signed("GET", one, key_id, secret)))
    assert status == 200, (status, answer)
    assert answer["SuppressedDestination"]["EmailAddress"] == "gone@example.org", answer

    # SendEmail: a MessageId, the body in the bucket and the envelope in the intake queue,
    # with the function URL's source address as the client's.
    status, headers, answer = call(api, url_event("POST", path, signed("POST", path, key_id, secret, body), body))
    assert status == 200, (status, headers, answer)
    message_id = answer["MessageId"]
    [queued] = receive(name, "intake")
    assert queued["MessageAttributes"]["queue_id"]["StringValue"] == message_id, queued
    assert queued["MessageAttributes"]["tenant"]["StringValue"] == "acme", queued
    envelope = json.loads(queued["Body"])
    assert envelope["client_ip"] == SOURCE_IP, envelope
    assert envelope["auth_user"] == key_id, envelope
    stored = client("s3").get_object(Bucket=name, Key=f"messages/{message_id}")["Body"].read()
    assert b"Subject: hello from lambda" in stored, stored[:500]
