//! Event destinations: a stage keeps each SES-shaped event once, however often it runs, and
//! queues it for every destination of the tenant; the events stage sends each (event,
//! destination) once, retries a failing one and never sends to the relay's own queues.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use baton_pipeline::event_destinations::{self, Destination, Target};
use baton_pipeline::notify::{self, CloudTargets, NotifyStage};
use baton_pipeline::webhook::WebhookClient;
use baton_pipeline::{Disposition, Ports, StageError, policy, ses_events};
use baton_store::QueueMessage;
use common::fixtures::{accept, config, register_acme, setup};

/// Records every send; fails the first `failures` of them.
#[derive(Default)]
struct Recording {
    sent: Mutex<Vec<(String, String, String)>>,
    failures: AtomicU32,
}

#[async_trait::async_trait]
impl CloudTargets for Recording {
    async fn send_to_queue(
        &self,
        queue_url: &str,
        body: &str,
        event_id: &str,
        event_type: &str,
    ) -> Result<(), StageError> {
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(StageError::Transient("queue unavailable".into()));
        }
        assert!(body.contains(&format!("\"eventType\":\"{event_type}\"")));
        self.sent.lock().expect("lock").push((
            queue_url.to_string(),
            event_id.to_string(),
            event_type.to_string(),
        ));
        Ok(())
    }

    async fn put_event(
        &self,
        bus: &str,
        source: &str,
        detail_type: &str,
        detail: &str,
    ) -> Result<(), StageError> {
        assert_eq!(source, "baton");
        let v: serde_json::Value = serde_json::from_str(detail).expect("detail is the event");
        self.sent.lock().expect("lock").push((
            bus.to_string(),
            v["mail"]["messageId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            detail_type.to_string(),
        ));
        Ok(())
    }
}

fn stage(cloud: std::sync::Arc<Recording>) -> NotifyStage {
    NotifyStage {
        cloud,
        webhooks: WebhookClient::new(&Default::default()).expect("client"),
        own_prefix: "baton".into(),
    }
}

async fn add(ports: &Ports, name: &str, target: Target) {
    let d = Destination {
        tenant: "acme".into(),
        name: name.into(),
        target,
        created_at: 0,
        secret_id: String::new(),
    };
    event_destinations::add(ports.ledger.as_ref(), &d, "baton")
        .await
        .expect("add");
}

async fn jobs(ports: &Ports) -> Vec<QueueMessage> {
    ports
        .events
        .receive(100, Duration::from_secs(60))
        .await
        .expect("receive")
}

/// The first events job of a tenant message to `rcpt` through policy (its Send event).
async fn first_job(ports: &Ports, rcpt: &str) -> QueueMessage {
    let (_, msg) = accept(
        ports,
        "From: news@acme.test\r\nSubject: hi\r\n\r\nbody\r\n",
        &[rcpt],
    )
    .await;
    policy::handle(ports, &config(), &msg)
        .await
        .expect("policy");
    jobs(ports).await.remove(0)
}

fn sqs(url: &str) -> Target {
    Target::Sqs {
        queue_url: url.into(),
    }
}

#[tokio::test]
async fn a_stage_run_twice_keeps_one_event_and_each_destination_gets_it_once() {
    let env = setup();
    let ports = &env.ports;
    register_acme(ports).await;
    add(ports, "queue", sqs("https://sqs.test/1/acme-events")).await;
    add(ports, "bus", Target::Eventbridge { bus: "acme".into() }).await;
    let (envelope, msg) = accept(
        ports,
        "From: news@acme.test\r\nSubject: hi\r\n\r\nbody\r\n",
        &["bob@example.org"],
    )
    .await;
    // At least once: the intake message is handled again after a crash.
    for _ in 0..2 {
        policy::handle(ports, &config(), &msg)
            .await
            .expect("policy");
    }

    let kept = ses_events::list(ports.ledger.as_ref(), Some("acme"))
        .await
        .expect("list");
    assert_eq!(kept.len(), 1, "one Send event, not one per run: {kept:?}");
    assert_eq!(kept[0].event_type, "Send");

    let queued = jobs(ports).await;
    assert_eq!(queued.len(), 4, "each run queues it for both destinations");
    let cloud = std::sync::Arc::new(Recording::default());
    let stage = stage(cloud.clone());
    for job in &queued {
        let d = notify::handle(ports, &stage, job).await.expect("sent");
        assert_eq!(d, Disposition::Done);
    }
    let mut sent = cloud.sent.lock().expect("lock").clone();
    sent.sort();
    assert_eq!(sent.len(), 2, "once per destination: {sent:?}");
    assert_eq!(sent[0].0, "acme");
    assert_eq!(sent[0].1, envelope.queue_id.to_string());
    assert_eq!(sent[0].2, "Email Sent");
    assert_eq!(sent[1].0, "https://sqs.test/1/acme-events");
    assert_eq!(
        sent[1].1,
        ses_events::event_id(&envelope.queue_id.to_string(), "Send", "")
    );
    assert_eq!(sent[1].2, "Send");
}

#[tokio::test]
async fn a_failing_destination_is_retried_and_a_removed_one_dropped() {
    let env = setup();
    let ports = &env.ports;
    register_acme(ports).await;
    add(ports, "queue", sqs("https://sqs.test/1/acme-events")).await;
    let job = first_job(ports, "bob@example.org").await;

    let cloud = std::sync::Arc::new(Recording {
        failures: AtomicU32::new(1),
        ..Default::default()
    });
    let stage = stage(cloud.clone());
    let first = notify::handle(ports, &stage, &job).await;
    assert!(
        matches!(first, Err(StageError::Transient(_))),
        "a destination that is down is retried (the driver backs off): {first:?}"
    );
    notify::handle(ports, &stage, &job).await.expect("retried");
    assert_eq!(cloud.sent.lock().expect("lock").len(), 1);

    // Removed while a job for it waits: the job is dropped, nothing is sent.
    let job = first_job(ports, "carol@example.org").await;
    assert!(
        event_destinations::remove(ports.ledger.as_ref(), "acme", "queue")
            .await
            .expect("remove")
    );
    let d = notify::handle(ports, &stage, &job).await.expect("dropped");
    assert_eq!(d, Disposition::Done);
    assert_eq!(cloud.sent.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn the_relays_own_queues_are_never_destinations() {
    let env = setup();
    let ports = &env.ports;
    let own = Destination {
        tenant: "acme".into(),
        name: "sneaky".into(),
        target: sqs("https://sqs.test/1/baton-intake"),
        created_at: 0,
        secret_id: String::new(),
    };
    let refused = event_destinations::add(ports.ledger.as_ref(), &own, "baton").await;
    assert!(refused.is_err(), "added: {refused:?}");

    // One stored before the rule (or by hand) is refused at sending, not sent.
    register_acme(ports).await;
    let bytes = serde_json::to_vec(&own).expect("json");
    ports
        .ledger
        .put(event_destinations::TABLE, "acme/sneaky", &bytes)
        .await
        .expect("put");
    let job = first_job(ports, "bob@example.org").await;
    let cloud = std::sync::Arc::new(Recording::default());
    let result = notify::handle(ports, &stage(cloud.clone()), &job).await;
    assert!(
        matches!(result, Err(StageError::Permanent(_))),
        "dead-lettered, not retried: {result:?}"
    );
    assert!(cloud.sent.lock().expect("lock").is_empty());
}
