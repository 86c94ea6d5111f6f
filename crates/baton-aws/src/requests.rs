//! Counts the requests the backend sends, by service and operation, so the cost
//! of a message on AWS can be measured (`bench/aws-requests.sh`) instead of guessed.
//!
//! One [`RequestCounter`] is shared by the wire client of one [`AwsBackend`](crate::AwsBackend):
//! every attempt is counted as it starts (retries too, as AWS bills them), keyed by
//! service and operation (`s3`/`PutObject`, `sqs`/`SendMessage`, `dynamodb`/`GetItem`,
//! ...). A ranged S3 GET is counted as
//! `GetObject(range)`: it costs a GET all the same, but shows where headers are read apart
//! from bodies. An SQS receive that brought nothing is counted as `ReceiveMessage(empty)`
//! instead of `ReceiveMessage`: idle polling costs by the hour, not by the message. DynamoDB requests ask for `ReturnConsumedCapacity = TOTAL` (free), and the
//! capacity units each operation consumed are added up, so on-demand read and write request
//! units (RRU, WRU) are counted rather than assumed; a conditional write whose condition
//! failed reports none, and is charged (as AWS does) one WRU per started KB of the item it
//! tried to write.
//!
//! DynamoDB requests are also counted per ledger table, under the service `dynamodb.table`
//! with operations like `PutItem@events` (the table without the deployment's prefix), so a
//! write nothing reads can be found by its table.
//!
//! Cost: a read lock and one or two relaxed atomic adds per request.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Thousandths of a capacity unit (DynamoDB reports halves for eventually consistent reads).
const MILLI: f64 = 1000.0;

#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    capacity_milli: AtomicU64,
}

/// (service in lower case, operation).
type OperationKey = (String, String);

/// The shared tally. Cloning shares it.
#[derive(Clone, Default)]
pub struct RequestCounter {
    counts: Arc<RwLock<HashMap<OperationKey, Arc<Counts>>>>,
}

impl fmt::Debug for RequestCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestCounter").finish_non_exhaustive()
    }
}

impl RequestCounter {
    fn entry(&self, service: &str, operation: &str) -> Arc<Counts> {
        let key = (service.to_ascii_lowercase(), operation.to_string());
        if let Some(c) = self
            .counts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        self.counts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    /// Counts one attempt of `operation`.
    pub fn count(&self, service: &str, operation: &str) {
        self.entry(service, operation)
            .attempts
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Moves one counted attempt of `from` to `to`.
    pub(crate) fn recount(&self, service: &str, from: &str, to: &str) {
        self.entry(service, from)
            .attempts
            .fetch_sub(1, Ordering::Relaxed);
        self.count(service, to);
    }

    pub(crate) fn add_capacity(&self, service: &str, operation: &str, units: f64) {
        if units > 0.0 {
            let milli = (units * MILLI).round() as u64;
            self.entry(service, operation)
                .capacity_milli
                .fetch_add(milli, Ordering::Relaxed);
        }
    }

    /// What has been counted so far.
    pub fn snapshot(&self) -> RequestSnapshot {
        let counts = self.counts.read().unwrap_or_else(|p| p.into_inner());
        RequestSnapshot {
            counts: counts
                .iter()
                .map(|((service, operation), c)| {
                    (
                        (service.clone(), operation.clone()),
                        OperationCount {
                            attempts: c.attempts.load(Ordering::Relaxed),
                            capacity_units: c.capacity_milli.load(Ordering::Relaxed) as f64 / MILLI,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One operation's tally.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OperationCount {
    /// Requests sent, retries included.
    pub attempts: u64,
    /// DynamoDB capacity units consumed (read units for reads, write units for writes);
    /// 0 for the other services.
    pub capacity_units: f64,
}

/// Counts by (service, operation), service in lower case (`s3`, `sqs`, `dynamodb`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestSnapshot {
    pub counts: BTreeMap<OperationKey, OperationCount>,
}

impl RequestSnapshot {
    /// Requests of one service (`dynamodb.table` is a breakdown of `dynamodb`, not more).
    pub fn service_total(&self, service: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((s, _), _)| s == service)
            .map(|(_, c)| c.attempts)
            .sum()
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .filter(|((s, _), _)| s != TABLE_SERVICE)
            .map(|(_, c)| c.attempts)
            .sum()
    }

    /// `service:Operation=N` pairs, space-separated, with `/cu=X` after DynamoDB operations
    /// that consumed capacity: the field the shutdown log line carries.
    pub fn summary(&self) -> String {
        self.counts
            .iter()
            .map(|((s, o), c)| {
                if c.capacity_units > 0.0 {
                    format!("{s}:{o}={}/cu={}", c.attempts, c.capacity_units)
                } else {
                    format!("{s}:{o}={}", c.attempts)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Logs the totals as one structured line at `info`.
    pub fn log(&self, what: &str) {
        tracing::info!(
            total = self.total(),
            s3 = self.service_total("s3"),
            sqs = self.service_total("sqs"),
            dynamodb = self.service_total("dynamodb"),
            eventbridge = self.service_total("eventbridge"),
            requests = %self.summary(),
            "{what}"
        );
    }
}

/// The service name of the per-table breakdown of DynamoDB requests.
pub const TABLE_SERVICE: &str = "dynamodb.table";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_service_and_operation() {
        let c = RequestCounter::default();
        c.count(TABLE_SERVICE, "PutItem@messages");
        c.count("S3", "PutObject");
        c.count("s3", "PutObject");
        c.count("sqs", "SendMessage");
        c.count("sqs", "ReceiveMessage");
        c.count("sqs", "ReceiveMessage");
        c.recount("sqs", "ReceiveMessage", "ReceiveMessage(empty)");
        c.add_capacity("dynamodb", "PutItem", 1.0);
        c.add_capacity("dynamodb", "PutItem", 0.5);
        c.count("dynamodb", "PutItem");
        let s = c.snapshot();
        assert_eq!(s.service_total("s3"), 2);
        assert_eq!(s.service_total("sqs"), 3);
        assert_eq!(s.total(), 6);
        let put = s.counts[&("dynamodb".to_string(), "PutItem".to_string())];
        assert_eq!(put.attempts, 1);
        assert_eq!(put.capacity_units, 1.5);
        assert_eq!(
            s.summary(),
            "dynamodb:PutItem=1/cu=1.5 dynamodb.table:PutItem@messages=1 s3:PutObject=2 \
             sqs:ReceiveMessage=1 \
             sqs:ReceiveMessage(empty)=1 sqs:SendMessage=1"
        );
    }
}
