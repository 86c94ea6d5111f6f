//! The ledger on DynamoDB: one table per ledger table, named `<prefix>-<table>`. A ledger
//! key `a/b/c` is stored with partition key `pk = "a"` and sort key `sk = "a/b/c"`, so the
//! records of one message (`<queue id>/...`) or one domain (`<domain>/...`) are one
//! partition and a prefix scan that names the partition is a Query, not a Scan. Values are
//! binary `v`; tables with a retention get `expires_at` for DynamoDB's TTL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use baton_store::{Ledger, StoreError, table_retention};
use serde_json::{Map, Value, json};

use crate::error::backend;
use crate::requests::TABLE_SERVICE;
use crate::wire::{AwsClient, CallError, Service};

// The list lives in baton-store, shared with the embedded backend's retention sweeper.
pub use baton_store::{LEDGER_TABLES, TableSpec};

pub const TTL_ATTRIBUTE: &str = "expires_at";

/// The DynamoDB name of ledger table `table`: `<prefix>-<table>` (provisioning, the ledger,
/// `baton aws names` and infra/template.yaml all name tables so).
pub fn ledger_table_name(prefix: &str, table: &str) -> String {
    format!("{prefix}-{table}")
}

#[derive(Clone)]
pub struct DynamoLedger {
    client: AwsClient,
    prefix: String,
}

/// DynamoDB key attributes cannot be empty and sort keys are at most 1024 octets.
fn check_table_key(table: &str, key: &str) -> Result<(), StoreError> {
    if table.is_empty() || key.is_empty() || key.starts_with('/') || key.len() > 1024 {
        return Err(StoreError::InvalidKey(format!("{table}/{key}")));
    }
    Ok(())
}

fn partition(key: &str) -> &str {
    key.split_once('/').map_or(key, |(p, _)| p)
}

/// A string attribute value.
fn s(v: &str) -> Value {
    json!({ "S": v })
}

/// A binary attribute value.
fn b(v: &[u8]) -> Value {
    json!({ "B": B64.encode(v) })
}

/// A number attribute value.
fn n(v: u64) -> Value {
    json!({ "N": v.to_string() })
}

fn key_of(key: &str) -> Value {
    json!({ "pk": s(partition(key)), "sk": s(key) })
}

fn binary(item: &Value, name: &str) -> Option<Vec<u8>> {
    B64.decode(item[name]["B"].as_str()?).ok()
}

fn item_pair(table: &str, item: &Value) -> Result<(String, Vec<u8>), StoreError> {
    let Some(key) = item["sk"]["S"].as_str().map(str::to_string) else {
        return Err(StoreError::Corrupt {
            key: table.to_string(),
            reason: "item without sort key".into(),
        });
    };
    let value = match (binary(item, "v"), counter_part(item)) {
        // A counter: what `increment` added in place, plus a value written whole before.
        (v, Some(added)) => {
            let before = v.map_or(0, |b| baton_store::counter_value(&b));
            (before + added).to_string().into_bytes()
        }
        (Some(v), None) => v,
        _ => {
            return Err(StoreError::Corrupt {
                key,
                reason: "item without binary value".into(),
            });
        }
    };
    Ok((key, value))
}

/// The number attribute `increment` adds to with DynamoDB's `ADD`.
const COUNTER_ATTRIBUTE: &str = "n";

fn counter_part(item: &Value) -> Option<u64> {
    item[COUNTER_ATTRIBUTE]["N"].as_str()?.parse().ok()
}

/// The size DynamoDB bills an item's write by: names plus values.
fn item_size(item: &Value) -> usize {
    let Some(attributes) = item.as_object() else {
        return 0;
    };
    attributes
        .iter()
        .map(|(name, value)| {
            name.len()
                + match (
                    value["S"].as_str(),
                    value["B"].as_str(),
                    value["N"].as_str(),
                ) {
                    (Some(s), _, _) => s.len(),
                    (_, Some(b), _) => {
                        b.len() / 4 * 3 - b.bytes().rev().take_while(|c| *c == b'=').count()
                    }
                    (_, _, Some(n)) => n.len().div_ceil(2) + 1,
                    _ => 1,
                }
        })
        .sum()
}

impl DynamoLedger {
    pub(crate) fn new(client: AwsClient, prefix: String) -> Self {
        DynamoLedger { client, prefix }
    }

