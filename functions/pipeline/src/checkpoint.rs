//! A ledger that holds a stage's record writes back and sends them together, so a message
//! carried through policy, sign and deliver in one job costs a few storage round trips
//! rather than one per timeline line and state change.
//!
//! What is held back: `put` and `ensure` (writes whose outcome nobody waits for). What goes
//! straight through: reads, conditional writes, increments and deletes; those that write
//! take the held writes along at the same moment (all sent before they are awaited, so the
//! embedded writer commits them in one group and DynamoDB runs them side by side). A read
//! of a key that is held answers from what is held, or, for an `ensure`, sends first.
//!
//! The fused path flushes at each stage result and before anything goes on a queue
//! ([`FlushFirst`]), so whatever a queued job names is recorded before the job exists, as
//! when each write was awaited on its own.
//!
//! An `ensure` then a compare-and-swap of the same record (policy creates a recipient's
//! state, delivery claims it) is one conditional create when the job saw the record missing:
//! if another copy of the job created it meanwhile, the create fails and the caller reads
//! and tries again, as after any lost race.
//!
//! Reads of the tables that say how to treat mail rather than what happened to it (domains,
//! tenants, DKIM keys, event destinations: [`STEADY_TABLES`]) are remembered for the job's
//! lifetime, so its steps do not read the same domain record three times. A change to them
//! reaches jobs that start after it, as it did when each step read on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_store::{BlindWrite, Ledger, Queue, QueueMessage, StoreError};
use futures::future::join;

#[derive(Debug, Clone)]
enum Held {
    Put(Vec<u8>),
    Ensure(Vec<u8>),
}

/// Writes held back, in the order they were made; one entry per key (the later write wins,
/// except that an `ensure` after a held `put` of the same key changes nothing).
#[derive(Default)]
struct Buffer {
    order: Vec<(String, String)>,
    held: BTreeMap<(String, String), Held>,
    /// Keys this job read and found missing: an `ensure` of one of them is read back as
    /// written without being sent, and a compare-and-swap on that value becomes a create
    /// (see [`Checkpoint::replace_if`]).
    absent: BTreeSet<(String, String)>,
}

/// Tables a job reads once: see the module's documentation.
pub const STEADY_TABLES: [&str; 4] = [
    baton_store::tables::DOMAINS,
    crate::quota::TENANTS,
    crate::dkim::TABLE,
    crate::event_destinations::TABLE,
];

type Scanned = Vec<(String, Vec<u8>)>;

#[derive(Default)]
struct Memo {
    gets: BTreeMap<(String, String), Option<Vec<u8>>>,
    scans: BTreeMap<(String, String), Scanned>,
}

impl Memo {
    fn forget(&mut self, table: &str) {
        self.gets.retain(|(t, _), _| t != table);
        self.scans.retain(|(t, _), _| t != table);
    }
}

pub struct Checkpoint {
    inner: Arc<dyn Ledger>,
    buffer: Mutex<Buffer>,
    memo: Mutex<Memo>,
}

impl Checkpoint {
    pub fn new(inner: Arc<dyn Ledger>) -> Self {
        Checkpoint {
            inner,
            buffer: Mutex::default(),
            memo: Mutex::default(),
        }
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn steady(table: &str) -> bool {
        STEADY_TABLES.contains(&table)
    }

    /// A write to a steady table (rare in a stage) makes the job read it again.
    fn wrote(&self, table: &str) {
        if Self::steady(table) {
            self.memo().forget(table);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self, table: &str, key: &str, write: Held) {
        self.wrote(table);
        let mut buffer = self.lock();
        let id = (table.to_string(), key.to_string());
        match (buffer.held.get(&id), &write) {
            (None, _) => {
                buffer.order.push(id.clone());
                buffer.held.insert(id, write);
            }
            (Some(Held::Put(_)), Held::Ensure(_)) | (Some(Held::Ensure(_)), Held::Ensure(_)) => {}
            (Some(_), Held::Put(_)) => {
                buffer.held.insert(id, write);
            }
        }
    }

    /// How many writes are held: for tests and logs.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    /// Sends every held write; on failure they are lost to this job, which then fails as a
    /// whole and is redone.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let writes = self.take_held();
        if writes.is_empty() {
            return Ok(());
        }
        self.inner.put_many(writes).await
    }

    /// Sends every held write, then deletes the job's message from `queue` (one commit where
    /// the backend can): the end of a job that finished. On failure the message stays.
    pub async fn flush_and_delete(
        &self,
        queue: &dyn Queue,
        receipt: &str,
    ) -> Result<(), StoreError> {
        queue
            .delete_after(receipt, self.inner.as_ref(), self.take_held())
            .await
    }

    fn take_held(&self) -> Vec<BlindWrite> {
        let writes = {
            let mut buffer = self.lock();
            let order = std::mem::take(&mut buffer.order);
            let mut held = std::mem::take(&mut buffer.held);
            order
                .into_iter()
                .filter_map(|id| held.remove(&id).map(|w| (id, w)))
                .collect::<Vec<_>>()
        };
        writes
            .into_iter()
            .map(|((table, key), write)| match write {
                Held::Put(value) => BlindWrite {
                    table,
                    key,
                    value,
                    only_if_absent: false,
                },
                Held::Ensure(value) => BlindWrite {
                    table,
                    key,
                    value,
                    only_if_absent: true,
                },
            })
            .collect()
    }

    /// Runs `op` together with the held writes (they are sent first).
    async fn with_flush<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let (flushed, result) = join(self.flush(), op).await;
        flushed?;
        result
    }

