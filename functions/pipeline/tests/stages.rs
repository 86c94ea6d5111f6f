//! Policy and bounce stages on the embedded backend (real SQLite and spool).

mod common;

use baton_domain::{Envelope, TenantId};
use baton_pipeline::job::{BounceAction, BounceJob, Failure, Job};
use baton_pipeline::records::{self, RcptStatus, Suppression};
use baton_pipeline::{Disposition, bounce, policy};
use baton_store::QueueMessage;
use common::fixtures::{accept, config, register_acme, setup, take};

#[tokio::test]
async fn policy_passes_good_mail_and_adds_missing_date_and_message_id() {
    let env = setup();
    register_acme(&env.ports).await;
    let (envelope, msg) = accept(
        &env.ports,
        "From: news@acme.test\r\nSubject: hi\r\n\r\nbody\r\n",
        &["bob@example.org"],
    )
    .await;
    let d = policy::handle(&env.ports, &config(), &msg)
        .await
        .expect("policy");
    assert_eq!(d, Disposition::Done);
    let [job]: [Job; 1] = take(env.ports.sign.as_ref())
        .await
        .try_into()
        .expect("one sign job");
    assert!(job.prefix.starts_with("Date: "), "{}", job.prefix);
    assert!(
        job.prefix
            .contains(&format!("Message-ID: <{}@relay.test>", envelope.queue_id))
    );
    assert_eq!(job.pending, ["bob@example.org"]);
    let timeline = records::timeline(env.ports.ledger.as_ref(), &envelope.queue_id)
        .await
        .expect("timeline");
    let steps: Vec<&str> = timeline.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(steps, ["accepted", "headers added", "passed"]);
}

#[tokio::test]
async fn policy_refuses_two_from_fields_and_unregistered_sender_domains() {
    let env = setup();
    register_acme(&env.ports).await;
    let (_, msg) = accept(
        &env.ports,
        "From: a@acme.test\r\nFrom: b@acme.test\r\n\r\nx\r\n",
        &["bob@example.org"],
    )
    .await;
    policy::handle(&env.ports, &config(), &msg)
        .await
        .expect("policy");
    assert!(take::<Job>(env.ports.sign.as_ref()).await.is_empty());
    let [b]: [BounceJob; 1] = take(env.ports.bounce.as_ref())
        .await
        .try_into()
        .expect("bounce job");
    assert_eq!(b.failures[0].enhanced, "5.6.0");

    let unregistered = setup();
    let (_, msg) = accept(
        &unregistered.ports,
        "From: news@acme.test\r\n\r\nx\r\n",
        &["bob@example.org"],
    )
    .await;
    policy::handle(&unregistered.ports, &config(), &msg)
        .await
        .expect("policy");
    let [b]: [BounceJob; 1] = take(unregistered.ports.bounce.as_ref())
        .await
        .try_into()
        .expect("bounce job");
    assert_eq!(
        (b.failures[0].code, b.failures[0].enhanced.as_str()),
        (550, "5.7.1")
    );
}

