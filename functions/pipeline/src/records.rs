//! What the pipeline writes to the ledger: a timeline per message, the state of each
//! recipient, bounce records and the suppression list.

use std::sync::atomic::{AtomicU64, Ordering};

use baton_domain::{QueueId, TenantId};
use baton_store::Ledger;
use serde::{Deserialize, Serialize};

use crate::StageError;

pub mod tables {
    pub const EVENTS: &str = "events";
    pub const RECIPIENTS: &str = "recipients";
    pub const BOUNCES: &str = "bounces";
    pub const SUPPRESSION: &str = "suppression";
}

/// One line of a message's timeline (`baton message show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix milliseconds.
    pub at: i64,
    pub stage: String,
    pub what: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

static EVENT_SEQ: AtomicU64 = AtomicU64::new(0);

pub(crate) async fn get_json<T: for<'de> Deserialize<'de>>(
    ledger: &dyn Ledger,
    table: &str,
    key: &str,
) -> Result<Option<T>, StageError> {
    match ledger.get(table, key).await? {
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| StageError::Permanent(format!("{table}/{key}: {e}"))),
        None => Ok(None),
    }
}

pub(crate) async fn put_json<T: Serialize>(
    ledger: &dyn Ledger,
    table: &str,
    key: &str,
    value: &T,
) -> Result<(), StageError> {
    ledger
        .put(table, key, &serde_json::to_vec(value).unwrap_or_default())
        .await?;
    Ok(())
}

pub(crate) async fn scan_json<T: for<'de> Deserialize<'de>>(
    ledger: &dyn Ledger,
    table: &str,
    prefix: &str,
) -> Result<Vec<(String, T)>, StageError> {
    let mut out = Vec::new();
    for (key, value) in ledger.scan(table, prefix).await? {
        let v = serde_json::from_slice(&value)
            .map_err(|e| StageError::Permanent(format!("{table}/{key}: {e}")))?;
        out.push((key, v));
    }
    Ok(out)
}

pub async fn record_event(
    ledger: &dyn Ledger,
    id: &QueueId,
    at: i64,
    stage: &str,
    what: &str,
    detail: impl Into<String>,
) -> Result<(), StageError> {
    let seq = EVENT_SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    let key = format!("{id}/{at:013}-{seq:06}-{}", std::process::id());
    put_json(
        ledger,
        tables::EVENTS,
        &key,
        &event(at, stage, what, detail),
    )
    .await
}

/// Records an event that must appear once however often its stage runs (e.g. "accepted",
/// when an over-quota message comes back to policy).
pub async fn record_event_once(
    ledger: &dyn Ledger,
    id: &QueueId,
    at: i64,
    stage: &str,
    what: &str,
    detail: impl Into<String>,
) -> Result<(), StageError> {
    let key = format!("{id}/{at:013}-000000-{stage}-{what}");
    let bytes = serde_json::to_vec(&event(at, stage, what, detail)).unwrap_or_default();
    ledger.ensure(tables::EVENTS, &key, &bytes).await?;
    Ok(())
}

fn event(at: i64, stage: &str, what: &str, detail: impl Into<String>) -> Event {
    Event {
        at,
        stage: stage.into(),
        what: what.into(),
        detail: detail.into(),
    }
}

