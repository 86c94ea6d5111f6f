//! The embedded backend: everything `baton serve` needs on one machine, no cloud account.
//!
//! - Bodies live in `spool/`. Small ones are appended to a shared segment file so that one
//!   fsync makes a whole batch durable; large ones stream to a file of their own.
//! - Queues, the blob index and the ledger live in SQLite (`baton.db`, WAL, synchronous=FULL).
//! - One writer thread owns every write. It takes whatever requests are waiting, applies
//!   them in one transaction, fsyncs the segment, commits, and only then answers: group
//!   commit, so durability costs two fsyncs per batch instead of per message.
//! - The directory is private: 0700, files 0600 (`data_dir`). The DKIM keys in the ledger
//!   are encrypted under a master key kept beside the database (`sealed`).
//! - Nothing is kept forever that AWS would expire: `retention` sweeps old ledger records
//!   and the bodies of finished messages.

mod blob;
mod clock;
mod data_dir;
mod queue;
mod retention;
mod schema;
mod sealed;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use baton_store::{Ledger, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

pub use blob::SpoolBlobStore;
pub use clock::Clock;
pub use data_dir::{DIR_MODE, FILE_MODE, check as check_data_dir, prepare as prepare_data_dir};
pub use queue::{QueueEntry, SqliteQueue};
pub use retention::{RetentionPolicy, Schedule, SweepReport, sweep_periodically};
pub use sealed::{MAGIC as SEALED_MAGIC, MASTER_KEY_FILE, SEALED_TABLES};

use sealed::Sealer;
use writer::{Op, OpResult, WriterHandle};

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Most requests applied in one transaction.
    pub max_batch: usize,
    /// Extra time to wait for a batch to fill; zero commits whatever is pending.
    pub max_delay: Duration,
    /// Bodies up to this size are kept in memory until commit and appended to a segment;
    /// larger ones stream to their own file. This bounds memory per session.
    pub inline_max: usize,
    /// A segment is closed for appends past this size.
    pub segment_max: u64,
    /// What rows are stamped with and queues and sweeps go by.
    pub clock: Clock,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            max_batch: 512,
            max_delay: Duration::ZERO,
            inline_max: 128 * 1024,
            segment_max: 64 * 1024 * 1024,
            clock: Clock::system(),
        }
    }
}

fn backend_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(crate) struct Inner {
    spool: PathBuf,
    options: EmbeddedOptions,
    writer: WriterHandle,
    /// Read connections: a read takes the first one free (or waits on one), so reads run
    /// side by side instead of queueing behind one connection.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    sealer: Sealer,
}

/// How many read connections a backend opens.
const READERS: usize = 4;

impl Inner {
    fn free_reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        for reader in &self.readers {
            if let Ok(conn) = reader.try_lock() {
                return conn;
            }
        }
        let turn = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.readers.len();
        self.readers[turn].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a read on the shared read connection, off the async threads.
    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.free_reader();
            f(&conn, &inner.spool)
        })
        .await
        .map_err(backend_err)?
    }
}

impl Inner {
    /// A point read (one row by its key, from the page cache or the memory map: a few
    /// microseconds) runs on the calling thread when a read connection is free, sparing
    /// the two thread switches of [`Inner::read`]; otherwise it waits its turn there.
    async fn read_point<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        for reader in &self.readers {
            if let Ok(conn) = reader.try_lock() {
                return f(&conn, &self.spool);
            }
        }
        self.read(f).await
    }
}

/// Handle to an open data directory. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedBackend {
    inner: Arc<Inner>,
}

impl EmbeddedBackend {
    /// Opens (creating if needed) the data directory. Several processes may open the same
    /// directory (the CLI next to `baton serve`); only one may [`recover`](Self::recover).
    /// A directory that group or others can write is refused ([`prepare_data_dir`]).
    pub fn open(data_dir: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        data_dir::prepare(data_dir)?;
        data_dir::create_private_dir(&data_dir.join("spool").join("large"))?;
        Self::open_database(data_dir, options)
    }

    /// Opens only the database, for administration next to a running server: works even
    /// when the spool is missing or broken (reading a body then fails, listing does not).
    pub fn open_for_admin(data_dir: &Path) -> Result<Self, StoreError> {
        data_dir::prepare(data_dir)?;
        Self::open_database(data_dir, EmbeddedOptions::default())
    }

