//! A stage queue on SQS. Bodies that are not UTF-8 travel base64-encoded (SQS bodies are
//! text); backoffs longer than SQS's 15-minute delay limit are chained: the message carries
//! `not_before` and whoever receives it early sends it on again (see the pipeline driver).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_lambda_events::sqs::{SqsMessage, SqsMessageAttribute};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use baton_store::{Queue, QueueMessage, StoreError};
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::SQS_MAX_DELAY;
use crate::error::{AwsError, backend};
use crate::wire::{AwsClient, CallError, Service};

/// Message attribute marking a base64-encoded body.
const ENCODING: &str = "baton_encoding";
/// Message attribute: unix milliseconds before which the message is not due.
pub const NOT_BEFORE: &str = "not_before";
/// SQS's longest visibility timeout.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// A queue is opened by name; its URL (and ARN) are looked up on first use, so building
/// the ports costs no request (a Lambda function reaches its first invocation sooner).
#[derive(Clone)]
pub struct SqsQueue {
    client: AwsClient,
    name: String,
    sqs_name: String,
    url: Arc<OnceCell<String>>,
    arn: Arc<OnceCell<String>>,
}

impl SqsQueue {
    pub(crate) fn lazy(client: AwsClient, name: &str, sqs_name: &str) -> SqsQueue {
        SqsQueue {
            client,
            name: name.to_string(),
            sqs_name: sqs_name.to_string(),
            url: Arc::new(OnceCell::new()),
            arn: Arc::new(OnceCell::new()),
        }
    }

    /// Opens the queue and checks that it exists.
    pub(crate) async fn open(
        client: AwsClient,
        name: &str,
        sqs_name: &str,
    ) -> Result<SqsQueue, AwsError> {
        let queue = Self::lazy(client, name, sqs_name);
        queue.resolve().await?;
        Ok(queue)
    }

    async fn resolve(&self) -> Result<&str, AwsError> {
        let url = self
            .url
            .get_or_try_init(|| async {
                let out = self
                    .call("GetQueueUrl", json!({ "QueueName": self.sqs_name }))
                    .await
                    .map_err(|e| AwsError::service(format!("SQS queue {}", self.sqs_name), e))?;
                Ok::<_, AwsError>(out["QueueUrl"].as_str().unwrap_or_default().to_string())
            })
            .await?;
        Ok(url)
    }

    async fn url(&self) -> Result<&str, StoreError> {
        Ok(self.resolve().await?)
    }

    pub async fn arn(&self) -> Result<&str, StoreError> {
        let url = self.url().await?.to_string();
        let arn = self
            .arn
            .get_or_try_init(|| crate::provision::queue_arn(&self.client, &url))
            .await?;
        Ok(arn)
    }

    /// Receives messages as the records of an `SqsEvent` (with attributes and receive
    /// count), long-polling up to `wait`: what Lambda's event source mapping would hand a
    /// function. The local runner plays that mapping.
    pub async fn receive_events(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
        region: &str,
    ) -> Result<Vec<SqsMessage>, StoreError> {
        let raw = self.receive_raw(max, visibility, wait).await?;
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        let arn = self.arn().await.map(str::to_string).unwrap_or_default();
        Ok(raw
            .iter()
            .map(|m| sqs_event_message(m, &arn, region))
            .collect())
    }

    /// Deletes up to ten received messages in one DeleteMessageBatch request, as Lambda's
    /// event source mapping does with the records a function did not report as failed.
    /// Entries SQS refuses (e.g. receipts already deleted) are ignored: what matters is that
    /// they are gone.
    pub async fn delete_batch(&self, receipts: &[&str]) -> Result<(), StoreError> {
        let url = self.url().await?.to_string();
        for chunk in receipts.chunks(10) {
            let entries: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| json!({ "Id": i.to_string(), "ReceiptHandle": r }))
                .collect();
            self.call(
                "DeleteMessageBatch",
                json!({ "QueueUrl": url, "Entries": entries }),
            )
            .await
            .map_err(|e| backend("SQS DeleteMessageBatch", e))?;
        }
        Ok(())
    }

    /// Receives raw SQS messages (with attributes and receive count), long-polling up to
    /// `wait`.
    pub(crate) async fn receive_raw(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Value>, StoreError> {
        let input = json!({
            "QueueUrl": self.url().await?,
            "MaxNumberOfMessages": max.clamp(1, 10),
            // Whole seconds, rounded up: a short visibility must not become none.
            "VisibilityTimeout": visibility.min(MAX_VISIBILITY).as_secs_f64().ceil() as u64,
            "WaitTimeSeconds": wait.as_secs().min(20),
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        });
        let hold = wait.min(Duration::from_secs(20));
        let counter = self.client.counter();
        let mut out = self
            .client
            .json_counted(Service::Sqs, "ReceiveMessage", &input, None, hold)
            .await
            .map_err(|e| backend("SQS ReceiveMessage", e))?;
        let messages = match out["Messages"].take() {
            Value::Array(m) => m,
            _ => Vec::new(),
        };
        if messages.is_empty() {
            counter.recount(
                Service::Sqs.counter_name(),
                "ReceiveMessage",
                "ReceiveMessage(empty)",
            );
        }
        Ok(messages)
    }

    async fn attributes(&self, names: &[&str]) -> Result<Map<String, Value>, StoreError> {
        let mut out = self
            .call(
                "GetQueueAttributes",
                json!({ "QueueUrl": self.url().await?, "AttributeNames": names }),
            )
            .await
            .map_err(|e| backend("SQS GetQueueAttributes", e))?;
        Ok(match out["Attributes"].take() {
            Value::Object(m) => m,
            _ => Map::new(),
        })
    }

    /// Approximate numbers of messages (visible, in flight, delayed).
    pub async fn approximate_counts(&self) -> Result<(u64, u64, u64), StoreError> {
        let attributes = self.attributes(&["All"]).await?;
        let get = |name: &str| count(&attributes, name);
        Ok((
            get("ApproximateNumberOfMessages"),
            get("ApproximateNumberOfMessagesNotVisible"),
            get("ApproximateNumberOfMessagesDelayed"),
        ))
    }

    /// Approximate number of messages waiting, in flight and delayed.
    pub async fn approximate_len(&self) -> Result<u64, StoreError> {
        const NAMES: [&str; 3] = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ];
        let attributes = self.attributes(&NAMES).await?;
        Ok(NAMES.iter().map(|n| count(&attributes, n)).sum())
    }

    /// One SQS call against this queue's service.
    async fn call(&self, operation: &str, input: Value) -> Result<Value, CallError> {
        self.client.json(Service::Sqs, operation, &input).await
    }
}