#[tokio::test]
async fn policy_drops_suppressed_recipients_with_a_reason() {
    let env = setup();
    register_acme(&env.ports).await;
    let entry = Suppression {
        reason: "550 5.1.1 no such user".into(),
        queue_id: None,
        at: 0,
        expires_at: None,
    };
    records::suppress(
        env.ports.ledger.as_ref(),
        Some(&TenantId("acme".into())),
        "gone@example.org",
        &entry,
    )
    .await
    .expect("suppress");
    let (envelope, msg) = accept(
        &env.ports,
        "From: news@acme.test\r\nDate: x\r\nMessage-ID: <a@b>\r\n\r\nx\r\n",
        &["gone@example.org", "ok@example.org"],
    )
    .await;
    policy::handle(&env.ports, &config(), &msg)
        .await
        .expect("policy");
    let [job]: [Job; 1] = take(env.ports.sign.as_ref())
        .await
        .try_into()
        .expect("sign job");
    assert_eq!(job.pending, ["ok@example.org"]);
    assert_eq!(job.prefix, "", "nothing to add");
    let state = records::rcpt_state(
        env.ports.ledger.as_ref(),
        &envelope.queue_id,
        "gone@example.org",
    )
    .await
    .expect("state")
    .expect("exists");
    assert_eq!(state.status, RcptStatus::Suppressed);
    assert!(state.last_reply.contains("suppression list"));
    let [b]: [BounceJob; 1] = take(env.ports.bounce.as_ref())
        .await
        .try_into()
        .expect("bounce job");
    assert_eq!(b.failures[0].recipient, "gone@example.org");

    // A redelivered intake message does not redo recipients that moved on.
    policy::handle(&env.ports, &config(), &msg)
        .await
        .expect("again");
    assert!(
        take::<BounceJob>(env.ports.bounce.as_ref())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn hard_bounce_records_suppresses_and_sends_one_dsn() {
    let env = setup();
    let (envelope, _) = accept(
        &env.ports,
        "From: news@acme.test\r\nSubject: s\r\n\r\nsecret\r\n",
        &["gone@example.org"],
    )
    .await;
    let job = BounceJob {
        envelope: envelope.clone(),
        action: BounceAction::Failed,
        failures: vec![Failure {
            recipient: "gone@example.org".into(),
            code: 550,
            enhanced: "5.1.1".into(),
            text: "No such user".into(),
            remote_mta: Some("mx.example.org".into()),
            source: Default::default(),
        }],
    };
    let message = QueueMessage {
        id: "b1".into(),
        receipt: "rb1".into(),
        body: serde_json::to_vec(&job).expect("json"),
        attributes: Default::default(),
        receive_count: 1,
    };
    let cfg = bounce::BounceConfig {
        hostname: "relay.test".into(),
        soft: Default::default(),
    };
    bounce::handle(&env.ports, &cfg, &message)
        .await
        .expect("bounce");
    bounce::handle(&env.ports, &cfg, &message)
        .await
        .expect("bounce again");
    let tenant = TenantId("acme".into());
    let recs = records::bounces(env.ports.ledger.as_ref(), Some(&tenant))
        .await
        .expect("bounces");
    assert_eq!(recs.len(), 1);
    assert!(recs[0].hard);
    assert!(
        records::suppressed(env.ports.ledger.as_ref(), Some(&tenant), "Gone@Example.org")
            .await
            .expect("s")
            .is_some()
    );
    let dsns: Vec<Envelope> = take(env.ports.intake.as_ref()).await;
    assert_eq!(
        dsns.len(),
        1,
        "exactly one DSN even when the bounce job is handled twice"
    );
    assert_eq!(dsns[0].mail_from, None);
    assert_eq!(dsns[0].recipients[0].address.to_string(), "news@acme.test");
    let body = env
        .ports
        .blobs
        .read(&dsns[0].queue_id.to_string())
        .await
        .expect("dsn body");
    let text = String::from_utf8(body).expect("ascii");
    assert!(text.contains("Action: failed") && text.contains("Status: 5.1.1"));
    assert!(!text.contains("secret"));
}

#[tokio::test]
async fn an_expired_suppression_no_longer_holds() {
    let env = setup();
    register_acme(&env.ports).await;
    // Repeated soft bounces suppressed it until a moment that has passed.
    let entry = Suppression {
        reason: "3 soft bounces within 7d".into(),
        queue_id: None,
        at: 0,
        expires_at: Some(1),
    };
    records::suppress(
        env.ports.ledger.as_ref(),
        Some(&TenantId("acme".into())),
        "full@example.org",
        &entry,
    )
    .await
    .expect("suppress");
    let (_, msg) = accept(
        &env.ports,
        "From: news@acme.test\r\nDate: x\r\nMessage-ID: <a@b>\r\n\r\nx\r\n",
        &["full@example.org"],
    )
    .await;
    policy::handle(&env.ports, &config(), &msg)
        .await
        .expect("policy");
    let [job]: [Job; 1] = take(env.ports.sign.as_ref())
        .await
        .try_into()
        .expect("on to signing");
    assert_eq!(job.pending_recipients(), ["full@example.org"]);
}
