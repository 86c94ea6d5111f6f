//! What happened to a tenant's mail, as events in the shape of Amazon SES event publishing
//! (`eventType` Send, Delivery, Bounce, Complaint, DeliveryDelay, Reject, with SES's `mail`,
//! `bounce`, `complaint`, `delivery` and `deliveryDelay` objects and field names), so that
//! consumers written for SES read them unchanged. They are kept in the `tenant_events`
//! ledger table (`baton events`) and, for each of the tenant's destinations, handed to the
//! events stage (`notify`) through its queue, never sent inline by the stage that saw them.
//!
//! Stages run at least once, so an event has an id made from what it is about (message,
//! type, and which occurrence: a recipient, an attempt): a stage that runs again writes
//! nothing new, and destinations get the same id again (`Baton-Event-Id`, the SQS attribute
//! `eventId`) to deduplicate on.

use baton_domain::{Envelope, QueueId, TenantId};
use baton_store::Ledger;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::messages::{self, MessageSummary};
use crate::{Ports, StageError, event_destinations, notify};

pub const TABLE: &str = "tenant_events";

/// One event, exactly as SES publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesEvent {
    pub event_type: String,
    pub mail: Mail,
    #[serde(flatten)]
    pub detail: serde_json::Map<String, Value>,
}

/// SES's `mail` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mail {
    pub timestamp: String,
    pub message_id: String,
    pub source: String,
    pub sending_account_id: String,
    pub destination: Vec<String>,
    pub headers_truncated: bool,
    pub common_headers: CommonHeaders,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommonHeaders {
    pub from: Vec<String>,
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
}

