//! The fused path (policy + sign + first delivery in one job) on the embedded backend, to a
//! next hop that logs every line: one job signs and delivers, sends once however often the
//! intake message comes back, and hands a deferral to the deliver queue.

mod common;
mod nexthop;

use std::time::Duration;

use baton_pipeline::deliver::{DeliverStage, RetryPolicy};
use baton_pipeline::fused::{self, FusedStage};
use baton_pipeline::job::Job;
use baton_pipeline::outbound::{LiteralResolver, Route};
use baton_pipeline::records::{self, RcptStatus};
use baton_pipeline::{Disposition, Ports, dkim};
use baton_store::QueueMessage;
use common::fixtures::{accept, config, register_acme, setup, take};
use nexthop::{Hop, Script, client};

fn stage(route: Route) -> FusedStage {
    FusedStage {
        policy: config(),
        deliver: DeliverStage {
            resolver: std::sync::Arc::new(LiteralResolver),
            client: client(Duration::from_secs(5)),
            routes: vec![route],
            retry: RetryPolicy {
                initial: Duration::from_secs(60),
                max: Duration::from_secs(3600),
                // The fixtures accept mail "in 2023": nothing may expire or be late yet.
                max_age: Duration::from_secs(100 * 365 * 86_400),
                delay_notice_after: Duration::from_secs(100 * 365 * 86_400),
            },
            return_paths: baton_pipeline::return_path::ReturnPathPolicy {
                label: "bounce".into(),
                every_domain: false,
            },
        },
    }
}

async fn acme_with_keys(ports: &Ports) {
    register_acme(ports).await;
    dkim::add_key_pair(ports.ledger.as_ref(), "acme.test", 1_700_000_000)
        .await
        .expect("keys");
}

const MAIL: &str = "From: news@acme.test\r\nTo: bob@example.org\r\nSubject: fused\r\n\r\nhello\r\n";

