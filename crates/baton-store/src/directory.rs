//! Tenants' users and sending domains, stored in the ledger.

use baton_domain::{Domain, TenantId};
use serde::{Deserialize, Serialize};

use crate::{Ledger, StoreError, tables};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub tenant: TenantId,
    /// PHC string (argon2id).
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub tenant: TenantId,
    /// Its mail goes out from per-recipient return paths: set by `baton domain verify` once
    /// the bounce domain's MX names this relay (or for every domain, `bounces.return_path`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub return_path: bool,
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub async fn get_user(ledger: &dyn Ledger, name: &str) -> Result<Option<UserRecord>, StoreError> {
    match ledger.get(tables::USERS, name).await? {
        Some(bytes) => decode(name, &bytes).map(Some),
        None => Ok(None),
    }
}

pub async fn put_user(
    ledger: &dyn Ledger,
    name: &str,
    record: &UserRecord,
) -> Result<(), StoreError> {
    ledger.put(tables::USERS, name, &encode(record)).await
}

pub async fn get_domain(
    ledger: &dyn Ledger,
    domain: &Domain,
) -> Result<Option<DomainRecord>, StoreError> {
    let key = domain.to_string();
    match ledger.get(tables::DOMAINS, &key).await? {
        Some(bytes) => decode(&key, &bytes).map(Some),
        None => Ok(None),
    }
}

pub async fn put_domain(
    ledger: &dyn Ledger,
    domain: &Domain,
    record: &DomainRecord,
) -> Result<(), StoreError> {
    ledger
        .put(tables::DOMAINS, &domain.to_string(), &encode(record))
        .await
}

/// Every sending domain registered to `tenant`.
pub async fn domains_of_tenant(
    ledger: &dyn Ledger,
    tenant: &TenantId,
) -> Result<Vec<Domain>, StoreError> {
    let mut out = Vec::new();
    for (key, bytes) in ledger.scan(tables::DOMAINS, "").await? {
        let record: DomainRecord = decode(&key, &bytes)?;
        if &record.tenant == tenant {
            let domain = Domain::parse(&key).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                reason: e.to_string(),
            })?;
            out.push(domain);
        }
    }
    Ok(out)
}
