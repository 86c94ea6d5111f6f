//! The retention sweeper: what AWS does with DynamoDB TTLs and the bucket's lifecycle, done
//! here by deleting, in small batches on the writer thread, ledger records older than their
//! table's retention ([`baton_store::LEDGER_TABLES`]) and bodies (and captured copies) older
//! than the body retention that no queued job, dead-lettered ones included, refers to.
//! Small bodies share segment files: a segment file goes once every body in it is gone.

use std::time::{Duration, Instant};

use baton_store::{BODY_RETENTION, LEDGER_TABLES, StoreError};
use tokio::sync::watch;

use crate::writer::{BodySweep, Op, OpResult};
use crate::{EmbeddedBackend, backend_err};

/// What expires, and how much one writer request may do.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Ledger tables whose records expire, and how long after their last write.
    pub tables: Vec<(&'static str, Duration)>,
    /// Bodies of messages no job refers to any more, and their captured copies.
    pub bodies: Duration,
    /// Most records deleted, or bodies looked at, by one request: bounds how long a sweep
    /// holds up the writer (and with it every accept) at a time.
    pub batch: usize,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            tables: LEDGER_TABLES
                .iter()
                .filter_map(|t| Some((t.name, t.retention?)))
                .collect(),
            bodies: BODY_RETENTION,
            batch: 256,
        }
    }
}

/// What one sweep deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub records: u64,
    pub bodies: u64,
    /// Old enough bodies kept because a queued job still refers to their message.
    pub kept_queued: u64,
    /// Writer requests the sweep took.
    pub batches: u64,
}

/// When the periodic sweep runs.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The first round, after start.
    pub first_after: Duration,
    pub every: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            first_after: Duration::from_secs(60),
            every: Duration::from_secs(3600),
        }
    }
}

impl EmbeddedBackend {
    /// Deletes what `policy` says has expired, one bounded batch per writer request, so
    /// other requests get their turn between batches.
    pub async fn sweep_expired(&self, policy: &RetentionPolicy) -> Result<SweepReport, StoreError> {
        let batch = policy.batch.max(1);
        let writer = &self.inner.writer;
        let mut report = SweepReport::default();
        for (table, older_than) in &policy.tables {
            loop {
                let op = Op::ExpireRecords {
                    table: table.to_string(),
                    older_than: *older_than,
                    max: batch,
                };
                let deleted = match writer.call(op).await? {
                    OpResult::Count(n) => n,
                    other => return Err(unexpected(other)),
                };
                report.records += deleted;
                report.batches += 1;
                if deleted < batch as u64 {
                    break;
                }
            }
        }
        let mut after = (i64::MIN, String::new());
        loop {
            let op = Op::ExpireBodies {
                older_than: policy.bodies,
                after,
                max: batch,
            };
            let BodySweep {
                deleted,
                kept,
                last,
            } = match writer.call(op).await? {
                OpResult::Bodies(b) => b,
                other => return Err(unexpected(other)),
            };
            report.bodies += deleted;
            report.kept_queued += kept;
            report.batches += 1;
            match last {
                Some(last) if deleted + kept >= batch as u64 => after = last,
                _ => break,
            }
        }
        Ok(report)
    }
}

fn unexpected(result: OpResult) -> StoreError {
    backend_err(format!("unexpected writer result {result:?}"))
}

/// Sweeps on `schedule` until `shutdown` turns true (a round in progress stops between
/// two batches). One log line per round.
pub async fn sweep_periodically(
    backend: EmbeddedBackend,
    policy: RetentionPolicy,
    schedule: Schedule,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wait = schedule.first_after;
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = schedule.every;
        let started = Instant::now();
        let outcome = tokio::select! {
            r = backend.sweep_expired(&policy) => r,
            _ = shutdown.changed() => return,
        };
        match outcome {
            Ok(r) => tracing::info!(
                records = r.records,
                bodies = r.bodies,
                kept_queued = r.kept_queued,
                batches = r.batches,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "retention sweep: deleted expired records and bodies"
            ),
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
    }
}
