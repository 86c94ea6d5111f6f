"""SES v2 templates, templated and bulk sending, and Simple content's attachments and
Reply-To, driven by boto3's own `sesv2` client against `baton serve`: templates are the
tenant's own (another tenant's key finds none of them), rendering escapes HTML where SES
templates would be read as HTML and refuses what would break a header, and what is sent
arrives DKIM-signed at the test MX in the MIME structure asked for."""

import email
import json
from email.utils import parseaddr

from test_pipeline import dkim_verify, net, wait_show  # noqa: F401  (net is a fixture)
from test_ses_api import api_relay, error_code, new_key, sesv2  # noqa: F401  (api_relay is a fixture)

WELCOME = {
    "Subject": "Welcome, {{name}}!",
    "Text": "Dear {{name}}, your plan: {{plan.tier}}.{{#if vip}} VIP{{/if}}",
    "Html": "<p>Dear {{name}}</p><div>{{{banner}}}</div>"
            "<ul>{{#each items}}<li>{{this}}</li>{{/each}}</ul>",
}


def templated(template, data, to="bob@example.org", sender="news@acme.test", **extra):
    return dict(
        FromEmailAddress=sender,
        Destination={"ToAddresses": [to]},
        Content={"Template": {**template, "TemplateData": json.dumps(data)}},
        **extra,
    )


def parts_of(msg):
    parsed = email.message_from_bytes(msg)
    # A single-part body runs to the end of the dump, which ends with a line break.
    return parsed, {p.get_content_type(): p.get_payload(decode=True).decode().rstrip("\r\n")
                    for p in parsed.walk() if not p.is_multipart()}


def test_template_operations_create_get_update_list_render_delete(api_relay):
    ses = sesv2(api_relay, *new_key(api_relay))
    ses.create_email_template(TemplateName="welcome", TemplateContent=WELCOME)
    got = ses.get_email_template(TemplateName="welcome")
    assert got["TemplateName"] == "welcome" and got["TemplateContent"] == WELCOME, got
    assert error_code(lambda: ses.create_email_template(TemplateName="welcome", TemplateContent=WELCOME)) \
        == "AlreadyExistsException"
    assert error_code(lambda: ses.create_email_template(TemplateName="bad/name", TemplateContent=WELCOME)) \
        == "BadRequestException"
    assert error_code(lambda: ses.create_email_template(
        TemplateName="broken", TemplateContent={"Subject": "s", "Text": "{{#if x}}unclosed"})) == "BadRequestException"
    assert error_code(lambda: ses.create_email_template(
        TemplateName="huge", TemplateContent={"Subject": "s", "Html": "x" * (500 * 1024 + 1)})) == "BadRequestException"

    rendered = ses.test_render_email_template(
        TemplateName="welcome",
        TemplateData=json.dumps({"name": "<Ann & Bo>", "banner": "<b>sale</b>", "plan": {"tier": "gold"},
                                 "vip": True, "items": ["a", "b"]}))["RenderedTemplate"]
    parsed, parts = parts_of(rendered.encode())
    assert parsed["Subject"] == "Welcome, <Ann & Bo>!", parsed["Subject"]
    assert parts["text/plain"] == "Dear <Ann & Bo>, your plan: gold. VIP", parts
    assert parts["text/html"] == ("<p>Dear &lt;Ann &amp; Bo&gt;</p><div><b>sale</b></div>"
                                  "<ul><li>a</li><li>b</li></ul>"), parts
    # Missing variables render as nothing; data that is not an object is refused.
    empty = ses.test_render_email_template(TemplateName="welcome", TemplateData="{}")["RenderedTemplate"]
    assert email.message_from_string(empty)["Subject"] == "Welcome, !"
    assert error_code(lambda: ses.test_render_email_template(TemplateName="welcome", TemplateData="[1]")) \
        == "BadRequestException"
    assert error_code(lambda: ses.test_render_email_template(
        TemplateName="welcome", TemplateData=json.dumps({"name": "x\r\nBcc: evil@evil.test"}))) == "BadRequestException"

    ses.update_email_template(TemplateName="welcome", TemplateContent={"Subject": "Hi {{name}}", "Text": "t"})
    assert ses.get_email_template(TemplateName="welcome")["TemplateContent"] == {"Subject": "Hi {{name}}", "Text": "t"}
    for i in range(4):
        ses.create_email_template(TemplateName=f"t{i}", TemplateContent={"Subject": "s", "Text": "t"})
    names, token, pages = [], None, 0
    while True:
        page = ses.list_email_templates(PageSize=2, **({"NextToken": token} if token else {}))
        assert len(page["TemplatesMetadata"]) <= 2, page
        names += [t["TemplateName"] for t in page["TemplatesMetadata"]]
        assert all(t["CreatedTimestamp"].year >= 2024 for t in page["TemplatesMetadata"]), page
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert names == ["t0", "t1", "t2", "t3", "welcome"] and pages == 3, (names, pages)

    ses.delete_email_template(TemplateName="welcome")
    assert error_code(lambda: ses.get_email_template(TemplateName="welcome")) == "NotFoundException"
    assert error_code(lambda: ses.delete_email_template(TemplateName="welcome")) == "NotFoundException"
    assert error_code(lambda: ses.update_email_template(
        TemplateName="welcome", TemplateContent=WELCOME)) == "NotFoundException"
    assert "welcome" not in [t["TemplateName"] for t in ses.list_email_templates()["TemplatesMetadata"]]