    fn open_database(data_dir: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let spool = data_dir.join("spool");
        let db = data_dir.join("baton.db");
        data_dir::ensure_private_file(&db)?;
        let writer_conn = schema::open(&db, options.clock.now_ms())?;
        let sealer = Sealer::load_or_create(data_dir, &writer_conn)?;
        let sealed = sealer.seal_legacy_rows(&writer_conn)?;
        if sealed > 0 {
            tracing::info!(records = sealed, "sealed DKIM keys stored in plain form");
        }
        let readers = (0..READERS)
            .map(|_| schema::open_reader(&db).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let writer = writer::spawn(writer_conn, spool.clone(), options.clone())?;
        Ok(EmbeddedBackend {
            inner: Arc::new(Inner {
                spool,
                options,
                writer,
                readers,
                next_reader: Default::default(),
                sealer,
            }),
        })
    }

    /// Cleans up after a crash: closes segments left open, deletes segment files no live
    /// message uses, and partial large bodies. Call once, from the process that serves.
    pub async fn recover(&self) -> Result<(), StoreError> {
        self.inner.writer.call(Op::Recover).await.map(|_| ())
    }

    pub fn blob_store(&self) -> SpoolBlobStore {
        SpoolBlobStore::new(self.inner.clone())
    }

    /// A queue; after `max_receives` receptions a message moves to `dead_letter`.
    pub fn queue(&self, name: &str, max_receives: u32, dead_letter: Option<&str>) -> SqliteQueue {
        SqliteQueue::new(self.inner.clone(), name, max_receives, dead_letter)
    }

    pub fn ledger(&self) -> SqliteLedger {
        SqliteLedger {
            inner: self.inner.clone(),
        }
    }

    /// Every message in `queue`, for `baton queue list`.
    pub async fn list_queue(&self, queue: &str) -> Result<Vec<QueueEntry>, StoreError> {
        queue::list(&self.inner, queue).await
    }
}

#[derive(Clone)]
pub struct SqliteLedger {
    inner: Arc<Inner>,
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_stored(table, key)
            .await?
            .map(|stored| self.inner.sealer.open(table, key, stored))
            .transpose()
    }

    async fn put(&self, table: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let op = Op::Put {
            table: table.to_string(),
            key: key.to_string(),
            value: self.inner.sealer.seal(table, key, value)?,
            only_if_absent: false,
        };
        self.inner.writer.call(op).await.map(|_| ())
    }

    async fn put_if_absent(
        &self,
        table: &str,
        key: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let op = Op::Put {
            table: table.to_string(),
            key: key.to_string(),
            value: self.inner.sealer.seal(table, key, value)?,
            only_if_absent: true,
        };
        match self.inner.writer.call(op).await? {
            OpResult::Bool(wrote) => Ok(wrote),
            other => Err(backend_err(format!("unexpected writer result {other:?}"))),
        }
    }

    async fn replace_if(
        &self,
        table: &str,
        key: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        // A sealed value differs from its plain form (and from every other sealing of it):
        // compare opened, then swap on the exact stored bytes, which keeps the swap atomic.
        let expected = if sealed::is_sealed_table(table) {
            let Some(stored) = self.get_stored(table, key).await? else {
                return Ok(false);
            };
            if self.inner.sealer.open(table, key, stored.clone())? != expected {
                return Ok(false);
            }
            stored
        } else {
            expected.to_vec()
        };
        let op = Op::ReplaceIf {
            table: table.to_string(),
            key: key.to_string(),
            expected,
            value: self.inner.sealer.seal(table, key, value)?,
        };
        match self.inner.writer.call(op).await? {
            OpResult::Bool(wrote) => Ok(wrote),
            other => Err(backend_err(format!("unexpected writer result {other:?}"))),
        }
    }

    async fn delete(&self, table: &str, key: &str) -> Result<(), StoreError> {
        let op = Op::DeleteRecord {
            table: table.to_string(),
            key: key.to_string(),
        };
        self.inner.writer.call(op).await.map(|_| ())
    }

    async fn put_many(&self, writes: Vec<baton_store::BlindWrite>) -> Result<(), StoreError> {
        let ops = self.put_ops(writes)?;
        self.inner.writer.call(Op::PutMany(ops)).await.map(|_| ())
    }