    pub fn table_name(&self, table: &str) -> String {
        ledger_table_name(&self.prefix, table)
    }

    /// Calls `operation` on `table` asking for the capacity it consumed, which goes to the
    /// request counter by operation and by ledger table. A write refused by its condition
    /// is charged as DynamoDB charges it: the item's size in write units.
    async fn call(
        &self,
        operation: &str,
        table: &str,
        mut input: Map<String, Value>,
    ) -> Result<Value, CallError> {
        input.insert("TableName".into(), self.table_name(table).into());
        input.insert("ReturnConsumedCapacity".into(), "TOTAL".into());
        let write_size = input.get("Item").map_or(0, item_size);
        let input = Value::Object(input);
        let counter = self.client.counter();
        let per_table = format!("{operation}@{table}");
        let out = self
            .client
            .json_counted(
                Service::DynamoDb,
                operation,
                &input,
                Some((TABLE_SERVICE, per_table.clone())),
                Duration::ZERO,
            )
            .await;
        let units = match &out {
            Ok(out) => out["ConsumedCapacity"]["CapacityUnits"]
                .as_f64()
                .unwrap_or(0.0),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                write_size.div_ceil(1024).max(1) as f64
            }
            Err(_) => 0.0,
        };
        counter.add_capacity(Service::DynamoDb.counter_name(), operation, units);
        counter.add_capacity(TABLE_SERVICE, &per_table, units);
        out
    }

    /// A conditional PutItem's outcome: written, or the condition did not hold.
    async fn put_conditionally(
        &self,
        table: &str,
        input: Map<String, Value>,
    ) -> Result<bool, StoreError> {
        match self.call("PutItem", table, input).await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(backend(&format!("DynamoDB PutItem {table}"), e)),
        }
    }

    /// Adds `by` to the counter at `key` and returns the new total (`Ledger::increment`'s
    /// contract), with one `UpdateItem` and `ADD`: no read, no condition, so concurrent increments of a hot
    /// counter (a tenant's quota second) cost one write each and never a retry. The count is
    /// kept in the number attribute `n`; a value the counter had as a whole record (`v`, the
    /// trait's compare-and-swap default) is added to it when read.
    pub async fn add_to_counter(&self, table: &str, key: &str, by: u64) -> Result<u64, StoreError> {
        check_table_key(table, key)?;
        let mut update = format!("ADD {COUNTER_ATTRIBUTE} :by");
        let mut values = Map::from_iter([(":by".to_string(), n(by))]);
        if let Some(expires) = Self::expires_at(table) {
            update.push_str(&format!(
                " SET {TTL_ATTRIBUTE} = if_not_exists({TTL_ATTRIBUTE}, :ttl)"
            ));
            values.insert(":ttl".into(), expires);
        }
        let input = Map::from_iter([
            ("Key".to_string(), key_of(key)),
            ("UpdateExpression".to_string(), update.into()),
            ("ExpressionAttributeValues".to_string(), values.into()),
            ("ReturnValues".to_string(), "ALL_NEW".into()),
        ]);
        let out = self
            .call("UpdateItem", table, input)
            .await
            .map_err(|e| backend(&format!("DynamoDB UpdateItem {table}"), e))?;
        let item = &out["Attributes"];
        let before = binary(item, "v").map_or(0, |b| baton_store::counter_value(&b));
        Ok(before + counter_part(item).unwrap_or(0))
    }

    /// When a record of `table` written now expires (DynamoDB's TTL), if the table has a
    /// retention.
    fn expires_at(table: &str) -> Option<Value> {
        let keep = table_retention(table)?;
        let expires = SystemTime::now()
            .checked_add(keep)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX / 2);
        Some(n(expires))
    }

    fn item(&self, table: &str, key: &str, value: &[u8]) -> Value {
        let mut item = Map::from_iter([
            ("pk".to_string(), s(partition(key))),
            ("sk".to_string(), s(key)),
            ("v".to_string(), b(value)),
        ]);
        if let Some(expires) = Self::expires_at(table) {
            item.insert(TTL_ATTRIBUTE.into(), expires);
        }
        item.into()
    }
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_table_key(table, key)?;
        let input = Map::from_iter([
            ("Key".to_string(), key_of(key)),
            ("ConsistentRead".to_string(), true.into()),
        ]);
        let out = self
            .call("GetItem", table, input)
            .await
            .map_err(|e| backend(&format!("DynamoDB GetItem {table}"), e))?;
        match out.get("Item") {
            Some(item) if item.is_object() => item_pair(table, item).map(|(_, v)| Some(v)),
            _ => Ok(None),
        }
    }

    async fn put(&self, table: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_table_key(table, key)?;
        let input = Map::from_iter([("Item".to_string(), self.item(table, key, value))]);
        self.call("PutItem", table, input)
            .await
            .map_err(|e| backend(&format!("DynamoDB PutItem {table}"), e))?;
        Ok(())
    }

    async fn put_if_absent(
        &self,
        table: &str,
        key: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        check_table_key(table, key)?;
        let input = Map::from_iter([
            ("Item".to_string(), self.item(table, key, value)),
            (
                "ConditionExpression".to_string(),
                "attribute_not_exists(sk)".into(),
            ),
        ]);
        self.put_conditionally(table, input).await
    }

    async fn replace_if(
        &self,
        table: &str,
        key: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        check_table_key(table, key)?;
        let input = Map::from_iter([
            ("Item".to_string(), self.item(table, key, value)),
            ("ConditionExpression".to_string(), "v = :expected".into()),
            (
                "ExpressionAttributeValues".to_string(),
                json!({ ":expected": b(expected) }),
            ),
        ]);
        self.put_conditionally(table, input).await
    }

    async fn delete(&self, table: &str, key: &str) -> Result<(), StoreError> {
        check_table_key(table, key)?;
        let input = Map::from_iter([("Key".to_string(), key_of(key))]);
        self.call("DeleteItem", table, input)
            .await
            .map_err(|e| backend(&format!("DynamoDB DeleteItem {table}"), e))?;
        Ok(())
    }

    async fn increment(&self, table: &str, key: &str, by: u64) -> Result<u64, StoreError> {
        self.add_to_counter(table, key, by).await
    }

    async fn scan(&self, table: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Value> = None;
        let by_partition = prefix.contains('/');
        loop {
            let mut input = Map::from_iter([("ConsistentRead".to_string(), true.into())]);
            if let Some(k) = start.take() {
                input.insert("ExclusiveStartKey".into(), k);
            }
            let operation = if by_partition {
                input.insert(
                    "KeyConditionExpression".into(),
                    "pk = :pk AND begins_with(sk, :p)".into(),
                );
                input.insert(
                    "ExpressionAttributeValues".into(),
                    json!({ ":pk": s(partition(prefix)), ":p": s(prefix) }),
                );
                "Query"
            } else {
                if !prefix.is_empty() {
                    input.insert("FilterExpression".into(), "begins_with(sk, :p)".into());
                    input.insert(
                        "ExpressionAttributeValues".into(),
                        json!({ ":p": s(prefix) }),
                    );
                }
                "Scan"
            };
            let page = self
                .call(operation, table, input)
                .await
                .map_err(|e| backend(&format!("DynamoDB {operation} {table}"), e))?;
            for item in page["Items"].as_array().into_iter().flatten() {
                out.push(item_pair(table, item)?);
            }
            match page.get("LastEvaluatedKey") {
                Some(k) if k.as_object().is_some_and(|m| !m.is_empty()) => start = Some(k.clone()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_size_follows_dynamodb_rules() {
        let item = json!({ "pk": s("abc"), "n": n(1234), "v": b(&[1, 2, 3, 4, 5]) });
        assert_eq!(item_size(&item), 2 + 3 + 1 + 3 + 1 + 5);
    }

    #[test]
    fn counters_add_what_was_written_whole_to_what_was_added() {
        let item = json!({ "sk": s("t/1"), "v": b(b"5"), "n": n(3) });
        assert_eq!(item_pair("count", &item).expect("pair").1, b"8");
        let item = json!({ "sk": s("t/1"), "v": b(b"\x00\xff") });
        assert_eq!(item_pair("t", &item).expect("pair").1, [0, 255]);
        assert!(item_pair("t", &json!({ "sk": s("t/1") })).is_err());
        assert!(item_pair("t", &json!({ "v": b(b"x") })).is_err());
    }
}
