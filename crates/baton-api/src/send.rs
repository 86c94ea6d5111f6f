//! `SendEmail` (POST /v2/email/outbound-emails): Simple content, or a rendered Template,
//! built into MIME with mail-builder (with attachments), or Raw content as given. Everything
//! is checked before anything is stored: addresses, header names and values (no CR, LF or
//! NUL), tags, attachments, sizes, and (by the caller) that the sender's domains are the
//! key's tenant's. The message then enters the same store and intake queue as
//! SMTP mail, so policy, signing, delivery, bounces and events are the same.

use std::borrow::Cow;

use baton_domain::{Domain, Mailbox};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text as TextHeader;
use serde::Deserialize;

use crate::attachments::{self, Attachment};
use crate::error::ApiError;
use crate::render::{Rendered, TemplateContent, has_bare_cr};

/// SES's limits: 40 MB of raw message, 50 recipients.
pub const MAX_RAW: usize = 40 * 1024 * 1024;
pub const MAX_RECIPIENTS: usize = 50;
/// SES: a custom header's value is at most 870 characters, so with a name (at most 76 here)
/// its line stays within RFC 5322's 998 octets.
pub const MAX_HEADER_VALUE: usize = 870;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SendEmailRequest {
    pub from_email_address: Option<String>,
    pub from_email_address_identity_arn: Option<String>,
    pub destination: Option<Destination>,
    #[serde(default)]
    pub reply_to_addresses: Vec<String>,
    pub feedback_forwarding_email_address: Option<String>,
    pub feedback_forwarding_email_address_identity_arn: Option<String>,
    pub content: Content,
    #[serde(default)]
    pub email_tags: Vec<MessageTag>,
    pub configuration_set_name: Option<String>,
    pub endpoint_id: Option<String>,
    pub list_management_options: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Destination {
    #[serde(default)]
    pub to_addresses: Vec<String>,
    #[serde(default)]
    pub cc_addresses: Vec<String>,
    #[serde(default)]
    pub bcc_addresses: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Content {
    pub simple: Option<Simple>,
    pub raw: Option<RawContent>,
    pub template: Option<TemplateRef>,
}

/// Content.Template: a stored template (by name or ARN) or one given inline, its data, and
/// headers and attachments added to the rendered message.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TemplateRef {
    pub template_name: Option<String>,
    pub template_arn: Option<String>,
    pub template_content: Option<TemplateContent>,
    pub template_data: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderField>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// An SES message tag. Tags are checked as SES checks them, but not yet carried into the
/// events Baton publishes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MessageTag {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Simple {
    pub subject: Text,
    pub body: Body,
    #[serde(default)]
    pub headers: Vec<HeaderField>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Text {
    pub data: String,
    pub charset: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Body {
    pub text: Option<Text>,
    pub html: Option<Text>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HeaderField {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RawContent {
    /// Base64, as the SDKs send a blob.
    pub data: String,
}

/// A message ready to store: sender, recipients and the bytes.
#[derive(Debug)]
pub struct Prepared {
    pub sender: Mailbox,
    pub recipients: Vec<Mailbox>,
    /// The From header's domains (Raw content): the tenant must own them too.
    pub author_domains: Vec<Domain>,
    pub message: Vec<u8>,
}

fn no_controls(what: &str, value: &str) -> Result<(), ApiError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(ApiError::bad_request(format!(
            "{what} must not contain CR, LF or NUL"
        )));
    }
    Ok(())
}

/// `a@b.example` or `Name <a@b.example>`: the display name and the address.
fn address(what: &str, value: &str) -> Result<(Option<String>, Mailbox), ApiError> {
    no_controls(what, value)?;
    let (name, addr) = match value.rsplit_once('<') {
        Some((name, rest)) => {
            let addr = rest
                .strip_suffix('>')
                .ok_or_else(|| ApiError::bad_request(format!("{what}: unbalanced <>")))?;
            let name = name.trim().trim_matches('"').trim();
            ((!name.is_empty()).then(|| name.to_string()), addr)
        }
        None => (None, value.trim()),
    };
    let mailbox =
        Mailbox::parse(addr).map_err(|e| ApiError::bad_request(format!("{what} {addr:?}: {e}")))?;
    Ok((name, mailbox))
}

/// An address as SES takes it (`a@b.example` or `Name <a@b.example>`), without its name.
pub fn parse_address(what: &str, value: &str) -> Result<Mailbox, ApiError> {
    Ok(address(what, value)?.1)
}

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!("{what} is not supported yet"))
}

/// Who a message is from and where its feedback goes: SendEmail's and SendBulkEmail's
/// fields that are the same for every message of a request.
pub struct Addressing<'a> {
    pub from: Option<&'a str>,
    pub reply_to: &'a [String],
    /// FeedbackForwardingEmailAddress: becomes the envelope sender (bounces go there), so
    /// its domain must be the tenant's too (the caller checks `Prepared::author_domains` and
    /// the sender's domain).
    pub feedback: Option<&'a str>,
    /// The relay's hostname: the right side of the Message-ID.
    pub hostname: &'a str,
}

