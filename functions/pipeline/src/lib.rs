//! The relay pipeline: four stages, each a library handler that takes one queue message and
//! talks to storage only through the ports. `baton serve` runs them as in-process workers on
//! the embedded queues; the AWS backend wraps the same handlers in Lambda functions.
//!
//! intake ──policy──▶ sign ──sign──▶ deliver ──deliver──▶ (done | retry on deliver | bounce)
//! intake ──fused (policy + sign + first attempt, one job)──▶ (done | retry on deliver | bounce)
//! bounce ──bounce──▶ bounce records, suppression, DSN (back into intake)
//! any stage ──SES-shaped event──▶ events ──notify──▶ the tenant's queues, buses, webhooks

pub mod body;
pub mod bounce;
pub mod capture;
pub mod checkpoint;
pub mod deliver;
pub mod dkim;
pub mod driver;
mod error;
pub mod event_destinations;
pub mod fused;
pub mod inbound;
pub mod job;
pub mod messages;
pub mod notify;
pub mod outbound;
pub mod policy;
pub mod poll_outage;
pub mod quota;
pub mod records;
pub mod return_path;
pub mod runtime;
pub mod ses_events;
pub mod setup;
pub mod sign;
pub mod soft;
pub mod webhook;
pub mod worker;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_store::{BlobStore, Ledger, Queue};

pub use error::StageError;

/// Names of the stage queues; each has a dead-letter queue named `<name>-dlq`.
pub mod queue_names {
    pub const INTAKE: &str = "intake";
    pub const SIGN: &str = "sign";
    pub const DELIVER: &str = "deliver";
    pub const BOUNCE: &str = "bounce";
    /// Events on their way to tenants' destinations (one message per event and destination).
    pub const EVENTS: &str = "events";
    pub const ALL: [&str; 5] = [INTAKE, SIGN, DELIVER, BOUNCE, EVENTS];

    pub fn dead_letter(queue: &str) -> String {
        format!("{queue}-dlq")
    }
}

/// Lower-case hex, for ids and signatures.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Time, behind a trait so tests can move it.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;

    fn unix_ms(&self) -> i64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Everything a stage may touch.
#[derive(Clone)]
pub struct Ports {
    pub blobs: Arc<dyn BlobStore>,
    pub ledger: Arc<dyn Ledger>,
    pub intake: Arc<dyn Queue>,
    pub sign: Arc<dyn Queue>,
    pub deliver: Arc<dyn Queue>,
    pub bounce: Arc<dyn Queue>,
    pub events: Arc<dyn Queue>,
    pub clock: Arc<dyn Clock>,
}

/// What a handler decided about the message it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Finished: delete it from its queue.
    Done,
    /// Finished, and already deleted from its queue by the handler (with its last records,
    /// in one commit where the backend can: [`baton_store::Queue::delete_after`]).
    Deleted,
    /// Not now: make it visible again after this long (e.g. over quota).
    RetryAfter(Duration),
}
