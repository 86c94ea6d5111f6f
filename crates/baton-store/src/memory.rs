//! In-memory fakes of the ports, for unit tests of code that uses them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{BlobStore, BlobWriter, Ledger, Queue, QueueMessage, StoreError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default, Clone)]
pub struct MemoryBlobStore {
    blobs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

struct MemoryBlobWriter {
    key: String,
    data: Vec<u8>,
    blobs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, StoreError> {
        crate::check_key(key)?;
        Ok(Box::new(MemoryBlobWriter {
            key: key.to_string(),
            data: Vec::new(),
            blobs: self.blobs.clone(),
        }))
    }

    async fn read(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        lock(&self.blobs)
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        lock(&self.blobs).remove(key);
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for MemoryBlobWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.data.extend_from_slice(chunk);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<u64, StoreError> {
        let len = self.data.len() as u64;
        lock(&self.blobs).insert(self.key, self.data);
        Ok(len)
    }

    async fn abort(self: Box<Self>) {}
}

struct Entry {
    message: QueueMessage,
    visible_at: Instant,
}

#[derive(Clone)]
pub struct MemoryQueue {
    name: String,
    max_receives: u32,
    dead_letter: Option<Arc<MemoryQueue>>,
    entries: Arc<Mutex<Vec<Entry>>>,
    counter: Arc<Mutex<u64>>,
}

impl MemoryQueue {
    pub fn new(name: &str, max_receives: u32, dead_letter: Option<Arc<MemoryQueue>>) -> Self {
        MemoryQueue {
            name: name.to_string(),
            max_receives,
            dead_letter,
            entries: Arc::default(),
            counter: Arc::default(),
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn next_id(&self, prefix: &str) -> String {
        let mut c = lock(&self.counter);
        *c += 1;
        format!("{prefix}-{}", *c)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(
        &self,
        body: &[u8],
        attributes: BTreeMap<String, String>,
        delay: Duration,
    ) -> Result<String, StoreError> {
        let id = self.next_id("m");
        lock(&self.entries).push(Entry {
            message: QueueMessage {
                id: id.clone(),
                receipt: String::new(),
                body: body.to_vec(),
                attributes,
                receive_count: 0,
            },
            visible_at: Instant::now() + delay,
        });
        Ok(id)
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, StoreError> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut dead = Vec::new();
        {
            let mut entries = lock(&self.entries);
            let mut i = 0;
            while i < entries.len() && out.len() < max {
                if entries[i].visible_at > now {
                    i += 1;
                    continue;
                }
                if self.dead_letter.is_some()
                    && entries[i].message.receive_count >= self.max_receives
                {
                    dead.push(entries.remove(i).message);
                    continue;
                }
                let receipt = self.next_id("r");
                let e = &mut entries[i];
                e.message.receive_count += 1;
                e.message.receipt = receipt;
                e.visible_at = now + visibility;
                out.push(e.message.clone());
                i += 1;
            }
        }
        if let Some(dlq) = &self.dead_letter {
            for m in dead {
                dlq.send(&m.body, m.attributes, Duration::ZERO).await?;
            }
        }
        Ok(out)
    }

    async fn delete(&self, receipt: &str) -> Result<(), StoreError> {
        lock(&self.entries).retain(|e| e.message.receipt != receipt);
        Ok(())
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), StoreError> {
        let mut entries = lock(&self.entries);
        let e = entries
            .iter_mut()
            .find(|e| e.message.receipt == receipt)
            .ok_or_else(|| StoreError::NotFound(receipt.to_string()))?;
        e.visible_at = Instant::now() + timeout;
        Ok(())
    }
}

/// (table, key) to value.
type Records = BTreeMap<(String, String), Vec<u8>>;

#[derive(Default, Clone)]
pub struct MemoryLedger {
    tables: Arc<Mutex<Records>>,
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.tables)
            .get(&(table.to_string(), key.to_string()))
            .cloned())
    }

    async fn put(&self, table: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        lock(&self.tables).insert((table.to_string(), key.to_string()), value.to_vec());
        Ok(())
    }

    async fn put_if_absent(
        &self,
        table: &str,
        key: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let mut t = lock(&self.tables);
        let k = (table.to_string(), key.to_string());
        if t.contains_key(&k) {
            return Ok(false);
        }
        t.insert(k, value.to_vec());
        Ok(true)
    }

    async fn replace_if(
        &self,
        table: &str,
        key: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let mut t = lock(&self.tables);
        match t.get_mut(&(table.to_string(), key.to_string())) {
            Some(current) if current.as_slice() == expected => {
                *current = value.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, table: &str, key: &str) -> Result<(), StoreError> {
        lock(&self.tables).remove(&(table.to_string(), key.to_string()));
        Ok(())
    }

    async fn scan(&self, table: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(lock(&self.tables)
            .iter()
            .filter(|((t, k), _)| t == table && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn memory_fakes_behave_like_the_real_backends() {
        conformance::blob_store(&MemoryBlobStore::default()).await;
        conformance::ledger(&MemoryLedger::default()).await;
        let dlq = Arc::new(MemoryQueue::new("t-dlq", 0, None));
        let q = MemoryQueue::new("t", 2, Some(dlq.clone()));
        conformance::queue(&q, dlq.as_ref()).await;
        conformance::accept(&MemoryBlobStore::default(), &MemoryQueue::new("a", 2, None)).await;
    }
}