/// What goes into the MIME message besides the addresses.
pub struct Parts<'a> {
    pub subject: &'a str,
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
    pub headers: &'a [HeaderField],
    pub attachments: &'a [Attachment],
}

impl<'a> Parts<'a> {
    pub fn rendered(
        rendered: &'a Rendered,
        headers: &'a [HeaderField],
        attachments: &'a [Attachment],
    ) -> Self {
        Parts {
            subject: &rendered.subject,
            text: rendered.text.as_deref(),
            html: rendered.html.as_deref(),
            headers,
            attachments,
        }
    }
}

/// SES's rules for tags: at most 50; names and values of ASCII letters, digits, `_`, `-`
/// and `.`, at most 256 characters (names not empty).
pub fn check_tags(what: &str, tags: &[MessageTag]) -> Result<(), ApiError> {
    if tags.len() > 50 {
        return Err(ApiError::bad_request(format!("{what}: at most 50 tags")));
    }
    let ok = |s: &str| {
        s.len() <= 256
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    };
    for t in tags {
        if t.name.is_empty() || !ok(&t.name) || !ok(&t.value) {
            return Err(ApiError::bad_request(format!(
                "{what}: tag names and values are ASCII letters, digits, '_', '-' or '.', \
                 at most 256 characters"
            )));
        }
    }
    Ok(())
}

/// Baton has no configuration sets: a ConfigurationSetName is accepted and noted (once per
/// request, at debug), nothing more.
pub fn note_configuration_set(name: Option<&str>) {
    if let Some(name) = name {
        tracing::debug!(configuration_set = %name.escape_debug(), "ConfigurationSetName ignored");
    }
}

/// Checks `request` and builds the message; nothing is stored here. Template content is
/// rendered by the caller (it needs the ledger) and given as `rendered`.
pub fn prepare(
    request: &SendEmailRequest,
    rendered: Option<&Rendered>,
    hostname: &str,
) -> Result<Prepared, ApiError> {
    if request.from_email_address_identity_arn.is_some()
        || request
            .feedback_forwarding_email_address_identity_arn
            .is_some()
        || request.endpoint_id.is_some()
        || request.list_management_options.is_some()
    {
        return Err(unsupported(
            "this SendEmail option (identity ARNs, endpoints, list management)",
        ));
    }
    check_tags("EmailTags", &request.email_tags)?;
    note_configuration_set(request.configuration_set_name.as_deref());
    let addressing = Addressing {
        from: request.from_email_address.as_deref(),
        reply_to: &request.reply_to_addresses,
        feedback: request.feedback_forwarding_email_address.as_deref(),
        hostname,
    };
    let destination = request.destination.as_ref();
    let content = &request.content;
    match (&content.simple, &content.raw, &content.template, rendered) {
        (Some(simple), None, None, _) => {
            let parts = Parts {
                subject: &simple.subject.data,
                text: simple.body.text.as_ref().map(|t| t.data.as_str()),
                html: simple.body.html.as_ref().map(|t| t.data.as_str()),
                headers: &simple.headers,
                attachments: &simple.attachments,
            };
            compose(&addressing, destination, &parts)
        }
        (None, None, Some(template), Some(rendered)) => {
            let parts = Parts::rendered(rendered, &template.headers, &template.attachments);
            compose(&addressing, destination, &parts)
        }
        (None, Some(raw), None, _) => {
            let rcpts = recipients(destination)?.0;
            prepare_raw(&addressing, raw, rcpts)
        }
        _ => Err(ApiError::bad_request(
            "Content needs exactly one of Simple, Raw or Template",
        )),
    }
}

