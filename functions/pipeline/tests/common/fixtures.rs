//! Fixtures for stage tests: a message accepted into the embedded backend, a registered
//! tenant domain, and reading what a stage queued.

use std::time::Duration;

use baton_domain::{BodyType, Domain, Envelope, Mailbox, QueueId, Recipient, TenantId};
use baton_pipeline::{Ports, policy};
use baton_store::{DomainRecord, Queue, QueueMessage, put_domain};

pub struct Env {
    pub ports: Ports,
    _dir: tempfile::TempDir,
}

pub fn setup() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    Env {
        ports: super::embedded_ports(dir.path()),
        _dir: dir,
    }
}

/// A message from acme's authenticated user alice.
pub async fn accept(ports: &Ports, body: &str, rcpts: &[&str]) -> (Envelope, QueueMessage) {
    accept_as(ports, body, rcpts, Some(TenantId("acme".into()))).await
}

/// A message submitted by `tenant`, or anonymously (inbound) when `None`.
pub async fn accept_as(
    ports: &Ports,
    body: &str,
    rcpts: &[&str],
    tenant: Option<TenantId>,
) -> (Envelope, QueueMessage) {
    let id = QueueId::generate();
    let mut w = ports.blobs.create(&id.to_string()).await.expect("create");
    w.write(body.as_bytes()).await.expect("write");
    let size = w.commit().await.expect("commit");
    let envelope = Envelope {
        queue_id: id,
        mail_from: Some(Mailbox::parse("news@acme.test").expect("mailbox")),
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: Mailbox::parse(r).expect("rcpt"),
                notify: None,
                orcpt: None,
            })
            .collect(),
        auth_user: tenant.as_ref().map(|_| "alice".into()),
        tenant,
        ret: None,
        envid: None,
        body: BodyType::SevenBit,
        smtputf8: false,
        client_ip: "127.0.0.1".parse().expect("ip"),
        helo: "client".into(),
        tls: true,
        size,
        received_at: 1_700_000_000,
    };
    let message = QueueMessage {
        id: "m1".into(),
        receipt: "r1".into(),
        body: serde_json::to_vec(&envelope).expect("json"),
        attributes: Default::default(),
        receive_count: 1,
    };
    (envelope, message)
}

pub async fn register_acme(ports: &Ports) {
    let d = Domain::parse("acme.test").expect("domain");
    put_domain(
        ports.ledger.as_ref(),
        &d,
        &DomainRecord {
            tenant: TenantId("acme".into()),
            return_path: true,
        },
    )
    .await
    .expect("domain");
}

pub fn config() -> policy::PolicyConfig {
    policy::PolicyConfig {
        hostname: "relay.test".into(),
        bounce_subdomain: "bounce".into(),
        soft: Default::default(),
        bounce_parser: std::sync::Arc::new(baton_bounce::Parser::new(Default::default())),
    }
}

pub async fn take<T: for<'de> serde::Deserialize<'de>>(q: &dyn Queue) -> Vec<T> {
    q.receive(10, Duration::from_secs(60))
        .await
        .expect("receive")
        .into_iter()
        .map(|m| serde_json::from_slice(&m.body).expect("decode"))
        .collect()
}
