//! Behaviour every implementation of the ports must show. Each backend's tests call these,
//! so the embedded, AWS and in-memory implementations cannot drift apart.
//! Panics on the first deviation (these are test helpers).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{BlobStore, Ledger, Queue};

pub async fn blob_store(store: &dyn BlobStore) {
    let mut w = store.create("conf-blob-1").await.unwrap();
    w.write(b"hello ").await.unwrap();
    w.write(b"world").await.unwrap();
    assert!(
        store.read("conf-blob-1").await.is_err(),
        "visible before commit"
    );
    assert_eq!(w.commit().await.unwrap(), 11);
    assert_eq!(store.read("conf-blob-1").await.unwrap(), b"hello world");

    let mut aborted = store.create("conf-blob-2").await.unwrap();
    aborted.write(b"partial").await.unwrap();
    aborted.abort().await;
    assert!(
        store.read("conf-blob-2").await.is_err(),
        "aborted blob visible"
    );

    store.delete("conf-blob-1").await.unwrap();
    assert!(
        store.read("conf-blob-1").await.is_err(),
        "deleted blob visible"
    );
    assert!(
        store.create("../escape").await.is_err(),
        "path traversal accepted"
    );
}

/// A message's accept ([`crate::BlobWriter::commit_and_send`]): the body is readable and
/// the job is on the queue with its attributes. `queue` must be empty.
pub async fn accept(store: &dyn BlobStore, queue: &dyn Queue) {
    let mut w = store.create("conf-accept-1").await.unwrap();
    w.write(b"the body").await.unwrap();
    let attributes = BTreeMap::from([("queue_id".to_string(), "conf-accept-1".to_string())]);
    let size = w
        .commit_and_send(queue, b"the job", attributes.clone())
        .await;
    assert_eq!(size.unwrap(), 8);
    assert_eq!(store.read("conf-accept-1").await.unwrap(), b"the body");
    let got = queue.receive(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got.len(), 1, "the job is queued once");
    assert_eq!(got[0].body, b"the job");
    assert_eq!(got[0].attributes, attributes);
    queue.delete(&got[0].receipt).await.unwrap();
    store.delete("conf-accept-1").await.unwrap();
}

pub async fn ledger(ledger: &dyn Ledger) {
    assert_eq!(ledger.get("conf", "a").await.unwrap(), None);
    ledger.put("conf", "a", b"1").await.unwrap();
    ledger.put("conf", "ab", b"2").await.unwrap();
    ledger.put("other", "a", b"3").await.unwrap();
    assert_eq!(
        ledger.get("conf", "a").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert!(!ledger.put_if_absent("conf", "a", b"9").await.unwrap());
    assert!(ledger.put_if_absent("conf", "b", b"4").await.unwrap());
    let scanned: Vec<String> = ledger
        .scan("conf", "a")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(scanned, ["a", "ab"]);
    assert!(
        !ledger
            .replace_if("conf", "a", b"stale", b"5")
            .await
            .unwrap()
    );
    assert!(ledger.replace_if("conf", "a", b"1", b"5").await.unwrap());
    assert!(
        !ledger.replace_if("conf", "a", b"1", b"6").await.unwrap(),
        "swapped twice"
    );
    assert!(
        !ledger
            .replace_if("conf", "missing", b"", b"7")
            .await
            .unwrap()
    );
    assert_eq!(
        ledger.get("conf", "a").await.unwrap().as_deref(),
        Some(&b"5"[..])
    );
    ledger.delete("conf", "a").await.unwrap();
    assert_eq!(ledger.get("conf", "a").await.unwrap(), None);

    // Counters, and scans that must not run past their prefix.
    assert_eq!(ledger.increment("count", "t/h/1", 2).await.unwrap(), 2);
    assert_eq!(ledger.increment("count", "t/h/1", 3).await.unwrap(), 5);
    assert_eq!(ledger.increment("count", "t/h/2", 1).await.unwrap(), 1);
    assert_eq!(
        ledger
            .get("count", "t/h/1")
            .await
            .unwrap()
            .map(|v| crate::counter_value(&v)),
        Some(5)
    );
    ledger.put("count", "t/h0", b"x").await.unwrap();
    ledger.put("count", "t/h/\u{10FFFF}", b"y").await.unwrap();
    let scanned: Vec<String> = ledger
        .scan("count", "t/h/")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(scanned, ["t/h/1", "t/h/2", "t/h/\u{10FFFF}"]);
}

/// `queue` must move a message to `dead_letter` after it was received twice.
pub async fn queue(queue: &dyn Queue, dead_letter: &dyn Queue) {
    queue_with_tick(queue, dead_letter, Duration::from_millis(100)).await
}

/// [`queue`] with every timeout a multiple of `tick`, for queues whose visibility timeouts
/// have a coarser granularity (SQS: whole seconds).
pub async fn queue_with_tick(queue: &dyn Queue, dead_letter: &dyn Queue, tick: Duration) {
    let attrs = BTreeMap::from([("tenant".to_string(), "acme".to_string())]);
    queue
        .send(b"one", attrs.clone(), Duration::ZERO)
        .await
        .unwrap();
    queue
        .send(b"later", BTreeMap::new(), Duration::from_secs(3600))
        .await
        .unwrap();

    let got = queue.receive(10, tick * 2).await.unwrap();
    assert_eq!(got.len(), 1, "delayed message delivered early");
    assert_eq!(got[0].body, b"one");
    assert_eq!(got[0].attributes, attrs);
    assert_eq!(got[0].receive_count, 1);
    assert!(
        queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty(),
        "in-flight message redelivered"
    );

    tokio::time::sleep(tick * 3).await;
    let again = queue.receive(10, tick / 2).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "message not redelivered after visibility timeout"
    );
    assert_eq!(again[0].receive_count, 2);

    tokio::time::sleep(tick * 3 / 2).await;
    assert!(
        queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty(),
        "poison message looped"
    );
    let dead = dead_letter
        .receive(10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "poison message not dead-lettered");
    assert_eq!(dead[0].body, b"one");
    dead_letter.delete(&dead[0].receipt).await.unwrap();

    queue
        .send(b"two", BTreeMap::new(), Duration::ZERO)
        .await
        .unwrap();
    let two = queue.receive(1, Duration::from_secs(60)).await.unwrap();
    queue
        .change_visibility(&two[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let two_again = queue.receive(1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(two_again[0].body, b"two");
    queue.delete(&two_again[0].receipt).await.unwrap();
    queue
        .change_visibility(&two_again[0].receipt, Duration::ZERO)
        .await
        .ok();
    assert!(
        queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty(),
        "deleted message came back"
    );
}