type Named = Vec<(Option<String>, String)>;

/// Every recipient (To, Cc and Bcc), and the To and Cc lists for the headers.
fn recipients(destination: Option<&Destination>) -> Result<(Vec<Mailbox>, Named, Named), ApiError> {
    let mut rcpts = Vec::new();
    let mut to = Vec::new();
    let mut cc = Vec::new();
    if let Some(d) = destination {
        for (list, kind) in [
            (&d.to_addresses, "ToAddresses"),
            (&d.cc_addresses, "CcAddresses"),
            (&d.bcc_addresses, "BccAddresses"),
        ] {
            for value in list {
                let (name, mailbox) = address(&format!("Destination.{kind}"), value)?;
                match kind {
                    "ToAddresses" => to.push((name, mailbox.to_string())),
                    "CcAddresses" => cc.push((name, mailbox.to_string())),
                    _ => {}
                }
                rcpts.push(mailbox);
            }
        }
    }
    if rcpts.len() > MAX_RECIPIENTS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_RECIPIENTS} recipients per message"
        )));
    }
    Ok((rcpts, to, cc))
}

/// The envelope sender: the feedback address when there is one, else the From address.
fn envelope_sender(addressing: &Addressing, from: &Mailbox) -> Result<Mailbox, ApiError> {
    match addressing.feedback {
        Some(f) => Ok(address("FeedbackForwardingEmailAddress", f)?.1),
        None => Ok(from.clone()),
    }
}

/// One message from its addressing, destination and parts (SendEmail's Simple and Template
/// content, each entry of SendBulkEmail).
pub fn compose(
    addressing: &Addressing,
    destination: Option<&Destination>,
    parts: &Parts,
) -> Result<Prepared, ApiError> {
    let (rcpts, to, cc) = recipients(destination)?;
    if rcpts.is_empty() {
        return Err(ApiError::bad_request(
            "Destination needs at least one address",
        ));
    }
    let from = addressing
        .from
        .ok_or_else(|| ApiError::bad_request("FromEmailAddress is required"))?;
    let (from_name, from) = address("FromEmailAddress", from)?;
    let mut reply_to = Vec::new();
    for value in addressing.reply_to {
        let (name, mailbox) = address("ReplyToAddresses", value)?;
        reply_to.push((name, mailbox.to_string()));
    }
    let addresses = Addresses {
        from: Some((from_name, &from)),
        to: &to,
        cc: &cc,
        reply_to: &reply_to,
    };
    let message = build(parts, &addresses, addressing.hostname)?;
    Ok(Prepared {
        author_domains: vec![sender_domain(&from)?],
        sender: envelope_sender(addressing, &from)?,
        recipients: rcpts,
        message,
    })
}

