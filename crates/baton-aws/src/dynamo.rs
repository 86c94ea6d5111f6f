//! The ledger on DynamoDB: one table per ledger table, named `<prefix>-<table>`. A ledger
//! key `a/b/c` is stored with partition key `pk = "a"` and sort key `sk = "a/b/c"`, so the
//! records of one message (`<queue id>/...`) or one domain (`<domain>/...`) are one
//! partition and a prefix scan that names the partition is a Query, not a Scan. Values are
//! binary `v`; tables with a retention get `expires_at` for DynamoDB's TTL.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use baton_store::{Ledger, StoreError, table_retention};

use crate::error::backend;

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
    client: Client,
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

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn item_pair(
    table: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<(String, Vec<u8>), StoreError> {
    let key = match item.get("sk") {
        Some(AttributeValue::S(k)) => k.clone(),
        _ => {
            return Err(StoreError::Corrupt {
                key: table.to_string(),
                reason: "item without sort key".into(),
            });
        }
    };
    let value = match (item.get("v"), counter_part(item)) {
        // A counter: what `increment` added in place, plus a value written whole before.
        (v, Some(added)) => {
            let before = match v {
                Some(AttributeValue::B(b)) => baton_store::counter_value(b.as_ref()),
                _ => 0,
            };
            (before + added).to_string().into_bytes()
        }
        (Some(AttributeValue::B(b)), None) => b.as_ref().to_vec(),
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

fn counter_part(item: &HashMap<String, AttributeValue>) -> Option<u64> {
    match item.get(COUNTER_ATTRIBUTE) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// A conditional PutItem's outcome: written, or the condition did not hold.
fn conditional<T>(
    table: &str,
    out: Result<T, SdkError<PutItemError, HttpResponse>>,
) -> Result<bool, StoreError> {
    match out {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(backend(&format!("DynamoDB PutItem {table}"), e)),
    }
}

impl DynamoLedger {
    pub(crate) fn new(client: Client, prefix: String) -> Self {
        DynamoLedger { client, prefix }
    }

    pub fn table_name(&self, table: &str) -> String {
        ledger_table_name(&self.prefix, table)
    }

    /// Adds `by` to the counter at `key` and returns the new total (`Ledger::increment`'s
    /// contract), with one `UpdateItem` and `ADD`: no read, no condition, so concurrent increments of a hot
    /// counter (a tenant's quota second) cost one write each and never a retry. The count is
    /// kept in the number attribute `n`; a value the counter had as a whole record (`v`, the
    /// trait's compare-and-swap default) is added to it when read.
    pub async fn add_to_counter(&self, table: &str, key: &str, by: u64) -> Result<u64, StoreError> {
        check_table_key(table, key)?;
        let mut update = format!("ADD {COUNTER_ATTRIBUTE} :by");
        let mut req = self
            .client
            .update_item()
            .table_name(self.table_name(table))
            .key("pk", s(partition(key)))
            .key("sk", s(key))
            .expression_attribute_values(":by", AttributeValue::N(by.to_string()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        if let Some(expires) = Self::expires_at(table) {
            update.push_str(&format!(
                " SET {TTL_ATTRIBUTE} = if_not_exists({TTL_ATTRIBUTE}, :ttl)"
            ));
            req = req.expression_attribute_values(":ttl", expires);
        }
        let out = req
            .update_expression(update)
            .send()
            .await
            .map_err(|e| backend(&format!("DynamoDB UpdateItem {table}"), e))?;
        let item = out.attributes.unwrap_or_default();
        let before = match item.get("v") {
            Some(AttributeValue::B(b)) => baton_store::counter_value(b.as_ref()),
            _ => 0,
        };
        Ok(before + counter_part(&item).unwrap_or(0))
    }

    /// When a record of `table` written now expires (DynamoDB's TTL), if the table has a
    /// retention.
    fn expires_at(table: &str) -> Option<AttributeValue> {
        let keep = table_retention(table)?;
        let expires = SystemTime::now()
            .checked_add(keep)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX / 2);
        Some(AttributeValue::N(expires.to_string()))
    }

    fn item(&self, table: &str, key: &str, value: &[u8]) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            ("pk".to_string(), s(partition(key))),
            ("sk".to_string(), s(key)),
            (
                "v".to_string(),
                AttributeValue::B(Blob::new(value.to_vec())),
            ),
        ]);
        if let Some(expires) = Self::expires_at(table) {
            item.insert(TTL_ATTRIBUTE.into(), expires);
        }
        item
    }
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_table_key(table, key)?;
        let out = self
            .client
            .get_item()
            .table_name(self.table_name(table))
            .key("pk", s(partition(key)))
            .key("sk", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend(&format!("DynamoDB GetItem {table}"), e))?;
        match out.item() {
            Some(item) => item_pair(table, item).map(|(_, v)| Some(v)),
            None => Ok(None),
        }
    }

    async fn put(&self, table: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_table_key(table, key)?;
        self.client
            .put_item()
            .table_name(self.table_name(table))
            .set_item(Some(self.item(table, key, value)))
            .send()
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
        let out = self
            .client
            .put_item()
            .table_name(self.table_name(table))
            .set_item(Some(self.item(table, key, value)))
            .condition_expression("attribute_not_exists(sk)")
            .send()
            .await;
        conditional(table, out)
    }

    async fn replace_if(
        &self,
        table: &str,
        key: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        check_table_key(table, key)?;
        let out = self
            .client
            .put_item()
            .table_name(self.table_name(table))
            .set_item(Some(self.item(table, key, value)))
            .condition_expression("v = :expected")
            .expression_attribute_values(
                ":expected",
                AttributeValue::B(Blob::new(expected.to_vec())),
            )
            .send()
            .await;
        conditional(table, out)
    }

    async fn delete(&self, table: &str, key: &str) -> Result<(), StoreError> {
        check_table_key(table, key)?;
        self.client
            .delete_item()
            .table_name(self.table_name(table))
            .key("pk", s(partition(key)))
            .key("sk", s(key))
            .send()
            .await
            .map_err(|e| backend(&format!("DynamoDB DeleteItem {table}"), e))?;
        Ok(())
    }

    async fn increment(&self, table: &str, key: &str, by: u64) -> Result<u64, StoreError> {
        self.add_to_counter(table, key, by).await
    }

    async fn scan(&self, table: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        let by_partition = prefix.contains('/');
        loop {
            let page = if by_partition {
                let q = self
                    .client
                    .query()
                    .table_name(self.table_name(table))
                    .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                    .expression_attribute_values(":pk", s(partition(prefix)))
                    .expression_attribute_values(":p", s(prefix))
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| backend(&format!("DynamoDB Query {table}"), e))?;
                (q.items.unwrap_or_default(), q.last_evaluated_key)
            } else {
                let mut req = self
                    .client
                    .scan()
                    .table_name(self.table_name(table))
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take());
                if !prefix.is_empty() {
                    req = req
                        .filter_expression("begins_with(sk, :p)")
                        .expression_attribute_values(":p", s(prefix));
                }
                let q = req
                    .send()
                    .await
                    .map_err(|e| backend(&format!("DynamoDB Scan {table}"), e))?;
                (q.items.unwrap_or_default(), q.last_evaluated_key)
            };
            for item in &page.0 {
                out.push(item_pair(table, item)?);
            }
            match page.1 {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
