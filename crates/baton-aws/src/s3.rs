//! Message bodies in S3. A body up to one part goes up with a single PutObject on commit;
//! a larger one becomes a multipart upload, one part at a time, so a session never holds
//! more than `part_size` octets. Nothing is visible under the key before commit: S3 shows a
//! multipart object only once it is completed.

use async_trait::async_trait;
use baton_store::{BlobStore, BlobWriter, StoreError, check_key};
use bytes::Bytes;
use http::Method;

use crate::error::backend;
use crate::wire::s3::S3Request;
use crate::wire::{AwsClient, CallError, xml};

/// The object key of a message body.
pub fn object_key(key: &str) -> String {
    format!("messages/{key}")
}

#[derive(Clone)]
pub struct S3BlobStore {
    client: AwsClient,
    bucket: String,
    part_size: usize,
}

impl S3BlobStore {
    pub(crate) fn new(client: AwsClient, bucket: String, part_size: usize) -> Self {
        S3BlobStore {
            client,
            bucket,
            part_size,
        }
    }

    async fn get(&self, key: &str, range: Option<String>) -> Result<Vec<u8>, StoreError> {
        check_key(key)?;
        let object = object_key(key);
        let mut req = S3Request::new(
            if range.is_some() {
                "GetObject(range)"
            } else {
                "GetObject"
            },
            Method::GET,
            &object,
        );
        if let Some(range) = range {
            req.headers.push(("range", range));
        }
        req.max_answer = usize::MAX;
        match self.client.s3(&self.bucket, req).await {
            Ok(reply) => Ok(reply.body.to_vec()),
            Err(e) if e.code() == Some("NoSuchKey") => Err(StoreError::NotFound(key.to_string())),
            Err(e) => Err(backend("S3 GetObject", e)),
        }
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
        let object = object_key(key);
        self.client
            .s3(
                &self.bucket,
                S3Request::new("DeleteObject", Method::DELETE, &object),
            )
            .await
            .map_err(|e| backend("S3 DeleteObject", e))?;
        Ok(())
    }
}

struct Multipart {
    id: String,
    /// Number and ETag of each part uploaded.
    parts: Vec<(u32, String)>,
}

struct S3Writer {
    client: AwsClient,
    bucket: String,
    key: String,
    part_size: usize,
    buf: Vec<u8>,
    upload: Option<Multipart>,
    size: u64,
}

impl S3Writer {
    fn request<'a>(&'a self, operation: &'a str, method: Method, upload_id: &str) -> S3Request<'a> {
        let mut req = S3Request::new(operation, method, &self.key);
        req.query.push(("uploadId", upload_id.to_string()));
        req
    }

    /// Best effort: an upload left behind (crash, failed abort) is removed by the bucket's
    /// AbortIncompleteMultipartUpload lifecycle rule.
    async fn abort_upload(&self, upload_id: &str) {
        let req = self.request("AbortMultipartUpload", Method::DELETE, upload_id);
        if let Err(e) = self.client.s3(&self.bucket, req).await {
            tracing::warn!(error = %e, "cannot abort multipart upload");
        }
    }

    /// Uploads `buf` (all of it) as the next part, starting the multipart upload if needed.
    async fn upload_part(&mut self) -> Result<(), StoreError> {
        if self.upload.is_none() {
            let mut req = S3Request::new("CreateMultipartUpload", Method::POST, &self.key);
            req.query.push(("uploads", String::new()));
            let reply = self
                .client
                .s3(&self.bucket, req)
                .await
                .map_err(|e| backend("S3 CreateMultipartUpload", e))?;
            let id = xml::root_child(&reply.body, "UploadId")
                .ok_or_else(|| StoreError::Backend("S3 returned no upload id".into()))?;
            self.upload = Some(Multipart {
                id,
                parts: Vec::new(),
            });
        }
        let Some(upload) = self.upload.as_ref() else {
            return Err(StoreError::Backend("multipart upload missing".into()));
        };
        let number = upload.parts.len() as u32 + 1;
        let upload_id = upload.id.clone();
        let body = Bytes::from(std::mem::take(&mut self.buf));
        let mut req = self.request("UploadPart", Method::PUT, &upload_id);
        req.query.push(("partNumber", number.to_string()));
        req.body = body;
        req.sign_payload = false;
        let reply = self
            .client
            .s3(&self.bucket, req)
            .await
            .map_err(|e| backend("S3 UploadPart", e))?;
        let etag = reply
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| StoreError::Backend("S3 UploadPart returned no ETag".into()))?
            .to_string();
        if let Some(upload) = self.upload.as_mut() {
            upload.parts.push((number, etag));
        }
        Ok(())
    }

    async fn complete(&self, upload: &Multipart) -> Result<(), CallError> {
        let mut req = self.request("CompleteMultipartUpload", Method::POST, &upload.id);
        req.body = Bytes::from(xml::complete_multipart(&upload.parts));
        req.check_ok = Some(completed);
        self.client.s3(&self.bucket, req).await.map(|_| ())
    }
}

/// A CompleteMultipartUpload answer. S3 may fail after its 200 has started, with an Error
/// document in the body (InternalError, SlowDown: retried); anything but the result
/// document is a failure too, never taken for a stored object.
fn completed(body: &[u8]) -> Result<(), CallError> {
    if let Some((code, message)) = xml::error(body) {
        return Err(CallError::service(http::StatusCode::OK, code, message));
    }
    match xml::root_name(body).as_deref() {
        Some("CompleteMultipartUploadResult") => Ok(()),
        _ => Err(CallError::Transport(
            "CompleteMultipartUpload: no result in the answer".into(),
        )),
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
            let mut req = S3Request::new("PutObject", Method::PUT, &self.key);
            req.body = Bytes::from(std::mem::take(&mut self.buf));
            req.sign_payload = false;
            self.client
                .s3(&self.bucket, req)
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
        match self.complete(&upload).await {
            Ok(()) => Ok(self.size),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_result_document_completes_an_upload() {
        assert!(
            completed(
                b"<CompleteMultipartUploadResult><ETag>e</ETag></CompleteMultipartUploadResult>"
            )
            .is_ok()
        );
        let failed = completed(b"  <Error><Code>InternalError</Code><Message>m</Message></Error>")
            .expect_err("error document");
        assert_eq!(failed.code(), Some("InternalError"));
        assert!(completed(b"").is_err());
        assert!(completed(b"   ").is_err());
        assert!(completed(b"<Other/>").is_err());
    }
}
