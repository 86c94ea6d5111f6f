//! The deliver function within an invocation's deadline, without the Lambda runtime: records
//! run side by side, a tarpitting MX defers only its own message, and records that cannot
//! finish in time are not started but handed back to the queue.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use baton_domain::{BodyType, Envelope, Mailbox, QueueId, Recipient};
use baton_functions::{Function, Limits, Stage};
use baton_pipeline::deliver::{DeliverStage, RetryPolicy};
use baton_pipeline::job::Job;
use baton_pipeline::outbound::{ClientConfig, LiteralResolver, Route, opportunistic_tls};
use baton_pipeline::records::{self, RcptStatus};
use baton_pipeline::runtime::{self, DeadLetters, Stages};
use baton_pipeline::{Disposition, Ports, StageError, SystemClock};
use baton_store::memory::{MemoryBlobStore, MemoryLedger, MemoryQueue};
use baton_store::{Queue, QueueMessage};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A receiving MX that takes everything; returns its address and the recipients it got.
async fn sink() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got: Arc<Mutex<Vec<String>>> = Default::default();
    let seen = got.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(tcp);
                let _ = r.get_mut().write_all(b"220 sink.test\r\n").await;
                let (mut line, mut in_data, mut rcpts) = (String::new(), false, Vec::new());
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let reply: &[u8] = if in_data {
                        if line != ".\r\n" {
                            continue;
                        }
                        in_data = false;
                        seen.lock().expect("seen").append(&mut rcpts);
                        b"250 2.0.0 queued\r\n"
                    } else if line.starts_with("RCPT") {
                        rcpts.push(line.trim().to_string());
                        b"250 2.1.5 ok\r\n"
                    } else if line.starts_with("DATA") {
                        in_data = true;
                        b"354 go\r\n"
                    } else if line.starts_with("QUIT") {
                        let _ = r.get_mut().write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    if r.get_mut().write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, got)
}

/// Accepts connections and never says a word.
async fn tarpit() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    addr
}

/// Only the deliver stage runs here.
struct Unused;

#[async_trait]
impl runtime::Stage for Unused {
    async fn handle(&self, _: &Ports, _: &QueueMessage) -> Result<Disposition, StageError> {
        unreachable!("only deliver runs in these tests")
    }
}

fn route(pattern: &str, to: SocketAddr) -> Route {
    Route {
        pattern: pattern.into(),
        capture: false,
        target: Some((to.ip().to_string(), to.port())),
        require_tls: false,
        auth: None,
        verify: None,
    }
}

struct Fixture {
    ports: Ports,
    deliver: Arc<MemoryQueue>,
    function: Function,
}

fn fixture(routes: Vec<Route>, limits: Limits) -> Fixture {
    let deliver = Arc::new(MemoryQueue::new("deliver", 10, None));
    let q = |n: &str| -> Arc<dyn Queue> { Arc::new(MemoryQueue::new(n, 10, None)) };
    let ports = Ports {
        blobs: Arc::new(MemoryBlobStore::default()),
        ledger: Arc::new(MemoryLedger::default()),
        intake: q("intake"),
        sign: q("sign"),
        deliver: deliver.clone(),
        bounce: q("bounce"),
        events: q("events"),
        clock: Arc::new(SystemClock),
    };
    let dead = DeadLetters {
        intake: q("intake-dlq"),
        sign: q("sign-dlq"),
        deliver: q("deliver-dlq"),
        bounce: q("bounce-dlq"),
        events: q("events-dlq"),
    };
    // Per-command timeouts far longer than the invocation: only the deadline can save it.
    let stage = DeliverStage {
        resolver: Arc::new(LiteralResolver),
        client: ClientConfig {
            helo_name: "relay.test".into(),
            port: 25,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(60),
            tls: opportunistic_tls().expect("tls"),
            pool: None,
        },
        routes,
        retry: RetryPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(600),
            max_age: Duration::from_secs(86400),
            delay_notice_after: Duration::from_secs(3600),
        },
        return_paths: baton_pipeline::return_path::ReturnPathPolicy {
            label: "bounce".into(),
            every_domain: false,
        },
    };
    let unused: Arc<dyn runtime::Stage> = Arc::new(Unused);
    let stages = Stages {
        policy: unused.clone(),
        fused: unused.clone(),
        sign: unused.clone(),
        deliver: Arc::new(runtime::DeliverStage(stage)),
        bounce: unused.clone(),
        events: unused,
    };
    let function = Function::new(Stage::Deliver, ports.clone(), &dead, &stages).with_limits(limits);
    Fixture {
        ports,
        deliver,
        function,
    }
}

