//! Message bodies in the spool directory.

use std::any::Any;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_store::{BlobStore, BlobWriter, Queue, StoreError, check_key};
use rusqlite::{OptionalExtension, params};

use crate::data_dir::private_file_options;
use crate::queue::SqliteQueue;
use crate::writer::{Op, OpResult, large_path, segment_path};
use crate::{Inner, backend_err};

/// Writes to a large body's file are batched to this size to limit blocking-pool hops.
const FILE_WRITE_CHUNK: usize = 256 * 1024;

#[derive(Clone)]
pub struct SpoolBlobStore {
    inner: Arc<Inner>,
}

impl SpoolBlobStore {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        SpoolBlobStore { inner }
    }
}

#[async_trait]
impl BlobStore for SpoolBlobStore {
    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, StoreError> {
        check_key(key)?;
        Ok(Box::new(SpoolWriter {
            inner: self.inner.clone(),
            key: key.to_string(),
            buf: Vec::new(),
            file: None,
            written: 0,
        }))
    }

    async fn read(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.read_head(key, usize::MAX).await
    }

    async fn read_head(&self, key: &str, max: usize) -> Result<Vec<u8>, StoreError> {
        check_key(key)?;
        let key = key.to_string();
        self.inner
            .read(move |conn, spool| {
                let row: Option<(Option<i64>, i64, i64)> = conn
                    .query_row(
                        "SELECT segment, offset, len FROM blobs WHERE key = ?1",
                        params![key],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                    .map_err(backend_err)?;
                let Some((segment, offset, len)) = row else {
                    return Err(StoreError::NotFound(key));
                };
                let (path, offset) = match segment {
                    Some(id) => (segment_path(spool, id), offset as u64),
                    None => (large_path(spool, &key), 0),
                };
                let mut file = File::open(path)?;
                file.seek(SeekFrom::Start(offset))?;
                let mut out = vec![0u8; (len as usize).min(max)];
                file.read_exact(&mut out)?;
                Ok(out)
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.inner
            .writer
            .call(Op::DeleteBlob {
                key: key.to_string(),
            })
            .await
            .map(|_| ())
    }
}

/// Keeps a body in memory while it is small; past `inline_max` it moves to a file of its
/// own, so memory stays bounded whatever the message size.
struct SpoolWriter {
    inner: Arc<Inner>,
    key: String,
    buf: Vec<u8>,
    file: Option<File>,
    written: u64,
}

impl SpoolWriter {
    fn part_path(&self) -> PathBuf {
        let mut p = large_path(&self.inner.spool, &self.key);
        p.set_extension("part");
        p
    }

    async fn flush_to_file(&mut self) -> Result<(), StoreError> {
        let file = match self.file.take() {
            Some(f) => f,
            None => {
                let path = self.part_path();
                tokio::task::spawn_blocking(move || {
                    private_file_options()
                        .write(true)
                        .create_new(true)
                        .open(path)
                })
                .await
                .map_err(backend_err)??
            }
        };
        let data = std::mem::take(&mut self.buf);
        let (file, data) = tokio::task::spawn_blocking(move || {
            let mut file = file;
            file.write_all(&data).map(|_| (file, data))
        })
        .await
        .map_err(backend_err)??;
        self.written += data.len() as u64;
        self.buf = data;
        self.buf.clear();
        self.file = Some(file);
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for SpoolWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.buf.extend_from_slice(chunk);
        let limit = if self.file.is_some() {
            FILE_WRITE_CHUNK
        } else {
            self.inner.options.inline_max
        };
        if self.buf.len() > limit {
            self.flush_to_file().await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64, StoreError> {
        if self.file.is_none() {
            let data = std::mem::take(&mut self.buf);
            let op = Op::AppendBlob {
                key: self.key.clone(),
                data,
            };
            return match self.inner.writer.call(op).await? {
                OpResult::Size(n) => Ok(n),
                other => Err(backend_err(format!("unexpected writer result {other:?}"))),
            };
        }
        self.flush_to_file().await?;
        let file = self.file.take().ok_or(StoreError::Closed)?;
        let part = self.part_path();
        let dest = large_path(&self.inner.spool, &self.key);
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            file.sync_data()?;
            fs::rename(&part, &dest)?;
            if let Some(dir) = dest.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(backend_err)??;
        let len = self.written;
        let op = Op::RegisterFile {
            key: self.key.clone(),
            len,
        };
        self.inner.writer.call(op).await?;
        Ok(len)
    }

    async fn commit_and_send(
        mut self: Box<Self>,
        queue: &dyn Queue,
        job: &[u8],
        attributes: BTreeMap<String, String>,
    ) -> Result<u64, StoreError> {
        let any: &dyn Any = queue;
        match any.downcast_ref::<SqliteQueue>() {
            // A small body and its job: one writer request, one transaction, one commit.
            Some(same) if same.shares(&self.inner) && self.file.is_none() => {
                let append = Op::AppendBlob {
                    key: self.key.clone(),
                    data: std::mem::take(&mut self.buf),
                };
                let send = same.send_op(job, &attributes, Duration::ZERO)?;
                match self
                    .inner
                    .writer
                    .call(Op::Atomic(vec![append, send]))
                    .await?
                {
                    OpResult::Size(n) => Ok(n),
                    other => Err(backend_err(format!("unexpected writer result {other:?}"))),
                }
            }
            _ => baton_store::commit_then_send(self, queue, job, attributes).await,
        }
    }

    async fn abort(mut self: Box<Self>) {
        if self.file.take().is_some() {
            let part = self.part_path();
            let _ = tokio::task::spawn_blocking(move || fs::remove_file(part)).await;
        }
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // Dropped mid-body (client gone, task cancelled): leave no partial file behind.
        if self.file.take().is_some() {
            let _ = fs::remove_file(self.part_path());
        }
    }
}
