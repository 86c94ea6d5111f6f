//! `SendEmail` (POST /v2/email/outbound-emails): Simple content built into MIME with
//! mail-builder, or Raw content as given. Everything is checked before anything is stored:
//! addresses, header names and values (no CR, LF or NUL), sizes, and that the sender's
//! domain is the key's tenant's. The message then enters the same store and intake queue as
//! SMTP mail, so policy, signing, delivery, bounces and events are the same.

use std::borrow::Cow;

use baton_domain::{Domain, Mailbox};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use serde::Deserialize;

use crate::error::ApiError;

/// SES's limits: 40 MB of raw message, 50 recipients.
pub const MAX_RAW: usize = 40 * 1024 * 1024;
pub const MAX_RECIPIENTS: usize = 50;

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
    pub email_tags: Vec<serde_json::Value>,
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
    pub template: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Simple {
    pub subject: Text,
    pub body: Body,
    #[serde(default)]
    pub headers: Vec<HeaderField>,
    #[serde(default)]
    pub attachments: Vec<serde_json::Value>,
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

#[derive(Debug, Deserialize)]
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

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!("{what} is not supported yet"))
}

/// Checks `request` and builds the message; nothing is stored here.
pub fn prepare(request: &SendEmailRequest) -> Result<Prepared, ApiError> {
    if request.from_email_address_identity_arn.is_some()
        || request
            .feedback_forwarding_email_address_identity_arn
            .is_some()
        || request.endpoint_id.is_some()
        || request.list_management_options.is_some()
        || request.content.template.is_some()
    {
        return Err(unsupported(
            "this SendEmail option (identity ARNs, endpoints, list management, templates)",
        ));
    }
    let destination = request.destination.as_ref();
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
    match (&request.content.simple, &request.content.raw) {
        (Some(simple), None) => {
            if rcpts.is_empty() {
                return Err(ApiError::bad_request(
                    "Destination needs at least one address",
                ));
            }
            let from = request
                .from_email_address
                .as_deref()
                .ok_or_else(|| ApiError::bad_request("FromEmailAddress is required"))?;
            let (from_name, sender) = address("FromEmailAddress", from)?;
            let message = build_simple(request, simple, (from_name, &sender), &to, &cc)?;
            Ok(Prepared {
                author_domains: vec![sender_domain(&sender)?],
                sender,
                recipients: rcpts,
                message,
            })
        }
        (None, Some(raw)) => prepare_raw(request, raw, rcpts),
        _ => Err(ApiError::bad_request(
            "Content needs exactly one of Simple or Raw",
        )),
    }
}

fn build_simple(
    request: &SendEmailRequest,
    simple: &Simple,
    (from_name, sender): (Option<String>, &Mailbox),
    to: &[(Option<String>, String)],
    cc: &[(Option<String>, String)],
) -> Result<Vec<u8>, ApiError> {
    if !simple.attachments.is_empty() {
        return Err(unsupported("Content.Simple.Attachments"));
    }
    no_controls("Subject", &simple.subject.data)?;
    let list = |items: &[(Option<String>, String)]| -> Address<'static> {
        Address::new_list(
            items
                .iter()
                .map(|(n, a)| Address::new_address(n.clone(), a.clone()))
                .collect(),
        )
    };
    let mut builder = MessageBuilder::new()
        .from(Address::new_address(from_name, sender.to_string()))
        .subject(simple.subject.data.clone());
    if !to.is_empty() {
        builder = builder.to(list(to));
    }
    if !cc.is_empty() {
        builder = builder.cc(list(cc));
    }
    if !request.reply_to_addresses.is_empty() {
        let mut reply_to = Vec::new();
        for value in &request.reply_to_addresses {
            let (name, mailbox) = address("ReplyToAddresses", value)?;
            reply_to.push((name, mailbox.to_string()));
        }
        builder = builder.reply_to(list(&reply_to));
    }
    for h in &simple.headers {
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
            "dkim-signature",
            "received",
            "return-path",
        ];
        let ok_name = !h.name.is_empty()
            && h.name.len() <= 76
            && h.name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !ok_name {
            return Err(ApiError::bad_request(format!(
                "header name {:?} is not a field name",
                h.name
            )));
        }
        if reserved.contains(&h.name.to_ascii_lowercase().as_str()) {
            return Err(ApiError::bad_request(format!(
                "header {} is set by SES fields, not Headers",
                h.name
            )));
        }
        no_controls(&format!("header {}", h.name), &h.value)?;
        builder = builder.header(Cow::Owned(h.name.clone()), Raw::new(h.value.clone()));
    }
    match (&simple.body.text, &simple.body.html) {
        (None, None) => return Err(ApiError::bad_request("Body needs Text or Html")),
        (text, html) => {
            if let Some(t) = text {
                builder = builder.text_body(t.data.clone());
            }
            if let Some(h) = html {
                builder = builder.html_body(h.data.clone());
            }
        }
    }
    builder
        .write_to_vec()
        .map_err(|e| ApiError::bad_request(format!("cannot build the message: {e}")))
}

fn prepare_raw(
    request: &SendEmailRequest,
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
    let facts = baton_domain::HeaderFacts::parse(&message);
    facts.author_check().map_err(|e| {
        ApiError::bad_request(format!(
            "Raw message: {e} (exactly one From field with valid addresses)"
        ))
    })?;
    let from = request
        .from_email_address
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("FromEmailAddress is required with Raw content"))?;
    let from = address("FromEmailAddress", from)?.1;
    if rcpts.is_empty() {
        return Err(ApiError::bad_request(
            "Destination is required with Raw content",
        ));
    }
    Ok(Prepared {
        sender: from,
        recipients: rcpts,
        author_domains: facts.from_domains.into_iter().flatten().collect(),
        message,
    })
}

/// The sender's domain, for the ownership check.
pub fn sender_domain(sender: &Mailbox) -> Result<Domain, ApiError> {
    Domain::parse(&sender.domain().to_string())
        .map_err(|e| ApiError::bad_request(format!("sender domain: {e}")))
}