def test_another_tenants_templates_are_absent_to_every_operation(api_relay, net):  # noqa: F811
    _, _, sinks = net
    acme = sesv2(api_relay, *new_key(api_relay, "acme"))
    other = sesv2(api_relay, *new_key(api_relay, "other"))
    acme.create_email_template(TemplateName="secret", TemplateContent=WELCOME)
    assert other.list_email_templates()["TemplatesMetadata"] == []
    for call in (
        lambda: other.get_email_template(TemplateName="secret"),
        lambda: other.update_email_template(TemplateName="secret", TemplateContent={"Subject": "mine"}),
        lambda: other.delete_email_template(TemplateName="secret"),
        lambda: other.test_render_email_template(TemplateName="secret", TemplateData="{}"),
        lambda: other.send_email(**templated({"TemplateName": "secret"}, {}, sender="news@other.test")),
        lambda: other.send_email(**templated(
            {"TemplateArn": "arn:aws:ses:us-east-1:123456789012:template/secret"}, {}, sender="news@other.test")),
        lambda: other.send_bulk_email(
            FromEmailAddress="news@other.test",
            DefaultContent={"Template": {"TemplateName": "secret", "TemplateData": "{}"}},
            BulkEmailEntries=[{"Destination": {"ToAddresses": ["bob@example.org"]}}]),
    ):
        assert error_code(call) == "NotFoundException"
    # Untouched for its owner.
    assert acme.get_email_template(TemplateName="secret")["TemplateContent"] == WELCOME
    assert sinks["good"].messages() == []


def test_send_email_with_a_template_arrives_signed_and_rendered(api_relay, net):  # noqa: F811
    dns, _, sinks = net
    ses = sesv2(api_relay, *new_key(api_relay))
    ses.create_email_template(TemplateName="welcome", TemplateContent=WELCOME)
    # A CR/LF that would land in the subject: refused, nothing queued.
    assert error_code(lambda: ses.send_email(**templated(
        {"TemplateName": "welcome"}, {"name": "x\r\nBcc: evil@evil.test"}))) == "MessageRejected"
    assert error_code(lambda: ses.send_email(**templated({"TemplateName": "welcome"}, {"name": "x\u0000"}))) \
        == "MessageRejected"
    data = {"name": "<script>x</script>", "banner": "<i>hi</i>", "plan": {"tier": "gold"}, "items": ["one"]}
    queue_id = ses.send_email(**templated(
        {"TemplateArn": "arn:aws:ses:us-east-1:123456789012:template/welcome",
         "Headers": [{"Name": "X-Campaign", "Value": "spring"}]}, data))["MessageId"]
    [msg] = sinks["good"].wait_messages(1)
    results, sigs = dkim_verify(msg, dns)
    assert len(sigs) == 2 and results == [True, True], results
    assert queue_id.encode() in msg, "the arriving message is the one answered for"
    parsed, parts = parts_of(msg)
    assert parsed["Subject"] == "Welcome, <script>x</script>!" and parsed["X-Campaign"] == "spring", parsed.items()
    assert parsed.get_content_type() == "multipart/alternative", parsed.get_content_type()
    assert parts["text/plain"] == "Dear <script>x</script>, your plan: gold.", parts
    assert parts["text/html"] == ("<p>Dear &lt;script&gt;x&lt;/script&gt;</p><div><i>hi</i></div>"
                                  "<ul><li>one</li></ul>"), parts
    assert "delivered" in wait_show(api_relay, queue_id, "delivered")
    # An inline template works the same, without storing anything.
    ses.send_email(**templated({"TemplateContent": {"Subject": "Inline {{n}}", "Text": "{{n}}"}}, {"n": "7"}))
    msgs = sinks["good"].wait_messages(2)
    assert any(email.message_from_bytes(m)["Subject"] == "Inline 7" for m in msgs)
    wait_show(api_relay, queue_id, "delivered")
    # The refused sends queued nothing: only the two accepted messages ever arrive.
    assert len(sinks["good"].messages()) == 2
    assert not any(b"evil@evil.test" in m for m in sinks["good"].messages())


