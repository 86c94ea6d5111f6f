//! Counts the requests the backend's SDK clients send, by service and operation, so the cost
//! of a message on AWS can be measured (`bench/aws-requests.sh`) instead of guessed.
//!
//! One [`RequestCounter`] is shared by the clients of one [`AwsBackend`](crate::AwsBackend)
//! through an SDK interceptor: every attempt is counted as it is transmitted (retries too,
//! as AWS bills them), keyed by the operation's metadata (`s3`/`PutObject`, `sqs`/
//! `SendMessage`, `dynamodb`/`GetItem`, ...). A ranged S3 GET is counted as
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

use aws_sdk_dynamodb::operation::{
    delete_item::{DeleteItemInput, DeleteItemOutput},
    get_item::{GetItemInput, GetItemOutput},
    put_item::{PutItemError, PutItemInput, PutItemOutput},
    query::{QueryInput, QueryOutput},
    scan::{ScanInput, ScanOutput},
    update_item::{UpdateItemInput, UpdateItemOutput},
};
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity, ReturnConsumedCapacity};
use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
    BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

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
    /// `<aws.prefix>-`, taken off DynamoDB table names.
    table_prefix: Arc<str>,
}

impl fmt::Debug for RequestCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestCounter").finish_non_exhaustive()
    }
}

impl RequestCounter {
    /// A counter for the backend whose tables are named `<prefix>-<table>`.
    pub fn new(prefix: &str) -> Self {
        RequestCounter {
            table_prefix: format!("{prefix}-").into(),
            ..RequestCounter::default()
        }
    }

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

