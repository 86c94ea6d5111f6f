//! Bounces coming back by mail to a return path: the token decides message and recipient;
//! hard bounces and complaints suppress, the rest is only recorded; nothing goes on.

mod common;

use baton_domain::{Envelope, QueueId, TenantId};
use baton_pipeline::records::{self, RcptStatus};
use baton_pipeline::return_path::{ReturnPathPolicy, ReturnPaths};
use baton_pipeline::{Disposition, Ports, policy, records::timeline};
use common::fixtures::{accept, accept_as, config, register_acme, setup, take};

/// Return paths for the domains that have them turned on (acme.test, in the fixtures).
fn policy() -> ReturnPathPolicy {
    ReturnPathPolicy {
        label: "bounce".into(),
        every_domain: false,
    }
}

/// A tenant message to `rcpt`, through policy, and the return path it goes out from.
async fn sent(ports: &Ports, rcpt: &str) -> (Envelope, String) {
    register_acme(ports).await;
    let (envelope, msg) = accept(
        ports,
        "From: news@acme.test\r\nSubject: hi\r\n\r\nbody\r\n",
        &[rcpt],
    )
    .await;
    policy::handle(ports, &config(), &msg)
        .await
        .expect("policy");
    let on_to_sign = take::<serde_json::Value>(ports.sign.as_ref()).await;
    assert_eq!(on_to_sign.len(), 1, "the tenant's message goes on");
    let paths = ReturnPaths::for_envelope(ports.ledger.as_ref(), &policy(), &envelope)
        .await
        .expect("key")
        .expect("tenant mail has return paths");
    let path = paths.sender(rcpt).expect("a recipient");
    assert!(path.ends_with("@bounce.acme.test"), "{path}");
    (envelope, path)
}

/// Mail from the Internet to `to`, through policy.
async fn returned(ports: &Ports, to: &str, body: &str) -> Envelope {
    let (envelope, msg) = accept_as(ports, body, &[to], None).await;
    let d = policy::handle(ports, &config(), &msg)
        .await
        .expect("policy");
    assert_eq!(d, Disposition::Done);
    // Never relayed: it would come straight back.
    assert!(
        take::<serde_json::Value>(ports.sign.as_ref())
            .await
            .is_empty()
    );
    envelope
}

fn dsn(rcpt: &str, status: &str, action: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.org\r\nTo: x\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n\
         Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n\
         Diagnostic-Code: smtp; 550 {status} no such user\r\n\r\n--B--\r\n"
    )
}

async fn suppressed(ports: &Ports, rcpt: &str) -> Option<records::Suppression> {
    records::suppressed(ports.ledger.as_ref(), Some(&TenantId("acme".into())), rcpt)
        .await
        .expect("lookup")
}

