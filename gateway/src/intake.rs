//! Durable accept: a message is acknowledged only once its body and its queue entry are
//! both durable. Works over any backend's ports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baton_domain::{Envelope, QueueId};
use baton_smtp::{Reply, canned};
use baton_store::{BlobStore, BlobWriter, Queue, StoreError};

#[derive(Clone)]
pub struct Intake {
    blobs: Arc<dyn BlobStore>,
    queue: Arc<dyn Queue>,
    timeout: Duration,
}

impl Intake {
    pub fn new(blobs: Arc<dyn BlobStore>, queue: Arc<dyn Queue>, timeout: Duration) -> Self {
        Intake {
            blobs,
            queue,
            timeout,
        }
    }

    pub async fn create(&self, id: &QueueId) -> Result<Box<dyn BlobWriter>, StoreError> {
        self.blobs.create(&id.to_string()).await
    }

    /// Commits the body and enqueues the envelope (one commit where the backend can). On any
    /// failure the client gets 451 and no queue entry exists; a body whose enqueue failed is
    /// deleted.
    pub async fn commit(
        &self,
        writer: Box<dyn BlobWriter>,
        envelope: &Envelope,
    ) -> Result<QueueId, Reply> {
        let id = envelope.queue_id;
        let body = serde_json::to_vec(envelope).map_err(|e| {
            tracing::error!(error = %e, "cannot serialize envelope");
            canned::storage_failure()
        })?;
        let mut attributes = BTreeMap::from([("queue_id".to_string(), id.to_string())]);
        if let Some(t) = &envelope.tenant {
            attributes.insert("tenant".into(), t.0.clone());
        }
        let work = async {
            if let Err(e) = writer
                .commit_and_send(self.queue.as_ref(), &body, attributes)
                .await
            {
                // Definitely not queued: the body, if it was committed, must not linger.
                if let Err(de) = self.blobs.delete(&id.to_string()).await {
                    tracing::warn!(error = %de, "cannot delete body of failed message");
                }
                return Err(e);
            }
            Ok(())
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(())) => Ok(id),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "message not accepted: storage failed");
                Err(canned::storage_failure())
            }
            Err(_) => {
                // Unknown whether the queue entry landed: keep the body, answer 451. At worst
                // the client retries and the message is delivered twice, never lost.
                tracing::error!(timeout = ?self.timeout, "message not acknowledged: storage too slow");
                Err(canned::storage_failure())
            }
        }
    }
}
