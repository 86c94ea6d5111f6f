//! Mail the relay writes itself (DSNs, delay notices) is signed with the key of the relay's
//! hostname, and nothing a client sends ever is, whatever its From says.

mod common;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use baton_domain::{Domain, Envelope, TenantId};
use baton_pipeline::dkim::EnsuredKeys;
use baton_pipeline::job::{BounceAction, BounceJob, Failure, FailureSource, Job};
use baton_pipeline::records::timeline;
use baton_pipeline::{Ports, bounce, dkim, policy, setup, sign};
use baton_store::{DomainRecord, Queue, QueueMessage, put_domain};
use common::fixtures::{accept_as, config, register_acme, setup, take};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, ResolverCache, Txt};

/// The relay's hostname in these tests (as `config()` and the bounce config name it).
const HOST: &str = "relay.test";

fn acme() -> Option<TenantId> {
    Some(TenantId("acme".into()))
}

/// The next message on `q`, as a stage would receive it.
async fn next(q: &dyn Queue) -> QueueMessage {
    let mut got = q
        .receive(1, std::time::Duration::from_secs(60))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1, "one message expected on {}", q.name());
    got.remove(0)
}

/// The relay's keys, as `baton serve` makes them at its first start.
async fn relay_keys(ports: &Ports) -> Vec<dkim::DkimKey> {
    setup::relay_keys(ports.ledger.as_ref(), HOST, HOST, 1_700_000_000)
        .await
        .expect("relay keys")
        .expect("a domain name")
        .keys()
        .to_vec()
}

/// DNS answers from a table, the way a receiver would see the published records.
struct Zone(Mutex<HashMap<Box<str>, Txt>>);

impl Zone {
    fn publish(domain: &str, keys: &[dkim::DkimKey]) -> Zone {
        let zone = Zone(Mutex::default());
        for r in dkim::dkim_records(domain, keys) {
            let key = DomainKey::parse(r.value.as_bytes()).expect("DKIM record");
            zone.0
                .lock()
                .expect("lock")
                .insert(format!("{}.", r.name).into(), Txt::from(key));
        }
        zone
    }
}

impl ResolverCache<Box<str>, Txt> for Zone {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().expect("lock").get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().expect("lock").remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _: Instant) {
        self.0.lock().expect("lock").insert(key, value);
    }
}

/// The `d=` of every signature on `message` that verifies against `zone`, and how many
/// signatures it carries in all.
async fn verified_domains(message: &[u8], zone: &Zone) -> (Vec<String>, usize) {
    // Every answer comes from the zone; this resolver is never asked.
    let unused = NameServerConfig::udp_and_tcp([127, 0, 0, 1].into());
    let auth = MessageAuthenticator::new(
        ResolverConfig::from_name_servers(vec![unused]),
        ResolverOpts::default(),
    )
    .expect("authenticator");
    let parsed = AuthenticatedMessage::parse(message).expect("parses");
    let outputs = auth
        .verify_dkim(mail_auth::Parameters::new(&parsed).with_txt_cache(zone))
        .await;
    let passed = outputs
        .iter()
        .filter(|o| o.result() == &DkimResult::Pass)
        .filter_map(|o| o.signature().map(|s| s.d.clone()))
        .collect();
    (passed, outputs.len())
}

/// What deliver would send for the job on the deliver queue: prefix, then the stored body.
async fn outgoing(ports: &Ports) -> (Vec<u8>, Envelope) {
    let [job]: [Job; 1] = take(ports.deliver.as_ref())
        .await
        .try_into()
        .expect("one deliver job");
    let body = ports
        .blobs
        .read(&job.envelope.queue_id.to_string())
        .await
        .expect("body");
    let mut out = job.prefix.into_bytes();
    out.extend_from_slice(&body);
    (out, job.envelope)
}

/// A tenant's message that failed, its bounce run: the DSN on its way through policy and
/// sign, as the runtime would move it. Returns what goes out.
async fn dsn_through_the_pipeline(ports: &Ports, action: BounceAction) -> (Vec<u8>, Envelope) {
    let (envelope, _) = accept_as(
        ports,
        "From: News <news@acme.test>\r\nSubject: hi\r\n\r\nbody\r\n",
        &["gone@example.org"],
        acme(),
    )
    .await;
    let job = BounceJob {
        envelope,
        action,
        failures: vec![Failure {
            recipient: "gone@example.org".into(),
            code: if action == BounceAction::Failed {
                550
            } else {
                450
            },
            enhanced: if action == BounceAction::Failed {
                "5.1.1".into()
            } else {
                "4.2.0".into()
            },
            text: "No such user".into(),
            remote_mta: None,
            source: FailureSource::Delivery,
        }],
    };
    let queued = QueueMessage {
        id: "b1".into(),
        receipt: "r1".into(),
        body: serde_json::to_vec(&job).expect("json"),
        attributes: Default::default(),
        receive_count: 1,
    };
    let cfg = bounce::BounceConfig {
        hostname: HOST.into(),
        soft: Default::default(),
    };
    bounce::handle(ports, &cfg, &queued).await.expect("bounce");
    let dsn = next(ports.intake.as_ref()).await;
    policy::handle(ports, &config(), &dsn)
        .await
        .expect("policy");
    let to_sign = next(ports.sign.as_ref()).await;
    sign::handle(ports, &to_sign).await.expect("sign");
    outgoing(ports).await
}