def test_send_bulk_email_sends_one_message_per_entry_with_its_own_data_and_id(api_relay, net):  # noqa: F811
    dns, _, sinks = net
    ses = sesv2(api_relay, *new_key(api_relay))
    ses.create_email_template(TemplateName="promo", TemplateContent={
        "Subject": "{{greeting}}, {{name}}", "Text": "Code {{code}} for {{name}}"})
    out = ses.send_bulk_email(
        FromEmailAddress="news@acme.test",
        DefaultContent={"Template": {
            "TemplateName": "promo",
            "TemplateData": json.dumps({"greeting": "Hello", "name": "friend", "code": "BASE"}),
            "Headers": [{"Name": "X-Batch", "Value": "b1"}]}},
        DefaultEmailTags=[{"Name": "campaign", "Value": "spring-2026"}],
        BulkEmailEntries=[
            {"Destination": {"ToAddresses": [f"r{i}@example.org"]},
             "ReplacementEmailContent": {"ReplacementTemplate": {
                 "ReplacementTemplateData": json.dumps({"name": f"N{i}", "code": f"C{i}"})}},
             "ReplacementHeaders": [{"Name": "X-Entry", "Value": str(i)}],
             "ReplacementTags": [{"Name": "entry", "Value": str(i)}]}
            for i in range(3)
        ] + [
            # Fails alone: the others still go.
            {"Destination": {"ToAddresses": ["not an address"]}},
            {"Destination": {"ToAddresses": ["r9@example.org"]},
             "ReplacementEmailContent": {"ReplacementTemplate": {
                 "ReplacementTemplateData": json.dumps({"greeting": "x\r\nBcc: evil@evil.test"})}}},
        ],
    )["BulkEmailEntryResults"]
    assert [r["Status"] for r in out] == ["SUCCESS"] * 3 + ["INVALID_PARAMETER", "MESSAGE_REJECTED"], out
    assert all(r.get("Error") for r in out[3:]), out
    ids = [r["MessageId"] for r in out[:3]]
    assert len(set(ids)) == 3, ids
    msgs = sinks["good"].wait_messages(3)
    assert len(msgs) == 3, len(msgs)
    by_rcpt = {parseaddr(email.message_from_bytes(m)["To"])[1]: m for m in msgs}
    assert sorted(by_rcpt) == [f"r{i}@example.org" for i in range(3)], sorted(by_rcpt)
    for i, queue_id in enumerate(ids):
        msg = by_rcpt[f"r{i}@example.org"]
        results, _ = dkim_verify(msg, dns)
        assert results and all(results), results
        parsed, parts = parts_of(msg)
        assert parsed["Subject"] == f"Hello, N{i}", parsed["Subject"]
        assert parts["text/plain"] == f"Code C{i} for N{i}", parts
        assert parsed["X-Batch"] == "b1" and parsed["X-Entry"] == str(i), parsed.items()
        assert queue_id.encode() in msg and all(o.encode() not in msg for o in ids if o != queue_id)
        assert "delivered" in wait_show(api_relay, queue_id, "delivered")
    # The sender is checked once for all: another tenant's domain fails the whole request.
    assert error_code(lambda: ses.send_bulk_email(
        FromEmailAddress="news@other.test",
        DefaultContent={"Template": {"TemplateName": "promo", "TemplateData": "{}"}},
        BulkEmailEntries=[{"Destination": {"ToAddresses": ["r0@example.org"]}}])) == "MessageRejected"
    assert error_code(lambda: ses.send_bulk_email(
        FromEmailAddress="news@acme.test",
        DefaultContent={"Template": {"TemplateName": "promo", "TemplateData": "{}"}},
        BulkEmailEntries=[{"Destination": {"ToAddresses": [f"x{i}@example.org"]}} for i in range(51)])) \
        == "BadRequestException"
    assert len(sinks["good"].messages()) == 3


