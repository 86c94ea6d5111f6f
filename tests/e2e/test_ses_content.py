"""What a tenant sends through the SES v2 API cannot hurt the relay or the next hop:
templates that would take unbounded work are refused quickly, off the runtime that serves
SMTP; bare CRs (which a next hop may take for line ends, and so run a smuggled SMTP
transaction) are refused in every part of a message, and Raw messages written with LF line
ends are stored with CRLF; headers that claim an identity the relay sets are refused."""

import base64
import json
import threading
import time

from conftest import RawClient
from test_pipeline import dkim_verify, net, wait_show  # noqa: F401  (net is a fixture)
from test_ses_api import api_relay, error_code, new_key, sesv2, signed_call, simple  # noqa: F401

SEND = "/v2/email/outbound-emails"
SMUGGLED = "hello\r.\rMAIL FROM:<ceo@other.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"


def queued(relay):
    return json.loads(relay.cli("queue", "list", "--json").stdout)


def test_a_template_that_needs_unbounded_work_is_refused_and_smtp_still_greets_meanwhile(api_relay):
    # No timing assertions: before the work budget these requests did not answer for minutes
    # (the client's own timeouts would fail the test), and now each is refused for its work.
    key_id, secret = new_key(api_relay)
    ses = sesv2(api_relay, key_id, secret)
    # The review's probe as written: too many tags to parse in time, refused when made.
    probe = {"Subject": "s", "Text": "{{#each a}}" + "{{x}}" * 100_000 + "{{/each}}"}
    assert error_code(lambda: ses.create_email_template(TemplateName="probe", TemplateContent=probe)) \
        == "BadRequestException"
    # A twentieth of it parses; rendering it over 200 items is what would take the time.
    ses.create_email_template(TemplateName="heavy", TemplateContent={
        "Subject": "s", "Text": "{{#each a}}" + "{{x}}" * 5_000 + "{{/each}}"})
    data = json.dumps({"a": [0] * 200})
    answers = []

    def render():
        answers.append(signed_call(api_relay, key_id, secret, "POST",
                                   "/v2/email/templates/heavy/render", {"TemplateData": data}))

    threads = [threading.Thread(target=render) for _ in range(3)]
    for t in threads:
        t.start()
    # While they run, the SMTP listener greets.
    client = RawClient(api_relay.addr("relay"))
    client.close()
    for t in threads:
        t.join(timeout=60)
    assert client.greeting.startswith("220"), client.greeting
    assert len(answers) == 3, answers
    for status, kind, message in answers:
        # Refused as a rendering failure, or (over the renders at once) throttled.
        assert (status, kind) in [(400, "BadRequestException"), (429, "TooManyRequestsException")], answers
    assert any(kind == "BadRequestException" and "too much work" in message for _, kind, message in answers)
    # SendEmail with the same template: the SES rendering failure, nothing queued.
    send = {**simple(), "Content": {"Template": {"TemplateName": "heavy", "TemplateData": data}}}
    status, kind, _ = signed_call(api_relay, key_id, secret, "POST", SEND, send)
    assert (status, kind) == (400, "MessageRejected")
    # Partials called many times, without any loop: refused too.
    partial = "{{#*inline \"p\"}}" + "{{x}}" * 2_500 + "{{/inline}}" + "{{> p}}" * 2_500
    inline = {**simple(), "Content": {"Template": {"TemplateContent": {"Subject": "s", "Text": partial},
                                                   "TemplateData": "{}"}}}
    status, kind, message = signed_call(api_relay, key_id, secret, "POST", SEND, inline)
    assert (status, kind) == (400, "MessageRejected") and "too much work" in message, (status, kind, message)
    assert queued(api_relay) == []