    /// Counts one attempt of `operation` (tests and callers outside the SDK use it too).
    pub fn count(&self, service: &str, operation: &str) {
        self.entry(service, operation)
            .attempts
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Moves one counted attempt of `from` to `to`.
    fn recount(&self, service: &str, from: &str, to: &str) {
        self.entry(service, from)
            .attempts
            .fetch_sub(1, Ordering::Relaxed);
        self.count(service, to);
    }

    fn add_capacity(&self, service: &str, operation: &str, units: f64) {
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

    /// The interceptor to install on an SDK client's config.
    pub(crate) fn interceptor(&self) -> CountRequests {
        CountRequests {
            counter: self.clone(),
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

/// The SDK interceptor behind [`RequestCounter`].
#[derive(Debug, Clone)]
pub(crate) struct CountRequests {
    counter: RequestCounter,
}

/// The service name of the per-table breakdown of DynamoDB requests.
pub const TABLE_SERVICE: &str = "dynamodb.table";

/// The DynamoDB table a request names, kept in its config bag for the later hooks.
#[derive(Debug, Clone)]
struct Table(String);

impl Storable for Table {
    type Storer = StoreReplace<Self>;
}

/// The size of the item a DynamoDB write carries, kept in the request's config bag so that a
/// write refused by its condition (which reports no consumed capacity) can still be charged.
#[derive(Debug, Clone, Copy)]
struct WriteSize(usize);

impl Storable for WriteSize {
    type Storer = StoreReplace<Self>;
}

/// DynamoDB's item size: attribute names plus values (numbers about half their digits).
fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::B(b) => b.as_ref().len(),
                    AttributeValue::N(n) => n.len().div_ceil(2) + 1,
                    _ => 1,
                }
        })
        .sum()
}

fn consumed(c: Option<&ConsumedCapacity>) -> f64 {
    c.and_then(ConsumedCapacity::capacity_units).unwrap_or(0.0)
}

fn operation(cfg: &ConfigBag) -> Option<(String, String)> {
    cfg.load::<Metadata>()
        .map(|m| (m.service().to_string(), m.name().to_string()))
}

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input_mut();
        let total = Some(ReturnConsumedCapacity::Total);
        let table = if let Some(i) = input.downcast_mut::<PutItemInput>() {
            i.return_consumed_capacity = total;
            let size = i.item.as_ref().map_or(0, item_size);
            cfg.interceptor_state().store_put(WriteSize(size));
            i.table_name.clone()
        } else if let Some(i) = input.downcast_mut::<GetItemInput>() {
            i.return_consumed_capacity = total;
            i.table_name.clone()
        } else if let Some(i) = input.downcast_mut::<QueryInput>() {
            i.return_consumed_capacity = total;
            i.table_name.clone()
        } else if let Some(i) = input.downcast_mut::<ScanInput>() {
            i.return_consumed_capacity = total;
            i.table_name.clone()
        } else if let Some(i) = input.downcast_mut::<DeleteItemInput>() {
            i.return_consumed_capacity = total;
            i.table_name.clone()
        } else if let Some(i) = input.downcast_mut::<UpdateItemInput>() {
            i.return_consumed_capacity = total;
            i.table_name.clone()
        } else {
            None
        };
        if let Some(t) = table {
            let short = t
                .strip_prefix(&*self.counter.table_prefix)
                .map_or(t.clone(), str::to_string);
            cfg.interceptor_state().store_put(Table(short));
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some((service, op)) = operation(cfg) else {
            self.counter.count("unknown", "unknown");
            return Ok(());
        };
        if op == "GetObject" && context.request().headers().get("range").is_some() {
            self.counter.count(&service, "GetObject(range)");
        } else {
            self.counter.count(&service, &op);
        }
        if let Some(Table(t)) = cfg.load::<Table>() {
            self.counter.count(TABLE_SERVICE, &format!("{op}@{t}"));
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some((service, op)) = operation(cfg) else {
            return Ok(());
        };
        if op == "ReceiveMessage" {
            if let Ok(out) = context.output_or_error()
                && out
                    .downcast_ref::<ReceiveMessageOutput>()
                    .is_some_and(|o| o.messages().is_empty())
            {
                self.counter
                    .recount(&service, "ReceiveMessage", "ReceiveMessage(empty)");
            }
            return Ok(());
        }
        if !service.eq_ignore_ascii_case("dynamodb") {
            return Ok(());
        }
        let units = match context.output_or_error() {
            Ok(out) => {
                if let Some(o) = out.downcast_ref::<PutItemOutput>() {
                    consumed(o.consumed_capacity())
                } else if let Some(o) = out.downcast_ref::<GetItemOutput>() {
                    consumed(o.consumed_capacity())
                } else if let Some(o) = out.downcast_ref::<QueryOutput>() {
                    consumed(o.consumed_capacity())
                } else if let Some(o) = out.downcast_ref::<ScanOutput>() {
                    consumed(o.consumed_capacity())
                } else if let Some(o) = out.downcast_ref::<DeleteItemOutput>() {
                    consumed(o.consumed_capacity())
                } else if let Some(o) = out.downcast_ref::<UpdateItemOutput>() {
                    consumed(o.consumed_capacity())
                } else {
                    0.0
                }
            }
            Err(e) => {
                let refused = e
                    .as_operation_error()
                    .and_then(|e| e.downcast_ref::<PutItemError>())
                    .is_some_and(PutItemError::is_conditional_check_failed_exception);
                match cfg.load::<WriteSize>() {
                    Some(WriteSize(size)) if refused => size.div_ceil(1024).max(1) as f64,
                    _ => 0.0,
                }
            }
        };
        self.counter.add_capacity(&service, &op, units);
        if let Some(Table(t)) = cfg.load::<Table>() {
            self.counter
                .add_capacity(TABLE_SERVICE, &format!("{op}@{t}"), units);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_service_and_operation() {
        let c = RequestCounter::new("baton");
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

    #[test]
    fn item_size_follows_dynamodb_rules() {
        let item = HashMap::from([
            ("pk".to_string(), AttributeValue::S("abc".into())),
            ("n".to_string(), AttributeValue::N("1234".into())),
        ]);
        assert_eq!(item_size(&item), 2 + 3 + 1 + 3);
    }
}
