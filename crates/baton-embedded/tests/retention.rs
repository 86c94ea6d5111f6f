//! The retention sweeper, on a clock the tests move: ledger records go once older than
//! their table's retention (the list AWS turns into TTLs), tables kept forever stay, bodies
//! of finished messages go after the body retention while those a queued or dead-lettered
//! job refers to stay, and a database from before the sweeper keeps every row.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use baton_embedded::{
    Clock, EmbeddedBackend, EmbeddedOptions, RetentionPolicy, Schedule, SweepReport,
    sweep_periodically,
};
use baton_store::{BlobStore, LEDGER_TABLES, Ledger, Queue, StoreError};
use rusqlite::{Connection, params};

const DAY: Duration = Duration::from_secs(86_400);
/// 2023-11-14, an arbitrary start.
const T0: i64 = 1_700_000_000_000;
/// Bodies above this go to a file of their own.
const INLINE_MAX: usize = 1024;

fn open(dir: &Path, clock: &Clock) -> EmbeddedBackend {
    EmbeddedBackend::open(
        dir,
        EmbeddedOptions {
            inline_max: INLINE_MAX,
            // Every small body closes its segment: one segment file per body.
            segment_max: 1,
            clock: clock.clone(),
            ..EmbeddedOptions::default()
        },
    )
    .expect("open backend")
}

/// A fresh data directory on a manual clock standing at `T0`.
fn start() -> (tempfile::TempDir, Clock, EmbeddedBackend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    let backend = open(dir.path(), &clock);
    (dir, clock, backend)
}

async fn sweep(backend: &EmbeddedBackend) -> SweepReport {
    backend
        .sweep_expired(&RetentionPolicy::default())
        .await
        .expect("sweep")
}

/// Queues a stage job about message `queue_id`, as the pipeline does.
async fn queue_job(queue: &dyn Queue, queue_id: &str, delay: Duration) {
    let attributes = BTreeMap::from([("queue_id".to_string(), queue_id.to_string())]);
    queue.send(b"{}", attributes, delay).await.expect("send");
}

fn days(n: u64) -> Duration {
    DAY * n as u32
}

/// A queue id as the gateway makes them (26 characters of Crockford base32).
fn id(n: u32) -> String {
    format!("01HZX{n:021}")
}

async fn store_body(blobs: &dyn BlobStore, key: &str, len: usize) {
    let mut w = blobs.create(key).await.expect("create");
    w.write(&vec![b'x'; len]).await.expect("write");
    w.commit().await.expect("commit");
}

async fn present(ledger: &dyn Ledger, table: &str, key: &str) -> bool {
    ledger.get(table, key).await.expect("get").is_some()
}

async fn body_exists(blobs: &dyn BlobStore, key: &str) -> bool {
    match blobs.read(key).await {
        Ok(_) => true,
        Err(StoreError::NotFound(_)) => false,
        Err(e) => panic!("reading {key}: {e}"),
    }
}

fn segment_files(dir: &Path) -> usize {
    fs::read_dir(dir.join("spool"))
        .expect("spool")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .count()
}

/// Whether a record written `age` ago should still be there.
fn kept(table: &str, age: Duration) -> bool {
    let spec = LEDGER_TABLES
        .iter()
        .find(|t| t.name == table)
        .expect("listed");
    spec.retention.is_none_or(|keep| age < keep)
}

