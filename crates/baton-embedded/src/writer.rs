//! The single writer thread and its group commit.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use baton_store::{QueueMessage, StoreError};
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::data_dir::private_file_options;
use crate::{EmbeddedOptions, backend_err};

#[derive(Debug)]
pub(crate) enum Op {
    /// Append a small body to the current segment.
    AppendBlob {
        key: String,
        data: Vec<u8>,
    },
    /// Index a large body already fsync'd at `spool/large/<key>`.
    RegisterFile {
        key: String,
        len: u64,
    },
    DeleteBlob {
        key: String,
    },
    Send {
        queue: String,
        body: Vec<u8>,
        attributes: String,
        /// The message the job is about (attribute `queue_id`): its body is kept while the
        /// job is queued.
        message: Option<String>,
        delay: Duration,
    },
    Receive {
        queue: String,
        max: usize,
        visibility: Duration,
        max_receives: u32,
        dead_letter: Option<String>,
    },
    DeleteMessage {
        queue: String,
        receipt: String,
    },
    ChangeVisibility {
        queue: String,
        receipt: String,
        timeout: Duration,
    },
    Put {
        table: String,
        key: String,
        value: Vec<u8>,
        only_if_absent: bool,
    },
    DeleteRecord {
        table: String,
        key: String,
    },
    ReplaceIf {
        table: String,
        key: String,
        expected: Vec<u8>,
        value: Vec<u8>,
    },
    /// Several `Put`s for one caller: one request, one reply.
    PutMany(Vec<Op>),
    /// Ops that take effect together or not at all (a savepoint); the result is the first
    /// op's. A body and its job: accepting a message is one commit.
    Atomic(Vec<Op>),
    /// Adds to a decimal counter (see `Ledger::increment`); the writer is alone, so read and
    /// write need no compare-and-swap.
    Increment {
        table: String,
        key: String,
        by: u64,
    },
    Recover,
    /// Deletes up to `max` records of `table` last written more than `older_than` ago.
    ExpireRecords {
        table: String,
        older_than: Duration,
        max: usize,
    },
    /// Looks at up to `max` bodies stored more than `older_than` ago, in order of age from
    /// just after `after` (stored at, key), and deletes those no queued job refers to.
    ExpireBodies {
        older_than: Duration,
        after: (i64, String),
        max: usize,
    },
}

impl Op {
    /// Whether the op appends to the current segment, which must then be synced before the
    /// commit.
    fn appends_blob(&self) -> bool {
        match self {
            Op::AppendBlob { .. } => true,
            Op::PutMany(ops) | Op::Atomic(ops) => ops.iter().any(Op::appends_blob),
            _ => false,
        }
    }
}

#[derive(Debug)]
pub(crate) enum OpResult {
    Unit,
    Size(u64),
    Bool(bool),
    Id(String),
    Messages(Vec<QueueMessage>),
    Count(u64),
    Bodies(BodySweep),
}

/// What one [`Op::ExpireBodies`] did.
#[derive(Debug, Default)]
pub(crate) struct BodySweep {
    pub(crate) deleted: u64,
    /// Old enough, but a queued job still refers to the message.
    pub(crate) kept: u64,
    /// The last body looked at (stored at, key): where the next batch starts.
    pub(crate) last: Option<(i64, String)>,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<OpResult, StoreError>>,
}

#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

impl WriterHandle {
    pub(crate) async fn call(&self, op: Op) -> Result<OpResult, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { op, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

pub(crate) fn spawn(
    conn: Connection,
    spool: PathBuf,
    options: EmbeddedOptions,
) -> Result<WriterHandle, StoreError> {
    let (tx, rx) = mpsc::channel();
    let mut writer = Writer {
        conn,
        spool,
        options,
        segment: None,
    };
    std::thread::Builder::new()
        .name("baton-writer".into())
        .spawn(move || writer.run(rx))?;
    Ok(WriterHandle { tx })
}

struct Segment {
    id: i64,
    file: File,
    len: u64,
    /// The directory entry of a new segment must be fsync'd once too.
    dir_synced: bool,
    /// A failed write leaves the file's tail unknown: never append to it again.
    broken: bool,
}

struct Writer {
    conn: Connection,
    spool: PathBuf,
    options: EmbeddedOptions,
    segment: Option<Segment>,
}

/// Work a batch must do once its transaction has committed.
#[derive(Default)]
struct AfterCommit {
    delete_files: Vec<PathBuf>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn segment_path(spool: &Path, id: i64) -> PathBuf {
    spool.join(format!("seg-{id:010}.log"))
}

pub(crate) fn large_path(spool: &Path, key: &str) -> PathBuf {
    spool.join("large").join(key)
}

impl Writer {
    fn now(&self) -> i64 {
        self.options.clock.now_ms()
    }

    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let deadline = Instant::now() + self.options.max_delay;
            while batch.len() < self.options.max_batch {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    Err(_) => break,
                }
            }
            self.apply(batch);
        }
    }