#[tokio::test]
async fn a_hard_bounce_by_mail_suppresses_the_recipient_for_its_tenant() {
    let env = setup();
    let (original, path) = sent(&env.ports, "gone@example.org").await;
    let bounce = returned(
        &env.ports,
        &path,
        &dsn("gone@example.org", "5.1.1", "failed"),
    )
    .await;

    let s = suppressed(&env.ports, "gone@example.org")
        .await
        .expect("suppressed");
    assert_eq!(s.queue_id, Some(original.queue_id));
    assert!(s.reason.contains("5.1.1"), "{}", s.reason);
    let [b] = records::bounces(env.ports.ledger.as_ref(), Some(&TenantId("acme".into())))
        .await
        .expect("bounces")
        .try_into()
        .expect("one bounce record");
    assert!(b.hard && b.enhanced == "5.1.1" && b.queue_id == original.queue_id);
    let events = timeline(env.ports.ledger.as_ref(), &original.queue_id)
        .await
        .expect("timeline");
    assert!(
        events
            .iter()
            .any(|e| e.what == "bounced" && e.detail.contains(&bounce.queue_id.to_string())),
        "{events:?}"
    );
    // SES-shaped events for the tenant: Send when policy passed it, Bounce when it came back.
    let events = baton_pipeline::ses_events::list(env.ports.ledger.as_ref(), Some("acme"))
        .await
        .expect("events");
    let v: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect();
    let types: Vec<&str> = v.iter().filter_map(|e| e["eventType"].as_str()).collect();
    assert_eq!(types, ["Send", "Bounce"], "{v:?}");
    let bounce_event = &v[1];
    assert_eq!(
        bounce_event["mail"]["messageId"],
        original.queue_id.to_string()
    );
    assert_eq!(bounce_event["mail"]["sendingAccountId"], "acme");
    assert_eq!(bounce_event["bounce"]["bounceType"], "Permanent");
    assert_eq!(bounce_event["bounce"]["bounceSubType"], "NoEmail");
    assert_eq!(
        bounce_event["bounce"]["bouncedRecipients"][0]["emailAddress"],
        "gone@example.org"
    );
    let states = records::rcpt_states(env.ports.ledger.as_ref(), &bounce.queue_id)
        .await
        .expect("states");
    assert!(
        states
            .iter()
            .all(|(_, s)| s.status == RcptStatus::Delivered),
        "{states:?}"
    );
}

#[tokio::test]
async fn the_token_not_the_report_says_who_bounced() {
    let env = setup();
    let (_, path) = sent(&env.ports, "real@example.org").await;
    // The report names someone else: the token's recipient is the one suppressed, never the
    // address a forger would like to see suppressed.
    returned(
        &env.ports,
        &path,
        &dsn("victim@example.org", "5.1.1", "failed"),
    )
    .await;
    assert!(suppressed(&env.ports, "victim@example.org").await.is_none());
    assert!(suppressed(&env.ports, "real@example.org").await.is_some());
}

#[tokio::test]
async fn soft_bounces_auto_replies_stale_and_forged_paths_suppress_nobody() {
    let env = setup();
    let (original, path) = sent(&env.ports, "full@example.org").await;
    returned(
        &env.ports,
        &path,
        &dsn("full@example.org", "4.2.2", "delayed"),
    )
    .await;
    returned(
        &env.ports,
        &path,
        "From: full@example.org\r\nAuto-Submitted: auto-replied\r\nSubject: Out of office\r\n\r\nAway.\r\n",
    )
    .await;
    // A return path of ours, but for a message too old to bounce now (a replayed token).
    let key = baton_store::verp_key(env.ports.ledger.as_ref())
        .await
        .expect("key");
    let old: QueueId = "01000000000000000000000000".parse().expect("an old id");
    let stale = format!(
        "{}@bounce.acme.test",
        key.local_part("bounce.acme.test", &old, 0)
    );
    let ignored = returned(
        &env.ports,
        &stale,
        &dsn("full@example.org", "5.1.1", "failed"),
    )
    .await;
    // A forged one at our bounce domain (its MAC does not open) is dropped, never relayed
    // (`returned` asserts nothing went on to sign), whoever sent it.
    let forged = path.replacen("-0-", "-1-", 1);
    returned(
        &env.ports,
        &forged,
        &dsn("full@example.org", "5.1.1", "failed"),
    )
    .await;
    // Someone else's bounce.* domain is ordinary mail for a client allowed to relay.
    let (_, msg) = accept_as(
        &env.ports,
        &dsn("full@example.org", "5.1.1", "failed"),
        &["b1-x@bounce.github.test"],
        None,
    )
    .await;
    policy::handle(&env.ports, &config(), &msg)
        .await
        .expect("policy");
    assert_eq!(
        take::<serde_json::Value>(env.ports.sign.as_ref())
            .await
            .len(),
        1
    );
    assert!(suppressed(&env.ports, "full@example.org").await.is_none());
    let whats: Vec<String> = timeline(env.ports.ledger.as_ref(), &original.queue_id)
        .await
        .expect("timeline")
        .into_iter()
        .map(|e| e.what)
        .collect();
    assert!(
        whats.contains(&"delay reported".to_string()) && whats.contains(&"auto-reply".to_string()),
        "{whats:?}"
    );
    let events = timeline(env.ports.ledger.as_ref(), &ignored.queue_id)
        .await
        .expect("timeline");
    assert!(events.iter().any(|e| e.what == "ignored"), "{events:?}");
}

