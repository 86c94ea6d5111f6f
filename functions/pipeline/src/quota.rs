//! Per-tenant sending quotas. Over-quota mail is deferred (the intake message comes back
//! later), never dropped.
//!
//! Counters live in the ledger and are taken with compare-and-swap, so concurrent policy
//! workers (in-process, or many Lambda instances on DynamoDB) never lose an increment.

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

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Counter {
    window: i64,
    count: u64,
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
            "s",
            second,
            "over the per-second quota",
            Duration::from_millis((1000 - now_ms % 1000) as u64),
        ),
        (
            settings.max_per_day,
            "d",
            day,
            "over the daily quota",
            Duration::from_secs((86_400 - second % 86_400) as u64),
        ),
    ];
    // Per second first: when the daily quota then refuses, the extra count only lasts for
    // the current second.
    for (limit, kind, window, reason, retry_after) in checks {
        let Some(limit) = limit else { continue };
        if !bump(
            ledger,
            &format!("{}/{kind}", tenant.0),
            window,
            1,
            Some(limit),
        )
        .await?
        {
            return Ok(Some(OverQuota {
                reason,
                retry_after,
            }));
        }
    }
    // Every recipient is counted by the hour too, for SentLast24Hours (GetAccount).
    let hour = second / 3600;
    bump(ledger, &hour_key(tenant, hour), hour, recipients, None).await?;
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
        if let Some(v) = ledger.get(COUNTERS, &hour_key(tenant, h)).await?
            && let Ok(counter) = serde_json::from_slice::<Counter>(&v)
            && counter.window == h
        {
            total += counter.count;
        }
    }
    Ok(total)
}

/// Adds `n` to the counter at `key` for `window` (a new window starts at zero), unless it
/// has reached `limit`: false then. Compare-and-swap, so no increment is lost.
async fn bump(
    ledger: &dyn Ledger,
    key: &str,
    window: i64,
    n: u64,
    limit: Option<u64>,
) -> Result<bool, StageError> {
    for _ in 0..20 {
        let old = ledger.get(COUNTERS, key).await?;
        let current: Counter = old
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or_default();
        let count = if current.window == window {
            current.count
        } else {
            0
        };
        if limit.is_some_and(|limit| count >= limit) {
            return Ok(false);
        }
        let new = serde_json::to_vec(&Counter {
            window,
            count: count + n,
        })
        .unwrap_or_default();
        let wrote = match &old {
            Some(old) => ledger.replace_if(COUNTERS, key, old, &new).await?,
            None => ledger.put_if_absent(COUNTERS, key, &new).await?,
        };
        if wrote {
            return Ok(true);
        }
    }
    Err(StageError::Transient(format!(
        "quota counter {key} is contended"
    )))
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
