//! Message bodies in S3. A body up to one part goes up with a single PutObject on commit;
//! a larger one becomes a multipart upload, one part at a time, so a session never holds
//! more than `part_size` octets. Nothing is visible under the key before commit: S3 shows a
//! multipart object only once it is completed.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use baton_store::{BlobStore, BlobWriter, StoreError, check_key};

use crate::error::{backend, other};

/// The object key of a message body.
pub fn object_key(key: &str) -> String {
    format!("messages/{key}")
}

#[derive(Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    part_size: usize,
}

impl S3BlobStore {
    pub(crate) fn new(client: Client, bucket: String, part_size: usize) -> Self {
        S3BlobStore {
            client,
            bucket,
            part_size,
        }
    }

    async fn get(&self, key: &str, range: Option<String>) -> Result<Vec<u8>, StoreError> {
        check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(object_key(key))
            .set_range(range)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    StoreError::NotFound(key.to_string())
                } else {
                    backend("S3 GetObject", e)
                }
            })?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| other("S3 GetObject body", e))?;
        Ok(bytes.into_bytes().to_vec())
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, StoreError> {
        check_key(key)?;
        Ok(Box::new(S3Writer {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: object_key(key),
            part_size: self.part_size,
            buf: Vec::new(),
            upload: None,
            size: 0,
        }))
    }

    async fn read(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.get(key, None).await
    }

    async fn read_head(&self, key: &str, max: usize) -> Result<Vec<u8>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.get(key, Some(format!("bytes=0-{}", max - 1))).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(object_key(key))
            .send()
            .await
            .map_err(|e| backend("S3 DeleteObject", e))?;
        Ok(())
    }
}

struct Multipart {
    id: String,
    parts: Vec<CompletedPart>,
}

struct S3Writer {
    client: Client,
    bucket: String,
    key: String,
    part_size: usize,
    buf: Vec<u8>,
    upload: Option<Multipart>,
    size: u64,
}

impl S3Writer {
    /// Best effort: an upload left behind (crash, failed abort) is removed by the bucket's
    /// AbortIncompleteMultipartUpload lifecycle rule.
    async fn abort_upload(&self, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(error = %crate::error::causes(&e), "cannot abort multipart upload");
        }
    }

    /// Uploads `buf` (all of it) as the next part, starting the multipart upload if needed.
    async fn upload_part(&mut self) -> Result<(), StoreError> {
        if self.upload.is_none() {
            let out = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .send()
                .await
                .map_err(|e| backend("S3 CreateMultipartUpload", e))?;
            let id = out
                .upload_id()
                .ok_or_else(|| StoreError::Backend("S3 returned no upload id".into()))?;
            self.upload = Some(Multipart {
                id: id.to_string(),
                parts: Vec::new(),
            });
        }
        let Some(upload) = self.upload.as_mut() else {
            return Err(StoreError::Backend("multipart upload missing".into()));
        };
        let number = upload.parts.len() as i32 + 1;
        let body = std::mem::take(&mut self.buf);
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| backend("S3 UploadPart", e))?;
        upload.parts.push(
            CompletedPart::builder()
                .set_e_tag(out.e_tag().map(str::to_string))
                .part_number(number)
                .build(),
        );
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, mut chunk: &[u8]) -> Result<(), StoreError> {
        self.size += chunk.len() as u64;
        while !chunk.is_empty() {
            // A full part goes up only once more data follows: the last part may be short,
            // and a body of exactly one part stays a single PutObject.
            if self.buf.len() == self.part_size {
                self.upload_part().await?;
            }
            let take = (self.part_size - self.buf.len()).min(chunk.len());
            // Small bodies grow their buffer as needed; once a body is clearly large, the
            // whole part is reserved at once, so growing never holds two copies.
            if self.buf.len() + take > 256 * 1024 && self.buf.capacity() < self.part_size {
                self.buf.reserve_exact(self.part_size - self.buf.len());
            }
            self.buf.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64, StoreError> {
        if self.upload.is_none() {
            let body = std::mem::take(&mut self.buf);
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| backend("S3 PutObject", e))?;
            return Ok(self.size);
        }
        if !self.buf.is_empty()
            && let Err(e) = self.upload_part().await
        {
            self.abort().await;
            return Err(e);
        }
        let Some(upload) = self.upload.take() else {
            return Err(StoreError::Backend("multipart upload missing".into()));
        };
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(upload.parts))
                    .build(),
            )
            .send()
            .await;
        match done {
            Ok(_) => Ok(self.size),
            Err(e) => {
                let err = backend("S3 CompleteMultipartUpload", e);
                self.abort_upload(&upload.id).await;
                Err(err)
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(upload) = self.upload.take() {
            self.abort_upload(&upload.id).await;
        }
    }
}
