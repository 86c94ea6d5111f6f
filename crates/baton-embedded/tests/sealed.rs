//! DKIM keys at rest: the `dkim_keys` table is stored sealed under the data directory's
//! master key, reads give the plain value back, plain rows of older versions still read and
//! are sealed at the next open, and a wrong or missing master key is a clear error.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use baton_embedded::{EmbeddedBackend, EmbeddedOptions, MASTER_KEY_FILE, SEALED_MAGIC};
use baton_store::{Ledger, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

const TABLE: &str = "dkim_keys";
const KEY: &str = "example.com/b1r";
/// The shape `baton-pipeline`'s `DkimKey` is stored in; the private key as base64 DER.
const RECORD: &[u8] = br#"{"domain":"example.com","selector":"b1r","algorithm":"rsa-sha256","private_key_b64":"MIIEowIBAAKCAQEAsecret","public_key_b64":"MIIBCgKCAQEA","created_at":0,"retired":false}"#;

fn open(dir: &Path) -> Result<EmbeddedBackend, StoreError> {
    EmbeddedBackend::open(dir, EmbeddedOptions::default())
}

fn raw(dir: &Path, table: &str, key: &str) -> Option<Vec<u8>> {
    let conn = Connection::open(dir.join("baton.db")).expect("db");
    conn.query_row(
        "SELECT value FROM ledger WHERE tbl = ?1 AND key = ?2",
        params![table, key],
        |r| r.get(0),
    )
    .optional()
    .expect("query")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn dkim_keys_are_stored_sealed_and_read_plain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = open(dir.path()).expect("open");
    let ledger = backend.ledger();
    ledger.put(TABLE, KEY, RECORD).await.expect("put");
    ledger.put("users", "alice", b"{}").await.expect("put");

    let stored = raw(dir.path(), TABLE, KEY).expect("row");
    assert!(stored.starts_with(SEALED_MAGIC));
    for needle in [
        &b"private_key_b64"[..],
        b"MIIEowIBAAKCAQEA",
        b"secret",
        b"example.com",
    ] {
        assert!(
            !contains(&stored, needle),
            "{}",
            String::from_utf8_lossy(needle)
        );
    }
    assert_eq!(raw(dir.path(), "users", "alice").expect("row"), b"{}");
    assert_eq!(
        ledger.get(TABLE, KEY).await.expect("get").expect("some"),
        RECORD
    );
    let scanned = ledger.scan(TABLE, "example.com/").await.expect("scan");
    assert_eq!(scanned, vec![(KEY.to_string(), RECORD.to_vec())]);

    // Conditional writes compare plain values.
    assert!(!ledger.put_if_absent(TABLE, KEY, b"x").await.expect("pia"));
    assert!(
        !ledger
            .replace_if(TABLE, KEY, b"wrong", b"y")
            .await
            .expect("ri")
    );
    assert!(
        ledger
            .replace_if(TABLE, KEY, RECORD, b"y")
            .await
            .expect("ri")
    );
    assert_eq!(
        ledger.get(TABLE, KEY).await.expect("get").expect("some"),
        b"y"
    );
    assert!(
        !ledger
            .replace_if(TABLE, "example.com/none", b"y", b"z")
            .await
            .expect("ri")
    );

    let master = dir.path().join(MASTER_KEY_FILE);
    assert_eq!(fs::read(&master).expect("key").len(), 32);
    assert_eq!(
        fs::metadata(&master).expect("stat").permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test]
async fn the_same_value_seals_differently_and_only_opens_under_its_own_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path()).expect("open").ledger();
    ledger.put(TABLE, KEY, RECORD).await.expect("put");
    ledger
        .put(TABLE, "example.com/b2r", RECORD)
        .await
        .expect("put");
    let (a, b) = (
        raw(dir.path(), TABLE, KEY).expect("a"),
        raw(dir.path(), TABLE, "example.com/b2r").expect("b"),
    );
    assert_ne!(a, b, "a random nonce per value");
    // Moved to another record, a sealed value does not open (domain and selector are
    // associated data).
    let conn = Connection::open(dir.path().join("baton.db")).expect("db");
    conn.execute(
        "UPDATE ledger SET value = ?1 WHERE tbl = ?2 AND key = ?3",
        params![a, TABLE, "example.com/b2r"],
    )
    .expect("swap");
    let err = ledger
        .get(TABLE, "example.com/b2r")
        .await
        .expect_err("moved");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn plain_keys_of_older_versions_still_load_and_are_sealed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()).expect("open"));
    let conn = Connection::open(dir.path().join("baton.db")).expect("db");
    conn.execute(
        "INSERT INTO ledger (tbl, key, value) VALUES (?1, ?2, ?3)",
        params![TABLE, KEY, RECORD],
    )
    .expect("insert");
    drop(conn);

    let backend = open(dir.path()).expect("reopen");
    let stored = raw(dir.path(), TABLE, KEY).expect("row");
    assert!(stored.starts_with(SEALED_MAGIC), "sealed at open");
    assert_eq!(
        backend
            .ledger()
            .get(TABLE, KEY)
            .await
            .expect("get")
            .expect("some"),
        RECORD
    );
}

#[tokio::test]
async fn a_wrong_master_key_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    open(dir.path())
        .expect("open")
        .ledger()
        .put(TABLE, KEY, RECORD)
        .await
        .expect("put");
    let master = dir.path().join(MASTER_KEY_FILE);
    fs::write(&master, [7u8; 32]).expect("replace key");

    let ledger = open(dir.path()).expect("reopen").ledger();
    let err = ledger
        .get(TABLE, KEY)
        .await
        .expect_err("wrong key")
        .to_string();
    assert!(err.contains(&format!("{TABLE}/{KEY}")), "{err}");
    assert!(
        err.contains(&format!("master key {}", master.display())),
        "{err}"
    );
    let err = ledger
        .scan(TABLE, "")
        .await
        .expect_err("wrong key")
        .to_string();
    assert!(err.contains("cannot decrypt"), "{err}");

    fs::write(&master, b"short").expect("truncate key");
    let err = open(dir.path()).err().expect("refused").to_string();
    assert!(err.contains("a master key is 32 bytes"), "{err}");
}

#[tokio::test]
async fn a_missing_master_key_is_not_replaced_while_sealed_keys_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    open(dir.path())
        .expect("open")
        .ledger()
        .put(TABLE, KEY, RECORD)
        .await
        .expect("put");
    let master = dir.path().join(MASTER_KEY_FILE);
    fs::remove_file(&master).expect("rm");
    let err = EmbeddedBackend::open_for_admin(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("master key is missing"), "{err}");
    assert!(!master.exists());
}

#[tokio::test]
async fn a_master_key_behind_a_symbolic_link_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    drop(open(&dir).expect("first open creates the key"));
    let key = dir.join("master.key");
    let elsewhere = tmp.path().join("chosen.key");
    std::fs::rename(&key, &elsewhere).expect("move");
    std::os::unix::fs::symlink(&elsewhere, &key).expect("link");
    let err = open(&dir).map(|_| ()).expect_err("refused").to_string();
    assert!(err.contains("symbolic link"), "{err}");
}