    fn held_for(&self, table: &str, key: &str) -> Option<Held> {
        self.lock()
            .held
            .get(&(table.to_string(), key.to_string()))
            .cloned()
    }

    fn seen_absent(&self, table: &str, key: &str) -> bool {
        self.lock()
            .absent
            .contains(&(table.to_string(), key.to_string()))
    }

    fn holds_under(&self, table: &str, prefix: &str) -> bool {
        self.lock()
            .held
            .keys()
            .any(|(t, k)| t == table && k.starts_with(prefix))
    }
}

#[async_trait::async_trait]
impl Ledger for Checkpoint {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.held_for(table, key) {
            Some(Held::Put(value)) => Ok(Some(value)),
            // Seen missing: what the ensure will write is what a reader of this job sees; only
            // a conditional write may act on it (`replace_if` makes that a create).
            Some(Held::Ensure(value)) if self.seen_absent(table, key) => Ok(Some(value)),
            // Whether an ensure wrote decides what is there: make it now, with the rest.
            Some(Held::Ensure(value)) => {
                self.lock()
                    .held
                    .remove(&(table.to_string(), key.to_string()));
                if self
                    .with_flush(self.inner.put_if_absent(table, key, &value))
                    .await?
                {
                    Ok(Some(value))
                } else {
                    self.inner.get(table, key).await
                }
            }
            None if Self::steady(table) => {
                let id = (table.to_string(), key.to_string());
                if let Some(value) = self.memo().gets.get(&id) {
                    return Ok(value.clone());
                }
                let value = self.inner.get(table, key).await?;
                self.memo().gets.insert(id, value.clone());
                Ok(value)
            }
            None => {
                let value = self.inner.get(table, key).await?;
                if value.is_none() {
                    self.lock()
                        .absent
                        .insert((table.to_string(), key.to_string()));
                }
                Ok(value)
            }
        }
    }

    async fn put(&self, table: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.hold(table, key, Held::Put(value.to_vec()));
        Ok(())
    }

    async fn ensure(&self, table: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.hold(table, key, Held::Ensure(value.to_vec()));
        Ok(())
    }

    async fn put_if_absent(
        &self,
        table: &str,
        key: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        self.wrote(table);
        self.with_flush(self.inner.put_if_absent(table, key, value))
            .await
    }

    async fn replace_if(
        &self,
        table: &str,
        key: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        self.wrote(table);
        let id = (table.to_string(), key.to_string());
        let folded = {
            let mut buffer = self.lock();
            let fold = buffer.absent.contains(&id)
                && matches!(buffer.held.get(&id), Some(Held::Ensure(v)) if v == expected);
            if fold {
                buffer.held.remove(&id);
                buffer.absent.remove(&id);
            }
            fold
        };
        if folded {
            // Replacing what the held ensure would create: create the new value instead. If the
            // record appeared meanwhile, the swap is lost, as it would have been.
            return self
                .with_flush(self.inner.put_if_absent(table, key, value))
                .await;
        }
        self.with_flush(self.inner.replace_if(table, key, expected, value))
            .await
    }

    async fn increment(&self, table: &str, key: &str, by: u64) -> Result<u64, StoreError> {
        self.wrote(table);
        self.with_flush(self.inner.increment(table, key, by)).await
    }

    async fn delete(&self, table: &str, key: &str) -> Result<(), StoreError> {
        self.wrote(table);
        self.with_flush(self.inner.delete(table, key)).await
    }

    async fn scan(&self, table: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if self.holds_under(table, prefix) {
            self.flush().await?;
        }
        if !Self::steady(table) {
            return self.inner.scan(table, prefix).await;
        }
        let id = (table.to_string(), prefix.to_string());
        if let Some(rows) = self.memo().scans.get(&id) {
            return Ok(rows.clone());
        }
        let rows = self.inner.scan(table, prefix).await?;
        self.memo().scans.insert(id, rows.clone());
        Ok(rows)
    }
}