def test_attachments_reply_to_and_the_rest_of_simple_content(api_relay, net):  # noqa: F811
    dns, _, sinks = net
    ses = sesv2(api_relay, *new_key(api_relay))
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 4
    logo = b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 50

    def message(**extra):
        body = {
            "FromEmailAddress": "news@acme.test",
            "Destination": {"ToAddresses": ["bob@example.org"]},
            "ReplyToAddresses": ["Help Desk <help@acme.test>"],
            "Content": {"Simple": {
                "Subject": {"Data": "your report"},
                "Body": {"Text": {"Data": "see attached"}, "Html": {"Data": '<p>see <img src="cid:logo1"></p>'}},
                "Attachments": [
                    {"RawContent": pdf, "FileName": "report 2026.pdf", "ContentType": "application/pdf",
                     "ContentDescription": "The report"},
                    {"RawContent": logo, "FileName": "logo.png", "ContentType": "image/png",
                     "ContentDisposition": "INLINE", "ContentId": "logo1"},
                ],
            }},
            "EmailTags": [{"Name": "kind", "Value": "report.v1"}],
            "ConfigurationSetName": "no-such-set-in-baton",
        }
        body.update(extra)
        return body

    queue_id = ses.send_email(**message(FeedbackForwardingEmailAddress="bounces@acme.test"))["MessageId"]
    [msg] = sinks["good"].wait_messages(1)
    results, _ = dkim_verify(msg, dns)
    assert results and all(results), results
    parsed = email.message_from_bytes(msg)
    assert parsed["Reply-To"] == '"Help Desk" <help@acme.test>' or parsed["Reply-To"] == "Help Desk <help@acme.test>", \
        parsed["Reply-To"]
    assert parsed.get_content_type() == "multipart/mixed", parsed.get_content_type()
    first, attached = parsed.get_payload()
    assert first.get_content_type() == "multipart/alternative"
    text, related = first.get_payload()
    assert text.get_content_type() == "text/plain" and related.get_content_type() == "multipart/related"
    html, inline = related.get_payload()
    assert html.get_content_type() == "text/html"
    assert inline["Content-ID"] == "<logo1>" and inline.get_content_disposition() == "inline"
    assert inline.get_payload(decode=True) == logo
    assert attached.get_content_type() == "application/pdf" and attached.get_filename() == "report 2026.pdf"
    assert attached.get_content_disposition() == "attachment" and attached["Content-Description"] == "The report"
    assert attached.get_payload(decode=True) == pdf, "the attachment's bytes arrive intact"
    assert "delivered" in wait_show(api_relay, queue_id, "delivered")
    # The feedback address is the envelope sender (bounces go there); From stays.
    assert b"X-Mail-Args: <bounces@acme.test>" in msg, msg[:400]
    assert parseaddr(parsed["From"])[1] == "news@acme.test", parsed["From"]

    # Refused, with nothing queued: a feedback address of another tenant's domain, bad tags,
    # a file name or content type that would break a header, a bad Reply-To.
    assert error_code(lambda: ses.send_email(**message(FeedbackForwardingEmailAddress="b@other.test"))) \
        == "MessageRejected"
    assert error_code(lambda: ses.send_email(**message(EmailTags=[{"Name": "bad tag", "Value": "v"}]))) \
        == "BadRequestException"
    assert error_code(lambda: ses.send_email(**message(EmailTags=[{"Name": f"t{i}", "Value": "v"} for i in range(51)]))) \
        == "BadRequestException"
    for bad in ({"FileName": "a\r\nBcc: x@evil.test"}, {"ContentType": "text/plain\r\nBcc: x@evil.test"},
                {"ContentType": "multipart/mixed"}):
        att = {"RawContent": b"x", "FileName": "a.txt", **bad}
        body = message()
        body["Content"]["Simple"]["Attachments"] = [att]
        assert error_code(lambda: ses.send_email(**body)) == "BadRequestException", bad
    assert error_code(lambda: ses.send_email(**message(ReplyToAddresses=["x@acme.test\r\nBcc: y@evil.test"]))) \
        == "BadRequestException"
    assert len(sinks["good"].messages()) == 1
