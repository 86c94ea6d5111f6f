//! The capture route (`target = "capture"`): mail is kept, exactly as it would have gone out
//! (added headers and DKIM signatures included), instead of being sent, like MailHog or
//! Mailpit. `baton capture list` lists it and `baton capture show ID` prints it.

use baton_domain::{Envelope, HeaderFacts, QueueId};
use serde::{Deserialize, Serialize};

use crate::messages::printable;
use crate::outbound::{Outcome, RcptResult};
use crate::records::{get_json, put_json, scan_json};
use crate::{Ports, StageError};

pub const TABLE: &str = "captured";

/// Where the captured copy lives in the blob store (next to, never in place of, the body).
pub fn blob_key(id: &QueueId) -> String {
    format!("captured-{id}")
}

/// How much of the body to parse for the subject.
const HEAD_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// Unix milliseconds.
    pub at: i64,
    pub from: String,
    pub recipients: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    pub size: u64,
}

/// Keeps one copy per message; each destination domain adds its recipients to the record.
pub async fn keep(
    ports: &Ports,
    envelope: &Envelope,
    prefix: &[u8],
    body: &[u8],
    rcpts: &[String],
    now: i64,
) -> Result<Vec<RcptResult>, StageError> {
    let id = envelope.queue_id;
    let ledger = ports.ledger.as_ref();
    let key = id.to_string();
    let mut record = match get_json::<Captured>(ledger, TABLE, &key).await? {
        Some(existing) => existing,
        None => {
            let mut writer = ports.blobs.create(&blob_key(&id)).await?;
            writer.write(prefix).await?;
            writer.write(body).await?;
            let size = writer.commit().await?;
            let head = &body[..body.len().min(HEAD_MAX)];
            Captured {
                at: now,
                from: envelope
                    .mail_from
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                recipients: Vec::new(),
                subject: HeaderFacts::parse(head)
                    .subject
                    .as_deref()
                    .map(printable)
                    .unwrap_or_default(),
                size,
            }
        }
    };
    for rcpt in rcpts {
        if !record
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(rcpt))
        {
            record.recipients.push(rcpt.clone());
        }
    }
    put_json(ledger, TABLE, &key, &record).await?;
    Ok(rcpts
        .iter()
        .map(|address| RcptResult {
            address: address.clone(),
            outcome: Outcome::Delivered,
            code: 250,
            enhanced: Some("2.0.0".into()),
            text: format!("captured (baton capture show {id})"),
            remote_host: Some("capture".into()),
        })
        .collect())
}

pub async fn get(
    ports_ledger: &dyn baton_store::Ledger,
    id: &QueueId,
) -> Result<Option<Captured>, StageError> {
    get_json(ports_ledger, TABLE, &id.to_string()).await
}

/// Every captured message, oldest first.
pub async fn list(ledger: &dyn baton_store::Ledger) -> Result<Vec<(String, Captured)>, StageError> {
    scan_json(ledger, TABLE, "").await
}