def test_bare_cr_is_refused_in_raw_and_simple_content_and_nothing_is_queued(api_relay, net):  # noqa: F811
    _, _, sinks = net
    key_id, secret = new_key(api_relay)
    raw = f"From: news@acme.test\r\nTo: bob@example.org\r\nSubject: x\r\n\r\n{SMUGGLED}".encode()
    bodies = [
        ({**simple(), "Content": {"Raw": {"Data": base64.b64encode(raw).decode()}}}, "Raw.Data"),
        ({**simple(), "Content": {"Simple": {"Subject": {"Data": "s"},
                                             "Body": {"Text": {"Data": SMUGGLED}}}}}, "Body.Text"),
        ({**simple(), "Content": {"Simple": {"Subject": {"Data": "s"},
                                             "Body": {"Html": {"Data": SMUGGLED}}}}}, "Body.Html"),
    ]
    for body, named in bodies:
        status, kind, message = signed_call(api_relay, key_id, secret, "POST", SEND, body)
        assert (status, kind) == (400, "BadRequestException") and named in message, (named, status, kind, message)
    # Rendered into a template: the SES rendering failure.
    templated = {**simple(), "Content": {"Template": {
        "TemplateContent": {"Subject": "s", "Text": "{{{t}}}"}, "TemplateData": json.dumps({"t": SMUGGLED})}}}
    status, kind, _ = signed_call(api_relay, key_id, secret, "POST", SEND, templated)
    assert (status, kind) == (400, "MessageRejected")
    assert queued(api_relay) == []
    assert sinks["good"].messages() == []


def test_a_raw_message_with_lf_line_ends_arrives_with_crlf_and_a_valid_signature(api_relay, net):  # noqa: F811
    dns, _, sinks = net
    ses = sesv2(api_relay, *new_key(api_relay))
    raw = b"From: news@acme.test\nTo: bob@example.org\nSubject: lf only\n\nline one\nline two\n"
    out = ses.send_email(FromEmailAddress="news@acme.test", Destination={"ToAddresses": ["bob@example.org"]},
                         Content={"Raw": {"Data": raw}})
    [msg] = sinks["good"].wait_messages(1)
    results, sigs = dkim_verify(msg, dns)
    assert len(sigs) == 2 and results == [True, True], results
    # The test MX writes lines with LF whatever arrived: the stored message shows the CRLFs.
    assert b"Subject: lf only\n\nline one\nline two\n" in msg, msg
    stored = api_relay.message(out["MessageId"])
    assert b"Subject: lf only\r\n\r\nline one\r\nline two\r\n" in stored, stored
    assert b"\n" not in stored.replace(b"\r\n", b""), "every stored line ends in CRLF"
    assert "delivered" in wait_show(api_relay, out["MessageId"], "delivered")


def test_headers_that_claim_an_identity_are_refused_in_send_and_bulk(api_relay, net):  # noqa: F811
    _, _, sinks = net
    key_id, secret = new_key(api_relay)
    for name in ["Sender", "Resent-From", "Authentication-Results", "ARC-Seal", "DKIM-Signature"]:
        body = simple(headers=[{"Name": name, "Value": "ceo@other.test"}])
        status, kind, message = signed_call(api_relay, key_id, secret, "POST", SEND, body)
        assert (status, kind) == (400, "BadRequestException") and name in message, (name, status, kind, message)
    bulk = {
        "FromEmailAddress": "news@acme.test",
        "DefaultContent": {"Template": {"TemplateContent": {"Subject": "s", "Text": "t"}}},
        "BulkEmailEntries": [{"Destination": {"ToAddresses": ["bob@example.org"]},
                              "ReplacementHeaders": [{"Name": "Sender", "Value": "ceo@other.test"}]}],
    }
    status, _, answer = signed_call(api_relay, key_id, secret, "POST", "/v2/email/outbound-bulk-emails", bulk)
    [result] = json.loads(answer)["BulkEmailEntryResults"]
    assert status == 200 and result["Status"] == "INVALID_PARAMETER" and "Sender" in result["Error"], answer
    assert queued(api_relay) == []
    assert sinks["good"].messages() == []
