//! The SQLite schema and connection settings.

use std::path::Path;
use std::time::Duration;

use baton_store::StoreError;
use rusqlite::Connection;

use crate::backend_err;

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

pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(backend_err)?;
    // WAL with synchronous=FULL: a commit returns only after the WAL is fsync'd.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend_err)?;
    conn.execute_batch(SCHEMA).map_err(backend_err)?;
    Ok(conn)
}
