//! The account-level suppression list operations (Put/Get/Delete/ListSuppressedDestination),
//! on the same per-tenant list the pipeline consults and fills. A key sees only its tenant's
//! entries; another tenant's address reads as absent (404), never as forbidden.

use baton_domain::{Mailbox, TenantId};
use baton_pipeline::records::{self, Suppression};
use baton_store::Ledger;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PutRequest {
    pub email_address: String,
    pub reason: String,
}

/// SES's two reasons: complaints are recorded as such by the pipeline, the rest are bounces.
fn reason_of(entry: &Suppression) -> &'static str {
    if entry.reason.starts_with("complaint") {
        "COMPLAINT"
    } else {
        "BOUNCE"
    }
}

fn address(value: &str) -> Result<String, ApiError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(ApiError::bad_request(
            "EmailAddress must not contain CR, LF or NUL",
        ));
    }
    Mailbox::parse(value)
        .map(|m| m.to_string())
        .map_err(|e| ApiError::bad_request(format!("EmailAddress {value:?}: {e}")))
}

fn not_found(address: &str) -> ApiError {
    ApiError::not_found(format!(
        "Email address {address} does not exist on your suppression list"
    ))
}

/// Seconds since the epoch, as the SDKs read timestamps in SES v2's JSON.
fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn pipeline(e: baton_pipeline::StageError) -> ApiError {
    match e {
        baton_pipeline::StageError::Transient(m) => {
            tracing::error!(error = %m, "suppression list unavailable");
            ApiError::unavailable("the suppression list is unavailable; retry later")
        }
        baton_pipeline::StageError::Permanent(m) => {
            tracing::error!(error = %m, "suppression list record unreadable");
            ApiError::unavailable("the suppression list cannot be read")
        }
    }
}

pub async fn put(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    request: &PutRequest,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let address = address(&request.email_address)?;
    let reason = match request.reason.as_str() {
        "BOUNCE" => "bounce (added through the API)",
        "COMPLAINT" => "complaint (added through the API)",
        other => {
            return Err(ApiError::bad_request(format!(
                "Reason {other:?}: use BOUNCE or COMPLAINT"
            )));
        }
    };
    let entry = Suppression {
        reason: reason.into(),
        queue_id: None,
        at: now_ms,
        expires_at: None,
    };
    records::suppress(ledger, Some(tenant), &address, &entry)
        .await
        .map_err(pipeline)?;
    Ok(json!({}))
}

pub async fn get(ledger: &dyn Ledger, tenant: &TenantId, raw: &str) -> Result<Value, ApiError> {
    let address = address(raw)?;
    let entry = records::suppressed(ledger, Some(tenant), &address)
        .await
        .map_err(pipeline)?
        .ok_or_else(|| not_found(&address))?;
    let mut attributes = serde_json::Map::new();
    if let Some(id) = entry.queue_id {
        attributes.insert("MessageId".into(), json!(id.to_string()));
    }
    Ok(json!({ "SuppressedDestination": {
        "EmailAddress": address,
        "Reason": reason_of(&entry),
        "LastUpdateTime": seconds(entry.at),
        "Attributes": attributes,
    }}))
}

pub async fn delete(ledger: &dyn Ledger, tenant: &TenantId, raw: &str) -> Result<Value, ApiError> {
    let address = address(raw)?;
    if !records::unsuppress(ledger, Some(tenant), &address)
        .await
        .map_err(pipeline)?
    {
        return Err(not_found(&address));
    }
    Ok(json!({}))
}

/// Every entry (of one reason), newest first. One page: the lists are per tenant and small
/// enough; NextToken is never set.
pub async fn list(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    reasons: &[String],
) -> Result<Value, ApiError> {
    let mut entries = records::suppressions_of(ledger, tenant)
        .await
        .map_err(pipeline)?;
    entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.at));
    let summaries: Vec<Value> = entries
        .iter()
        .filter(|(_, e)| reasons.is_empty() || reasons.iter().any(|r| r == reason_of(e)))
        .map(|(address, e)| {
            json!({
                "EmailAddress": address,
                "Reason": reason_of(e),
                "LastUpdateTime": seconds(e.at),
            })
        })
        .collect();
    Ok(json!({ "SuppressedDestinationSummaries": summaries }))
}
