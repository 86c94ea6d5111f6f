//! Lambda's SQS event source mapping, in process, for `baton serve --backend aws` (LocalStack
//! cannot run Lambda functions without Docker): poll the stage queue, hand the batch to the
//! function as an `SqsEvent`, then delete every record it did not report as failed.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use baton_aws::SqsQueue;
use baton_store::Queue;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Function;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Records per event (Lambda's BatchSize; SQS returns at most 10 per receive).
    pub batch: usize,
    /// Concurrent pollers per stage (Lambda's concurrency).
    pub concurrency: usize,
    /// Long-poll wait of one receive.
    pub wait: Duration,
    pub region: String,
}

/// Starts `config.concurrency` pollers for `function` on `queue`; they stop, finishing the
/// batch in hand, when `shutdown` turns true.
pub fn spawn(
    set: &mut JoinSet<()>,
    function: Function,
    queue: SqsQueue,
    config: RunnerConfig,
    shutdown: watch::Receiver<bool>,
) {
    let function = Arc::new(function);
    for _ in 0..config.concurrency.max(1) {
        let (function, queue, config) = (function.clone(), queue.clone(), config.clone());
        let mut shutdown = shutdown.clone();
        set.spawn(async move {
            let visibility = function.stage().function_timeout() * 6;
            let mut failing = 0u32;
            while !*shutdown.borrow() {
                let raw = tokio::select! {
                    r = queue.receive_events(config.batch, visibility, config.wait, &config.region) => r,
                    _ = shutdown.changed() => break,
                };
                let raw = match raw {
                    Ok(r) => {
                        if failing > 0 {
                            tracing::info!(queue = queue.name(), "polling the queue again");
                        }
                        failing = 0;
                        r
                    }
                    Err(e) => {
                        // Once per outage, not once per poller and second.
                        if failing == 0 {
                            tracing::warn!(queue = queue.name(), error = %e, "cannot poll queue; retrying");
                        }
                        failing = failing.saturating_add(1);
                        let pause = Duration::from_millis(250 << failing.min(5));
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shutdown.changed() => break,
                        }
                        continue;
                    }
                };
                if raw.is_empty() {
                    continue;
                }
                let mut event = SqsEvent::default();
                event.records = raw.clone();
                let response = function.handle(event).await;
                for m in &raw {
                    let failed = response
                        .batch_item_failures
                        .iter()
                        .any(|f| Some(f.item_identifier.as_str()) == m.message_id.as_deref());
                    if let (false, Some(receipt)) = (failed, m.receipt_handle.as_deref()) {
                        // Most are gone already (the driver deletes what it finished).
                        let _ = queue.delete(receipt).await;
                    }
                }
            }
        });
    }
}