#[tokio::test]
async fn records_older_than_their_tables_retention_go_and_the_rest_stay() {
    let (_dir, clock, backend) = start();
    let ledger = backend.ledger();
    for t in LEDGER_TABLES {
        ledger.put(t.name, "old/1", b"v").await.expect("put");
    }
    ledger
        .put("events", "rewritten/1", b"1")
        .await
        .expect("put");
    ledger
        .put("recipients", "swapped/1", b"1")
        .await
        .expect("put");

    clock.advance(days(20));
    for t in LEDGER_TABLES {
        ledger
            .put_if_absent(t.name, "young/1", b"v")
            .await
            .expect("put");
    }
    // A record lives from its last write, as DynamoDB's TTL is set again on every write.
    ledger
        .put("events", "rewritten/1", b"2")
        .await
        .expect("put");
    assert!(
        ledger
            .replace_if("recipients", "swapped/1", b"1", b"2")
            .await
            .expect("swap")
    );

    clock.advance(days(11));
    let report = sweep(&backend).await;
    let mut expected = 0;
    for t in LEDGER_TABLES {
        for (key, age) in [("old/1", days(31)), ("young/1", days(11))] {
            let keep = kept(t.name, age);
            expected += u64::from(!keep);
            assert_eq!(
                present(&ledger, t.name, key).await,
                keep,
                "{}/{key} written {} days ago",
                t.name,
                age.as_secs() / 86_400
            );
        }
    }
    // What the loop above decided, spelled out.
    assert!(!present(&ledger, "events", "old/1").await);
    assert!(!present(&ledger, "captured", "old/1").await);
    assert!(!present(&ledger, "quota_counters", "young/1").await);
    assert!(present(&ledger, "captured", "young/1").await);
    assert!(present(&ledger, "bounces", "old/1").await);
    for forever in [
        "users",
        "domains",
        "dkim_keys",
        "secrets",
        "tenants",
        "suppression",
        "event_destinations",
    ] {
        assert!(present(&ledger, forever, "old/1").await, "{forever}");
    }
    assert!(present(&ledger, "events", "rewritten/1").await);
    assert!(present(&ledger, "recipients", "swapped/1").await);
    assert_eq!(expected, 10, "9 tables expire within 31 days, 1 within 11");
    assert_eq!(report.records, expected);
    assert_eq!(report.bodies, 0);

    clock.advance(days(60));
    let report = sweep(&backend).await;
    assert!(!present(&ledger, "bounces", "old/1").await);
    assert!(present(&ledger, "users", "old/1").await);
    assert!(present(&ledger, "dkim_keys", "young/1").await);
    // 91 days: bounces/old; 71 days: the young records of the 8 tables that keep theirs
    // for 30 days or less (quota_counters' already went), rewritten/1 and swapped/1.
    assert_eq!(report.records, 1 + 8 + 2);
}

#[tokio::test]
async fn a_sweep_works_through_a_backlog_in_bounded_batches() {
    let (_dir, clock, backend) = start();
    let ledger = backend.ledger();
    let blobs = backend.blob_store();
    // Old bodies still queued come first in age order: the sweep must get past them.
    let deliver = backend.queue("deliver", 10, None);
    for n in 100..104 {
        store_body(&blobs, &id(n), 10).await;
        queue_job(&deliver, &id(n), Duration::ZERO).await;
    }
    clock.advance(Duration::from_millis(1));
    for n in 0..10 {
        ledger
            .put("events", &format!("m{n}/1"), b"v")
            .await
            .expect("put");
        store_body(&blobs, &id(n), 10).await;
    }
    clock.advance(days(31));
    let policy = RetentionPolicy {
        batch: 3,
        ..RetentionPolicy::default()
    };
    let report = backend.sweep_expired(&policy).await.expect("sweep");
    assert!(ledger.scan("events", "").await.expect("scan").is_empty());
    for n in 0..10 {
        assert!(!body_exists(&blobs, &id(n)).await);
    }
    for n in 100..104 {
        assert!(body_exists(&blobs, &id(n)).await);
    }
    assert_eq!(
        (report.records, report.bodies, report.kept_queued),
        (10, 10, 4)
    );
    // events: 3 + 3 + 3 + 1; one each for the 9 other expiring tables; bodies: 14 looked
    // at, 3 at a time.
    assert_eq!(report.batches, 4 + 9 + 5);
}