#[tokio::test]
async fn a_complaint_suppresses() {
    let env = setup();
    let (_, path) = sent(&env.ports, "angry@example.org").await;
    let arf = "From: abuse@example.org\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/report; report-type=feedback-report; boundary=\"B\"\r\n\r\n\
        --B\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n\
        --B\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: x/1\r\nVersion: 1\r\n\
        Original-Rcpt-To: angry@example.org\r\n\r\n\
        --B\r\nContent-Type: message/rfc822\r\n\r\nFrom: news@acme.test\r\nTo: angry@example.org\r\nSubject: hi\r\n\r\nbody\r\n--B--\r\n";
    returned(&env.ports, &path, arf).await;
    let s = suppressed(&env.ports, "angry@example.org")
        .await
        .expect("suppressed");
    let events = baton_pipeline::ses_events::list(env.ports.ledger.as_ref(), Some("acme"))
        .await
        .expect("events");
    let complaint = serde_json::to_value(events.last().expect("an event")).expect("json");
    assert_eq!(complaint["eventType"], "Complaint", "{complaint}");
    assert_eq!(
        complaint["complaint"]["complainedRecipients"][0]["emailAddress"],
        "angry@example.org"
    );
    assert!(s.reason.starts_with("complaint"), "{}", s.reason);
}

#[tokio::test]
async fn soft_bounces_suppress_once_they_repeat_across_messages() {
    let env = setup();
    let soft = dsn("full@example.org", "4.2.2", "failed");
    let (_, first) = sent(&env.ports, "full@example.org").await;
    // The same message reported again and again counts once.
    for _ in 0..3 {
        returned(&env.ports, &first, &soft).await;
    }
    let (_, second) = sent(&env.ports, "full@example.org").await;
    returned(&env.ports, &second, &soft).await;
    assert!(suppressed(&env.ports, "full@example.org").await.is_none());
    // The default threshold: three messages within a week.
    let (_, third) = sent(&env.ports, "full@example.org").await;
    returned(&env.ports, &third, &soft).await;
    let s = suppressed(&env.ports, "full@example.org")
        .await
        .expect("suppressed on the third message");
    assert_eq!(s.reason, "3 soft bounces within 7d");
    // For 30 days by default, unlike a hard bounce's.
    let days = (s.expires_at.expect("it ends") - s.at) / 86_400_000;
    assert_eq!(days, 30);
}

#[tokio::test]
async fn a_replayed_hard_bounce_acts_once() {
    let env = setup();
    let (original, path) = sent(&env.ports, "gone@example.org").await;
    let report = dsn("gone@example.org", "5.1.1", "failed");
    returned(&env.ports, &path, &report).await;
    let replay = returned(&env.ports, &path, &report).await;
    let events = timeline(env.ports.ledger.as_ref(), &replay.queue_id)
        .await
        .expect("timeline");
    assert!(events.iter().any(|e| e.what == "duplicate"), "{events:?}");
    let bounced = timeline(env.ports.ledger.as_ref(), &original.queue_id)
        .await
        .expect("timeline")
        .into_iter()
        .filter(|e| e.what == "bounced")
        .count();
    assert_eq!(bounced, 1, "the original's timeline says it once");
    let ses_bounces = baton_pipeline::ses_events::list(env.ports.ledger.as_ref(), Some("acme"))
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.event_type == "Bounce")
        .count();
    assert_eq!(ses_bounces, 1, "one Bounce event, not one per replay");
}

