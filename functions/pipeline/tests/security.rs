//! What anonymous mail must never make the pipeline do: sign with a tenant's key, suppress
//! an address, or bounce (with the body) to a sender address that may be forged.

mod common;

use baton_domain::{Envelope, TenantId};
use baton_pipeline::job::{BounceAction, BounceJob, Failure, FailureSource, Job};
use baton_pipeline::records::{self, timeline};
use baton_pipeline::{Ports, bounce, dkim, policy, sign};
use baton_store::QueueMessage;
use common::fixtures::{accept_as, config, register_acme, setup, take};

fn acme() -> Option<TenantId> {
    Some(TenantId("acme".into()))
}

fn queued<T: serde::Serialize>(value: &T) -> QueueMessage {
    QueueMessage {
        id: "q1".into(),
        receipt: "r1".into(),
        body: serde_json::to_vec(value).expect("json"),
        attributes: Default::default(),
        receive_count: 1,
    }
}

async fn add_acme_keys(ports: &Ports) {
    for (alg, sel) in [
        (dkim::Algorithm::RsaSha256, "r1"),
        (dkim::Algorithm::Ed25519Sha256, "e1"),
    ] {
        let key = dkim::generate_key("acme.test", sel, alg, 0).expect("key");
        dkim::put_key(ports.ledger.as_ref(), &key)
            .await
            .expect("put");
    }
}

/// Runs the sign stage on a message and returns the prefix it handed to deliver.
async fn signed_prefix(ports: &Ports, tenant: Option<TenantId>) -> (String, Envelope) {
    let body = "From: News <news@acme.test>\r\nSubject: hi\r\n\r\nbody\r\n";
    let (envelope, _) = accept_as(ports, body, &["someone@example.org"], tenant).await;
    let job = Job::new(envelope.clone(), String::new());
    sign::handle(ports, &queued(&job)).await.expect("sign");
    let [out]: [Job; 1] = take(ports.deliver.as_ref())
        .await
        .try_into()
        .expect("one deliver job");
    (out.prefix, envelope)
}

#[tokio::test]
async fn only_the_owning_tenants_mail_is_signed_with_its_key() {
    let env = setup();
    register_acme(&env.ports).await;
    add_acme_keys(&env.ports).await;

    let (prefix, _) = signed_prefix(&env.ports, acme()).await;
    assert_eq!(prefix.matches("DKIM-Signature:").count(), 2, "{prefix}");

    // Inbound mail (no tenant) with acme's domain in From: never signed.
    let (prefix, envelope) = signed_prefix(&env.ports, None).await;
    assert!(!prefix.contains("DKIM-Signature"), "{prefix}");
    let events = timeline(env.ports.ledger.as_ref(), &envelope.queue_id)
        .await
        .expect("timeline");
    assert!(
        events
            .iter()
            .any(|e| e.what == "not signed" && e.detail.contains("not submitted by a tenant")),
        "{events:?}"
    );

    // Another tenant putting acme's domain in From: not signed either.
    let (prefix, _) = signed_prefix(&env.ports, Some(TenantId("mallory".into()))).await;
    assert!(!prefix.contains("DKIM-Signature"), "{prefix}");
}

async fn run_bounce(ports: &Ports, job: &BounceJob) {
    let cfg = bounce::BounceConfig {
        hostname: "relay.test".into(),
        soft: Default::default(),
    };
    bounce::handle(ports, &cfg, &queued(job))
        .await
        .expect("bounce");
}

#[tokio::test]
async fn a_policy_refusal_of_anonymous_mail_suppresses_nobody_and_sends_no_dsn() {
    let env = setup();
    register_acme(&env.ports).await;
    let (envelope, msg) = accept_as(
        &env.ports,
        "Subject: no author\r\n\r\nbody\r\n",
        &["postmaster@inbound.test"],
        None,
    )
    .await;
    policy::handle(&env.ports, &config(), &msg)
        .await
        .expect("policy");
    let [job]: [BounceJob; 1] = take(env.ports.bounce.as_ref())
        .await
        .try_into()
        .expect("bounce job");
    assert_eq!(job.failures[0].source, FailureSource::Policy);
    run_bounce(&env.ports, &job).await;
    let ledger = env.ports.ledger.as_ref();
    assert!(
        records::suppressed(ledger, None, "postmaster@inbound.test")
            .await
            .expect("lookup")
            .is_none(),
        "a policy refusal must not suppress"
    );
    assert!(
        take::<Envelope>(env.ports.intake.as_ref()).await.is_empty(),
        "no DSN to an unauthenticated sender"
    );
    let events = timeline(ledger, &envelope.queue_id)
        .await
        .expect("timeline");
    assert!(events.iter().any(|e| e.what == "no DSN"), "{events:?}");
}

#[tokio::test]
async fn a_delivery_failure_of_anonymous_mail_suppresses_nobody_and_sends_no_dsn() {
    let env = setup();
    let (envelope, _) = accept_as(
        &env.ports,
        "From: a@forged.test\r\n\r\nsecret body\r\n",
        &["gone@inbound.test"],
        None,
    )
    .await;
    let job = BounceJob {
        envelope,
        action: BounceAction::Failed,
        failures: vec![Failure {
            recipient: "gone@inbound.test".into(),
            code: 550,
            enhanced: "5.1.1".into(),
            text: "No such user".into(),
            remote_mta: Some("internal.test".into()),
            source: FailureSource::Delivery,
        }],
    };
    run_bounce(&env.ports, &job).await;
    let ledger = env.ports.ledger.as_ref();
    assert!(
        records::suppressed(ledger, None, "gone@inbound.test")
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(take::<Envelope>(env.ports.intake.as_ref()).await.is_empty());
}

#[tokio::test]
async fn a_policy_refusal_of_a_tenants_mail_returns_headers_only_and_suppresses_nobody() {
    let env = setup();
    register_acme(&env.ports).await;
    let (mut envelope, _) = accept_as(
        &env.ports,
        "From: news@acme.test\r\nFrom: other@acme.test\r\n\r\nsecret body\r\n",
        &["bob@example.org"],
        acme(),
    )
    .await;
    envelope.ret = Some(baton_domain::Ret::Full);
    policy::handle(&env.ports, &config(), &queued(&envelope))
        .await
        .expect("policy");
    let [job]: [BounceJob; 1] = take(env.ports.bounce.as_ref())
        .await
        .try_into()
        .expect("bounce job");
    run_bounce(&env.ports, &job).await;
    let ledger = env.ports.ledger.as_ref();
    assert!(
        records::suppressed(ledger, acme().as_ref(), "bob@example.org")
            .await
            .expect("lookup")
            .is_none()
    );
    let [dsn]: [Envelope; 1] = take(env.ports.intake.as_ref())
        .await
        .try_into()
        .expect("one DSN");
    let body = env
        .ports
        .blobs
        .read(&dsn.queue_id.to_string())
        .await
        .expect("dsn body");
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("text/rfc822-headers"), "{body}");
    assert!(!body.contains("secret body"), "{body}");
}