#[tokio::test]
async fn old_bodies_of_finished_messages_go_and_queued_ones_stay() {
    let (dir, clock, backend) = start();
    let blobs = backend.blob_store();
    let deliver = backend.queue("deliver", 1, Some("deliver-dlq"));

    // Finished: nothing queued any more.
    let (done, big_done) = (id(1), id(2));
    store_body(&blobs, &done, 100).await;
    store_body(&blobs, &format!("captured-{done}"), 100).await;
    store_body(&blobs, &big_done, 2 * INLINE_MAX).await;
    assert!(dir.path().join("spool/large").join(&big_done).exists());
    // Still queued: a deferred delivery, and one dead-lettered after its last receive.
    let (queued, dead) = (id(3), id(4));
    store_body(&blobs, &queued, 100).await;
    store_body(&blobs, &format!("captured-{queued}"), 100).await;
    queue_job(&deliver, &queued, days(3)).await;
    store_body(&blobs, &dead, 2 * INLINE_MAX).await;
    queue_job(&deliver, &dead, Duration::ZERO).await;
    assert_eq!(
        deliver.receive(10, Duration::ZERO).await.expect("rx").len(),
        1
    );
    assert!(
        deliver
            .receive(10, Duration::ZERO)
            .await
            .expect("rx")
            .is_empty()
    );
    assert_eq!(
        backend.list_queue("deliver-dlq").await.expect("dlq").len(),
        1
    );
    // A job without the queue_id attribute, whose body names the message.
    let unlabelled = id(5);
    store_body(&blobs, &unlabelled, 100).await;
    backend
        .queue("bounce", 10, None)
        .send(
            format!(r#"{{"envelope":{{"queue_id":"{unlabelled}"}}}}"#).as_bytes(),
            BTreeMap::new(),
            Duration::ZERO,
        )
        .await
        .expect("send");

    clock.advance(days(10));
    let young = id(6);
    store_body(&blobs, &young, 100).await;

    clock.advance(days(5));
    let segments = segment_files(dir.path());
    let report = sweep(&backend).await;
    for gone in [done.clone(), format!("captured-{done}"), big_done.clone()] {
        assert!(!body_exists(&blobs, &gone).await, "{gone} kept");
    }
    assert!(!dir.path().join("spool/large").join(&big_done).exists());
    for kept in [
        queued.clone(),
        format!("captured-{queued}"),
        dead.clone(),
        unlabelled.clone(),
        young.clone(),
    ] {
        assert!(body_exists(&blobs, &kept).await, "{kept} deleted");
    }
    assert!(dir.path().join("spool/large").join(&dead).exists());
    // The two small finished bodies had a segment file each.
    assert_eq!(segment_files(dir.path()), segments - 2);
    assert_eq!(
        report,
        SweepReport {
            records: 0,
            bodies: 3,
            kept_queued: 4,
            batches: report.batches,
        }
    );

    // Once its job is done, the deferred message's body goes too; the dead letter's stays.
    clock.advance(days(3));
    let job = deliver
        .receive(10, Duration::from_secs(60))
        .await
        .expect("rx");
    assert_eq!(job.len(), 1);
    deliver.delete(&job[0].receipt).await.expect("delete");
    let report = sweep(&backend).await;
    assert!(!body_exists(&blobs, &queued).await);
    assert!(!body_exists(&blobs, &format!("captured-{queued}")).await);
    assert!(body_exists(&blobs, &dead).await);
    assert_eq!((report.bodies, report.kept_queued), (2, 2));
}

/// The schema as versions before the sweeper made it.
const OLD_SCHEMA: &str = "
CREATE TABLE segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    live INTEGER NOT NULL DEFAULT 0,
    sealed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE blobs (
    key TEXT PRIMARY KEY,
    segment INTEGER,
    offset INTEGER NOT NULL,
    len INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE queue_messages (
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    body BLOB NOT NULL,
    attributes TEXT NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (queue, id)
);
CREATE INDEX queue_by_visibility ON queue_messages (queue, visible_at);
CREATE INDEX queue_by_receipt ON queue_messages (receipt) WHERE receipt IS NOT NULL;
CREATE TABLE ledger (
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
";

#[tokio::test]
async fn an_old_database_keeps_every_row_and_its_rows_expire_from_the_migration_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (finished, queued) = (id(1), id(2));
    {
        let large = dir.path().join("spool/large");
        fs::create_dir_all(&large).expect("spool");
        let conn = Connection::open(dir.path().join("baton.db")).expect("db");
        conn.execute_batch(OLD_SCHEMA).expect("old schema");
        for (table, key) in [
            ("events", "m1/0001"),
            ("captured", "m1"),
            ("users", "alice"),
        ] {
            conn.execute(
                "INSERT INTO ledger (tbl, key, value) VALUES (?1, ?2, x'7b7d')",
                params![table, key],
            )
            .expect("ledger row");
        }
        for key in [&finished, &queued] {
            fs::write(large.join(key), b"body").expect("body");
            conn.execute(
                "INSERT INTO blobs (key, segment, offset, len) VALUES (?1, NULL, 0, 4)",
                params![key],
            )
            .expect("blob row");
        }
        // Found only by its attribute: the body does not name the message.
        conn.execute(
            "INSERT INTO queue_messages (queue, id, body, attributes, visible_at, sent_at)
             VALUES ('deliver', 'q1', x'00', ?1, 0, 0)",
            params![format!(r#"{{"queue_id":"{queued}"}}"#)],
        )
        .expect("queue row");
    }
    // Written long ago, migrated now.
    let migrated = T0 + 400 * DAY.as_millis() as i64;
    let clock = Clock::manual(migrated);
    {
        let backend = open(dir.path(), &clock);
        let (ledger, blobs) = (backend.ledger(), backend.blob_store());
        let report = backend
            .sweep_expired(&RetentionPolicy::default())
            .await
            .expect("sweep");
        assert_eq!((report.records, report.bodies), (0, 0));
        for (table, key) in [
            ("events", "m1/0001"),
            ("captured", "m1"),
            ("users", "alice"),
        ] {
            assert!(present(&ledger, table, key).await, "{table}/{key}");
        }
        assert!(body_exists(&blobs, &finished).await);
        assert!(body_exists(&blobs, &queued).await);
        assert_eq!(backend.list_queue("deliver").await.expect("list").len(), 1);
    }
    // Reopened a month later: the migration does not run again, so the rows' age counts
    // from the migration.
    clock.advance(days(31));
    let backend = open(dir.path(), &clock);
    let (ledger, blobs) = (backend.ledger(), backend.blob_store());
    let report = sweep(&backend).await;
    assert!(!present(&ledger, "events", "m1/0001").await);
    assert!(!present(&ledger, "captured", "m1").await);
    assert!(present(&ledger, "users", "alice").await);
    assert!(!body_exists(&blobs, &finished).await);
    assert!(!dir.path().join("spool/large").join(&finished).exists());
    assert!(body_exists(&blobs, &queued).await);
    assert_eq!(
        (report.records, report.bodies, report.kept_queued),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn the_periodic_sweep_runs_soon_after_start_and_stops_at_shutdown() {
    let (_dir, clock, backend) = start();
    let ledger = backend.ledger();
    ledger.put("events", "m1/0001", b"v").await.expect("put");
    clock.advance(days(31));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(sweep_periodically(
        backend.clone(),
        RetentionPolicy::default(),
        Schedule {
            first_after: Duration::from_millis(10),
            every: Duration::from_secs(3600),
        },
        stopped,
    ));
    let swept = tokio::time::timeout(Duration::from_secs(10), async {
        while present(&ledger, "events", "m1/0001").await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(swept.is_ok(), "no sweep ran");
    stop.send(true).expect("sweeper listening");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("sweeper stopped")
        .expect("sweeper task");
}
