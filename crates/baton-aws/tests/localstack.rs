//! The AWS backend against LocalStack (S3, SQS) and DynamoDB Local, started through the
//! project's own scripts. Each test provisions resources under a fresh prefix.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use baton_aws::{AwsBackend, QueueSpec, TableSpec};
use baton_config::Aws;
use baton_store::{BlobStore, Ledger, Queue, conformance};

static START: Once = Once::new();

fn start_localstack() {
    START.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../localstack/start.sh");
        let status = Command::new(&script)
            .status()
            .expect("running localstack/start.sh");
        assert!(
            status.success(),
            "localstack/start.sh failed (run localstack/install.sh first)"
        );
    });
}

async fn backend(tag: &str) -> AwsBackend {
    start_localstack();
    let unique = format!(
        "t{}{}",
        std::process::id(),
        uuid::Uuid::now_v7()
            .simple()
            .to_string()
            .get(20..)
            .unwrap_or("x")
    );
    let config = Aws {
        region: "us-east-1".into(),
        endpoint_url: "http://127.0.0.1:4566".into(),
        dynamodb_endpoint_url: "http://127.0.0.1:8000".into(),
        force_path_style: true,
        bucket: format!("{tag}-{unique}"),
        prefix: format!("{tag}-{unique}"),
        part_size: 5 * 1024 * 1024,
        ..Aws::default()
    };
    AwsBackend::connect_with_static_credentials(&config, "test", "test").await
}

const TEST_TABLES: &[TableSpec] = &[
    TableSpec {
        name: "conf",
        retention: None,
    },
    TableSpec {
        name: "other",
        retention: Some(Duration::from_secs(3600)),
    },
    TableSpec {
        name: "count",
        retention: Some(Duration::from_secs(3600)),
    },
];

#[tokio::test]
async fn blob_store_ledger_and_queue_behave_like_every_backend() {
    let aws = backend("conf").await;
    let spec = QueueSpec {
        name: "q",
        function_timeout: Duration::from_secs(5),
        max_receives: 2,
    };
    aws.provision(&[spec], TEST_TABLES)
        .await
        .expect("provision");
    conformance::blob_store(&aws.blob_store()).await;
    conformance::ledger(&aws.ledger()).await;
    let q = aws.queue("q").await.expect("queue");
    let dlq = aws.queue("q-dlq").await.expect("dlq");
    conformance::queue_with_tick(&q, &dlq, Duration::from_secs(1)).await;
    conformance::accept(&aws.blob_store(), &q).await;
}

#[tokio::test]
async fn large_body_goes_up_in_parts_and_reads_back_whole() {
    let aws = backend("mpu").await;
    aws.provision(&[], &[]).await.expect("provision");
    let blobs = aws.blob_store();
    // 12 MiB + a tail in odd-sized chunks: three parts of a 5 MiB part size.
    let body: Vec<u8> = (0..12 * 1024 * 1024 + 777)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut w = blobs.create("big").await.expect("create");
    for chunk in body.chunks(64 * 1024 + 3) {
        w.write(chunk).await.expect("write");
    }
    assert!(blobs.read("big").await.is_err(), "visible before commit");
    assert_eq!(w.commit().await.expect("commit"), body.len() as u64);
    assert_eq!(blobs.read("big").await.expect("read"), body);
    assert_eq!(blobs.read_head("big", 10).await.expect("head"), body[..10]);

    let mut aborted = blobs.create("gone").await.expect("create");
    aborted.write(&body).await.expect("write");
    aborted.abort().await;
    assert!(blobs.read("gone").await.is_err(), "aborted upload visible");
}

#[tokio::test]
async fn non_utf8_bodies_and_long_delays_survive_sqs() {
    let aws = backend("sqs").await;
    let spec = QueueSpec {
        name: "q",
        function_timeout: Duration::from_secs(5),
        max_receives: 5,
    };
    aws.provision(&[spec], &[]).await.expect("provision");
    let q = aws.queue("q").await.expect("queue");
    q.send(&[0xff, 0x00, 0xfe], BTreeMap::new(), Duration::ZERO)
        .await
        .expect("send binary");
    // Beyond SQS's 15-minute limit: delayed 15 minutes and marked with when it is due.
    q.send(b"in two hours", BTreeMap::new(), Duration::from_secs(7200))
        .await
        .expect("send delayed");
    let got = q
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1, "the delayed message came early");
    assert_eq!(got[0].body, [0xff, 0x00, 0xfe]);
    assert!(!got[0].attributes.contains_key("baton_encoding"));
}