/// Runs a client's message with `from` through sign, as policy would hand it on.
async fn client_mail_through_sign(
    ports: &Ports,
    from: &str,
    tenant: Option<TenantId>,
) -> (Vec<u8>, Envelope) {
    let body = format!("From: {from}\r\nTo: x@example.org\r\nSubject: hi\r\n\r\nbody\r\n");
    let (envelope, _) = accept_as(ports, &body, &["x@example.org"], tenant).await;
    let job = Job::new(envelope, String::new());
    let queued = QueueMessage {
        id: "s1".into(),
        receipt: "r1".into(),
        body: serde_json::to_vec(&job).expect("json"),
        attributes: Default::default(),
        receive_count: 1,
    };
    sign::handle(ports, &queued).await.expect("sign");
    outgoing(ports).await
}

#[tokio::test]
async fn a_dsn_is_signed_with_the_hostname_key_and_verifies() {
    let env = setup();
    register_acme(&env.ports).await;
    let keys = relay_keys(&env.ports).await;
    let zone = Zone::publish(HOST, &keys);
    for action in [BounceAction::Failed, BounceAction::Delayed] {
        let (message, envelope) = dsn_through_the_pipeline(&env.ports, action).await;
        assert!(envelope.mail_from.is_none(), "a DSN has the null sender");
        let text = String::from_utf8_lossy(&message);
        assert!(text.contains(&format!("MAILER-DAEMON@{HOST}")), "{text}");
        let (passed, total) = verified_domains(&message, &zone).await;
        assert_eq!(total, 2, "RSA and Ed25519 signatures expected:\n{text}");
        assert_eq!(passed, [HOST, HOST], "{action:?}:\n{text}");
        // The verification can fail: a changed Subject breaks both signatures.
        let tampered = text.replacen("Subject: ", "Subject: Re: ", 1);
        let (passed, _) = verified_domains(tampered.as_bytes(), &zone).await;
        assert!(passed.is_empty(), "{passed:?}");
    }
}

#[tokio::test]
async fn client_mail_claiming_the_hostname_in_from_is_not_signed() {
    let env = setup();
    register_acme(&env.ports).await;
    relay_keys(&env.ports).await;
    for (from, tenant) in [
        (format!("Mail Delivery System <MAILER-DAEMON@{HOST}>"), None),
        (format!("postmaster@{HOST}"), None),
        (format!("MAILER-DAEMON@{HOST}"), acme()),
        (format!("MAILER-DAEMON@{}", HOST.to_uppercase()), acme()),
    ] {
        let (message, envelope) = client_mail_through_sign(&env.ports, &from, tenant).await;
        let text = String::from_utf8_lossy(&message);
        assert!(!text.contains("DKIM-Signature"), "{from}:\n{text}");
        let events = timeline(env.ports.ledger.as_ref(), &envelope.queue_id)
            .await
            .expect("timeline");
        assert!(events.iter().any(|e| e.what == "not signed"), "{events:?}");
    }
}

#[tokio::test]
async fn a_hostname_registered_to_a_tenant_keeps_its_keys_for_both() {
    let env = setup();
    register_acme(&env.ports).await;
    // An admin ran `domain add relay.test --tenant ops` before the relay first started.
    let ledger = env.ports.ledger.as_ref();
    let ops = TenantId("ops".into());
    let host = Domain::parse(HOST).expect("domain");
    let record = DomainRecord {
        tenant: ops.clone(),
        return_path: false,
    };
    put_domain(ledger, &host, &record).await.expect("domain");
    let admin = dkim::add_key_pair(ledger, HOST, 1_600_000_000)
        .await
        .expect("keys");
    let found = setup::relay_keys(ledger, HOST, HOST, 1_700_000_000)
        .await
        .expect("relay keys")
        .expect("a domain name");
    let EnsuredKeys::Existing(found) = found else {
        panic!("made new keys: {found:?}")
    };
    let selectors = |keys: &[dkim::DkimKey]| {
        let mut s: Vec<String> = keys.iter().map(|k| k.selector.clone()).collect();
        s.sort();
        s
    };
    assert_eq!(selectors(&found), selectors(&admin));
    let zone = Zone::publish(HOST, &admin);

    let (message, _) = dsn_through_the_pipeline(&env.ports, BounceAction::Failed).await;
    let (passed, _) = verified_domains(&message, &zone).await;
    assert_eq!(passed, [HOST, HOST]);
    // The owning tenant's mail from its domain is its own, signed as any tenant's is...
    let (message, _) =
        client_mail_through_sign(&env.ports, &format!("news@{HOST}"), Some(ops)).await;
    let (passed, _) = verified_domains(&message, &zone).await;
    assert_eq!(passed, [HOST, HOST]);
    // ...and nobody else's.
    for tenant in [None, acme()] {
        let (message, _) =
            client_mail_through_sign(&env.ports, &format!("MAILER-DAEMON@{HOST}"), tenant).await;
        assert!(!String::from_utf8_lossy(&message).contains("DKIM-Signature"));
    }
}

#[tokio::test]
async fn a_hostname_that_is_no_domain_name_gets_no_keys() {
    let env = setup();
    for hostname in ["[192.0.2.1]", "bad_name", ""] {
        let got = setup::relay_keys(env.ports.ledger.as_ref(), hostname, hostname, 1)
            .await
            .expect("no error");
        assert!(got.is_none(), "{hostname}: {got:?}");
    }
}