#[tokio::test]
async fn the_operators_rules_file_decides_for_the_running_pipeline() {
    let env = setup();
    let (_, path) = sent(&env.ports, "gone@example.org").await;
    // This operator treats "user unknown" as temporary (say, a provider known to lie).
    let dir = tempfile::tempdir().expect("dir");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[status]]\ncode = \"5.1.1\"\nreason = \"user_unknown\"\nclass = \"soft\"\n",
    )
    .expect("write rules");
    let mut config = config();
    config.bounce_parser =
        std::sync::Arc::new(baton_pipeline::inbound::parser(Some(&rules)).expect("rules load"));
    let (_, msg) = common::fixtures::accept_as(
        &env.ports,
        &dsn("gone@example.org", "5.1.1", "failed"),
        &[&path],
        None,
    )
    .await;
    policy::handle(&env.ports, &config, &msg)
        .await
        .expect("policy");
    assert!(
        suppressed(&env.ports, "gone@example.org").await.is_none(),
        "a soft bounce by the operator's rules must not suppress at once"
    );
    let [b] = records::bounces(env.ports.ledger.as_ref(), Some(&TenantId("acme".into())))
        .await
        .expect("bounces")
        .try_into()
        .expect("one bounce record");
    assert!(!b.hard, "{b:?}");

    // A file that does not load stops the start, with the file named.
    std::fs::write(
        &rules,
        "[[status]]\ncode = \"5.1.1\"\nreason = \"no_such_reason\"\n",
    )
    .expect("write rules");
    let Err(err) = baton_pipeline::inbound::parser(Some(&rules)) else {
        panic!("a bad rules file was taken");
    };
    assert!(err.to_string().contains("rules.toml"), "{err}");
}

/// The bounce stage's work for what came back: the DSNs it queued for senders.
async fn forwarded(ports: &Ports) -> Vec<(Envelope, String)> {
    let cfg = baton_pipeline::bounce::BounceConfig {
        hostname: "relay.test".into(),
        soft: Default::default(),
    };
    let jobs = ports
        .bounce
        .receive(10, std::time::Duration::from_secs(60))
        .await
        .expect("receive");
    for job in &jobs {
        baton_pipeline::bounce::handle(ports, &cfg, job)
            .await
            .expect("bounce stage");
    }
    let mut out = Vec::new();
    for dsn in take::<Envelope>(ports.intake.as_ref()).await {
        let body = ports
            .blobs
            .read(&dsn.queue_id.to_string())
            .await
            .expect("dsn body");
        out.push((dsn, String::from_utf8(body).expect("ascii")));
    }
    out
}