/// `2026-12-02T03:23:03.053Z`, as SES writes times.
pub fn iso8601(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// The message an event is about, for its `mail` object (from policy's summary).
pub struct About {
    tenant: TenantId,
    mail: Mail,
    /// The tenant's destination names, read once, at the first event.
    destinations: OnceCell<Vec<String>>,
}

impl About {
    /// `None` for mail that is not a tenant's: only tenants get events.
    pub async fn message(
        ledger: &dyn Ledger,
        envelope: &Envelope,
    ) -> Result<Option<About>, StageError> {
        if envelope.tenant.is_none() {
            return Ok(None);
        }
        let summary = match messages::summary(ledger, &envelope.queue_id).await? {
            Some(s) => s,
            None => MessageSummary::new(envelope, None),
        };
        Ok(About::from_summary(&envelope.queue_id, &summary))
    }

    /// From policy's summary of message `id`; `None` when it is not a tenant's.
    pub fn from_summary(id: &QueueId, summary: &MessageSummary) -> Option<About> {
        let tenant = TenantId(summary.tenant.clone()?);
        Some(About {
            mail: Mail {
                timestamp: iso8601(summary.received_at),
                message_id: id.to_string(),
                source: summary.from.clone(),
                sending_account_id: tenant.0.clone(),
                destination: summary.recipients.clone(),
                headers_truncated: false,
                common_headers: CommonHeaders {
                    from: vec![summary.from.clone()],
                    to: summary.recipients.clone(),
                    subject: summary.subject.clone(),
                },
            },
            tenant,
            destinations: OnceCell::new(),
        })
    }

    /// Keeps `event_type` with its object (`detail`, e.g. `{"bounce": {...}}`) and queues it
    /// for each destination. `occurrence` tells this event from others of the same type about
    /// the same message (a recipient, an attempt): with it, the event's id.
    pub async fn publish(
        &self,
        ports: &Ports,
        event_type: &str,
        occurrence: &str,
        detail: Value,
    ) -> Result<(), StageError> {
        let event = SesEvent {
            event_type: event_type.to_string(),
            mail: self.mail.clone(),
            detail: match detail {
                Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
        };
        let id = event_id(&self.mail.message_id, event_type, occurrence);
        let key = format!("{}/{id}", self.tenant.0);
        let bytes = serde_json::to_vec(&event)
            .map_err(|e| StageError::Permanent(format!("event {key}: {e}")))?;
        // A stage run again finds its event there and keeps the first (same id, same body).
        ports.ledger.ensure(TABLE, &key, &bytes).await?;
        // One line per tenant event: CloudWatch metric filters count these per tenant for the
        // bounce and complaint rate alarms (infra/template.yaml). A stage that runs again
        // logs it again, so the counts are at-least-once like the stage.
        tracing::info!(
            target: "baton::tenant_event",
            tenant = %self.tenant.0,
            event_type,
            "tenant event"
        );
        let destinations = self
            .destinations
            .get_or_try_init(|| async {
                let all = event_destinations::list(ports.ledger.as_ref(), Some(&self.tenant.0));
                Ok::<_, StageError>(all.await?.into_iter().map(|d| d.name).collect())
            })
            .await?;
        // Queued again when the stage runs again: the events stage sends each (event,
        // destination) once it has succeeded, so a second job finds it done.
        for name in destinations {
            let job = notify::NotifyJob {
                tenant: self.tenant.0.clone(),
                event_id: id.clone(),
                destination: name.clone(),
            };
            notify::enqueue(ports.events.as_ref(), &job, &self.mail.message_id).await?;
        }
        Ok(())
    }
}

/// An event's id: what it is about, hashed (SHA-256, 128 bits in hex).
pub fn event_id(message_id: &str, event_type: &str, occurrence: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{message_id}\0{event_type}\0{occurrence}").as_bytes(),
    );
    crate::hex(&digest.as_ref()[..16])
}

/// The stored event `id` of `tenant`, as SES would publish it.
pub async fn get(
    ledger: &dyn Ledger,
    tenant: &str,
    id: &str,
) -> Result<Option<Vec<u8>>, StageError> {
    Ok(ledger.get(TABLE, &format!("{tenant}/{id}")).await?)
}

/// EventBridge's `detail-type` for SES events of `event_type`, as SES names them.
pub fn detail_type(event_type: &str) -> String {
    match event_type {
        "Send" => "Email Sent".into(),
        "Delivery" => "Email Delivered".into(),
        "Bounce" => "Email Bounced".into(),
        "Complaint" => "Email Complaint Received".into(),
        "DeliveryDelay" => "Email Delivery Delayed".into(),
        "Reject" => "Email Rejected".into(),
        other => format!("Email {other}"),
    }
}

/// SES's `bounceSubType` for an enhanced status code, among those SES pairs with the
/// bounce type: Permanent with General or NoEmail; Transient with General, MailboxFull,
/// MessageTooLarge or ContentRejected.
pub fn bounce_sub_type(hard: bool, status: &str) -> &'static str {
    let detail = status.split_once('.').map_or("", |(_, rest)| rest);
    match (hard, detail) {
        (true, "1.1" | "1.0" | "1.6") => "NoEmail",
        (false, "2.2") => "MailboxFull",
        (false, "3.4" | "2.3") => "MessageTooLarge",
        (false, "7.1" | "6.0") => "ContentRejected",
        _ => "General",
    }
}

/// One bounced recipient.
pub struct BounceLine<'a> {
    pub hard: bool,
    pub sub_type: &'a str,
    pub recipient: &'a str,
    pub status: &'a str,
    pub diagnostic: &'a str,
}

/// A Bounce event's object for one recipient.
pub fn bounce(line: &BounceLine<'_>, feedback_id: &str, reporting_mta: &str, now_ms: i64) -> Value {
    json!({
        "bounce": {
            "bounceType": if line.hard { "Permanent" } else { "Transient" },
            "bounceSubType": line.sub_type,
            "bouncedRecipients": [{
                "emailAddress": line.recipient,
                "action": "failed",
                "status": line.status,
                "diagnosticCode": format!("smtp; {}", line.diagnostic),
            }],
            "timestamp": iso8601(now_ms),
            "feedbackId": feedback_id,
            "reportingMTA": format!("dns; {reporting_mta}"),
        }
    })
}

