//! Lambda's SQS event source mapping, in process, for `baton serve --backend aws` (LocalStack
//! cannot run Lambda functions without Docker): poll the stage queue, hand the batch to the
//! function as an `SqsEvent`, then delete every record it did not report as failed.
//!
//! Each non-empty batch handed to a function is one Lambda invocation, as the event source
//! mapping would bill it; [`invocations`] counts them per stage (with the records they
//! carried and the time the function took), for `bench/aws-requests.sh`.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use baton_aws::SqsQueue;
use baton_pipeline::poll_outage::{self, Notice, OutageLog, PollBackoff};
use baton_store::Queue;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Function;

/// The invocations of one stage's function so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invocations {
    /// Non-empty batches handed to the function (Lambda requests).
    pub invocations: u64,
    /// Records in them.
    pub records: u64,
    /// Time the function took over all of them (what Lambda bills as duration).
    pub busy: Duration,
}

static INVOCATIONS: Mutex<BTreeMap<&'static str, Invocations>> = Mutex::new(BTreeMap::new());

/// Invocations per stage name (`policy`, `sign`, ...) since the process started.
pub fn invocations() -> BTreeMap<&'static str, Invocations> {
    INVOCATIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// Logs [`invocations`] as one structured line at `info`.
pub fn log_invocations() {
    let all = invocations();
    let per_stage = all
        .iter()
        .map(|(stage, i)| {
            format!(
                "{stage}={}/records={}/ms={}",
                i.invocations,
                i.records,
                i.busy.as_millis()
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(
        invocations = all.values().map(|i| i.invocations).sum::<u64>(),
        per_stage = %per_stage,
        "lambda invocations (local runner)"
    );
}

fn count_invocation(stage: &'static str, records: usize, busy: Duration) {
    let mut all = INVOCATIONS.lock().unwrap_or_else(|p| p.into_inner());
    let i = all.entry(stage).or_default();
    i.invocations += 1;
    i.records += records as u64;
    i.busy += busy;
}

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
/// batch in hand, when `shutdown` turns true. While the queue cannot be polled each poller
/// backs off on its own, and they share one [`OutageLog`], so an outage is logged once per
/// queue rather than once per poll.
pub fn spawn(
    set: &mut JoinSet<()>,
    function: Function,
    queue: SqsQueue,
    config: RunnerConfig,
    shutdown: watch::Receiver<bool>,
) {
    let function = Arc::new(function);
    let outages = Arc::new(Mutex::new(OutageLog::new(queue.name())));
    let seeds = RandomState::new();
    for i in 0..config.concurrency.max(1) {
        let poller = Poller {
            function: function.clone(),
            queue: queue.clone(),
            config: config.clone(),
            outages: outages.clone(),
            backoff: PollBackoff::new(seeds.hash_one(i)),
        };
        set.spawn(poller.run(shutdown.clone()));
    }
}

struct Poller {
    function: Arc<Function>,
    queue: SqsQueue,
    config: RunnerConfig,
    outages: Arc<Mutex<OutageLog>>,
    backoff: PollBackoff,
}

impl Poller {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let config = &self.config;
        let visibility = self.function.stage().function_timeout() * 6;
        while !*shutdown.borrow() {
            let sent = Instant::now();
            let raw = tokio::select! {
                r = self.queue.receive_events(config.batch, visibility, config.wait, &config.region) => r,
                _ = shutdown.changed() => break,
            };
            let raw = match raw {
                Ok(raw) => {
                    self.backoff.succeeded();
                    self.note(|log| log.succeeded(sent, Instant::now()));
                    raw
                }
                Err(e) => {
                    self.note(|log| log.failed(sent, Instant::now(), &e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(self.backoff.failed()) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            };
            if raw.is_empty() {
                continue;
            }
            let mut event = SqsEvent::default();
            event.records = raw.clone();
            let started = Instant::now();
            let response = self.function.handle(event).await;
            count_invocation(self.function.stage().name(), raw.len(), started.elapsed());
            // Like the event source mapping: one DeleteMessageBatch for the records not
            // reported as failed (most are gone already: the driver deletes what it finished).
            let done: Vec<&str> = raw
                .iter()
                .filter(|m| {
                    !response
                        .batch_item_failures
                        .iter()
                        .any(|f| Some(f.item_identifier.as_str()) == m.message_id.as_deref())
                })
                .filter_map(|m| m.receipt_handle.as_deref())
                .collect();
            if !done.is_empty() {
                let _ = self.queue.delete_batch(&done).await;
            }
        }
    }

    /// Logs what the queue's outage log makes of one poll, if anything.
    fn note(&self, poll: impl FnOnce(&mut OutageLog) -> Option<Notice>) {
        poll_outage::note(&self.outages, poll);
    }
}