pub async fn timeline(ledger: &dyn Ledger, id: &QueueId) -> Result<Vec<Event>, StageError> {
    Ok(scan_json(ledger, tables::EVENTS, &format!("{id}/"))
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RcptStatus {
    Pending,
    Deferred,
    Delivered,
    Failed,
    Suppressed,
}

impl RcptStatus {
    /// Nothing more will be tried for this recipient.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RcptStatus::Delivered | RcptStatus::Failed | RcptStatus::Suppressed
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptState {
    pub status: RcptStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_reply: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    pub updated_at: i64,
    /// Unix ms until which one delivery worker owns this recipient (see [`claim_rcpt`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_until: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// What [`claim_rcpt`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This worker owns the recipient until the lease ends: send.
    Claimed,
    /// Delivered, failed or suppressed: never send again.
    Final,
    /// Another worker holds it (a duplicate queue message in flight); look again after this.
    Busy(std::time::Duration),
}

/// Takes the recipient for one delivery attempt with a compare-and-swap on its state, so
/// that duplicate deliveries of the same queue message (SQS is at-least-once) send it once.
/// A worker that dies holding a lease only delays the recipient until the lease ends.
pub async fn claim_rcpt(
    ledger: &dyn Ledger,
    id: &QueueId,
    rcpt: &str,
    now: i64,
    lease: std::time::Duration,
) -> Result<Claim, StageError> {
    let key = rcpt_key(id, rcpt);
    for _ in 0..3 {
        let current = ledger.get(tables::RECIPIENTS, &key).await?;
        let mut state = match &current {
            Some(bytes) => serde_json::from_slice::<RcptState>(bytes)
                .map_err(|e| StageError::Permanent(format!("{}/{key}: {e}", tables::RECIPIENTS)))?,
            None => RcptState {
                status: RcptStatus::Pending,
                attempts: 0,
                last_reply: String::new(),
                remote_mta: None,
                updated_at: now,
                lease_until: 0,
            },
        };
        if state.status.is_final() {
            return Ok(Claim::Final);
        }
        if state.lease_until > now {
            return Ok(Claim::Busy(std::time::Duration::from_millis(
                (state.lease_until - now) as u64,
            )));
        }
        state.lease_until = now + lease.as_millis() as i64;
        let bytes = serde_json::to_vec(&state).unwrap_or_default();
        let won = match &current {
            Some(old) => {
                ledger
                    .replace_if(tables::RECIPIENTS, &key, old, &bytes)
                    .await?
            }
            None => {
                ledger
                    .put_if_absent(tables::RECIPIENTS, &key, &bytes)
                    .await?
            }
        };
        if won {
            return Ok(Claim::Claimed);
        }
    }
    Ok(Claim::Busy(std::time::Duration::from_secs(1)))
}

fn rcpt_key(id: &QueueId, rcpt: &str) -> String {
    format!("{id}/{}", rcpt.to_lowercase())
}

pub async fn rcpt_state(
    ledger: &dyn Ledger,
    id: &QueueId,
    rcpt: &str,
) -> Result<Option<RcptState>, StageError> {
    get_json(ledger, tables::RECIPIENTS, &rcpt_key(id, rcpt)).await
}

pub async fn set_rcpt_state(
    ledger: &dyn Ledger,
    id: &QueueId,
    rcpt: &str,
    state: &RcptState,
) -> Result<(), StageError> {
    put_json(ledger, tables::RECIPIENTS, &rcpt_key(id, rcpt), state).await
}

/// Creates the state only if there is none: a redelivered intake message must not reset
/// recipients that already moved on.
pub async fn init_rcpt_state(
    ledger: &dyn Ledger,
    id: &QueueId,
    rcpt: &str,
    at: i64,
) -> Result<(), StageError> {
    let state = RcptState {
        status: RcptStatus::Pending,
        attempts: 0,
        last_reply: String::new(),
        remote_mta: None,
        updated_at: at,
        lease_until: 0,
    };
    ledger
        .ensure(
            tables::RECIPIENTS,
            &rcpt_key(id, rcpt),
            &serde_json::to_vec(&state).unwrap_or_default(),
        )
        .await?;
    Ok(())
}

/// Every recipient state of a message, keyed by address.
pub async fn rcpt_states(
    ledger: &dyn Ledger,
    id: &QueueId,
) -> Result<Vec<(String, RcptState)>, StageError> {
    let prefix = format!("{id}/");
    Ok(scan_json(ledger, tables::RECIPIENTS, &prefix)
        .await?
        .into_iter()
        .map(|(key, state)| (key[prefix.len()..].to_string(), state))
        .collect())
}

/// A recipient that failed permanently or expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceRecord {
    pub tenant: Option<TenantId>,
    pub queue_id: QueueId,
    pub recipient: String,
    pub code: u16,
    pub enhanced: String,
    pub reply: String,
    pub remote_mta: Option<String>,
    pub at: i64,
    pub hard: bool,
}

fn tenant_key(tenant: Option<&TenantId>) -> &str {
    tenant.map(|t| t.0.as_str()).unwrap_or("-")
}

fn bounce_key(tenant: Option<&TenantId>, id: &QueueId, rcpt: &str) -> String {
    format!("{}/{id}/{}", tenant_key(tenant), rcpt.to_lowercase())
}

pub async fn put_bounce(ledger: &dyn Ledger, b: &BounceRecord) -> Result<(), StageError> {
    let key = bounce_key(b.tenant.as_ref(), &b.queue_id, &b.recipient);
    put_json(ledger, tables::BOUNCES, &key, b).await
}

/// The bounce record of one recipient of one message, if any.
pub async fn bounce_of(
    ledger: &dyn Ledger,
    tenant: Option<&TenantId>,
    id: &QueueId,
    rcpt: &str,
) -> Result<Option<BounceRecord>, StageError> {
    get_json(ledger, tables::BOUNCES, &bounce_key(tenant, id, rcpt)).await
}

pub async fn bounces(
    ledger: &dyn Ledger,
    tenant: Option<&TenantId>,
) -> Result<Vec<BounceRecord>, StageError> {
    let prefix = format!("{}/", tenant_key(tenant));
    Ok(scan_json(ledger, tables::BOUNCES, &prefix)
        .await?
        .into_iter()
        .map(|(_, b)| b)
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub reason: String,
    pub queue_id: Option<QueueId>,
    pub at: i64,
    /// Unix ms after which the address may be tried again (soft-bounce suppressions);
    /// `None`: until removed (hard bounces, complaints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

fn suppression_key(tenant: Option<&TenantId>, rcpt: &str) -> String {
    format!("{}/{}", tenant_key(tenant), rcpt.to_lowercase())
}

pub async fn suppress(
    ledger: &dyn Ledger,
    tenant: Option<&TenantId>,
    rcpt: &str,
    s: &Suppression,
) -> Result<(), StageError> {
    put_json(
        ledger,
        tables::SUPPRESSION,
        &suppression_key(tenant, rcpt),
        s,
    )
    .await
}

/// The suppression of `rcpt`, if any, expired or not (see [`Suppression::in_force`]).
/// A tenant's suppression list: (address, entry), by address.
pub async fn suppressions_of(
    ledger: &dyn Ledger,
    tenant: &TenantId,
) -> Result<Vec<(String, Suppression)>, StageError> {
    let prefix = format!("{}/", tenant_key(Some(tenant)));
    let mut out = Vec::new();
    for (key, bytes) in ledger.scan(tables::SUPPRESSION, &prefix).await? {
        let entry: Suppression = serde_json::from_slice(&bytes)
            .map_err(|e| StageError::Permanent(format!("{}/{key}: {e}", tables::SUPPRESSION)))?;
        let address = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
        out.push((address, entry));
    }
    Ok(out)
}

/// Takes `rcpt` off the list; false if it was not on it.
pub async fn unsuppress(
    ledger: &dyn Ledger,
    tenant: Option<&TenantId>,
    rcpt: &str,
) -> Result<bool, StageError> {
    let key = suppression_key(tenant, rcpt);
    let was = ledger.get(tables::SUPPRESSION, &key).await?.is_some();
    ledger.delete(tables::SUPPRESSION, &key).await?;
    Ok(was)
}

pub async fn suppressed(
    ledger: &dyn Ledger,
    tenant: Option<&TenantId>,
    rcpt: &str,
) -> Result<Option<Suppression>, StageError> {
    get_json(ledger, tables::SUPPRESSION, &suppression_key(tenant, rcpt)).await
}

impl Suppression {
    /// Whether it still holds at `now_ms`.
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.expires_at.is_none_or(|t| now_ms < t)
    }
}

/// Permanent failures that are about the sender or the message, not the recipient (a bad
/// sender address or domain, X.1.7/X.1.8; a policy or security refusal, X.7.*): they never
/// suppress the recipient, or a sender's own DNS mistake would suppress innocent addresses.
pub fn about_the_sender(status: &str) -> bool {
    let detail = status.split_once('.').map_or("", |(_, rest)| rest);
    matches!(detail, "1.7" | "1.8") || detail.starts_with("7.")
}

#[cfg(test)]
mod sender_side_tests {
    use super::about_the_sender;

    #[test]
    fn sender_and_policy_failures_are_not_about_the_recipient() {
        assert!(
            about_the_sender("5.1.8") && about_the_sender("5.1.7") && about_the_sender("5.7.1")
        );
        assert!(!about_the_sender("5.1.1") && !about_the_sender("5.2.2") && !about_the_sender(""));
    }
}