/// Every kept event of `tenant` (all tenants when `None`), oldest first.
pub async fn list(ledger: &dyn Ledger, tenant: Option<&str>) -> Result<Vec<SesEvent>, StageError> {
    let prefix = tenant.map(|t| format!("{t}/")).unwrap_or_default();
    let mut out = Vec::new();
    for (key, bytes) in ledger.scan(TABLE, &prefix).await? {
        out.push(
            serde_json::from_slice(&bytes)
                .map_err(|e| StageError::Permanent(format!("{TABLE}/{key}: {e}")))?,
        );
    }
    out.sort_by_key(event_time);
    Ok(out)
}

/// When the event happened: its object's `timestamp`, else the mail's.
pub fn event_time(e: &SesEvent) -> String {
    e.detail
        .values()
        .find_map(|v| v.get("timestamp").and_then(Value::as_str))
        .unwrap_or(&e.mail.timestamp)
        .to_string()
}

/// A unique id for a feedback event (SES's `feedbackId`): the message, the stage that
/// reported it and the recipient, exactly as written (local parts are case-sensitive).
pub fn feedback_id(id: &QueueId, source: &str, recipient: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, recipient.as_bytes());
    let tag = crate::hex(&digest.as_ref()[..8]);
    format!("{id}-{source}-{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounce_reads_as_ses_writes_it() {
        let mail = Mail {
            timestamp: iso8601(1_700_000_000_000),
            message_id: "01M8".into(),
            source: "news@acme.test".into(),
            sending_account_id: "acme".into(),
            destination: vec!["bob@example.org".into()],
            headers_truncated: false,
            common_headers: CommonHeaders {
                from: vec!["news@acme.test".into()],
                to: vec!["bob@example.org".into()],
                subject: "hi".into(),
            },
        };
        let line = BounceLine {
            hard: true,
            sub_type: bounce_sub_type(true, "5.1.1"),
            recipient: "bob@example.org",
            status: "5.1.1",
            diagnostic: "550 5.1.1 user unknown",
        };
        let Value::Object(detail) = bounce(&line, "01M8-000001", "relay.test", 1_700_000_001_000)
        else {
            unreachable!()
        };
        let event = SesEvent {
            event_type: "Bounce".into(),
            mail,
            detail,
        };
        let v = serde_json::to_value(&event).expect("json");
        assert_eq!(v["eventType"], "Bounce");
        assert_eq!(v["bounce"]["bounceType"], "Permanent");
        assert_eq!(v["bounce"]["bounceSubType"], "NoEmail");
        assert_eq!(
            v["bounce"]["bouncedRecipients"][0]["emailAddress"],
            "bob@example.org"
        );
        assert_eq!(
            v["bounce"]["bouncedRecipients"][0]["diagnosticCode"],
            "smtp; 550 5.1.1 user unknown"
        );
        assert_eq!(v["bounce"]["reportingMTA"], "dns; relay.test");
        assert_eq!(v["mail"]["commonHeaders"]["subject"], "hi");
        assert_eq!(v["mail"]["timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["mail"]["headersTruncated"], false);
        assert_eq!(event_time(&event), "2023-11-14T22:13:21.000Z");
    }

    #[test]
    fn sub_types_follow_the_status_code_within_the_bounce_type() {
        assert_eq!(bounce_sub_type(true, "5.1.1"), "NoEmail");
        assert_eq!(bounce_sub_type(false, "4.2.2"), "MailboxFull");
        assert_eq!(bounce_sub_type(true, "5.2.2"), "General");
        assert_eq!(bounce_sub_type(false, "4.3.4"), "MessageTooLarge");
        assert_eq!(bounce_sub_type(false, "4.7.1"), "ContentRejected");
        assert_eq!(bounce_sub_type(true, "5.7.1"), "General");
        assert_eq!(bounce_sub_type(false, "4.1.1"), "General");
        assert_eq!(bounce_sub_type(true, ""), "General");
    }
}