    fn apply(&mut self, batch: Vec<Request>) {
        let mut after = AfterCommit::default();
        let mut results = Vec::with_capacity(batch.len());
        let outcome = self.transaction(&batch, &mut results, &mut after);
        match outcome {
            Ok(()) => {
                for path in after.delete_files {
                    let _ = fs::remove_file(path);
                }
                for (req, res) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = batch.len(), "group commit failed");
                let _ = self.conn.execute_batch("ROLLBACK");
                // Rows of this batch are gone; the segment tail they pointed at is garbage.
                if let Some(seg) = self.segment.as_mut() {
                    seg.broken = true;
                }
                for req in batch {
                    let _ = req.reply.send(Err(backend_err(&e)));
                }
            }
        }
        if let Err(e) = self.rotate_if_full() {
            tracing::warn!(error = %e, "segment rotation failed");
        }
    }

    fn transaction(
        &mut self,
        batch: &[Request],
        results: &mut Vec<Result<OpResult, StoreError>>,
        after: &mut AfterCommit,
    ) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(backend_err)?;
        let mut appended = false;
        for req in batch {
            let res = self.op(&req.op, after);
            if res.is_ok() && req.op.appends_blob() {
                appended = true;
            }
            results.push(res);
        }
        if appended && let Some(seg) = self.segment.as_mut() {
            // Bodies must be on disk before the rows that point at them.
            seg.file.sync_data()?;
            if !seg.dir_synced {
                File::open(&self.spool)?.sync_all()?;
                seg.dir_synced = true;
            }
        }
        self.conn.execute_batch("COMMIT").map_err(backend_err)
    }

    fn increment(&mut self, table: &str, key: &str, by: u64) -> Result<OpResult, StoreError> {
        let old: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT value FROM ledger WHERE tbl = ?1 AND key = ?2")
            .and_then(|mut s| s.query_row(params![table, key], |r| r.get(0)).optional())
            .map_err(backend_err)?;
        let total = old.as_deref().map(baton_store::counter_value).unwrap_or(0) + by;
        let now = self.now();
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO ledger (tbl, key, value, written_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![table, key, total.to_string().into_bytes(), now]))
            .map_err(backend_err)?;
        Ok(OpResult::Count(total))
    }

    fn atomic(&mut self, ops: &[Op], after: &mut AfterCommit) -> Result<OpResult, StoreError> {
        self.conn
            .execute_batch("SAVEPOINT atomic")
            .map_err(backend_err)?;
        let files = after.delete_files.len();
        let mut first = None;
        for op in ops {
            match self.op(op, after) {
                Ok(res) => {
                    first.get_or_insert(res);
                }
                Err(e) => {
                    after.delete_files.truncate(files);
                    self.conn
                        .execute_batch("ROLLBACK TO atomic; RELEASE atomic")
                        .map_err(backend_err)?;
                    return Err(e);
                }
            }
        }
        self.conn
            .execute_batch("RELEASE atomic")
            .map_err(backend_err)?;
        Ok(first.unwrap_or(OpResult::Unit))
    }

    fn op(&mut self, op: &Op, after: &mut AfterCommit) -> Result<OpResult, StoreError> {
        match op {
            Op::AppendBlob { key, data } => self.append_blob(key, data),
            Op::RegisterFile { key, len } => {
                self.conn
                    .execute(
                        "INSERT INTO blobs (key, segment, offset, len, created_at) VALUES (?1, NULL, 0, ?2, ?3)",
                        params![key, *len as i64, self.now()],
                    )
                    .map_err(backend_err)?;
                Ok(OpResult::Size(*len))
            }
            Op::DeleteBlob { key } => self.delete_blob(key, after),
            Op::Send {
                queue,
                body,
                attributes,
                message,
                delay,
            } => {
                let id = random_hex(16);
                let now = self.now();
                self.conn
                    .prepare_cached(
                        "INSERT INTO queue_messages (queue, id, body, attributes, visible_at, sent_at, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![queue, id, body, attributes, now + delay.as_millis() as i64, now, message])
                    })
                    .map_err(backend_err)?;
                Ok(OpResult::Id(id))
            }
            Op::Receive {
                queue,
                max,
                visibility,
                max_receives,
                dead_letter,
            } => self.receive(
                queue,
                *max,
                *visibility,
                *max_receives,
                dead_letter.as_deref(),
            ),
            Op::DeleteMessage { queue, receipt } => {
                self.conn
                    .prepare_cached("DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2")
                    .and_then(|mut s| s.execute(params![queue, receipt]))
                    .map_err(backend_err)?;
                Ok(OpResult::Unit)
            }
            Op::ChangeVisibility {
                queue,
                receipt,
                timeout,
            } => {
                let n = self
                    .conn
                    .execute(
                        "UPDATE queue_messages SET visible_at = ?3 WHERE queue = ?1 AND receipt = ?2",
                        params![queue, receipt, self.now() + timeout.as_millis() as i64],
                    )
                    .map_err(backend_err)?;
                if n == 0 {
                    return Err(StoreError::NotFound(receipt.clone()));
                }
                Ok(OpResult::Unit)
            }
            Op::Put {
                table,
                key,
                value,
                only_if_absent,
            } => {
                let sql = if *only_if_absent {
                    "INSERT OR IGNORE INTO ledger (tbl, key, value, written_at) VALUES (?1, ?2, ?3, ?4)"
                } else {
                    "INSERT OR REPLACE INTO ledger (tbl, key, value, written_at) VALUES (?1, ?2, ?3, ?4)"
                };
                let now = self.now();
                let n = self
                    .conn
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute(params![table, key, value, now]))
                    .map_err(backend_err)?;
                Ok(OpResult::Bool(n > 0))
            }
            Op::ReplaceIf {
                table,
                key,
                expected,
                value,
            } => {
                let now = self.now();
                let n = self
                    .conn
                    .prepare_cached(
                        "UPDATE ledger SET value = ?4, written_at = ?5 WHERE tbl = ?1 AND key = ?2 AND value = ?3",
                    )
                    .and_then(|mut s| s.execute(params![table, key, expected, value, now]))
                    .map_err(backend_err)?;
                Ok(OpResult::Bool(n > 0))
            }
            Op::Increment { table, key, by } => self.increment(table, key, *by),
            Op::PutMany(ops) => {
                for op in ops {
                    self.op(op, after)?;
                }
                Ok(OpResult::Unit)
            }
            Op::Atomic(ops) => self.atomic(ops, after),
            Op::DeleteRecord { table, key } => {
                self.conn
                    .execute(
                        "DELETE FROM ledger WHERE tbl = ?1 AND key = ?2",
                        params![table, key],
                    )
                    .map_err(backend_err)?;
                Ok(OpResult::Unit)
            }
            Op::Recover => self.recover(after),
            Op::ExpireRecords {
                table,
                older_than,
                max,
            } => {
                let n = self
                    .conn
                    .prepare_cached(
                        "DELETE FROM ledger WHERE tbl = ?1 AND key IN
                         (SELECT key FROM ledger WHERE tbl = ?1 AND written_at < ?2 LIMIT ?3)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![table, self.cutoff(*older_than), *max as i64])
                    })
                    .map_err(backend_err)?;
                Ok(OpResult::Count(n as u64))
            }
            Op::ExpireBodies {
                older_than,
                after: from,
                max,
            } => self.expire_bodies(*older_than, from, *max, after),
        }
    }

    fn current_segment(&mut self) -> Result<&mut Segment, StoreError> {
        let usable = self.segment.as_ref().is_some_and(|s| !s.broken);
        if !usable {
            if let Some(old) = self.segment.take() {
                self.seal(old.id)?;
            }
            self.conn
                .execute("INSERT INTO segments (live, sealed) VALUES (0, 0)", [])
                .map_err(backend_err)?;
            let id = self.conn.last_insert_rowid();
            let file = private_file_options()
                .create_new(true)
                .append(true)
                .open(segment_path(&self.spool, id))?;
            self.segment = Some(Segment {
                id,
                file,
                len: 0,
                dir_synced: false,
                broken: false,
            });
        }
        self.segment.as_mut().ok_or(StoreError::Closed)
    }

    fn append_blob(&mut self, key: &str, data: &[u8]) -> Result<OpResult, StoreError> {
        let seg = self.current_segment()?;
        let (id, offset) = (seg.id, seg.len);
        if let Err(e) = seg.file.write_all(data) {
            seg.broken = true;
            return Err(e.into());
        }
        seg.len += data.len() as u64;
        let now = self.now();
        self.conn
            .prepare_cached(
                "INSERT INTO blobs (key, segment, offset, len, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![key, id, offset as i64, data.len() as i64, now]))
            .map_err(backend_err)?;
        self.conn
            .prepare_cached("UPDATE segments SET live = live + 1 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id]))
            .map_err(backend_err)?;
        Ok(OpResult::Size(data.len() as u64))
    }

    fn delete_blob(&mut self, key: &str, after: &mut AfterCommit) -> Result<OpResult, StoreError> {
        let row: Option<Option<i64>> = self
            .conn
            .query_row(
                "SELECT segment FROM blobs WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend_err)?;
        let Some(segment) = row else {
            return Ok(OpResult::Unit);
        };
        self.conn
            .execute("DELETE FROM blobs WHERE key = ?1", params![key])
            .map_err(backend_err)?;
        match segment {
            None => after.delete_files.push(large_path(&self.spool, key)),
            Some(id) => {
                self.conn
                    .execute(
                        "UPDATE segments SET live = live - 1 WHERE id = ?1",
                        params![id],
                    )
                    .map_err(backend_err)?;
                self.collect_segment(id, after)?;
            }
        }
        Ok(OpResult::Unit)
    }

    /// Deletes a sealed segment that no body uses any more.
    fn collect_segment(&mut self, id: i64, after: &mut AfterCommit) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM segments WHERE id = ?1 AND sealed = 1 AND live <= 0",
                params![id],
            )
            .map_err(backend_err)?;
        if n > 0 {
            after.delete_files.push(segment_path(&self.spool, id));
        }
        Ok(())
    }

    fn seal(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE segments SET sealed = 1 WHERE id = ?1", params![id])
            .map_err(backend_err)?;
        Ok(())
    }

    fn rotate_if_full(&mut self) -> Result<(), StoreError> {
        let full = self
            .segment
            .as_ref()
            .is_some_and(|s| s.len >= self.options.segment_max);
        if full && let Some(old) = self.segment.take() {
            let mut after = AfterCommit::default();
            self.seal(old.id)?;
            self.collect_segment(old.id, &mut after)?;
            for p in after.delete_files {
                let _ = fs::remove_file(p);
            }
        }
        Ok(())
    }

    /// Rows written before this are older than `older_than`.
    fn cutoff(&self, older_than: Duration) -> i64 {
        self.now()
            .saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX))
    }

    fn expire_bodies(
        &mut self,
        older_than: Duration,
        from: &(i64, String),
        max: usize,
        after: &mut AfterCommit,
    ) -> Result<OpResult, StoreError> {
        let candidates: Vec<(i64, String)> = self
            .conn
            .prepare_cached(
                "SELECT created_at, key FROM blobs WHERE created_at < ?1 AND (created_at, key) > (?2, ?3)
                 ORDER BY created_at, key LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![self.cutoff(older_than), from.0, from.1, max as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect()
            })
            .map_err(backend_err)?;
        // All or nothing: files are deleted only if the rows that point at them are.
        self.conn
            .execute_batch("SAVEPOINT expire_bodies")
            .map_err(backend_err)?;
        let mut files = AfterCommit::default();
        let mut sweep = BodySweep::default();
        let outcome = candidates.into_iter().try_for_each(|(at, key)| {
            if self.queued(&key)? {
                sweep.kept += 1;
            } else {
                self.delete_blob(&key, &mut files)?;
                sweep.deleted += 1;
            }
            sweep.last = Some((at, key));
            Ok::<_, StoreError>(())
        });
        match outcome {
            Ok(()) => {
                self.conn
                    .execute_batch("RELEASE expire_bodies")
                    .map_err(backend_err)?;
                after.delete_files.append(&mut files.delete_files);
                Ok(OpResult::Bodies(sweep))
            }
            Err(e) => {
                let _ = self
                    .conn
                    .execute_batch("ROLLBACK TO expire_bodies; RELEASE expire_bodies");
                Err(e)
            }
        }
    }

    /// Whether a queued job (dead-lettered ones included) is about the message whose body,
    /// or captured copy, is stored under `key`. A job without a `queue_id` attribute counts
    /// if its body mentions the id.
    fn queued(&self, key: &str) -> Result<bool, StoreError> {
        let id = key.strip_prefix("captured-").unwrap_or(key);
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM queue_messages WHERE message = ?1)
                     OR EXISTS (SELECT 1 FROM queue_messages
                                WHERE message IS NULL AND instr(body, CAST(?1 AS BLOB)) > 0)",
            )
            .and_then(|mut s| s.query_row(params![id], |r| r.get(0)))
            .map_err(backend_err)
    }

    fn receive(
        &mut self,
        queue: &str,
        max: usize,
        visibility: Duration,
        max_receives: u32,
        dead_letter: Option<&str>,
    ) -> Result<OpResult, StoreError> {
        let now = self.now();
        let candidates: Vec<(String, Vec<u8>, String, u32)> = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT id, body, attributes, receive_count FROM queue_messages
                     WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at LIMIT ?3",
                )
                .map_err(backend_err)?;
            stmt.query_map(params![queue, now, max as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(backend_err)?
        };
        let mut out = Vec::new();
        for (id, body, attributes, count) in candidates {
            if let Some(dlq) = dead_letter
                && count >= max_receives
            {
                // Poison: it has had its chances. Park it instead of looping.
                self.conn
                    .execute(
                        "UPDATE queue_messages SET queue = ?3, visible_at = ?4, receive_count = 0, receipt = NULL
                         WHERE queue = ?1 AND id = ?2",
                        params![queue, id, dlq, now],
                    )
                    .map_err(backend_err)?;
                continue;
            }
            let receipt = random_hex(16);
            self.conn
                .execute(
                    "UPDATE queue_messages SET receive_count = receive_count + 1, receipt = ?3, visible_at = ?4
                     WHERE queue = ?1 AND id = ?2",
                    params![queue, id, receipt, now + visibility.as_millis() as i64],
                )
                .map_err(backend_err)?;
            let attributes: BTreeMap<String, String> =
                serde_json::from_str(&attributes).unwrap_or_default();
            out.push(QueueMessage {
                id,
                receipt,
                body,
                attributes,
                receive_count: count + 1,
            });
        }
        Ok(OpResult::Messages(out))
    }

    fn recover(&mut self, after: &mut AfterCommit) -> Result<OpResult, StoreError> {
        let current = self.segment.as_ref().map(|s| s.id).unwrap_or(-1);
        self.conn
            .execute(
                "UPDATE segments SET sealed = 1 WHERE id != ?1",
                params![current],
            )
            .map_err(backend_err)?;
        let dead: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id FROM segments WHERE sealed = 1 AND live <= 0")
                .map_err(backend_err)?;
            stmt.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(backend_err)?
        };
        for id in dead {
            self.collect_segment(id, after)?;
        }
        let known: std::collections::HashSet<i64> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id FROM segments")
                .map_err(backend_err)?;
            stmt.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(backend_err)?
        };
        for entry in fs::read_dir(&self.spool)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_prefix("seg-")
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<i64>().ok());
            if let Some(id) = id
                && !known.contains(&id)
            {
                after.delete_files.push(entry.path());
            }
        }
        for entry in fs::read_dir(self.spool.join("large"))?.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".part") {
                after.delete_files.push(entry.path());
            }
        }
        Ok(OpResult::Unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> Op {
        Op::Put {
            table: "t".into(),
            key: key.into(),
            value: b"v".to_vec(),
            only_if_absent: false,
        }
    }

    #[tokio::test]
    async fn atomic_ops_take_effect_together_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).expect("spool");
        let conn = crate::schema::open(&dir.path().join("baton.db"), 0).expect("open");
        let writer = spawn(conn, spool, EmbeddedOptions::default()).expect("spawn");
        let unknown_receipt = Op::ChangeVisibility {
            queue: "q".into(),
            receipt: "nobody".into(),
            timeout: Duration::ZERO,
        };
        let failed = writer
            .call(Op::Atomic(vec![put("a"), unknown_receipt]))
            .await;
        assert!(matches!(failed, Err(StoreError::NotFound(_))), "{failed:?}");
        writer
            .call(Op::Atomic(vec![put("b"), put("c")]))
            .await
            .expect("atomic");
        // Both `b` and `c` landed, `a` did not: `put_if_absent` tells which keys exist.
        for (key, present) in [("a", false), ("b", true), ("c", true)] {
            let absent = Op::Put {
                table: "t".into(),
                key: key.into(),
                value: b"w".to_vec(),
                only_if_absent: true,
            };
            let wrote = writer.call(absent).await.expect("put");
            assert!(
                matches!(wrote, OpResult::Bool(w) if w != present),
                "{key}: {wrote:?}"
            );
        }
    }
}
