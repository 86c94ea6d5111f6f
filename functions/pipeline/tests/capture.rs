//! The capture route on the embedded backend: repeatable, and merging recipients.

mod common;

use baton_pipeline::capture;
use baton_pipeline::outbound::Outcome;
use common::fixtures::{accept, setup};

#[tokio::test]
async fn a_capture_that_died_after_storing_its_copy_completes_when_retried() {
    let env = setup();
    let (envelope, _) = accept(
        &env.ports,
        "From: news@acme.test\r\n\r\nbody\r\n",
        &["a@x.test"],
    )
    .await;
    let id = envelope.queue_id;
    // An earlier attempt stored the copy, then died before its record (blob keys are
    // written once: a second create of the same key fails on the embedded backend).
    let mut w = env
        .ports
        .blobs
        .create(&capture::blob_key(&id))
        .await
        .expect("create");
    w.write(b"Prefix: 1\r\nFrom: news@acme.test\r\n\r\nbody\r\n")
        .await
        .expect("write");
    w.commit().await.expect("commit");

    let results = capture::keep(
        &env.ports,
        &envelope,
        b"Prefix: 2\r\n",
        b"body",
        &["a@x.test".into()],
        1,
    )
    .await
    .expect("a retry finishes");
    assert!(
        results
            .iter()
            .all(|r| r.outcome == Outcome::Delivered && r.code == 250)
    );
    let kept = capture::get(env.ports.ledger.as_ref(), &id)
        .await
        .expect("get")
        .expect("record");
    assert_eq!(kept.recipients, ["a@x.test"]);
    let copy = env
        .ports
        .blobs
        .read(&capture::blob_key(&id))
        .await
        .expect("copy");
    assert!(copy.starts_with(b"Prefix: 1\r\n"), "the first copy stays");
}

#[tokio::test]
async fn each_domain_adds_its_recipients_to_one_copy() {
    let env = setup();
    let (envelope, _) = accept(
        &env.ports,
        "From: news@acme.test\r\n\r\nbody\r\n",
        &["a@x.test", "b@y.test"],
    )
    .await;
    for rcpt in ["a@x.test", "b@y.test", "A@x.test"] {
        capture::keep(
            &env.ports,
            &envelope,
            b"P: 1\r\n",
            b"From: news@acme.test\r\n\r\nbody\r\n",
            &[rcpt.into()],
            1,
        )
        .await
        .expect("keep");
    }
    let kept = capture::get(env.ports.ledger.as_ref(), &envelope.queue_id)
        .await
        .expect("get")
        .expect("record");
    assert_eq!(kept.recipients, ["a@x.test", "b@y.test"]);
    assert_eq!(
        capture::list(env.ports.ledger.as_ref())
            .await
            .expect("list")
            .len(),
        1
    );
}
