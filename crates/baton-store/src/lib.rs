//! The storage ports every backend implements: a blob store for message bodies, queues with
//! SQS semantics (visibility timeout, delay, receive count, dead-letter), and a key-value
//! ledger. The embedded backend (SQLite + spool) and the AWS backend (S3, SQS, DynamoDB)
//! implement the same traits; `memory` has fakes for unit tests.

pub mod conformance;
mod directory;
mod error;
pub mod memory;
mod retention;
mod secrets;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

pub use directory::{
    DomainClaim, DomainRecord, UserRecord, claim_domain, domain_claims, domains_of_tenant,
    get_domain, get_domain_claim, get_user, put_domain, put_user, verify_domain,
};
pub use error::{StoreError, check_key};
pub use retention::{BODY_RETENTION, LEDGER_TABLES, TableSpec, table_retention};
pub use secrets::{random_bytes, verp_key};

/// Queue names used by the pipeline.
pub mod queues {
    /// Messages accepted by the gateway, waiting for the policy stage.
    pub const INTAKE: &str = "intake";
}

/// Ledger tables.
pub mod tables {
    pub const USERS: &str = "users";
    pub const DOMAINS: &str = "domains";
    /// The relay's own secrets (sealed at rest).
    pub const SECRETS: &str = "secrets";
}

/// Message bodies. Keys are queue ids.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts a new blob. Nothing is visible under `key` until [`BlobWriter::commit`].
    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, StoreError>;
    /// Reads a whole committed blob.
    async fn read(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// Reads at most the first `max` octets (enough for the header section).
    async fn read_head(&self, key: &str, max: usize) -> Result<Vec<u8>, StoreError> {
        let mut all = self.read(key).await?;
        all.truncate(max);
        Ok(all)
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// A blob being written. Dropping it without `commit` leaves nothing behind.
#[async_trait]
pub trait BlobWriter: Send + Sync {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError>;
    /// Makes the blob durable (on disk and fsync'd, or stored by the cloud service) and
    /// returns its size.
    async fn commit(self: Box<Self>) -> Result<u64, StoreError>;
    async fn abort(self: Box<Self>);
    /// Commits the blob, then sends `job` on `queue`: a message's accept. This default does
    /// the two one after the other, and a failed send leaves the blob committed (the caller
    /// deletes it). A backend whose blobs and queues share one transaction does both in one
    /// durable commit, and neither if either fails: accepting then costs one commit.
    async fn commit_and_send(
        self: Box<Self>,
        queue: &dyn Queue,
        job: &[u8],
        attributes: BTreeMap<String, String>,
    ) -> Result<u64, StoreError> {
        commit_then_send(self, queue, job, attributes).await
    }
}

/// [`BlobWriter::commit_and_send`] in two steps: for backends that cannot do it in one.
pub async fn commit_then_send<W: BlobWriter + ?Sized>(
    writer: Box<W>,
    queue: &dyn Queue,
    job: &[u8],
    attributes: BTreeMap<String, String>,
) -> Result<u64, StoreError> {
    let size = writer.commit().await?;
    queue.send(job, attributes, Duration::ZERO).await?;
    Ok(size)
}

/// [`Queue::delete_after`] in two steps: for backends that cannot do it in one.
pub async fn put_then_delete<Q: Queue + ?Sized>(
    queue: &Q,
    receipt: &str,
    ledger: &dyn Ledger,
    records: Vec<BlindWrite>,
) -> Result<(), StoreError> {
    ledger.put_many(records).await?;
    queue.delete(receipt).await
}

/// A message taken from a queue. It stays invisible to other consumers until its visibility
/// timeout ends, then comes back unless deleted with its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    pub receipt: String,
    pub body: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    /// 1 on first delivery.
    pub receive_count: u32,
}

/// One queue with SQS semantics. After `max_receives` receptions a message moves to the
/// queue's dead-letter queue instead of being delivered again.
/// `Any` lets a backend recognise its own queue (see [`BlobWriter::commit_and_send`]).
#[async_trait]
pub trait Queue: std::any::Any + Send + Sync + 'static {
    fn name(&self) -> &str;
    async fn send(
        &self,
        body: &[u8],
        attributes: BTreeMap<String, String>,
        delay: Duration,
    ) -> Result<String, StoreError>;
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, StoreError>;
    async fn delete(&self, receipt: &str) -> Result<(), StoreError>;
    /// Writes `records` to `ledger`, then deletes the message: a finished job's last step.
    /// This default does one after the other (the message stays if the writes fail). A
    /// backend whose queue and ledger share one transaction does both in one commit, and
    /// neither if either fails.
    async fn delete_after(
        &self,
        receipt: &str,
        ledger: &dyn Ledger,
        records: Vec<BlindWrite>,
    ) -> Result<(), StoreError> {
        put_then_delete(self, receipt, ledger, records).await
    }
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), StoreError>;
}

