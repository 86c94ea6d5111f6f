//! The deliver stage against a real receiving MX (Postfix's smtp-sink) through a route.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use baton_domain::{BodyType, Envelope, Mailbox, QueueId, Recipient};
use baton_pipeline::deliver::{self, DeliverStage, RetryPolicy};
use baton_pipeline::job::Job;
use baton_pipeline::outbound::{ClientConfig, LiteralResolver, Route, opportunistic_tls};
use baton_pipeline::records::{self, RcptStatus};
use baton_store::QueueMessage;

struct Sink {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp_sink(addr: SocketAddr) -> Sink {
    let exe = ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("smtp-sink is missing: run scripts/install-test-deps.sh");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let template = format!("{}/%M.", dir.path().display());
    // Wrapped at once: dropping the Sink kills and reaps the process on every path.
    let sink = Sink {
        child: Command::new(exe)
            .args(["-u", "postfix", "-d", &template, &addr.to_string(), "10"])
            .spawn()
            .expect("start smtp-sink"),
        dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return sink;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("smtp-sink did not listen on {addr}");
}

fn dumped(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[tokio::test]
async fn a_job_handled_twice_is_delivered_once() {
    let port = TcpListener::bind("127.0.0.21:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let addr: SocketAddr = format!("127.0.0.21:{port}").parse().expect("addr");
    let sink = smtp_sink(addr);

    let dir = tempfile::tempdir().expect("tempdir");
    let ports = common::embedded_ports(dir.path());
    let id = QueueId::generate();
    let mut w = ports.blobs.create(&id.to_string()).await.expect("create");
    w.write(b"From: news@acme.test\r\nSubject: once\r\n\r\n.leading dot\r\n")
        .await
        .expect("write");
    w.commit().await.expect("commit");
    let envelope = Envelope {
        queue_id: id,
        mail_from: Some(Mailbox::parse("news@acme.test").expect("from")),
        recipients: vec![Recipient {
            address: Mailbox::parse("bob@example.org").expect("rcpt"),
            notify: None,
            orcpt: None,
        }],
        tenant: None,
        auth_user: None,
        ret: None,
        envid: None,
        body: BodyType::SevenBit,
        smtputf8: false,
        client_ip: "127.0.0.1".parse().expect("ip"),
        helo: "c".into(),
        tls: false,
        size: 0,
        received_at: 1_700_000_000,
    };
    let message = QueueMessage {
        id: "d1".into(),
        receipt: "rd1".into(),
        body: serde_json::to_vec(&Job::new(envelope, String::new())).expect("json"),
        attributes: Default::default(),
        receive_count: 1,
    };
    let stage = DeliverStage {
        resolver: Arc::new(LiteralResolver),
        client: ClientConfig {
            helo_name: "relay.test".into(),
            port: 25,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            data_timeout: Duration::from_secs(10),
            tls: opportunistic_tls().expect("tls"),
            pool: None,
        },
        routes: vec![Route {
            pattern: "*".into(),
            capture: false,
            target: Some(("127.0.0.21".into(), port)),
            require_tls: false,
            auth: None,
            verify: None,
        }],
        retry: RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(2),
            max_age: Duration::from_secs(5 * 86400),
            delay_notice_after: Duration::from_secs(4 * 3600),
        },
        return_paths: baton_pipeline::return_path::ReturnPathPolicy {
            label: "bounce".into(),
            every_domain: false,
        },
    };
    // At-least-once queues may hand the same job over twice (a crash before the delete).
    deliver::handle(&ports, &stage, &message)
        .await
        .expect("first");
    deliver::handle(&ports, &stage, &message)
        .await
        .expect("second");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let files = dumped(sink.dir.path());
    assert_eq!(files.len(), 1, "delivered {} times", files.len());
    let dump = std::fs::read_to_string(&files[0]).expect("dump");
    assert!(dump.contains("X-Rcpt-Args: <bob@example.org>"));
    assert!(
        dump.contains("\r\n.leading dot\r\n") || dump.contains("\n.leading dot\n"),
        "dot-stuffing undone by the sink: {dump}"
    );
    let state = records::rcpt_state(ports.ledger.as_ref(), &id, "bob@example.org")
        .await
        .expect("state")
        .expect("exists");
    assert_eq!(state.status, RcptStatus::Delivered);
    assert_eq!(state.attempts, 1);

    // Two copies of one job in flight at the same moment (SQS redelivers while the first is
    // still working): the recipient claim lets only one send.
    let id2 = QueueId::generate();
    let mut w = ports.blobs.create(&id2.to_string()).await.expect("create");
    w.write(b"From: news@acme.test\r\nSubject: twice at once\r\n\r\nhi\r\n")
        .await
        .expect("write");
    w.commit().await.expect("commit");
    let mut job: Job = serde_json::from_slice(&message.body).expect("job");
    job.envelope.queue_id = id2;
    let copy = QueueMessage {
        body: serde_json::to_vec(&job).expect("json"),
        ..message.clone()
    };
    let (a, b) = tokio::join!(
        deliver::handle(&ports, &stage, &copy),
        deliver::handle(&ports, &stage, &copy)
    );
    let outcomes = [a.expect("a"), b.expect("b")];
    assert!(
        outcomes.contains(&baton_pipeline::Disposition::Done)
            && outcomes
                .iter()
                .any(|d| matches!(d, baton_pipeline::Disposition::RetryAfter(_))),
        "one copy delivers, the other looks again later: {outcomes:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        dumped(sink.dir.path()).len(),
        2,
        "the concurrent copies sent twice"
    );
}