    async fn increment(&self, table: &str, key: &str, by: u64) -> Result<u64, StoreError> {
        if sealed::is_sealed_table(table) {
            return Err(backend_err(format!("{table} holds no counters")));
        }
        let op = Op::Increment {
            table: table.to_string(),
            key: key.to_string(),
            by,
        };
        match self.inner.writer.call(op).await? {
            OpResult::Count(total) => Ok(total),
            other => Err(backend_err(format!("unexpected writer result {other:?}"))),
        }
    }

    async fn scan(&self, table: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = self.scan_stored(table, prefix).await?;
        rows.into_iter()
            .map(|(key, stored)| {
                let value = self.inner.sealer.open(table, &key, stored)?;
                Ok((key, value))
            })
            .collect()
    }
}

impl SqliteLedger {
    /// The writer's ops for `writes`, sealed where their table is.
    pub(crate) fn put_ops(
        &self,
        writes: Vec<baton_store::BlindWrite>,
    ) -> Result<Vec<Op>, StoreError> {
        writes
            .into_iter()
            .map(|w| {
                Ok(Op::Put {
                    value: self.inner.sealer.seal(&w.table, &w.key, &w.value)?,
                    table: w.table,
                    key: w.key,
                    only_if_absent: w.only_if_absent,
                })
            })
            .collect()
    }

    /// Whether this ledger's writes go through `inner`'s writer (the same database).
    pub(crate) fn shares(&self, inner: &Arc<Inner>) -> bool {
        Arc::ptr_eq(&self.inner, inner)
    }

    /// A record as stored (sealed for a sealed table).
    async fn get_stored(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (table, key) = (table.to_string(), key.to_string());
        self.inner
            .read_point(move |conn, _| {
                conn.prepare_cached("SELECT value FROM ledger WHERE tbl = ?1 AND key = ?2")
                    .and_then(|mut s| s.query_row(params![table, key], |r| r.get(0)).optional())
                    .map_err(backend_err)
            })
            .await
    }

    async fn scan_stored(
        &self,
        table: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // Most scans are a handful of rows (a domain's keys, a tenant's destinations): on the
        // calling thread, like a point read. One that turns out longer is read again off the
        // async threads, whole.
        let (t, p) = (table.to_string(), prefix.to_string());
        let first = self
            .inner
            .read_point(move |conn, _| scan_rows(conn, &t, &p, INLINE_SCAN_ROWS as i64 + 1))
            .await?;
        if first.len() <= INLINE_SCAN_ROWS {
            return Ok(first);
        }
        let (t, p) = (table.to_string(), prefix.to_string());
        self.inner
            .read(move |conn, _| scan_rows(conn, &t, &p, -1))
            .await
    }
}

/// How many rows a scan may read on the calling thread (see `scan_stored`).
const INLINE_SCAN_ROWS: usize = 64;

/// The records of `table` whose key starts with `prefix`, in key order; at most `limit`
/// (-1: all). A key range the primary key's index answers (both bounds in the plan), rather
/// than a test of every key of the table; the substr test keeps it exact.
fn scan_rows(
    conn: &Connection,
    table: &str,
    prefix: &str,
    limit: i64,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
    match prefix_upper_bound(prefix) {
        Some(upper) => conn
            .prepare_cached(
                "SELECT key, value FROM ledger WHERE tbl = ?1 AND key >= ?2 AND key < ?3 AND substr(key, 1, length(?2)) = ?2 ORDER BY key LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(params![table, prefix, upper, limit], row)?
                    .collect::<Result<Vec<_>, _>>()
            }),
        None => conn
            .prepare_cached(
                "SELECT key, value FROM ledger WHERE tbl = ?1 AND key >= ?2 ORDER BY key LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(params![table, prefix, limit], row)?
                    .collect::<Result<Vec<_>, _>>()
            }),
    }
    .map_err(backend_err)
}

/// The least string greater than every string that starts with `prefix` (in SQLite's BINARY
/// order, which for UTF-8 is code point order): the last character that can be stepped up,
/// stepped up, with what follows it dropped. `None` when there is no such string.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod prefix_tests {
    use super::prefix_upper_bound;

    #[test]
    fn the_upper_bound_is_just_above_every_key_with_the_prefix() {
        assert_eq!(prefix_upper_bound("acme/").as_deref(), Some("acme0"));
        assert_eq!(prefix_upper_bound("").as_deref(), None);
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
        let upper = prefix_upper_bound("x/é").expect("bound");
        for key in ["x/é", "x/é/1", "x/é\u{10FFFF}"] {
            assert!(key < upper.as_str(), "{key}");
        }
        assert!("x/ê" >= upper.as_str());
    }
}