#[tokio::test]
async fn one_job_signs_and_delivers_and_nothing_waits_on_the_stage_queues() {
    let env = setup();
    acme_with_keys(&env.ports).await;
    let hop = Hop::start(Script::default()).await;
    let (envelope, msg) = accept(&env.ports, MAIL, &["bob@example.org"]).await;
    // On the intake queue for real, and visible again at once: only a delete removes it.
    env.ports
        .intake
        .send(&msg.body, Default::default(), Duration::ZERO)
        .await
        .expect("send");
    let [msg]: [QueueMessage; 1] = env
        .ports
        .intake
        .receive(1, Duration::ZERO)
        .await
        .expect("receive")
        .try_into()
        .expect("one intake message");

    let d = fused::handle(&env.ports, &stage(hop.route(None)), &msg)
        .await
        .expect("fused");
    assert_eq!(
        d,
        Disposition::Deleted,
        "finished with its results recorded"
    );
    assert!(
        env.ports
            .intake
            .receive(1, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty(),
        "the intake message is deleted"
    );

    let sent = hop.messages();
    assert_eq!(sent.len(), 1, "one message at the next hop");
    let text = String::from_utf8_lossy(&sent[0]);
    assert_eq!(
        text.matches("DKIM-Signature:").count(),
        2,
        "RSA and Ed25519 signatures: {text}"
    );
    assert!(text.contains("Message-ID: <"), "policy's header: {text}");
    for q in [&env.ports.sign, &env.ports.deliver, &env.ports.bounce] {
        assert!(take::<Job>(q.as_ref()).await.is_empty(), "{}", q.name());
    }
    let id = envelope.queue_id;
    let state = records::rcpt_state(env.ports.ledger.as_ref(), &id, "bob@example.org")
        .await
        .expect("state")
        .expect("recorded");
    assert_eq!(state.status, RcptStatus::Delivered);
    let timeline = records::timeline(env.ports.ledger.as_ref(), &id)
        .await
        .expect("timeline");
    let steps: Vec<&str> = timeline.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(
        steps,
        ["accepted", "headers added", "passed", "signed", "delivered"]
    );
}

#[tokio::test]
async fn an_intake_message_that_comes_back_is_not_sent_twice() {
    let env = setup();
    acme_with_keys(&env.ports).await;
    let hop = Hop::start(Script::default()).await;
    let (_, msg) = accept(&env.ports, MAIL, &["bob@example.org"]).await;
    let stage = stage(hop.route(None));
    for run in 0..3 {
        let d = fused::handle(&env.ports, &stage, &msg)
            .await
            .expect("fused");
        // The first run delivers; the others find nobody left to send to.
        let expected = if run == 0 {
            Disposition::Deleted
        } else {
            Disposition::Done
        };
        assert_eq!(d, expected, "run {run}");
    }
    assert_eq!(hop.messages().len(), 1, "sent once, not once per run");
}

#[tokio::test]
async fn a_deferral_is_handed_to_the_deliver_queue_with_its_signatures() {
    let env = setup();
    acme_with_keys(&env.ports).await;
    // A port nobody listens on: the attempt is deferred.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let route = Route {
        pattern: "*".into(),
        capture: false,
        target: Some((addr.ip().to_string(), addr.port())),
        require_tls: false,
        auth: None,
        verify: None,
    };
    let (envelope, msg) = accept(&env.ports, MAIL, &["bob@example.org"]).await;
    let mut stage = stage(route);
    stage.deliver.retry.initial = Duration::ZERO;
    let d = fused::handle(&env.ports, &stage, &msg)
        .await
        .expect("fused");
    assert_eq!(d, Disposition::Deleted, "the intake message is finished");
    // The retry waits out its backoff (0.1 s with no initial delay).
    let mut jobs = Vec::new();
    for _ in 0..50 {
        jobs = take::<Job>(env.ports.deliver.as_ref()).await;
        if !jobs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let [retry]: [Job; 1] = jobs.try_into().expect("one retry job");
    assert_eq!(retry.attempt, 1);
    assert_eq!(retry.pending, ["bob@example.org"]);
    assert_eq!(retry.prefix.matches("DKIM-Signature:").count(), 2);
    let state = records::rcpt_state(
        env.ports.ledger.as_ref(),
        &envelope.queue_id,
        "bob@example.org",
    )
    .await
    .expect("state")
    .expect("recorded");
    assert_eq!(state.status, RcptStatus::Deferred);
}

#[tokio::test]
async fn a_large_message_that_finds_the_lane_full_waits_in_its_queue_not_in_a_worker() {
    use baton_pipeline::body::{Budget, LANE_FULL_RETRY, LANES};
    let env = setup();
    acme_with_keys(&env.ports).await;
    let hop = Hop::start(Script::default()).await;
    let line = format!("{}\r\n", "x".repeat(76));
    let big = format!("{MAIL}{}", line.repeat(15_000));
    assert!(big.len() as u64 > baton_pipeline::body::LARGE);
    let (envelope, msg) = accept(&env.ports, &big, &["bob@example.org"]).await;

    // Other large bodies fill the lane (this process's only budget).
    let mut held = Vec::new();
    for _ in 0..LANES {
        let share = Budget::global().reserve(2 << 20).await.expect("reserve");
        held.push(share.expect("a place in the lane"));
    }
    let d = fused::handle(&env.ports, &stage(hop.route(None)), &msg)
        .await
        .expect("fused");
    assert_eq!(
        d,
        Disposition::RetryAfter(LANE_FULL_RETRY),
        "postponed at once"
    );
    assert!(hop.messages().is_empty());
    let state = records::rcpt_state(
        env.ports.ledger.as_ref(),
        &envelope.queue_id,
        "bob@example.org",
    )
    .await
    .expect("state");
    assert_eq!(state, None, "nobody claimed or touched");

    // A place frees up: the same intake message goes through.
    held.pop();
    let d = fused::handle(&env.ports, &stage(hop.route(None)), &msg)
        .await
        .expect("fused");
    assert_eq!(d, Disposition::Deleted);
    assert_eq!(hop.messages().len(), 1);
}
