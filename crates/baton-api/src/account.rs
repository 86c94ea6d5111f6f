//! GetAccount: the tenant's quotas (`baton tenant quota`) and what it sent in the last 24
//! hours, from the counters the policy stage keeps.

use baton_domain::TenantId;
use baton_pipeline::quota;
use baton_store::Ledger;
use serde_json::{Value, json};

use crate::error::ApiError;

fn counters(e: baton_pipeline::StageError) -> ApiError {
    tracing::error!(error = %e, "quota counters");
    ApiError::unavailable("the quota counters cannot be read")
}

pub async fn get(ledger: &dyn Ledger, tenant: &TenantId, now_ms: i64) -> Result<Value, ApiError> {
    let settings = quota::tenant_settings(ledger, tenant)
        .await
        .map_err(counters)?;
    let sent = quota::sent_last_24_hours(ledger, tenant, now_ms)
        .await
        .map_err(counters)?;
    // SES says -1 for "no limit". A tenant over its quota is deferred, never refused, so
    // sending stays enabled.
    let limit = |l: Option<u64>| l.map_or(-1.0, |n| n as f64);
    Ok(json!({
        "DedicatedIpAutoWarmupEnabled": false,
        "EnforcementStatus": "HEALTHY",
        "ProductionAccessEnabled": true,
        "SendingEnabled": true,
        "SendQuota": {
            "Max24HourSend": limit(settings.max_per_day),
            "MaxSendRate": limit(settings.max_per_second),
            "SentLast24Hours": sent as f64,
        },
        "SuppressionAttributes": { "SuppressedReasons": ["BOUNCE", "COMPLAINT"] },
    }))
}
