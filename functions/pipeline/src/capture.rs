//! The capture route (`target = "capture"`): mail is kept, exactly as it would have gone out
//! (added headers and DKIM signatures included), instead of being sent, like MailHog or
//! Mailpit. `baton capture list` lists it and `baton capture show ID` prints it.

use baton_domain::{Envelope, QueueId};
use serde::{Deserialize, Serialize};

use crate::messages;
use crate::outbound::{Outcome, RcptResult};
use crate::records::{get_json, scan_json};
use crate::{Ports, StageError};

pub const TABLE: &str = "captured";

/// Where the captured copy lives in the blob store (next to, never in place of, the body).
pub fn blob_key(id: &QueueId) -> String {
    format!("captured-{id}")
}

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
/// Safe to repeat: a copy stored by an attempt that died before its record is kept as is,
/// and concurrent attempts merge their recipients with compare-and-swap.
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
    loop {
        let current = ledger.get(TABLE, &key).await?;
        let Some(bytes) = current else {
            let size = store_copy(ports, &id, prefix, body).await?;
            let subject = messages::summary(ledger, &id)
                .await?
                .map(|s| s.subject)
                .unwrap_or_default();
            let record = Captured {
                at: now,
                from: envelope
                    .mail_from
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                recipients: rcpts.to_vec(),
                subject,
                size,
            };
            if ledger.put_if_absent(TABLE, &key, &encode(&record)).await? {
                break;
            }
            continue;
        };
        let mut record: Captured = serde_json::from_slice(&bytes)
            .map_err(|e| StageError::Permanent(format!("{TABLE}/{key}: {e}")))?;
        let before = record.recipients.len();
        for rcpt in rcpts {
            if !record
                .recipients
                .iter()
                .any(|r| r.eq_ignore_ascii_case(rcpt))
            {
                record.recipients.push(rcpt.clone());
            }
        }
        if record.recipients.len() == before
            || ledger
                .replace_if(TABLE, &key, &bytes, &encode(&record))
                .await?
        {
            break;
        }
    }
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

/// Stores the copy unless an earlier attempt did (blob keys are written once).
async fn store_copy(
    ports: &Ports,
    id: &QueueId,
    prefix: &[u8],
    body: &[u8],
) -> Result<u64, StageError> {
    let key = blob_key(id);
    match ports.blobs.read_head(&key, 1).await {
        Ok(_) => return Ok((prefix.len() + body.len()) as u64),
        Err(baton_store::StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut writer = ports.blobs.create(&key).await?;
    writer.write(prefix).await?;
    writer.write(body).await?;
    Ok(writer.commit().await?)
}

fn encode(record: &Captured) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
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