#[tokio::test]
async fn a_bounce_by_mail_reaches_the_sender_as_our_dsn_unless_notify_said_never() {
    let env = setup();
    let (original, path) = sent(&env.ports, "gone@example.org").await;
    returned(
        &env.ports,
        &path,
        &dsn("gone@example.org", "5.1.1", "failed"),
    )
    .await;
    let [(dsn_envelope, text)] = forwarded(&env.ports).await.try_into().expect("one DSN");
    assert_eq!(dsn_envelope.mail_from, None, "a DSN has the null sender");
    assert_eq!(
        dsn_envelope.recipients[0].address.to_string(),
        "news@acme.test"
    );
    assert!(
        text.contains("Final-Recipient: rfc822; gone@example.org")
            && text.contains("Action: failed")
            && text.contains("Status: 5.1.1")
            && text.contains(
                "Diagnostic-Code: smtp; 550 5.1.1 (reported by the remote MTA) no such user\r\n"
            )
            && text.contains("text/rfc822-headers\r\n\r\nFrom: news@acme.test"),
        "{text}"
    );
    assert!(
        text.contains("Arrival-Date: Tue, 14 Nov 2023"),
        "{}",
        original.queue_id
    );
    // The same report again: nothing more.
    returned(
        &env.ports,
        &path,
        &dsn("gone@example.org", "5.1.1", "failed"),
    )
    .await;
    assert!(forwarded(&env.ports).await.is_empty());

    // A sender that asked for no DSN (NOTIFY=NEVER) gets none.
    register_acme(&env.ports).await;
    let (mut quiet, _) = accept(
        &env.ports,
        "From: news@acme.test\r\nSubject: hi\r\n\r\nbody\r\n",
        &["never@example.org"],
    )
    .await;
    quiet.recipients[0].notify = Some(baton_domain::NotifyOn {
        success: false,
        failure: false,
        delay: false,
        never: true,
    });
    let msg = baton_store::QueueMessage {
        id: "q".into(),
        receipt: "q".into(),
        body: serde_json::to_vec(&quiet).expect("json"),
        attributes: Default::default(),
        receive_count: 1,
    };
    policy::handle(&env.ports, &config(), &msg)
        .await
        .expect("policy");
    take::<serde_json::Value>(env.ports.sign.as_ref()).await;
    let path = ReturnPaths::for_envelope(env.ports.ledger.as_ref(), &policy(), &quiet)
        .await
        .expect("key")
        .expect("paths")
        .sender("never@example.org")
        .expect("path");
    returned(
        &env.ports,
        &path,
        &dsn("never@example.org", "5.1.1", "failed"),
    )
    .await;
    assert!(forwarded(&env.ports).await.is_empty(), "NOTIFY=NEVER");
    assert!(suppressed(&env.ports, "never@example.org").await.is_some());
}

/// A queue whose first `failures` sends fail, as SQS does in an outage.
struct Flaky {
    inner: std::sync::Arc<dyn baton_store::Queue>,
    failures: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl baton_store::Queue for Flaky {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn send(
        &self,
        body: &[u8],
        attributes: std::collections::BTreeMap<String, String>,
        delay: std::time::Duration,
    ) -> Result<String, baton_store::StoreError> {
        use std::sync::atomic::Ordering;
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(baton_store::StoreError::Backend("queue unavailable".into()));
        }
        self.inner.send(body, attributes, delay).await
    }
    async fn receive(
        &self,
        max: usize,
        visibility: std::time::Duration,
    ) -> Result<Vec<baton_store::QueueMessage>, baton_store::StoreError> {
        self.inner.receive(max, visibility).await
    }
    async fn delete(&self, receipt: &str) -> Result<(), baton_store::StoreError> {
        self.inner.delete(receipt).await
    }
    async fn change_visibility(
        &self,
        receipt: &str,
        timeout: std::time::Duration,
    ) -> Result<(), baton_store::StoreError> {
        self.inner.change_visibility(receipt, timeout).await
    }
}

#[tokio::test]
async fn a_bounce_whose_handling_failed_halfway_is_handled_whole_on_the_next_try() {
    let env = setup();
    let (_, path) = sent(&env.ports, "gone@example.org").await;
    // The bounce queue is down when the DSN for the sender is queued: the stage fails.
    let mut ports = env.ports.clone();
    ports.bounce = std::sync::Arc::new(Flaky {
        inner: env.ports.bounce.clone(),
        failures: std::sync::atomic::AtomicU32::new(1),
    });
    let (_, msg) = common::fixtures::accept_as(
        &ports,
        &dsn("gone@example.org", "5.1.1", "failed"),
        &[&path],
        None,
    )
    .await;
    let first = policy::handle(&ports, &config(), &msg).await;
    assert!(first.is_err(), "the outage must fail the stage: {first:?}");
    // The queue retries it: this time everything happens, the DSN for the sender included,
    // and the token is not taken for one that already acted.
    policy::handle(&ports, &config(), &msg)
        .await
        .expect("retried");
    assert!(suppressed(&env.ports, "gone@example.org").await.is_some());
    let dsns = forwarded(&env.ports).await;
    assert_eq!(dsns.len(), 1, "the sender's DSN was not lost");
}