/// Queues one job per recipient (in this order) and returns the event Lambda would get.
async fn batch(f: &Fixture, rcpts: &[&str]) -> (SqsEvent, Vec<(String, QueueId)>) {
    let mut ids = Vec::new();
    for rcpt in rcpts {
        let id = QueueId::generate();
        let mut w = f.ports.blobs.create(&id.to_string()).await.expect("create");
        w.write(b"From: news@acme.test\r\nSubject: hi\r\n\r\nhello\r\n")
            .await
            .expect("write");
        w.commit().await.expect("commit");
        let envelope = Envelope {
            queue_id: id,
            mail_from: Some(Mailbox::parse("news@acme.test").expect("from")),
            recipients: vec![Recipient {
                address: Mailbox::parse(rcpt).expect("rcpt"),
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
            received_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("clock")
                .as_secs() as i64,
        };
        let job = serde_json::to_vec(&Job::new(envelope, String::new())).expect("json");
        f.deliver
            .send(&job, Default::default(), Duration::ZERO)
            .await
            .expect("send");
        ids.push((rcpt.to_string(), id));
    }
    let received = f
        .deliver
        .receive(10, Duration::from_secs(600))
        .await
        .expect("receive");
    let mut event = SqsEvent::default();
    for m in &received {
        let mut r = SqsMessage::default();
        r.message_id = Some(m.id.clone());
        r.receipt_handle = Some(m.receipt.clone());
        r.body = Some(String::from_utf8_lossy(&m.body).into_owned());
        event.records.push(r);
    }
    (event, ids)
}

#[tokio::test]
async fn a_tarpitting_mx_defers_its_own_message_and_the_others_are_delivered_in_time() {
    let (good, delivered) = sink().await;
    let slow = tarpit().await;
    let f = fixture(
        vec![route("tarpit.test", slow), route("*", good)],
        Limits {
            budget: Duration::from_secs(1),
            settle: Duration::from_millis(700),
            concurrency: 3,
        },
    );
    // The tarpitted record first: handled one after another, it would hold up the rest.
    let (event, ids) = batch(&f, &["stuck@tarpit.test", "a@one.test", "b@two.test"]).await;
    let started = Instant::now();
    let deadline = SystemTime::now() + Duration::from_secs(4);

    let response = f.function.handle_until(event, Some(deadline)).await;

    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "returned after the deadline: {took:?}"
    );
    let mut got = delivered.lock().expect("delivered").clone();
    got.sort();
    assert_eq!(got, ["RCPT TO:<a@one.test>", "RCPT TO:<b@two.test>"]);
    // The tarpitted recipient is deferred like any unreachable MX: state recorded, a retry
    // job queued with backoff. So its record is settled, not handed back to SQS.
    let stuck = ids[0].1;
    let state = records::rcpt_state(f.ports.ledger.as_ref(), &stuck, "stuck@tarpit.test")
        .await
        .expect("state")
        .expect("recorded");
    assert_eq!(state.status, RcptStatus::Deferred, "{state:?}");
    assert!(state.last_reply.starts_with("451 4.4.2"), "{state:?}");
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    for (rcpt, id) in &ids[1..] {
        let state = records::rcpt_state(f.ports.ledger.as_ref(), id, rcpt)
            .await
            .expect("state")
            .expect("recorded");
        assert_eq!(state.status, RcptStatus::Delivered, "{rcpt}: {state:?}");
    }
    assert_eq!(
        f.deliver.len(),
        1,
        "one retry job, for the tarpitted message"
    );
}

#[tokio::test]
async fn records_that_cannot_finish_in_time_are_not_started_but_handed_back() {
    let (good, delivered) = sink().await;
    let f = fixture(
        vec![route("*", good)],
        Limits {
            budget: Duration::from_secs(30),
            settle: Duration::from_millis(500),
            concurrency: 2,
        },
    );
    let (event, ids) = batch(&f, &["a@one.test", "b@two.test", "c@three.test"]).await;
    let started = Instant::now();

    // Less than the time needed to settle even one record is left.
    let response = f
        .function
        .handle_until(event, Some(SystemTime::now() + Duration::from_millis(300)))
        .await;

    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(response.batch_item_failures.len(), 3);
    assert!(delivered.lock().expect("delivered").is_empty());
    for (rcpt, id) in &ids {
        let state = records::rcpt_state(f.ports.ledger.as_ref(), id, rcpt)
            .await
            .expect("state");
        assert!(state.is_none(), "{rcpt} was touched: {state:?}");
    }
    // Visible again at once, for the next invocation.
    let again = f
        .deliver
        .receive(10, Duration::from_secs(60))
        .await
        .expect("receive");
    assert_eq!(again.len(), 3);
}

#[tokio::test]
async fn an_invocation_shorter_than_the_budget_still_starts_its_records() {
    // Deployed with a shorter timeout than the budget assumes: the budget shrinks to half of
    // the invocation, so records run instead of going back until they are dead-lettered.
    let (good, delivered) = sink().await;
    let f = fixture(
        vec![route("*", good)],
        Limits {
            budget: Duration::from_secs(30),
            settle: Duration::from_millis(500),
            concurrency: 2,
        },
    );
    let (event, _) = batch(&f, &["a@one.test", "b@two.test", "c@three.test"]).await;
    let response = f
        .function
        .handle_until(event, Some(SystemTime::now() + Duration::from_secs(10)))
        .await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(delivered.lock().expect("delivered").len(), 3);
}

#[tokio::test]
async fn without_a_deadline_every_record_is_handled() {
    let (good, delivered) = sink().await;
    let f = fixture(vec![route("*", good)], Limits::default());
    let (event, _) = batch(&f, &["a@one.test", "b@two.test"]).await;
    let response = f.function.handle(event).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(delivered.lock().expect("delivered").len(), 2);
}
