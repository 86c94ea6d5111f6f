//! In-process workers for `baton serve`: each polls one embedded queue and feeds batches to
//! its stage through the shared driver.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_store::{Queue, QueueMessage};
use tokio::sync::watch;

use crate::driver::process_batch;
use crate::{Disposition, StageError};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub batch: usize,
    /// How long a received message stays invisible to other workers: longer than a stage
    /// can take on one message.
    pub visibility: Duration,
    /// Pause between polls of an empty queue.
    pub idle_poll: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch: 16,
            visibility: Duration::from_secs(300),
            idle_poll: Duration::from_millis(200),
        }
    }
}

/// Runs until `shutdown` turns true; the batch in hand is finished first.
pub async fn run<F, Fut>(
    queue: Arc<dyn Queue>,
    dead_letter: Arc<dyn Queue>,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(QueueMessage) -> Fut,
    Fut: Future<Output = Result<Disposition, StageError>>,
{
    tracing::debug!(queue = queue.name(), "worker started");
    while !*shutdown.borrow() {
        let batch = match queue.receive(config.batch, config.visibility).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(queue = queue.name(), error = %e, "cannot poll queue");
                Vec::new()
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(config.idle_poll) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        process_batch(queue.as_ref(), dead_letter.as_ref(), batch, &handler).await;
    }
    tracing::debug!(queue = queue.name(), "worker stopped");
}