/// A numeric queue attribute (SQS sends them as strings).
fn count(attributes: &Map<String, Value>, name: &str) -> u64 {
    attributes
        .get(name)
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Turns a received SQS message's parts into the port's `QueueMessage`.
fn decode(
    id: String,
    receipt: String,
    body: &str,
    mut attributes: BTreeMap<String, String>,
    receive_count: u32,
) -> Result<QueueMessage, StoreError> {
    let body = match attributes.remove(ENCODING).as_deref() {
        Some("base64") => B64.decode(body).map_err(|e| StoreError::Corrupt {
            key: id.clone(),
            reason: format!("bad base64 body: {e}"),
        })?,
        _ => body.as_bytes().to_vec(),
    };
    Ok(QueueMessage {
        id,
        receipt,
        body,
        attributes,
        receive_count,
    })
}

/// The record Lambda's SQS event source mapping would hand a function for `m`.
pub(crate) fn sqs_event_message(m: &Value, queue_arn: &str, region: &str) -> SqsMessage {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let mut out = SqsMessage::default();
    out.message_id = text(&m["MessageId"]);
    out.receipt_handle = text(&m["ReceiptHandle"]);
    out.body = text(&m["Body"]);
    out.md5_of_body = text(&m["MD5OfBody"]);
    out.event_source = Some("aws:sqs".into());
    out.event_source_arn = Some(queue_arn.to_string());
    out.aws_region = Some(region.to_string());
    for (k, v) in m["Attributes"].as_object().into_iter().flatten() {
        if let Some(v) = v.as_str() {
            out.attributes.insert(k.clone(), v.to_string());
        }
    }
    for (k, v) in m["MessageAttributes"].as_object().into_iter().flatten() {
        let mut a = SqsMessageAttribute::default();
        a.string_value = text(&v["StringValue"]);
        a.data_type = text(&v["DataType"]);
        out.message_attributes.insert(k.clone(), a);
    }
    out
}

/// The port's view of one record of an `SqsEvent`.
pub fn queue_message_from_event(m: &SqsMessage) -> Result<QueueMessage, StoreError> {
    let id = m.message_id.clone().unwrap_or_default();
    let attributes = m
        .message_attributes
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.string_value.clone()?)))
        .collect();
    let count = m
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    decode(
        id,
        m.receipt_handle.clone().unwrap_or_default(),
        m.body.as_deref().unwrap_or_default(),
        attributes,
        count,
    )
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(
        &self,
        body: &[u8],
        mut attributes: BTreeMap<String, String>,
        delay: Duration,
    ) -> Result<String, StoreError> {
        attributes.remove(NOT_BEFORE);
        attributes.remove(ENCODING);
        let text = match std::str::from_utf8(body) {
            Ok(t) => t.to_string(),
            Err(_) => {
                attributes.insert(ENCODING.into(), "base64".into());
                B64.encode(body)
            }
        };
        if delay > SQS_MAX_DELAY {
            let due = unix_ms(SystemTime::now() + delay);
            attributes.insert(NOT_BEFORE.into(), due.to_string());
        }
        // SQS refuses empty attribute values.
        let message_attributes: Map<String, Value> = attributes
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, string_attribute(&v)))
            .collect();
        let mut input = json!({
            "QueueUrl": self.url().await?,
            "MessageBody": text,
            "DelaySeconds": delay.min(SQS_MAX_DELAY).as_secs_f64().ceil() as u64,
        });
        if !message_attributes.is_empty() {
            input["MessageAttributes"] = message_attributes.into();
        }
        let out = self
            .call("SendMessage", input)
            .await
            .map_err(|e| backend("SQS SendMessage", e))?;
        Ok(out["MessageId"].as_str().unwrap_or_default().to_string())
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, StoreError> {
        let raw = self
            .receive_raw(max, visibility, Duration::from_secs(1))
            .await?;
        raw.iter()
            .map(|m| queue_message_from_event(&sqs_event_message(m, "", "")))
            .collect()
    }

    async fn delete(&self, receipt: &str) -> Result<(), StoreError> {
        let input = json!({ "QueueUrl": self.url().await?, "ReceiptHandle": receipt });
        self.call("DeleteMessage", input)
            .await
            .map_err(|e| backend("SQS DeleteMessage", e))?;
        Ok(())
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), StoreError> {
        let input = json!({
            "QueueUrl": self.url().await?,
            "ReceiptHandle": receipt,
            "VisibilityTimeout": timeout.min(MAX_VISIBILITY).as_secs(),
        });
        self.call("ChangeMessageVisibility", input)
            .await
            .map_err(|e| backend("SQS ChangeMessageVisibility", e))?;
        Ok(())
    }
}

/// A `String` message attribute.
pub(crate) fn string_attribute(value: &str) -> Value {
    json!({ "DataType": "String", "StringValue": value })
}
