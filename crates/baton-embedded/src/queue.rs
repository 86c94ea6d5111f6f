//! Queues with SQS semantics in SQLite.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_store::{BlindWrite, Ledger, Queue, QueueMessage, StoreError};
use rusqlite::params;

use crate::writer::{Op, OpResult};
use crate::{Inner, SqliteLedger, backend_err};

#[derive(Clone)]
pub struct SqliteQueue {
    inner: Arc<Inner>,
    name: String,
    max_receives: u32,
    dead_letter: Option<String>,
}

impl SqliteQueue {
    pub(crate) fn new(
        inner: Arc<Inner>,
        name: &str,
        max_receives: u32,
        dead_letter: Option<&str>,
    ) -> Self {
        SqliteQueue {
            inner,
            name: name.to_string(),
            max_receives,
            dead_letter: dead_letter.map(str::to_string),
        }
    }
}

impl SqliteQueue {
    pub(crate) fn send_op(
        &self,
        body: &[u8],
        attributes: &BTreeMap<String, String>,
        delay: Duration,
    ) -> Result<Op, StoreError> {
        Ok(Op::Send {
            queue: self.name.clone(),
            body: body.to_vec(),
            attributes: serde_json::to_string(attributes).map_err(backend_err)?,
            message: attributes.get("queue_id").cloned(),
            delay,
        })
    }

    /// Whether this queue's writes go through `inner`'s writer (the same database).
    pub(crate) fn shares(&self, inner: &Arc<Inner>) -> bool {
        Arc::ptr_eq(&self.inner, inner)
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(
        &self,
        body: &[u8],
        attributes: BTreeMap<String, String>,
        delay: Duration,
    ) -> Result<String, StoreError> {
        let op = self.send_op(body, &attributes, delay)?;
        match self.inner.writer.call(op).await? {
            OpResult::Id(id) => Ok(id),
            other => Err(backend_err(format!("unexpected writer result {other:?}"))),
        }
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, StoreError> {
        let op = Op::Receive {
            queue: self.name.clone(),
            max,
            visibility,
            max_receives: self.max_receives,
            dead_letter: self.dead_letter.clone(),
        };
        match self.inner.writer.call(op).await? {
            OpResult::Messages(m) => Ok(m),
            other => Err(backend_err(format!("unexpected writer result {other:?}"))),
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), StoreError> {
        let op = Op::DeleteMessage {
            queue: self.name.clone(),
            receipt: receipt.to_string(),
        };
        self.inner.writer.call(op).await.map(|_| ())
    }

    async fn delete_after(
        &self,
        receipt: &str,
        ledger: &dyn Ledger,
        records: Vec<BlindWrite>,
    ) -> Result<(), StoreError> {
        let any: &dyn Any = ledger;
        match any.downcast_ref::<SqliteLedger>() {
            // One writer request, one transaction: the records and the delete, or neither.
            Some(same) if same.shares(&self.inner) => {
                let mut ops = same.put_ops(records)?;
                ops.push(Op::DeleteMessage {
                    queue: self.name.clone(),
                    receipt: receipt.to_string(),
                });
                self.inner.writer.call(Op::Atomic(ops)).await.map(|_| ())
            }
            _ => baton_store::put_then_delete(self, receipt, ledger, records).await,
        }
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), StoreError> {
        let op = Op::ChangeVisibility {
            queue: self.name.clone(),
            receipt: receipt.to_string(),
            timeout,
        };
        self.inner.writer.call(op).await.map(|_| ())
    }
}

/// A queued message as `baton queue list` shows it.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub id: String,
    pub body: Vec<u8>,
    /// Unix milliseconds.
    pub visible_at: i64,
    pub receive_count: u32,
    /// Received and not yet deleted or returned.
    pub in_flight: bool,
}

pub(crate) async fn list(inner: &Arc<Inner>, queue: &str) -> Result<Vec<QueueEntry>, StoreError> {
    let queue = queue.to_string();
    let now = inner.options.clock.now_ms();
    inner
        .read(move |conn, _| {
            let mut stmt = conn
                .prepare(
                    "SELECT id, body, visible_at, receive_count, receipt IS NOT NULL
                     FROM queue_messages WHERE queue = ?1 ORDER BY sent_at, rowid",
                )
                .map_err(backend_err)?;
            let rows = stmt
                .query_map(params![queue], |r| {
                    let visible_at: i64 = r.get(2)?;
                    let received: bool = r.get(4)?;
                    Ok(QueueEntry {
                        id: r.get(0)?,
                        body: r.get(1)?,
                        visible_at,
                        receive_count: r.get(3)?,
                        in_flight: received && visible_at > now,
                    })
                })
                .map_err(backend_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend_err)
        })
        .await
}