/// TestRenderEmailTemplate's answer: the rendered template as a whole MIME message, without
/// addresses (there are none yet).
pub fn preview(rendered: &Rendered, hostname: &str) -> Result<String, ApiError> {
    let parts = Parts::rendered(rendered, &[], &[]);
    let addresses = Addresses {
        from: None,
        to: &[],
        cc: &[],
        reply_to: &[],
    };
    let bytes = build(&parts, &addresses, hostname)?;
    // Written by mail-builder from UTF-8 text: 7-bit or encoded, never invalid.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Text and HTML bodies may end lines with LF or CRLF (mail-builder writes CRLF), but a bare
/// CR would survive it, and a next hop may end a line there.
fn check_bodies(parts: &Parts) -> Result<(), ApiError> {
    for (what, body) in [
        ("Body.Text.Data", parts.text),
        ("Body.Html.Data", parts.html),
    ] {
        if body.is_some_and(|b| has_bare_cr(b.as_bytes())) {
            return Err(ApiError::bad_request(format!(
                "{what} must not contain a CR that does not end a line"
            )));
        }
    }
    Ok(())
}

/// A Raw message as stored: every line ends in CRLF. LF alone is taken as a line end (SDK
/// users write messages with "\n", and SES takes them); a CR alone is refused.
fn normalise_raw(message: &[u8]) -> Result<Vec<u8>, ApiError> {
    if has_bare_cr(message) {
        return Err(ApiError::bad_request(
            "Raw.Data must not contain a CR that does not end a line",
        ));
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 2);
    for (i, b) in message.iter().enumerate() {
        if *b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*b);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

/// The address fields of a message being built (none for a preview).
struct Addresses<'a> {
    from: Option<(Option<String>, &'a Mailbox)>,
    to: &'a [(Option<String>, String)],
    cc: &'a [(Option<String>, String)],
    reply_to: &'a [(Option<String>, String)],
}

/// `<random@hostname>`: the relay's name, not the machine's (mail-builder's default).
fn message_id(hostname: &str) -> Result<String, ApiError> {
    let mut random = [0u8; 16];
    baton_store::random_bytes(&mut random)
        .map_err(|_| ApiError::unavailable("no randomness for a Message-ID; retry"))?;
    Ok(format!("{}@{hostname}", baton_pipeline::hex(&random)))
}

fn build(parts: &Parts, addresses: &Addresses, hostname: &str) -> Result<Vec<u8>, ApiError> {
    let Addresses {
        from,
        to,
        cc,
        reply_to,
    } = addresses;
    no_controls("Subject", parts.subject)?;
    check_bodies(parts)?;
    let list = |items: &[(Option<String>, String)]| -> Address<'static> {
        Address::new_list(
            items
                .iter()
                .map(|(n, a)| Address::new_address(n.clone(), a.clone()))
                .collect(),
        )
    };
    let mut builder = MessageBuilder::new()
        .message_id(MessageId::new(message_id(hostname)?))
        .subject(parts.subject.to_string());
    if let Some((name, from)) = from {
        builder = builder.from(Address::new_address(name.clone(), from.to_string()));
    }
    if !to.is_empty() {
        builder = builder.to(list(to));
    }
    if !cc.is_empty() {
        builder = builder.cc(list(cc));
    }
    if !reply_to.is_empty() {
        builder = builder.reply_to(list(reply_to));
    }
    for h in parts.headers {
        check_header(h)?;
        let name = Cow::Owned(h.name.clone());
        // 8-bit values are RFC 2047-encoded; ASCII ones are written as given.
        builder = if h.value.is_ascii() {
            builder.header(name, Raw::new(h.value.clone()))
        } else {
            builder.header(name, TextHeader::new(h.value.clone()))
        };
    }
    builder = builder.body(attachments::body(
        parts.text,
        parts.html,
        parts.attachments,
    )?);
    let message = builder
        .write_to_vec()
        .map_err(|e| ApiError::bad_request(format!("cannot build the message: {e}")))?;
    if message.len() > MAX_RAW {
        return Err(ApiError::bad_request("the message is larger than 40 MB"));
    }
    Ok(message)
}

/// A custom header: a field name that is not one SES sets from its own fields, a value on
/// one line.
fn check_header(h: &HeaderField) -> Result<(), ApiError> {
    let reserved = [
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "reply-to",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "dkim-signature",
        "domainkey-signature",
        "received",
        "return-path",
        // Who sent it and what was checked: set by the relay and the hops after it, never
        // by a tenant (they would claim another's identity or results).
        "sender",
        "authentication-results",
    ];
    // Resent-From, Resent-Sender, ...; ARC-Seal, ARC-Message-Signature, ...
    let reserved_prefixes = ["resent-", "arc-"];
    let ok_name = !h.name.is_empty()
        && h.name.len() <= 76
        && h.name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !ok_name {
        return Err(ApiError::bad_request(format!(
            "header name {:?} is not a field name",
            h.name
        )));
    }
    let lower = h.name.to_ascii_lowercase();
    if reserved.contains(&lower.as_str()) || reserved_prefixes.iter().any(|p| lower.starts_with(p))
    {
        return Err(ApiError::bad_request(format!(
            "header {} is set by SES fields, not Headers",
            h.name
        )));
    }
    if h.value.chars().count() > MAX_HEADER_VALUE {
        return Err(ApiError::bad_request(format!(
            "header {}: the value is longer than {MAX_HEADER_VALUE} characters",
            h.name
        )));
    }
    no_controls(&format!("header {}", h.name), &h.value)
}

fn prepare_raw(
    addressing: &Addressing,
    raw: &RawContent,
    rcpts: Vec<Mailbox>,
) -> Result<Prepared, ApiError> {
    use base64::Engine;
    if raw.data.len() > MAX_RAW / 3 * 4 + 4 {
        return Err(ApiError::bad_request("Raw.Data is larger than 40 MB"));
    }
    let message = base64::engine::general_purpose::STANDARD
        .decode(raw.data.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("Raw.Data is not base64: {e}")))?;
    if message.len() > MAX_RAW {
        return Err(ApiError::bad_request("Raw.Data is larger than 40 MB"));
    }
    if message.contains(&0) {
        return Err(ApiError::bad_request("Raw.Data must not contain NUL"));
    }
    let message = normalise_raw(&message)?;
    if message.len() > MAX_RAW {
        return Err(ApiError::bad_request("Raw.Data is larger than 40 MB"));
    }
    let facts = baton_domain::HeaderFacts::parse(&message);
    facts.author_check().map_err(|e| {
        ApiError::bad_request(format!(
            "Raw message: {e} (exactly one From field with valid addresses)"
        ))
    })?;
    let from = addressing
        .from
        .ok_or_else(|| ApiError::bad_request("FromEmailAddress is required with Raw content"))?;
    let from = address("FromEmailAddress", from)?.1;
    if rcpts.is_empty() {
        return Err(ApiError::bad_request(
            "Destination is required with Raw content",
        ));
    }
    Ok(Prepared {
        sender: envelope_sender(addressing, &from)?,
        recipients: rcpts,
        author_domains: facts
            .from_domains
            .into_iter()
            .flatten()
            .chain([sender_domain(&from)?])
            .collect(),
        message,
    })
}

