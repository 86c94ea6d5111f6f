//! Per-tenant sending quotas. Over-quota mail is deferred (the intake message comes back
//! later), never dropped.
//!
//! Counters live in the ledger and are added to atomically, so concurrent policy workers
//! (in-process, or many Lambda instances on DynamoDB) never lose an increment.

use std::time::Duration;

use baton_domain::TenantId;
use baton_store::Ledger;
use serde::{Deserialize, Serialize};

use crate::StageError;

pub const TENANTS: &str = "tenants";
const COUNTERS: &str = "quota_counters";

/// A tenant's settings; absent limits mean unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_day: Option<u64>,
}

pub async fn tenant_settings(
    ledger: &dyn Ledger,
    tenant: &TenantId,
) -> Result<TenantSettings, StageError> {
    match ledger.get(TENANTS, &tenant.0).await? {
        Some(v) => serde_json::from_slice(&v)
            .map_err(|e| StageError::Permanent(format!("tenant {}: {e}", tenant.0))),
        None => Ok(TenantSettings::default()),
    }
}

pub async fn put_tenant_settings(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    s: &TenantSettings,
) -> Result<(), StageError> {
    ledger
        .put(
            TENANTS,
            &tenant.0,
            &serde_json::to_vec(s).unwrap_or_default(),
        )
        .await?;
    Ok(())
}

/// Why a message must wait, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    pub reason: &'static str,
    pub retry_after: Duration,
}

/// Counts one message against the tenant's quotas, or says how long it must wait. Its
/// `recipients` are counted by the hour for SentLast24Hours (SES counts each recipient).
///
/// Each window has its own counter (`<tenant>/s/<second>`, `<tenant>/d/<day>`,
/// `<tenant>/h/<hour>`), added to in place ([`Ledger::increment`]): a hot tenant's counter
/// costs one write per message and never a retry. A message the per-second quota refuses
/// has still counted in that second (so exactly `limit` pass per second); one the daily
/// quota refuses is over it for the rest of the day anyway.
pub async fn take(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    recipients: u64,
    now_ms: i64,
) -> Result<Option<OverQuota>, StageError> {
    let settings = tenant_settings(ledger, tenant).await?;
    let second = now_ms / 1000;
    let day = second / 86_400;
    let checks = [
        (
            settings.max_per_second,
            format!("{}/s/{second}", tenant.0),
            "over the per-second quota",
            Duration::from_millis((1000 - now_ms % 1000) as u64),
        ),
        (
            settings.max_per_day,
            format!("{}/d/{day}", tenant.0),
            "over the daily quota",
            Duration::from_secs((86_400 - second % 86_400) as u64),
        ),
    ];
    // Per second first: when the daily quota then refuses, the extra count only lasts for
    // the current second.
    for (limit, key, reason, retry_after) in checks {
        let Some(limit) = limit else { continue };
        if ledger.increment(COUNTERS, &key, 1).await? > limit {
            return Ok(Some(OverQuota {
                reason,
                retry_after,
            }));
        }
    }
    // Every recipient is counted by the hour too, for SentLast24Hours (GetAccount).
    let hour = second / 3600;
    ledger
        .increment(COUNTERS, &hour_key(tenant, hour), recipients)
        .await?;
    Ok(None)
}

fn hour_key(tenant: &TenantId, hour: i64) -> String {
    format!("{}/h/{hour}", tenant.0)
}

