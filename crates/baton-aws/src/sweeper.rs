//! Deletes message bodies that were stored but never queued (the gateway crashed, or SQS
//! failed and deleting the body failed too). A body is an orphan when it is older than
//! `orphan_after`, no stage has recorded an event for it, and the intake queue and its
//! dead-letter queue are empty, so no queue message can still point at it. When a queue is
//! not empty the round is skipped; the bucket's lifecycle rule is the backstop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_store::{Ledger, StoreError};

use crate::error::backend;
use crate::{S3BlobStore, SqsQueue};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub examined: usize,
    pub deleted: Vec<String>,
    /// Set when the round was skipped because queued work could still refer to bodies.
    pub skipped: bool,
}

pub(crate) async fn sweep(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    ledger: &dyn Ledger,
    events_table: &str,
    intake: &SqsQueue,
    intake_dlq: &SqsQueue,
    orphan_after: Duration,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    if intake.approximate_len().await? > 0 || intake_dlq.approximate_len().await? > 0 {
        report.skipped = true;
        return Ok(report);
    }
    let cutoff = SystemTime::now()
        .checked_sub(orphan_after)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let blobs = S3BlobStore::new(s3.clone(), bucket.to_string(), 5 * 1024 * 1024);
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix("messages/")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| backend("S3 ListObjectsV2", e))?;
        for object in page.contents() {
            report.examined += 1;
            let (Some(key), Some(modified)) = (object.key(), object.last_modified()) else {
                continue;
            };
            if modified.secs() > cutoff {
                continue;
            }
            let id = key.trim_start_matches("messages/");
            // Only bodies are the gateway's; other objects (captured copies) are not.
            if id.parse::<baton_domain::QueueId>().is_err() {
                continue;
            }
            if !ledger
                .scan(events_table, &format!("{id}/"))
                .await?
                .is_empty()
            {
                continue;
            }
            use baton_store::BlobStore;
            blobs.delete(id).await?;
            tracing::warn!(
                queue_id = id,
                "deleted a message body that was never queued"
            );
            report.deleted.push(id.to_string());
        }
    }
    Ok(report)
}
