//! The SQLite schema, its migrations and the connection settings.

use std::path::Path;
use std::time::Duration;

use baton_store::StoreError;
use rusqlite::{Connection, TransactionBehavior, params};

use crate::backend_err;

/// The tables as the first version made them. Later changes are [`MIGRATIONS`], so a data
/// directory of any version ends up with the same schema.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    live INTEGER NOT NULL DEFAULT 0,
    sealed INTEGER NOT NULL DEFAULT 0
);
-- segment NULL: the body is a file of its own under spool/large.
CREATE TABLE IF NOT EXISTS blobs (
    key TEXT PRIMARY KEY,
    segment INTEGER,
    offset INTEGER NOT NULL,
    len INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_messages (
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
CREATE INDEX IF NOT EXISTS queue_by_visibility ON queue_messages (queue, visible_at);
CREATE INDEX IF NOT EXISTS queue_by_receipt ON queue_messages (receipt) WHERE receipt IS NOT NULL;
CREATE TABLE IF NOT EXISTS ledger (
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
";

/// Migration `i` takes the database from `user_version` `i` to `i + 1`, one statement at a
/// time; `?1` in a statement is the time the migration runs (Unix ms).
const MIGRATIONS: &[&[&str]] = &[
    // 1: when records and bodies were written, for the retention sweeper. Rows from before
    // count as written now: the first sweeps delete nothing, and they expire one retention
    // period later.
    &[
        "ALTER TABLE ledger ADD COLUMN written_at INTEGER",
        "UPDATE ledger SET written_at = ?1",
        "CREATE INDEX ledger_by_age ON ledger (tbl, written_at)",
        "ALTER TABLE blobs ADD COLUMN created_at INTEGER",
        "UPDATE blobs SET created_at = ?1",
        "CREATE INDEX blobs_by_age ON blobs (created_at)",
        // The message (attribute `queue_id`) a queued job is about: its body must stay.
        "ALTER TABLE queue_messages ADD COLUMN message TEXT",
        "UPDATE queue_messages SET message = json_extract(attributes, '$.queue_id')
         WHERE json_valid(attributes)",
        "CREATE INDEX queue_by_message ON queue_messages (message)",
    ],
];

/// Opens the database, creating or migrating its schema; `now_ms` stamps rows that
/// predate a migration.
pub(crate) fn open(path: &Path, now_ms: i64) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(backend_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(backend_err)?;
    // WAL with synchronous=FULL: a commit returns only after the WAL is fsync'd.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend_err)?;
    conn.execute_batch(SCHEMA).map_err(backend_err)?;
    migrate(&mut conn, now_ms)?;
    cache(&conn)?;
    // Room for every statement the writer runs, so none is parsed again (the default is 16).
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A connection for reads only, to a database [`open`] has made ready.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(backend_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    // No big cache and no memory map here: a read that starts after any commit finds the
    // database changed, and SQLite then drops the connection's whole page cache and unmaps
    // its map (profiled: munmap, TLB shootdowns and page-cache truncation cost more than
    // the reads they were meant to save). The file's pages stay in the OS page cache.
    Ok(conn)
}

/// The writer's page cache holds the hot part of the database (the default 2 MB made every
/// commit go back to the file); being the only writer, it never finds its cache stale. No
/// memory map: the mapped pages of a growing database counted as the process's resident
/// memory (the 100,000-message soak's RSS grew by the database's size) for no measured gain.
fn cache(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "cache_size", -32_768)
        .map_err(backend_err)?;
    Ok(())
}

fn migrate(conn: &mut Connection, now_ms: i64) -> Result<(), StoreError> {
    let version = |conn: &Connection| -> Result<usize, StoreError> {
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map(|v| v.max(0) as usize)
            .map_err(backend_err)
    };
    if version(conn)? >= MIGRATIONS.len() {
        return Ok(());
    }
    // Several processes may open the directory at once: the first to take the write lock
    // migrates, the others find the work done.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend_err)?;
    let from = version(&tx)?;
    for (i, statements) in MIGRATIONS.iter().enumerate().skip(from) {
        for statement in *statements {
            let mut stmt = tx.prepare(statement).map_err(backend_err)?;
            if stmt.parameter_count() > 0 {
                stmt.execute(params![now_ms]).map_err(backend_err)?;
            } else {
                stmt.execute([]).map_err(backend_err)?;
            }
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(backend_err)?;
    }
    tx.commit().map_err(backend_err)?;
    if from < MIGRATIONS.len() {
        tracing::info!(from, to = MIGRATIONS.len(), "migrated the database schema");
    }
    Ok(())
}