/// Key-value records in named tables, with a conditional write for idempotency. `Any` lets
/// a backend recognise its own ledger (see [`Queue::delete_after`]).
#[async_trait]
pub trait Ledger: std::any::Any + Send + Sync + 'static {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn put(&self, table: &str, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Writes only if `key` is absent; returns whether it wrote.
    async fn put_if_absent(&self, table: &str, key: &str, value: &[u8])
    -> Result<bool, StoreError>;
    /// Writes only if the current value is exactly `expected` (compare-and-swap); returns
    /// whether it wrote. With `put_if_absent` this lets concurrent workers claim a record.
    async fn replace_if(
        &self,
        table: &str,
        key: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError>;
    async fn delete(&self, table: &str, key: &str) -> Result<(), StoreError>;
    /// All records whose key starts with `prefix`, in key order.
    async fn scan(&self, table: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Writes `value` unless `key` exists, when the caller does not need to know which
    /// happened (a record made once however often its stage runs). A ledger that batches
    /// writes may hold it back until its next flush, like a `put`.
    async fn ensure(&self, table: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put_if_absent(table, key, value).await.map(|_| ())
    }
    /// Writes that nobody waits on one by one (a job's timeline lines and states, sent at
    /// its checkpoint): each a `put`, or an `ensure` when `only_if_absent`. Not atomic as a
    /// whole; on error some may have been written. This default sends them side by side; a
    /// backend that can take them in one request overrides it.
    async fn put_many(&self, writes: Vec<BlindWrite>) -> Result<(), StoreError> {
        futures::future::try_join_all(writes.iter().map(|w| async move {
            if w.only_if_absent {
                self.ensure(&w.table, &w.key, &w.value).await
            } else {
                self.put(&w.table, &w.key, &w.value).await
            }
        }))
        .await
        .map(|_| ())
    }
    /// Adds `by` to the counter at `key` (decimal ASCII; absent or unreadable counts as 0) and
    /// returns the new total. Atomic: concurrent increments are never lost. This default is a
    /// compare-and-swap loop; a backend that can add in place (SQLite's one writer, DynamoDB's
    /// `ADD`) overrides it so that a hot counter costs one write and no retries.
    async fn increment(&self, table: &str, key: &str, by: u64) -> Result<u64, StoreError> {
        for _ in 0..100 {
            let old = self.get(table, key).await?;
            let total = old.as_deref().map(counter_value).unwrap_or(0) + by;
            let new = total.to_string();
            let wrote = match &old {
                Some(old) => self.replace_if(table, key, old, new.as_bytes()).await?,
                None => self.put_if_absent(table, key, new.as_bytes()).await?,
            };
            if wrote {
                return Ok(total);
            }
        }
        Err(StoreError::Backend(format!(
            "counter {table}/{key} is contended"
        )))
    }
}

/// One write of [`Ledger::put_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlindWrite {
    pub table: String,
    pub key: String,
    pub value: Vec<u8>,
    /// Only if the key is absent (an `ensure`), else a `put`.
    pub only_if_absent: bool,
}

/// The value of a counter record written by [`Ledger::increment`]; anything else counts as 0.
pub fn counter_value(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
