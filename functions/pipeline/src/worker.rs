//! In-process workers for `baton serve`: each polls one embedded queue and feeds batches to
//! its stage through the shared driver.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_store::{Queue, QueueMessage};
use tokio::sync::watch;

use crate::driver::process_batch;
use crate::poll_outage::{OutageLog, PollBackoff, note};
use crate::{Disposition, StageError};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub batch: usize,
    /// How long a received message stays invisible to other workers: longer than a stage
    /// can take on one message.
    pub visibility: Duration,
    /// Pause between polls of an empty queue. A poll that fails is retried with backoff
    /// instead (see [`PollBackoff`]).
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
///
/// While the queue cannot be polled the worker backs off on its own, and reports each poll
/// to `outages`, the log that all the workers of the queue share, so an outage is logged
/// once per queue (with a reminder now and then, and a line when it ends) rather than once
/// per poll.
pub async fn run<F, Fut>(
    queue: Arc<dyn Queue>,
    dead_letter: Arc<dyn Queue>,
    config: WorkerConfig,
    outages: Arc<Mutex<OutageLog>>,
    mut shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(QueueMessage) -> Fut,
    Fut: Future<Output = Result<Disposition, StageError>>,
{
    tracing::debug!(queue = queue.name(), "worker started");
    let mut backoff = PollBackoff::new(rand::random());
    while !*shutdown.borrow() {
        let sent = Instant::now();
        let batch = match queue.receive(config.batch, config.visibility).await {
            Ok(batch) => {
                backoff.succeeded();
                note(&outages, |log| log.succeeded(sent, Instant::now()));
                batch
            }
            Err(e) => {
                note(&outages, |log| {
                    log.failed(sent, Instant::now(), &e.to_string())
                });
                pause(backoff.failed(), &mut shutdown).await;
                continue;
            }
        };
        if batch.is_empty() {
            pause(config.idle_poll, &mut shutdown).await;
            continue;
        }
        process_batch(queue.as_ref(), dead_letter.as_ref(), batch, &handler).await;
    }
    tracing::debug!(queue = queue.name(), "worker stopped");
}

/// Waits `pause`, or less if `shutdown` changes meanwhile.
async fn pause(pause: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = shutdown.changed() => {}
    }
}

/// Logs what the queue's outage log makes of one poll, if anything.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use baton_store::StoreError;
    use baton_store::memory::MemoryQueue;
    use tokio::sync::Notify;

    use super::*;

    /// A queue whose first `unreachable_for` polls fail.
    struct Flaky {
        inner: MemoryQueue,
        unreachable_for: usize,
        polls: AtomicUsize,
        polled: Notify,
    }

    impl Flaky {
        fn new(unreachable_for: usize) -> Arc<Self> {
            Arc::new(Flaky {
                inner: MemoryQueue::new("intake", 5, None),
                unreachable_for,
                polls: AtomicUsize::new(0),
                polled: Notify::new(),
            })
        }

        fn polls(&self) -> usize {
            self.polls.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl Queue for Flaky {
        fn name(&self) -> &str {
            self.inner.name()
        }

        async fn send(
            &self,
            body: &[u8],
            attributes: BTreeMap<String, String>,
            delay: Duration,
        ) -> Result<String, StoreError> {
            self.inner.send(body, attributes, delay).await
        }

        async fn receive(
            &self,
            max: usize,
            visibility: Duration,
        ) -> Result<Vec<QueueMessage>, StoreError> {
            let poll = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            self.polled.notify_one();
            if poll <= self.unreachable_for {
                return Err(StoreError::Backend("connection refused".into()));
            }
            self.inner.receive(max, visibility).await
        }

        async fn delete(&self, receipt: &str) -> Result<(), StoreError> {
            self.inner.delete(receipt).await
        }

        async fn change_visibility(
            &self,
            receipt: &str,
            timeout: Duration,
        ) -> Result<(), StoreError> {
            self.inner.change_visibility(receipt, timeout).await
        }
    }

    fn dead_letters() -> Arc<dyn Queue> {
        Arc::new(MemoryQueue::new("intake-dlq", 0, None))
    }

    fn outage_log() -> Arc<Mutex<OutageLog>> {
        Arc::new(Mutex::new(OutageLog::new("intake")))
    }

    // Paused time: the backoff passes as soon as nothing else can run.
    #[tokio::test(start_paused = true)]
    async fn a_worker_outlasts_an_outage_then_handles_the_queue() {
        let queue = Flaky::new(3);
        queue
            .send(b"hello", BTreeMap::new(), Duration::ZERO)
            .await
            .expect("send");
        let outages = outage_log();
        let (stop, shutdown) = watch::channel(false);
        let handled = Mutex::new(Vec::new());
        let handler = |m: QueueMessage| {
            handled.lock().expect("handled").push(m.body);
            let _ = stop.send(true);
            async { Ok(Disposition::Done) }
        };
        run(
            queue.clone(),
            dead_letters(),
            WorkerConfig::default(),
            outages.clone(),
            shutdown,
            handler,
        )
        .await;
        assert_eq!(queue.polls(), 4, "three failed polls, then the message");
        assert_eq!(*handled.lock().expect("handled"), [b"hello".to_vec()]);
        assert_eq!(queue.inner.len(), 0, "deleted once handled");
        let now = Instant::now();
        assert_eq!(
            outages.lock().expect("outages").succeeded(now, now),
            None,
            "the outage was seen to end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_does_not_wait_for_the_backoff() {
        let queue = Flaky::new(usize::MAX);
        let (stop, shutdown) = watch::channel(false);
        let worker = tokio::spawn(run(
            queue.clone(),
            dead_letters(),
            WorkerConfig::default(),
            outage_log(),
            shutdown,
            |_| async { Ok(Disposition::Done) },
        ));
        queue.polled.notified().await;
        let failed = tokio::time::Instant::now();
        stop.send(true).expect("worker listening");
        worker.await.expect("worker");
        assert_eq!(queue.polls(), 1);
        // Paused time moves only when every task waits on it: had the worker slept through the
        // shutdown, the clock would have jumped to the end of its pause.
        assert_eq!(
            tokio::time::Instant::now(),
            failed,
            "the pause was cut short"
        );
    }
}