/// A queue that sends its checkpoint's held writes before each message: a job never names
/// a record that is not there yet.
pub struct FlushFirst {
    pub checkpoint: Arc<Checkpoint>,
    pub queue: Arc<dyn Queue>,
}

#[async_trait::async_trait]
impl Queue for FlushFirst {
    fn name(&self) -> &str {
        self.queue.name()
    }

    async fn send(
        &self,
        body: &[u8],
        attributes: BTreeMap<String, String>,
        delay: Duration,
    ) -> Result<String, StoreError> {
        self.checkpoint.flush().await?;
        self.queue.send(body, attributes, delay).await
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, StoreError> {
        self.queue.receive(max, visibility).await
    }

    async fn delete(&self, receipt: &str) -> Result<(), StoreError> {
        self.queue.delete(receipt).await
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), StoreError> {
        self.queue.change_visibility(receipt, timeout).await
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn steady_tables_are_read_once_per_job_and_again_after_a_write() {
        let inner = Arc::new(MemoryLedger::default());
        let cp = Checkpoint::new(inner.clone());
        let domains = baton_store::tables::DOMAINS;
        inner.put(domains, "acme.test", b"acme").await.expect("put");
        assert_eq!(
            cp.get(domains, "acme.test").await.expect("get"),
            Some(b"acme".to_vec())
        );
        inner
            .put(domains, "acme.test", b"other")
            .await
            .expect("behind its back");
        assert_eq!(
            cp.get(domains, "acme.test").await.expect("get"),
            Some(b"acme".to_vec()),
            "remembered for the job"
        );
        cp.put_if_absent(domains, "new.test", b"x")
            .await
            .expect("cas");
        assert_eq!(
            cp.get(domains, "acme.test").await.expect("get"),
            Some(b"other".to_vec()),
            "a write to the table makes the job read it again"
        );
        // Records of what happens to mail are never remembered.
        inner.put("recipients", "k", b"1").await.expect("put");
        cp.get("recipients", "k").await.expect("get");
        inner.put("recipients", "k", b"2").await.expect("put");
        assert_eq!(
            cp.get("recipients", "k").await.expect("get"),
            Some(b"2".to_vec())
        );
    }

    use baton_store::memory::{MemoryLedger, MemoryQueue};

    use super::*;

    #[tokio::test]
    async fn the_last_flush_writes_what_is_held_then_deletes_the_message() {
        let inner = Arc::new(MemoryLedger::default());
        let cp = Checkpoint::new(inner.clone());
        let queue = MemoryQueue::new("q", 5, None);
        queue
            .send(b"job", Default::default(), Duration::ZERO)
            .await
            .expect("send");
        let [msg]: [QueueMessage; 1] = queue
            .receive(1, Duration::ZERO)
            .await
            .expect("receive")
            .try_into()
            .expect("one");
        cp.put("t", "k", b"v").await.expect("held");
        assert_eq!(inner.get("t", "k").await.expect("get"), None, "held back");
        cp.flush_and_delete(&queue, &msg.receipt)
            .await
            .expect("flush and delete");
        assert_eq!(cp.held(), 0);
        assert_eq!(inner.get("t", "k").await.expect("get"), Some(b"v".to_vec()));
        let left = queue.receive(1, Duration::ZERO).await.expect("receive");
        assert!(left.is_empty(), "the message is deleted");
    }

    #[tokio::test]
    async fn held_writes_are_read_back_and_sent_at_the_flush() {
        let inner = Arc::new(MemoryLedger::default());
        let cp = Checkpoint::new(inner.clone());
        cp.put("t", "a", b"1").await.expect("put");
        cp.put("t", "a", b"2").await.expect("put again");
        cp.ensure("t", "a", b"3").await.expect("ensure after put");
        cp.ensure("t", "b", b"first").await.expect("ensure");
        assert_eq!(cp.held(), 2);
        assert_eq!(inner.get("t", "a").await.expect("get"), None, "held back");
        assert_eq!(cp.get("t", "a").await.expect("get"), Some(b"2".to_vec()));
        cp.flush().await.expect("flush");
        assert_eq!(inner.get("t", "a").await.expect("get"), Some(b"2".to_vec()));
        assert_eq!(
            inner.get("t", "b").await.expect("get"),
            Some(b"first".to_vec())
        );
        // An ensure of a key that exists changes nothing, held or not.
        cp.ensure("t", "b", b"second").await.expect("ensure");
        assert_eq!(
            cp.get("t", "b").await.expect("get"),
            Some(b"first".to_vec())
        );
        assert_eq!(cp.held(), 0, "reading an ensured key sent it");
    }

    #[tokio::test]
    async fn creating_a_missing_record_then_swapping_it_is_one_create() {
        let inner = Arc::new(MemoryLedger::default());
        let cp = Checkpoint::new(inner.clone());
        assert_eq!(cp.get("r", "id/a").await.expect("get"), None);
        cp.ensure("r", "id/a", b"pending").await.expect("ensure");
        let seen = cp.get("r", "id/a").await.expect("get");
        assert_eq!(seen, Some(b"pending".to_vec()));
        assert_eq!(
            inner.get("r", "id/a").await.expect("get"),
            None,
            "not sent yet"
        );
        assert!(
            cp.replace_if("r", "id/a", b"pending", b"claimed")
                .await
                .expect("cas")
        );
        assert_eq!(cp.held(), 0);
        assert_eq!(
            inner.get("r", "id/a").await.expect("get"),
            Some(b"claimed".to_vec()),
            "the claim is the record's first write"
        );

        // Another copy of the job created it in between: the swap is lost, the caller reads
        // what is there, and its next swap is an ordinary one.
        assert_eq!(cp.get("r", "id/b").await.expect("get"), None);
        cp.ensure("r", "id/b", b"pending").await.expect("ensure");
        inner
            .put("r", "id/b", b"claimed by the other copy")
            .await
            .expect("put");
        cp.get("r", "id/b").await.expect("get");
        assert!(
            !cp.replace_if("r", "id/b", b"pending", b"claimed")
                .await
                .expect("cas")
        );
        assert_eq!(
            cp.get("r", "id/b").await.expect("get"),
            Some(b"claimed by the other copy".to_vec())
        );
        assert_eq!(
            inner.get("r", "id/b").await.expect("get"),
            Some(b"claimed by the other copy".to_vec()),
            "the lost swap changed nothing"
        );
    }

    #[tokio::test]
    async fn conditional_writes_and_scans_see_what_was_held() {
        let inner = Arc::new(MemoryLedger::default());
        let cp = Checkpoint::new(inner.clone());
        cp.put("t", "k/1", b"x").await.expect("put");
        assert_eq!(cp.scan("t", "k/").await.expect("scan").len(), 1);
        cp.put("t", "k/2", b"y").await.expect("put");
        assert!(!cp.put_if_absent("t", "k/2", b"z").await.expect("cas"));
        assert_eq!(
            cp.held(),
            0,
            "a conditional write takes the held writes along"
        );
        assert_eq!(
            inner.get("t", "k/2").await.expect("get"),
            Some(b"y".to_vec())
        );
    }

    #[tokio::test]
    async fn a_queued_job_never_precedes_the_records_it_names() {
        let inner = Arc::new(MemoryLedger::default());
        let cp = Arc::new(Checkpoint::new(inner.clone()));
        let queue = FlushFirst {
            checkpoint: cp.clone(),
            queue: Arc::new(MemoryQueue::new("bounce", 5, None)),
        };
        cp.put("recipients", "id/a@b", b"failed")
            .await
            .expect("put");
        queue
            .send(b"job", BTreeMap::new(), Duration::ZERO)
            .await
            .expect("send");
        assert_eq!(
            inner.get("recipients", "id/a@b").await.expect("get"),
            Some(b"failed".to_vec())
        );
    }
}
