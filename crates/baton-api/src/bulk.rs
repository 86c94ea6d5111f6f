//! SendBulkEmail (POST /v2/email/outbound-bulk-emails): one template, up to 50 entries, each
//! its own message with its own MessageId (queue id), through the same checks, builder and
//! accept path as SendEmail. What is common (sender, template, default data and tags) is
//! checked once and fails the request; what is an entry's (its addresses, its data, its
//! rendering) fails only that entry, with SES's per-entry status.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::render::{self, Compiled, Work};
use crate::router::{ApiState, accept, check_owned};
use crate::send::{self, Addressing, Destination, HeaderField, MessageTag, Parts, TemplateRef};
use crate::templates;

/// SES: at most 50 entries per call.
pub const MAX_ENTRIES: usize = 50;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct BulkRequest {
    pub from_email_address: Option<String>,
    pub from_email_address_identity_arn: Option<String>,
    #[serde(default)]
    pub reply_to_addresses: Vec<String>,
    pub feedback_forwarding_email_address: Option<String>,
    pub feedback_forwarding_email_address_identity_arn: Option<String>,
    #[serde(default)]
    pub default_email_tags: Vec<MessageTag>,
    pub default_content: BulkContent,
    pub bulk_email_entries: Vec<Entry>,
    pub configuration_set_name: Option<String>,
    pub endpoint_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct BulkContent {
    pub template: Option<TemplateRef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Entry {
    pub destination: Destination,
    /// Checked like DefaultEmailTags; not yet carried into events.
    #[serde(default)]
    pub replacement_tags: Vec<MessageTag>,
    pub replacement_email_content: Option<Replacement>,
    #[serde(default)]
    pub replacement_headers: Vec<HeaderField>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Replacement {
    pub replacement_template: Option<ReplacementTemplate>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ReplacementTemplate {
    pub replacement_template_data: Option<String>,
}

/// What fails the whole request, before any entry is looked at.
fn check_request(request: &BulkRequest) -> Result<&TemplateRef, ApiError> {
    if request.from_email_address_identity_arn.is_some()
        || request
            .feedback_forwarding_email_address_identity_arn
            .is_some()
        || request.endpoint_id.is_some()
    {
        return Err(ApiError::bad_request(
            "this SendBulkEmail option (identity ARNs, endpoints) is not supported yet",
        ));
    }
    let n = request.bulk_email_entries.len();
    if n == 0 || n > MAX_ENTRIES {
        return Err(ApiError::bad_request(format!(
            "BulkEmailEntries: 1 to {MAX_ENTRIES} entries"
        )));
    }
    send::check_tags("DefaultEmailTags", &request.default_email_tags)?;
    send::note_configuration_set(request.configuration_set_name.as_deref());
    request
        .default_content
        .template
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("DefaultContent.Template is required"))
}

/// The template's headers with the entry's over them (same name, any case: the entry's).
fn merged_headers(defaults: &[HeaderField], entry: &[HeaderField]) -> Vec<HeaderField> {
    let mut out: Vec<HeaderField> = defaults
        .iter()
        .filter(|d| !entry.iter().any(|e| e.name.eq_ignore_ascii_case(&d.name)))
        .cloned()
        .collect();
    out.extend(entry.iter().cloned());
    out
}

/// One entry's message: the default data with the entry's replacement data over it (top
/// level keys, as SES merges), rendered and built like SendEmail's.
fn prepare_entry(
    request: &BulkRequest,
    template: &TemplateRef,
    compiled: &Compiled,
    defaults: &serde_json::Map<String, Value>,
    entry: &Entry,
    work: &Arc<Work>,
    hostname: &str,
) -> Result<send::Prepared, ApiError> {
    if entry.replacement_headers.len() > 15 {
        return Err(ApiError::bad_request("ReplacementHeaders: at most 15"));
    }
    send::check_tags("ReplacementTags", &entry.replacement_tags)?;
    let replacement = entry
        .replacement_email_content
        .as_ref()
        .and_then(|c| c.replacement_template.as_ref())
        .and_then(|t| t.replacement_template_data.as_deref());
    let mut data = defaults.clone();
    data.extend(render::parse_data(replacement)?);
    let rendered = render::render(compiled, &data, work)?;
    let headers = merged_headers(&template.headers, &entry.replacement_headers);
    let addressing = Addressing {
        from: request.from_email_address.as_deref(),
        reply_to: &request.reply_to_addresses,
        feedback: request.feedback_forwarding_email_address.as_deref(),
        hostname,
    };
    let parts = Parts::rendered(&rendered, &headers, &template.attachments);
    send::compose(&addressing, Some(&entry.destination), &parts)
}

/// SES's BulkEmailStatus for an entry that failed.
fn status(e: &ApiError) -> &'static str {
    match e.kind {
        "BadRequestException" => "INVALID_PARAMETER",
        "MessageRejected" => "MESSAGE_REJECTED",
        "ServiceUnavailable" | "TooManyRequestsException" => "TRANSIENT_FAILURE",
        _ => "FAILED",
    }
}

pub async fn send_bulk(
    state: &ApiState,
    caller: &Caller,
    request: BulkRequest,
) -> Result<Value, ApiError> {
    let template = check_request(&request)?;
    // The sender (and the feedback address, which becomes the envelope sender): once for
    // every entry.
    let from = request
        .from_email_address
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("FromEmailAddress is required"))?;
    let mut domains = vec![send::sender_domain(&send::parse_address(
        "FromEmailAddress",
        from,
    )?)?];
    if let Some(f) = &request.feedback_forwarding_email_address {
        domains.push(send::sender_domain(&send::parse_address(
            "FeedbackForwardingEmailAddress",
            f,
        )?)?);
    }
    check_owned(state.ledger.as_ref(), &caller.tenant, &domains).await?;
    let compiled = templates::resolve(state.ledger.as_ref(), &caller.tenant, template).await?;
    let defaults = render::parse_data(template.template_data.as_deref())?;
    // Every entry rendered and built off the runtime, from one budget for the request.
    let hostname = state.hostname.clone();
    let prepared = render::off_runtime(move || {
        let work = Work::new(render::MAX_BULK_WORK);
        let template = check_request(&request)?;
        Ok(request
            .bulk_email_entries
            .iter()
            .map(|entry| {
                prepare_entry(
                    &request, template, &compiled, &defaults, entry, &work, &hostname,
                )
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let mut results = Vec::with_capacity(prepared.len());
    for entry in prepared {
        let outcome = match entry {
            Ok(prepared) => accept(state, caller, prepared).await,
            Err(e) => Err(e),
        };
        results.push(match outcome {
            Ok(id) => {
                tracing::info!(queue_id = %id, tenant = %caller.tenant.0, "accepted by the API (bulk)");
                json!({ "Status": "SUCCESS", "MessageId": id.to_string() })
            }
            Err(e) => json!({ "Status": status(&e), "Error": e.message }),
        });
    }
    Ok(json!({ "BulkEmailEntryResults": results }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &str) -> HeaderField {
        HeaderField {
            name: name.into(),
            value: value.into(),
        }
    }

    fn request(entries: Vec<Entry>) -> BulkRequest {
        BulkRequest {
            from_email_address: Some("news@acme.test".into()),
            from_email_address_identity_arn: None,
            reply_to_addresses: vec![],
            feedback_forwarding_email_address: None,
            feedback_forwarding_email_address_identity_arn: None,
            default_email_tags: vec![],
            default_content: BulkContent {
                template: Some(TemplateRef {
                    template_name: None,
                    template_arn: None,
                    template_content: Some(render::TemplateContent {
                        subject: Some("Hi {{name}}".into()),
                        text: Some("{{name}} from {{city}}".into()),
                        html: None,
                    }),
                    template_data: Some(r#"{"name":"friend","city":"Oslo"}"#.into()),
                    headers: vec![header("X-Campaign", "default"), header("X-Keep", "1")],
                    attachments: vec![],
                }),
            },
            bulk_email_entries: entries,
            configuration_set_name: None,
            endpoint_id: None,
        }
    }

    fn entry(to: &str, data: Option<&str>, headers: Vec<HeaderField>) -> Entry {
        Entry {
            destination: Destination {
                to_addresses: vec![to.into()],
                ..Destination::default()
            },
            replacement_tags: vec![],
            replacement_email_content: Some(Replacement {
                replacement_template: Some(ReplacementTemplate {
                    replacement_template_data: data.map(str::to_string),
                }),
            }),
            replacement_headers: headers,
        }
    }

    fn prepared(r: &BulkRequest, i: usize) -> Result<String, ApiError> {
        let t = check_request(r)?;
        let c = render::compile(
            t.template_content.as_ref().expect("inline"),
            render::MAX_INLINE,
        )?;
        let d = render::parse_data(t.template_data.as_deref())?;
        let work = Work::new(render::MAX_WORK);
        let p = prepare_entry(r, t, &c, &d, &r.bulk_email_entries[i], &work, "relay.test")?;
        Ok(String::from_utf8_lossy(&p.message).into_owned())
    }

    #[test]
    fn entries_merge_their_data_and_headers_over_the_defaults() {
        let r = request(vec![
            entry(
                "a@example.org",
                Some(r#"{"name":"Ann"}"#),
                vec![header("x-campaign", "a")],
            ),
            entry("b@example.org", None, vec![]),
        ]);
        let a = prepared(&r, 0).expect("entry a");
        assert!(
            a.contains("Subject: Hi Ann") && a.contains("Ann from Oslo"),
            "{a}"
        );
        assert!(
            a.contains("x-campaign: a") && !a.contains("X-Campaign: default"),
            "{a}"
        );
        assert!(a.contains("X-Keep: 1"), "{a}");
        let b = prepared(&r, 1).expect("entry b");
        assert!(
            b.contains("Subject: Hi friend") && b.contains("X-Campaign: default"),
            "{b}"
        );
    }

    #[test]
    fn a_bad_entry_fails_alone_with_ses_statuses() {
        let r = request(vec![
            entry("not an address", None, vec![]),
            entry("c@example.org", Some("[1]"), vec![]),
            entry(
                "d@example.org",
                Some(r#"{"name":"x\r\nBcc: e@evil.example"}"#),
                vec![],
            ),
            entry("e@example.org", None, vec![]),
        ]);
        let statuses: Vec<&str> = (0..4)
            .map(|i| prepared(&r, i).map_or_else(|e| status(&e), |_| "SUCCESS"))
            .collect();
        assert_eq!(
            statuses,
            [
                "INVALID_PARAMETER",
                "INVALID_PARAMETER",
                "MESSAGE_REJECTED",
                "SUCCESS"
            ]
        );
    }

    #[test]
    fn whole_request_limits() {
        let many: Vec<Entry> = (0..=MAX_ENTRIES)
            .map(|i| entry(&format!("r{i}@example.org"), None, vec![]))
            .collect();
        assert!(check_request(&request(many)).is_err());
        assert!(check_request(&request(vec![])).is_err());
        let mut r = request(vec![entry("a@example.org", None, vec![])]);
        r.default_email_tags = vec![MessageTag {
            name: "bad tag".into(),
            value: "v".into(),
        }];
        assert!(check_request(&r).is_err());
        r.default_email_tags.clear();
        r.default_content.template = None;
        assert!(check_request(&r).is_err());
    }
}