/// Recipients counted in the 24 hours up to `now_ms` (whole hours: the current one and the 23
/// before it).
pub async fn sent_last_24_hours(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    now_ms: i64,
) -> Result<u64, StageError> {
    let hour = now_ms / 1000 / 3600;
    let mut total = 0;
    for h in hour - 23..=hour {
        if let Some(v) = ledger.get(COUNTERS, &hour_key(tenant, h)).await? {
            total += baton_store::counter_value(&v);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_store::memory::MemoryLedger;

    /// A ledger whose reads give way to other tasks, so concurrent takes interleave between
    /// reading a counter and writing it back.
    struct Interleaving(MemoryLedger);

    #[async_trait::async_trait]
    impl Ledger for Interleaving {
        async fn get(&self, t: &str, k: &str) -> Result<Option<Vec<u8>>, baton_store::StoreError> {
            let v = self.0.get(t, k).await;
            tokio::task::yield_now().await;
            v
        }
        async fn put(&self, t: &str, k: &str, v: &[u8]) -> Result<(), baton_store::StoreError> {
            self.0.put(t, k, v).await
        }
        async fn put_if_absent(
            &self,
            t: &str,
            k: &str,
            v: &[u8],
        ) -> Result<bool, baton_store::StoreError> {
            self.0.put_if_absent(t, k, v).await
        }
        async fn replace_if(
            &self,
            t: &str,
            k: &str,
            e: &[u8],
            v: &[u8],
        ) -> Result<bool, baton_store::StoreError> {
            self.0.replace_if(t, k, e, v).await
        }
        async fn delete(&self, t: &str, k: &str) -> Result<(), baton_store::StoreError> {
            self.0.delete(t, k).await
        }
        async fn scan(
            &self,
            t: &str,
            p: &str,
        ) -> Result<Vec<(String, Vec<u8>)>, baton_store::StoreError> {
            self.0.scan(t, p).await
        }
    }

    #[tokio::test]
    async fn concurrent_takes_never_exceed_the_limit() {
        let ledger = std::sync::Arc::new(Interleaving(MemoryLedger::default()));
        let t = TenantId("acme".into());
        let s = TenantSettings {
            max_per_second: None,
            max_per_day: Some(5),
        };
        put_tenant_settings(ledger.as_ref(), &t, &s)
            .await
            .expect("put");
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (ledger, t) = (ledger.clone(), t.clone());
            set.spawn(async move { take(ledger.as_ref(), &t, 1, 1_000).await });
        }
        let mut allowed = 0;
        while let Some(r) = set.join_next().await {
            if matches!(r.expect("task"), Ok(None)) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5, "a lost update lets more than the quota through");
    }

    #[tokio::test]
    async fn daily_and_per_second_limits() {
        let ledger = MemoryLedger::default();
        let t = TenantId("acme".into());
        assert_eq!(
            take(&ledger, &t, 1, 0).await.expect("take"),
            None,
            "no quota set"
        );
        let s = TenantSettings {
            max_per_second: Some(2),
            max_per_day: Some(3),
        };
        put_tenant_settings(&ledger, &t, &s).await.expect("put");
        let t0 = 86_400_000 * 10;
        assert_eq!(take(&ledger, &t, 1, t0).await.expect("1"), None);
        assert_eq!(take(&ledger, &t, 1, t0 + 10).await.expect("2"), None);
        let over = take(&ledger, &t, 1, t0 + 20)
            .await
            .expect("3")
            .expect("per second");
        assert_eq!(over.retry_after, Duration::from_millis(980));
        assert_eq!(
            take(&ledger, &t, 1, t0 + 1000).await.expect("4"),
            None,
            "next second"
        );
        let over = take(&ledger, &t, 1, t0 + 2000)
            .await
            .expect("5")
            .expect("per day");
        assert_eq!(over.reason, "over the daily quota");
        assert_eq!(
            take(&ledger, &t, 1, t0 + 86_400_000)
                .await
                .expect("next day"),
            None
        );
    }

    #[tokio::test]
    async fn sent_last_24_hours_counts_recipients_whole_hours_back() {
        let ledger = MemoryLedger::default();
        let t = TenantId("acme".into());
        let other = TenantId("other".into());
        let hour = 3_600_000;
        let t0 = 86_400_000 * 10;
        for (at, recipients) in [(t0, 1), (t0 + 1, 1), (t0 + hour, 3), (t0 + 23 * hour, 1)] {
            assert_eq!(take(&ledger, &t, recipients, at).await.expect("take"), None);
        }
        take(&ledger, &other, 1, t0).await.expect("other");
        assert_eq!(
            sent_last_24_hours(&ledger, &t, t0 + 23 * hour).await.ok(),
            Some(6)
        );
        assert_eq!(
            sent_last_24_hours(&ledger, &t, t0 + 24 * hour).await.ok(),
            Some(4),
            "the first hour's two have left the window"
        );
        assert_eq!(sent_last_24_hours(&ledger, &other, t0).await.ok(), Some(1));
    }
}
