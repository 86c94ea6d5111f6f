//! The Lambda handler without the Lambda runtime: SQS events in, partial batch failures out.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use baton_aws::queue_message_from_event;
use baton_functions::{Function, Stage};
use baton_pipeline::runtime::{self, DeadLetters, Stages};
use baton_pipeline::{Disposition, Ports, StageError, SystemClock};
use baton_store::memory::{MemoryBlobStore, MemoryLedger, MemoryQueue};
use baton_store::{Queue, QueueMessage};

/// Decides by body, like a stage would by content.
struct ByBody;

#[async_trait]
impl runtime::Stage for ByBody {
    async fn handle(&self, _: &Ports, m: &QueueMessage) -> Result<Disposition, StageError> {
        match m.body.as_slice() {
            b"ok" => Ok(Disposition::Done),
            b"flaky" => Err(StageError::Transient("MX unreachable".into())),
            _ => Err(StageError::Permanent("undecodable queue record".into())),
        }
    }
}

struct Fixture {
    intake: Arc<MemoryQueue>,
    dlq: Arc<MemoryQueue>,
    function: Function,
}

fn fixture() -> Fixture {
    let dlq = Arc::new(MemoryQueue::new("intake-dlq", 0, None));
    let intake = Arc::new(MemoryQueue::new("intake", 10, None));
    let other = |n: &str| -> Arc<dyn Queue> { Arc::new(MemoryQueue::new(n, 10, None)) };
    let ports = Ports {
        blobs: Arc::new(MemoryBlobStore::default()),
        ledger: Arc::new(MemoryLedger::default()),
        intake: intake.clone(),
        sign: other("sign"),
        deliver: other("deliver"),
        bounce: other("bounce"),
        events: other("events"),
        clock: Arc::new(SystemClock),
    };
    let dead = DeadLetters {
        intake: dlq.clone(),
        sign: other("sign-dlq"),
        deliver: other("deliver-dlq"),
        bounce: other("bounce-dlq"),
        events: other("events-dlq"),
    };
    let handler: Arc<dyn runtime::Stage> = Arc::new(ByBody);
    let stages = Stages {
        policy: handler.clone(),
        fused: handler.clone(),
        sign: handler.clone(),
        deliver: handler.clone(),
        bounce: handler.clone(),
        events: handler,
    };
    Fixture {
        intake,
        dlq,
        function: Function::new(Stage::Policy, ports, &dead, &stages),
    }
}

fn string_attribute(value: &str) -> SqsMessageAttribute {
    let mut a = SqsMessageAttribute::default();
    a.string_value = Some(value.to_string());
    a.data_type = Some("String".into());
    a
}

/// The event Lambda would deliver for messages received from `queue`.
fn event_of(received: &[QueueMessage]) -> SqsEvent {
    let mut event = SqsEvent::default();
    for m in received {
        let mut r = SqsMessage::default();
        r.message_id = Some(m.id.clone());
        r.receipt_handle = Some(m.receipt.clone());
        r.body = Some(String::from_utf8_lossy(&m.body).into_owned());
        r.attributes.insert(
            "ApproximateReceiveCount".into(),
            m.receive_count.to_string(),
        );
        for (k, v) in &m.attributes {
            r.message_attributes.insert(k.clone(), string_attribute(v));
        }
        event.records.push(r);
    }
    event
}

#[tokio::test]
async fn only_transient_failures_are_reported_and_poison_goes_to_the_dead_letter_queue() {
    let f = fixture();
    for body in ["ok", "flaky", "poison"] {
        f.intake
            .send(body.as_bytes(), Default::default(), Duration::ZERO)
            .await
            .expect("send");
    }
    let received = f
        .intake
        .receive(10, Duration::from_secs(60))
        .await
        .expect("receive");
    let flaky_id = received
        .iter()
        .find(|m| m.body == b"flaky")
        .map(|m| m.id.clone())
        .expect("flaky");

    let response = f.function.handle(event_of(&received)).await;

    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        [flaky_id.as_str()],
        "only the transient failure is retried"
    );
    let dead = f
        .dlq
        .receive(10, Duration::from_secs(1))
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, b"poison");
    assert_eq!(
        dead[0].attributes["dead_letter_reason"],
        "undecodable queue record"
    );
    assert_eq!(
        f.intake.len(),
        1,
        "ok and poison must have left the queue, flaky stays"
    );
}

#[tokio::test]
async fn a_record_that_cannot_be_decoded_is_dead_lettered_not_retried() {
    let f = fixture();
    let mut record = SqsMessage::default();
    record.message_id = Some("m-1".into());
    record.receipt_handle = Some("r-1".into());
    record.body = Some("not base64 at all!".into());
    record
        .message_attributes
        .insert("baton_encoding".into(), string_attribute("base64"));
    let mut event = SqsEvent::default();
    event.records.push(record);

    let response = f.function.handle(event).await;

    assert!(
        response.batch_item_failures.is_empty(),
        "would loop forever"
    );
    let dead = f
        .dlq
        .receive(10, Duration::from_secs(1))
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].attributes["dead_letter_reason"].contains("base64"));
}

#[test]
fn a_real_sqs_event_decodes_into_queue_messages() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sqs-event.json"
    ))
    .expect("fixture");
    let event: SqsEvent = serde_json::from_str(&text).expect("an SqsEvent");
    let first = queue_message_from_event(&event.records[0]).expect("first");
    assert_eq!(first.body, br#"{"hello":"world"}"#);
    assert_eq!(first.receive_count, 3);
    assert_eq!(first.attributes["tenant"], "acme");
    assert_eq!(first.receipt, "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a");
    let second = queue_message_from_event(&event.records[1]).expect("second");
    assert_eq!(second.body, [0xff, 0xfe, 0xfd], "base64 bodies are decoded");
    assert!(
        second.attributes.is_empty(),
        "the encoding marker is not an attribute"
    );
}