/// The sender's domain, for the ownership check.
pub fn sender_domain(sender: &Mailbox) -> Result<Domain, ApiError> {
    Domain::parse(&sender.domain().to_string())
        .map_err(|e| ApiError::bad_request(format!("sender domain: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SMUGGLED: &str = "hello\r.\rMAIL FROM:<ceo@other.test>\r\nRCPT TO:<v@example.org>\r\n";

    fn request(content: serde_json::Value) -> SendEmailRequest {
        serde_json::from_value(serde_json::json!({
            "FromEmailAddress": "news@acme.test",
            "Destination": {"ToAddresses": ["bob@example.org"]},
            "Content": content,
        }))
        .expect("a request")
    }

    fn simple(text: &str, html: &str) -> SendEmailRequest {
        request(serde_json::json!({"Simple": {
            "Subject": {"Data": "s"},
            "Body": {"Text": {"Data": text}, "Html": {"Data": html}},
        }}))
    }

    fn raw(message: &[u8]) -> SendEmailRequest {
        let data = base64::engine::general_purpose::STANDARD.encode(message);
        request(serde_json::json!({"Raw": {"Data": data}}))
    }

    /// Every line of `m` ends in CRLF, and CR appears only there.
    fn crlf_only(m: &[u8]) -> bool {
        m.ends_with(b"\r\n")
            && m.iter().enumerate().all(|(i, b)| match b {
                b'\r' => m.get(i + 1) == Some(&b'\n'),
                b'\n' => i > 0 && m[i - 1] == b'\r',
                _ => true,
            })
    }

    #[test]
    fn bare_cr_is_refused_in_raw_and_simple_content_naming_the_field() {
        let e = prepare_at(
            &raw(format!("From: a@acme.test\r\n\r\n{SMUGGLED}").as_bytes()),
            None,
        )
        .expect_err("refused");
        assert_eq!(e.kind, "BadRequestException");
        assert!(e.message.contains("Raw.Data"), "{e}");
        for (text, html, field) in [(SMUGGLED, "h", "Body.Text"), ("t", SMUGGLED, "Body.Html")] {
            let e = prepare_at(&simple(text, html), None).expect_err("refused");
            assert_eq!(e.kind, "BadRequestException");
            assert!(e.message.contains(field), "{e}");
        }
        // Rendered template parts go through the same builder.
        let rendered = Rendered {
            subject: "s".into(),
            text: Some(SMUGGLED.into()),
            html: None,
        };
        assert!(preview(&rendered, "relay.test").is_err());
    }

    fn prepare_at(r: &SendEmailRequest, rendered: Option<&Rendered>) -> Result<Prepared, ApiError> {
        prepare(r, rendered, "relay.example")
    }

    #[test]
    fn header_values_are_encoded_when_8bit_capped_in_length_and_message_ids_name_the_relay() {
        let mut r = simple("t", "h");
        let headers = serde_json::json!([
            {"Name": "X-Greeting", "Value": "Grüße aus Köln"},
            {"Name": "X-Plain", "Value": "ascii as is"},
        ]);
        let with = |r: &mut SendEmailRequest, h: serde_json::Value| {
            if let Some(simple) = r.content.simple.as_mut() {
                simple.headers = serde_json::from_value(h).expect("headers");
            }
        };
        with(&mut r, headers);
        let p = prepare_at(&r, None).expect("accepted");
        assert!(
            p.message.is_ascii(),
            "{}",
            String::from_utf8_lossy(&p.message)
        );
        let text = String::from_utf8_lossy(&p.message).into_owned();
        assert!(text.contains("X-Greeting: =?utf-8?"), "{text}");
        assert!(text.contains("X-Plain: ascii as is\r\n"), "{text}");
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .expect("a Message-ID");
        assert!(id.ends_with("@relay.example>") && id.len() > 32, "{id}");
        assert!(text.lines().all(|l| l.len() <= 998));
        // SES's limit: 870 characters; a longer value (one that would make a line over 998
        // octets) is refused naming the header.
        with(
            &mut r,
            serde_json::json!([{"Name": "X-Long", "Value": "a".repeat(MAX_HEADER_VALUE)}]),
        );
        let p = prepare_at(&r, None).expect("at the limit");
        assert!(
            String::from_utf8_lossy(&p.message)
                .lines()
                .all(|l| l.len() <= 998)
        );
        with(
            &mut r,
            serde_json::json!([{"Name": "X-Long", "Value": "a".repeat(MAX_HEADER_VALUE + 1)}]),
        );
        let e = prepare_at(&r, None).expect_err("too long");
        assert!(
            e.kind == "BadRequestException" && e.message.contains("X-Long"),
            "{e}"
        );
    }

    #[test]
    fn headers_that_claim_an_identity_or_results_are_refused_naming_them() {
        for name in [
            "Sender",
            "resent-from",
            "Resent-Sender",
            "Authentication-Results",
            "ARC-Seal",
            "arc-authentication-results",
            "DKIM-Signature",
            "Received",
        ] {
            let h = HeaderField {
                name: name.into(),
                value: "v".into(),
            };
            let e = check_header(&h).expect_err(name);
            assert_eq!(e.kind, "BadRequestException");
            assert!(e.message.contains(name), "{e}");
        }
        let ok = HeaderField {
            name: "X-Resent".into(),
            value: "v".into(),
        };
        assert!(check_header(&ok).is_ok());
    }

    #[test]
    fn raw_lf_line_ends_become_crlf_and_every_stored_line_ends_in_crlf() {
        let p = prepare_at(
            &raw(b"From: a@acme.test\nSubject: x\n\nline one\r\nline two"),
            None,
        )
        .expect("accepted");
        assert_eq!(
            p.message,
            b"From: a@acme.test\r\nSubject: x\r\n\r\nline one\r\nline two\r\n"
        );
        // Simple text with LF is fine: mail-builder writes CRLF.
        let p = prepare_at(&simple("a\nb\r\nc", "<p>\n</p>"), None).expect("accepted");
        assert!(
            crlf_only(&p.message),
            "{}",
            String::from_utf8_lossy(&p.message)
        );
    }
}
