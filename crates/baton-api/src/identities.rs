//! Email identities (Create/Get/List/DeleteEmailIdentity): a tenant's sending domains, the
//! same records `baton domain add` makes, with their DKIM keys. Only domains: an address
//! identity would let a tenant claim one mailbox of a domain another tenant sends from.
//! Another tenant's domain reads as absent (404); creating it is refused without saying
//! whose it is.

use baton_domain::{Domain, TenantId};
use baton_pipeline::dkim;
use baton_store::{DomainRecord, Ledger, get_domain, put_domain, tables};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateRequest {
    pub email_identity: String,
    #[serde(default)]
    pub tags: Vec<Value>,
    pub dkim_signing_attributes: Option<Value>,
    pub configuration_set_name: Option<String>,
}

fn domain(value: &str) -> Result<Domain, ApiError> {
    if value.contains('@') {
        return Err(ApiError::bad_request(
            "only domain identities are supported, not email addresses",
        ));
    }
    match Domain::parse(value) {
        Ok(d) if !d.is_literal() => Ok(d),
        _ => Err(ApiError::bad_request(format!(
            "{value:?} is not a domain name"
        ))),
    }
}

fn stage(e: baton_pipeline::StageError) -> ApiError {
    tracing::error!(error = %e, "DKIM keys");
    ApiError::unavailable("DKIM keys cannot be read or made")
}

async fn dkim_attributes(ledger: &dyn Ledger, name: &str) -> Result<Value, ApiError> {
    let keys = dkim::active_keys(ledger, name).await.map_err(stage)?;
    Ok(json!({
        "SigningEnabled": !keys.is_empty(),
        // Baton signs as soon as the keys exist; whether the TXT records are published is
        // the receivers' concern (they fail DKIM until then).
        "Status": if keys.is_empty() { "NOT_STARTED" } else { "SUCCESS" },
        "Tokens": keys.iter().map(|k| k.selector.clone()).collect::<Vec<_>>(),
        "SigningAttributesOrigin": "AWS_SES",
    }))
}

/// The domain if it is `tenant`'s, else NotFound.
async fn owned(ledger: &dyn Ledger, tenant: &TenantId, value: &str) -> Result<Domain, ApiError> {
    let d = domain(value)?;
    match get_domain(ledger, &d).await? {
        Some(r) if &r.tenant == tenant => Ok(d),
        _ => Err(ApiError::not_found(format!(
            "Email identity {value} does not exist"
        ))),
    }
}

pub async fn create(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    hostname: &str,
    request: &CreateRequest,
    now_secs: i64,
) -> Result<Value, ApiError> {
    if request.dkim_signing_attributes.is_some() {
        return Err(ApiError::bad_request(
            "DkimSigningAttributes (bring your own key) is not supported",
        ));
    }
    let d = domain(&request.email_identity)?;
    let name = d.to_string();
    if name.eq_ignore_ascii_case(hostname.trim_end_matches('.')) {
        // Its keys sign the relay's own DSNs.
        return Err(ApiError::bad_request(format!("{name} cannot be used")));
    }
    match get_domain(ledger, &d).await? {
        Some(r) if &r.tenant == tenant => {
            return Err(ApiError {
                status: axum::http::StatusCode::BAD_REQUEST,
                kind: "AlreadyExistsException",
                message: format!("Email identity {name} already exists"),
            });
        }
        Some(_) => return Err(ApiError::bad_request(format!("{name} cannot be used"))),
        None => {}
    }
    let record = DomainRecord {
        tenant: tenant.clone(),
        return_path: false,
    };
    put_domain(ledger, &d, &record).await?;
    dkim::ensure_keys(ledger, &name, now_secs)
        .await
        .map_err(stage)?;
    Ok(json!({
        "IdentityType": "DOMAIN",
        "VerifiedForSendingStatus": true,
        "DkimAttributes": dkim_attributes(ledger, &name).await?,
    }))
}

pub async fn get(ledger: &dyn Ledger, tenant: &TenantId, value: &str) -> Result<Value, ApiError> {
    let d = owned(ledger, tenant, value).await?;
    let name = d.to_string();
    Ok(json!({
        "IdentityType": "DOMAIN",
        "FeedbackForwardingStatus": true,
        "VerifiedForSendingStatus": true,
        "VerificationStatus": "SUCCESS",
        "DkimAttributes": dkim_attributes(ledger, &name).await?,
        "Tags": [],
    }))
}

pub async fn list(ledger: &dyn Ledger, tenant: &TenantId) -> Result<Value, ApiError> {
    let domains = baton_store::domains_of_tenant(ledger, tenant).await?;
    let identities: Vec<Value> = domains
        .iter()
        .map(|d| {
            json!({
                "IdentityType": "DOMAIN",
                "IdentityName": d.to_string(),
                "SendingEnabled": true,
                "VerificationStatus": "SUCCESS",
            })
        })
        .collect();
    Ok(json!({ "EmailIdentities": identities }))
}

/// The domain stops being the tenant's (its mail is refused from then on); its DKIM keys
/// stay, so a domain added again signs with the selectors already published.
pub async fn delete(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    value: &str,
) -> Result<Value, ApiError> {
    let d = owned(ledger, tenant, value).await?;
    ledger.delete(tables::DOMAINS, &d.to_string()).await?;
    Ok(json!({}))
}
