//! Soft bounces suppress only when they repeat: `threshold` of them for one recipient of a
//! tenant within `window` (`[bounces] soft_threshold`, `soft_window`), as ESPs do for a
//! mailbox that stays full.

use std::time::Duration;

use baton_domain::{QueueId, TenantId};
use baton_store::Ledger;

use crate::StageError;

pub const TABLE: &str = "soft_bounces";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftBounces {
    /// How many soft bounces within `window` suppress; 0 never does.
    pub threshold: u32,
    pub window: Duration,
    /// How long such a suppression holds (a full mailbox gets emptied).
    pub suppress_for: Duration,
}

impl Default for SoftBounces {
    fn default() -> Self {
        SoftBounces {
            threshold: 3,
            window: Duration::from_secs(7 * 24 * 3600),
            suppress_for: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl SoftBounces {
    /// Counts a soft bounce of `rcpt` by message `id` (one per message, however often it is
    /// reported); the number of messages within the window when it reaches the threshold.
    /// Entries older than the window are dropped as they are seen.
    pub async fn note(
        &self,
        ledger: &dyn Ledger,
        tenant: &TenantId,
        rcpt: &str,
        id: &QueueId,
        now_ms: i64,
    ) -> Result<Option<u32>, StageError> {
        if self.threshold == 0 {
            return Ok(None);
        }
        let prefix = format!("{}/{}/", tenant.0, rcpt.to_lowercase());
        ledger
            .put_if_absent(
                TABLE,
                &format!("{prefix}{id}"),
                now_ms.to_string().as_bytes(),
            )
            .await?;
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let since = now_ms.saturating_sub(window);
        let mut count = 0u32;
        for (key, value) in ledger.scan(TABLE, &prefix).await? {
            let at = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            if at >= since {
                count += 1;
            } else {
                ledger.delete(TABLE, &key).await?;
            }
        }
        Ok((count >= self.threshold).then_some(count))
    }

    /// When a suppression made now for repeated soft bounces ends.
    pub fn expiry(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(i64::try_from(self.suppress_for.as_millis()).unwrap_or(i64::MAX))
    }

    /// The suppression reason once the threshold is reached.
    pub fn reason(&self, count: u32) -> String {
        format!("{count} soft bounces within {}", humanize(self.window))
    }
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_store::memory::MemoryLedger;

    #[tokio::test]
    async fn the_threshold_counts_only_bounces_within_the_window() {
        let ledger = MemoryLedger::default();
        let soft = SoftBounces {
            threshold: 3,
            window: Duration::from_secs(3600),
            suppress_for: Duration::from_secs(60),
        };
        let acme = TenantId("acme".into());
        let hour = 3_600_000;
        let t0 = 1_700_000_000_000;
        // Two messages long ago, then two recent ones, one of them reported twice: not yet
        // three messages within the hour.
        let (a, b, c, d, e) = (
            QueueId::generate(),
            QueueId::generate(),
            QueueId::generate(),
            QueueId::generate(),
            QueueId::generate(),
        );
        for (id, at) in [
            (&a, t0),
            (&b, t0 + 1),
            (&c, t0 + 2 * hour),
            (&d, t0 + 2 * hour + 1),
            (&d, t0 + 2 * hour + 2),
        ] {
            assert_eq!(
                soft.note(&ledger, &acme, "Full@example.org", id, at)
                    .await
                    .expect("note"),
                None
            );
        }
        // A third message within the hour reaches it; the old ones were dropped on the way.
        assert_eq!(
            soft.note(&ledger, &acme, "full@example.org", &e, t0 + 2 * hour + 3)
                .await
                .expect("note"),
            Some(3)
        );
        assert_eq!(ledger.scan(TABLE, "acme/").await.expect("scan").len(), 3);
        assert_eq!(soft.reason(3), "3 soft bounces within 1h");
        assert_eq!(soft.expiry(t0), t0 + 60_000);
        let never = SoftBounces {
            threshold: 0,
            ..soft
        };
        assert_eq!(
            never
                .note(&ledger, &acme, "x@y.test", &a, t0)
                .await
                .expect("note"),
            None
        );
    }
}
