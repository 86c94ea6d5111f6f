//! What travels on the stage queues after intake.

use baton_domain::Envelope;
use serde::{Deserialize, Serialize};

use crate::StageError;

/// A message on its way through sign and deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub envelope: Envelope,
    /// Header fields to put before the stored body, CRLF-terminated: DKIM signatures first,
    /// then headers policy added (Date, Message-ID). The stored body is never rewritten.
    #[serde(default)]
    pub prefix: String,
    /// Recipients still to deliver; empty means all of the envelope's.
    #[serde(default)]
    pub pending: Vec<String>,
    /// Delivery attempts made so far.
    #[serde(default)]
    pub attempt: u32,
    /// A delay notification was already sent.
    #[serde(default)]
    pub delay_notified: bool,
}

impl Job {
    pub fn new(envelope: Envelope, prefix: String) -> Self {
        Job {
            envelope,
            prefix,
            pending: Vec::new(),
            attempt: 0,
            delay_notified: false,
        }
    }

    pub fn pending_recipients(&self) -> Vec<String> {
        if self.pending.is_empty() {
            self.envelope
                .recipients
                .iter()
                .map(|r| r.address.to_string())
                .collect()
        } else {
            self.pending.clone()
        }
    }
}

pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, StageError> {
    serde_json::from_slice(body)
        .map_err(|e| StageError::Permanent(format!("undecodable queue record: {e}")))
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StageError> {
    serde_json::to_vec(value).map_err(|e| StageError::Permanent(format!("cannot encode: {e}")))
}

/// Why a recipient will not get the message (or not yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub recipient: String,
    pub code: u16,
    pub enhanced: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    #[serde(default, skip_serializing_if = "FailureSource::is_delivery")]
    pub source: FailureSource,
}

/// Who decided a failure. Only a delivery failure says something about the recipient
/// (and may suppress it); a policy refusal is about the message or its sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureSource {
    #[default]
    Delivery,
    Policy,
}

impl FailureSource {
    fn is_delivery(&self) -> bool {
        *self == FailureSource::Delivery
    }
}

impl Failure {
    /// Permanent failures (5xx) are hard bounces; delays and expiries of 4xx are soft.
    pub fn is_hard(&self) -> bool {
        self.code >= 500 && !self.enhanced.starts_with("4.")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BounceAction {
    /// RFC 3464 Action: failed.
    Failed,
    /// RFC 3464 Action: delayed (still trying).
    Delayed,
}

/// Work for the bounce stage: records, suppression, and a DSN to the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceJob {
    pub envelope: Envelope,
    pub action: BounceAction,
    pub failures: Vec<Failure>,
}

/// Hands failures (or delays) of `envelope` to the bounce stage.
pub async fn send_bounce(
    ports: &crate::Ports,
    envelope: &Envelope,
    action: BounceAction,
    failures: Vec<Failure>,
    attributes: &std::collections::BTreeMap<String, String>,
) -> Result<(), StageError> {
    let job = BounceJob {
        envelope: envelope.clone(),
        action,
        failures,
    };
    ports
        .bounce
        .send(
            &encode(&job)?,
            attributes.clone(),
            std::time::Duration::ZERO,
        )
        .await?;
    Ok(())
}
