//! The embedded backend against the shared conformance suite, plus what only it promises:
//! durability across reopen and crash cleanup.

use std::time::Duration;

use baton_embedded::{EmbeddedBackend, EmbeddedOptions};
use baton_store::{BlobStore, Ledger, Queue, conformance};

fn open(dir: &std::path::Path) -> EmbeddedBackend {
    EmbeddedBackend::open(dir, EmbeddedOptions::default()).expect("open backend")
}

#[tokio::test]
async fn passes_the_port_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = open(dir.path());
    conformance::blob_store(&backend.blob_store()).await;
    conformance::ledger(&backend.ledger()).await;
    let q = backend.queue("t", 2, Some("t-dlq"));
    let dlq = backend.queue("t-dlq", 0, None);
    conformance::queue(&q, &dlq).await;
    conformance::accept(&backend.blob_store(), &backend.queue("accept", 5, None)).await;
}

#[tokio::test]
async fn an_accept_that_fails_leaves_neither_body_nor_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = open(dir.path());
    let store = backend.blob_store();
    let queue = backend.queue("intake", 5, None);
    let mut first = store.create("dup").await.expect("create");
    first.write(b"first").await.expect("write");
    first.commit().await.expect("commit");
    // The same key again: storing the body fails, so the job must not be queued either.
    let mut second = store.create("dup").await.expect("create");
    second.write(b"second").await.expect("write");
    let accepted = second
        .commit_and_send(&queue, b"job", Default::default())
        .await;
    assert!(accepted.is_err(), "a duplicate body was accepted");
    assert!(backend.list_queue("intake").await.expect("list").is_empty());
    assert_eq!(store.read("dup").await.expect("read"), b"first");
}

#[tokio::test]
async fn large_bodies_stream_to_their_own_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = EmbeddedBackend::open(
        dir.path(),
        EmbeddedOptions {
            inline_max: 1024,
            ..EmbeddedOptions::default()
        },
    )
    .expect("open");
    let store = backend.blob_store();
    let mut w = store.create("big").await.expect("create");
    let chunk = vec![b'x'; 100 * 1024];
    for _ in 0..30 {
        w.write(&chunk).await.expect("write");
    }
    assert_eq!(w.commit().await.expect("commit"), 3_072_000);
    assert!(dir.path().join("spool/large/big").exists());
    assert_eq!(store.read("big").await.expect("read").len(), 3_072_000);
    store.delete("big").await.expect("delete");
    assert!(!dir.path().join("spool/large/big").exists());
}

#[tokio::test]
async fn committed_data_survives_reopen_and_concurrent_commits_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let backend = open(dir.path());
        let store = backend.blob_store();
        let queue = backend.queue("intake", 5, None);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (store, queue) = (store.clone(), queue.clone());
            tasks.push(tokio::spawn(async move {
                let key = format!("k{i}");
                let mut w = store.create(&key).await.expect("create");
                w.write(format!("body {i}").as_bytes())
                    .await
                    .expect("write");
                w.commit().await.expect("commit");
                queue
                    .send(key.as_bytes(), Default::default(), Duration::ZERO)
                    .await
                    .expect("send");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        backend
            .ledger()
            .put("users", "alice", b"{}")
            .await
            .expect("put");
    }
    let backend = open(dir.path());
    backend.recover().await.expect("recover");
    assert_eq!(backend.list_queue("intake").await.expect("list").len(), 200);
    assert_eq!(
        backend.blob_store().read("k42").await.expect("read"),
        b"body 42"
    );
    assert!(
        backend
            .ledger()
            .get("users", "alice")
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test]
async fn recovery_removes_partial_bodies_and_unused_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let backend = open(dir.path());
        let store = backend.blob_store();
        let mut w = store.create("gone").await.expect("create");
        w.write(b"x").await.expect("write");
        w.commit().await.expect("commit");
        store.delete("gone").await.expect("delete");
    }
    std::fs::write(dir.path().join("spool/large/crashed.part"), b"half").expect("write part");
    std::fs::write(dir.path().join("spool/seg-0000099999.log"), b"orphan").expect("write orphan");
    let backend = open(dir.path());
    backend.recover().await.expect("recover");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "large")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!dir.path().join("spool/large/crashed.part").exists());
}

#[tokio::test]
async fn a_long_scan_returns_every_record_in_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path()).ledger();
    // Past the rows a scan reads on the calling thread (64), with neighbours on both sides.
    for i in 0..200 {
        let key = format!("p/{i:03}");
        ledger.put("t", &key, key.as_bytes()).await.expect("put");
    }
    ledger.put("t", "o", b"before").await.expect("put");
    ledger.put("t", "q", b"after").await.expect("put");
    let rows = ledger.scan("t", "p/").await.expect("scan");
    let keys: Vec<String> = rows.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<String> = (0..200).map(|i| format!("p/{i:03}")).collect();
    assert_eq!(keys, expected);
    let short = ledger.scan("t", "p/19").await.expect("scan");
    assert_eq!(short.len(), 10);
}
