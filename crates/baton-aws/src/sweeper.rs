//! Deletes message bodies that were stored but never queued (the gateway crashed, or SQS
//! failed and deleting the body failed too). A body is an orphan when it is older than
//! `orphan_after`, no stage has recorded an event for it, and the intake queue and its
//! dead-letter queue are empty, so no queue message can still point at it. When a queue is
//! not empty the round is skipped; the bucket's lifecycle rule is the backstop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_store::{Ledger, StoreError};

use crate::error::backend;
use crate::wire::s3::S3Request;
use crate::wire::{AwsClient, xml};
use crate::{S3BlobStore, SqsQueue};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub examined: usize,
    pub deleted: Vec<String>,
    /// Set when the round was skipped because queued work could still refer to bodies.
    pub skipped: bool,
}

pub(crate) async fn sweep(
    client: &AwsClient,
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
    let blobs = S3BlobStore::new(client.clone(), bucket.to_string(), 5 * 1024 * 1024);
    let mut token: Option<String> = None;
    loop {
        let mut req = S3Request::new("ListObjectsV2", http::Method::GET, "");
        req.query.push(("list-type", "2".into()));
        req.query.push(("prefix", "messages/".into()));
        if let Some(t) = token.take() {
            req.query.push(("continuation-token", t));
        }
        let reply = client
            .s3(bucket, req)
            .await
            .map_err(|e| backend("S3 ListObjectsV2", e))?;
        let page = xml::list_page(&reply.body)
            .ok_or_else(|| StoreError::Backend("S3 ListObjectsV2: unreadable listing".into()))?;
        for (key, modified) in &page.objects {
            report.examined += 1;
            // An unreadable time is taken as new: the object is kept.
            if unix_seconds(modified).is_none_or(|t| t > cutoff) {
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
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    Ok(report)
}

/// Seconds since the epoch of an S3 time (`2026-12-04T10:00:00.000Z`).
fn unix_seconds(iso: &str) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| iso.get(range)?.parse::<u32>().ok();
    if iso.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(digits(0..4)?).ok()?,
        month,
        u8::try_from(digits(8..10)?).ok()?,
    )
    .ok()?;
    let at = time::Time::from_hms(
        u8::try_from(digits(11..13)?).ok()?,
        u8::try_from(digits(14..16)?).ok()?,
        u8::try_from(digits(17..19)?).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, at)
            .assume_utc()
            .unix_timestamp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_times_are_read_as_utc_seconds() {
        assert_eq!(unix_seconds("1970-01-02T00:00:01.000Z"), Some(86_401));
        assert_eq!(unix_seconds("2026-12-04T10:00:00Z"), Some(1_796_378_400));
        assert_eq!(unix_seconds("2026-13-04T10:00:00Z"), None);
        assert_eq!(unix_seconds("yesterday"), None);
    }
}