#[tokio::test]
async fn ledger_keys_with_slashes_scan_by_partition() {
    let aws = backend("ldg").await;
    aws.provision(&[], TEST_TABLES).await.expect("provision");
    let l = aws.ledger();
    for k in ["m1/a@x", "m1/b@x", "m10/a@x", "m2/a@x"] {
        l.put("conf", k, k.as_bytes()).await.expect("put");
    }
    let keys: Vec<String> = l
        .scan("conf", "m1/")
        .await
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["m1/a@x", "m1/b@x"]);
    assert_eq!(l.scan("conf", "").await.expect("all").len(), 4);
    assert!(l.put("conf", "/no-partition", b"x").await.is_err());
    assert!(
        l.put("missing_table", "k", b"x").await.is_err(),
        "unprovisioned table accepted"
    );
}

/// The request counter sees every request the ports make, by service and operation, with
/// DynamoDB's consumed capacity (and a write refused by its condition still charged).
#[tokio::test]
async fn requests_are_counted_by_service_and_operation() {
    let aws = backend("count").await;
    aws.provision(&[], TEST_TABLES).await.expect("provision");
    let before = aws.requests();
    let blobs = aws.blob_store();
    let mut w = blobs.create("m1").await.expect("create");
    w.write(&[b'x'; 4096]).await.expect("write");
    w.commit().await.expect("commit");
    assert_eq!(blobs.read("m1").await.expect("read"), vec![b'x'; 4096]);
    let ledger = aws.ledger();
    ledger.put("conf", "a/1", &[7; 1500]).await.expect("put");
    assert!(
        !ledger
            .put_if_absent("conf", "a/1", b"v")
            .await
            .expect("put_if_absent")
    );
    assert!(ledger.get("conf", "a/1").await.expect("get").is_some());

    let after = aws.requests();
    let delta = |service: &str, op: &str| {
        let key = (service.to_string(), op.to_string());
        let a = after.counts.get(&key).copied().unwrap_or_default();
        let b = before.counts.get(&key).copied().unwrap_or_default();
        (a.attempts - b.attempts, a.capacity_units - b.capacity_units)
    };
    assert_eq!(delta("s3", "PutObject").0, 1, "{}", after.summary());
    assert_eq!(delta("s3", "GetObject").0, 1, "{}", after.summary());
    let (puts, wru) = delta("dynamodb", "PutItem");
    assert_eq!(puts, 2, "{}", after.summary());
    // 1,500 B of value: 2 WRU for the put, 1 for the refused put_if_absent (1 B of value).
    assert!(wru >= 3.0, "write units {wru}: {}", after.summary());
    let (gets, rru) = delta("dynamodb", "GetItem");
    assert_eq!(gets, 1);
    assert!(rru >= 1.0, "read units {rru}: {}", after.summary());
    // The same, by ledger table.
    assert_eq!(delta("dynamodb.table", "PutItem@conf"), (puts, wru));
    assert_eq!(delta("dynamodb.table", "GetItem@conf"), (gets, rru));
}

/// Counters are added to in place (UpdateItem ADD): concurrent increments are all kept, each
/// costs one write and no read, and a counter first written whole (the compare-and-swap
/// default's record) keeps its value.
#[tokio::test]
async fn counters_add_in_place_without_reads_or_retries() {
    let aws = backend("incr").await;
    aws.provision(&[], TEST_TABLES).await.expect("provision");
    let ledger = aws.ledger();
    ledger.put("count", "t/s/1", b"5").await.expect("put");
    let before = aws.requests();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let l = ledger.clone();
            tokio::spawn(async move { l.add_to_counter("count", "t/s/1", 1).await })
        })
        .collect();
    let mut totals = Vec::new();
    for t in tasks {
        totals.push(t.await.expect("join").expect("increment"));
    }
    totals.sort_unstable();
    assert_eq!(totals, (6..=25).collect::<Vec<u64>>());
    let got = ledger
        .get("count", "t/s/1")
        .await
        .expect("get")
        .expect("there");
    assert_eq!(got, b"25");
    let after = aws.requests();
    let key = ("dynamodb".to_string(), "UpdateItem".to_string());
    let updates = after.counts.get(&key).copied().unwrap_or_default();
    assert_eq!(updates.attempts, 20, "{}", after.summary());
    let reads = |s: &baton_aws::RequestSnapshot| {
        s.counts
            .get(&("dynamodb".to_string(), "GetItem".to_string()))
            .map_or(0, |c| c.attempts)
    };
    assert_eq!(reads(&after) - reads(&before), 1, "only the test's own get");
}
