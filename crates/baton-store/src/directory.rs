//! Tenants' users and sending domains, stored in the ledger.
//!
//! A domain record is either verified (it sends) or a pending claim made through the API,
//! waiting for its DKIM records to show in DNS. Everything that decides whether mail may go
//! out as a domain reads [`get_domain`] / [`domains_of_tenant`], which see verified records
//! only; the `*_claim*` functions, which see both, are for managing identities.

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

/// A domain record as stored, with whether it is still a claim waiting for DNS proof.
/// `pending` lives here rather than in [`DomainRecord`] so that a `DomainRecord` is always
/// a verified one: only [`get_domain_claim`] and [`domain_claims`] ever show a pending one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainClaim {
    #[serde(flatten)]
    pub record: DomainRecord,
    /// Claimed through the API but not yet proven by DNS: it reserves the name and nothing
    /// else. Records without the field (every `baton domain add`) are verified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
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

/// The verified record of `domain`: a pending claim reads as absent, so no sending path can
/// use it.
pub async fn get_domain(
    ledger: &dyn Ledger,
    domain: &Domain,
) -> Result<Option<DomainRecord>, StoreError> {
    Ok(get_domain_claim(ledger, domain)
        .await?
        .filter(|c| !c.pending)
        .map(|c| c.record))
}

/// The record of `domain`, pending or verified: who holds the name.
pub async fn get_domain_claim(
    ledger: &dyn Ledger,
    domain: &Domain,
) -> Result<Option<DomainClaim>, StoreError> {
    let key = domain.to_string();
    match ledger.get(tables::DOMAINS, &key).await? {
        Some(bytes) => decode(&key, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Stores `claim` only if nobody holds `domain` yet; whether it did.
pub async fn claim_domain(
    ledger: &dyn Ledger,
    domain: &Domain,
    claim: &DomainClaim,
) -> Result<bool, StoreError> {
    ledger
        .put_if_absent(tables::DOMAINS, &domain.to_string(), &encode(claim))
        .await
}

/// Turns `tenant`'s pending claim of `domain` into a verified record, only if the stored
/// record is still that claim (compare-and-swap: a claim deleted or replaced meanwhile is
/// left alone). Whether the record is now verified and `tenant`'s.
pub async fn verify_domain(
    ledger: &dyn Ledger,
    domain: &Domain,
    tenant: &TenantId,
) -> Result<bool, StoreError> {
    let key = domain.to_string();
    let Some(bytes) = ledger.get(tables::DOMAINS, &key).await? else {
        return Ok(false);
    };
    let claim: DomainClaim = decode(&key, &bytes)?;
    if &claim.record.tenant != tenant {
        return Ok(false);
    }
    if !claim.pending {
        return Ok(true);
    }
    let verified = DomainClaim {
        pending: false,
        ..claim
    };
    ledger
        .replace_if(tables::DOMAINS, &key, &bytes, &encode(&verified))
        .await
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

/// Every verified sending domain of `tenant`.
pub async fn domains_of_tenant(
    ledger: &dyn Ledger,
    tenant: &TenantId,
) -> Result<Vec<Domain>, StoreError> {
    Ok(domain_claims(ledger)
        .await?
        .into_iter()
        .filter(|(_, c)| &c.record.tenant == tenant && !c.pending)
        .map(|(d, _)| d)
        .collect())
}

/// Every domain record, pending or verified, with its domain.
pub async fn domain_claims(ledger: &dyn Ledger) -> Result<Vec<(Domain, DomainClaim)>, StoreError> {
    let mut out = Vec::new();
    for (key, bytes) in ledger.scan(tables::DOMAINS, "").await? {
        let record: DomainClaim = decode(&key, &bytes)?;
        let domain = Domain::parse(&key).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        out.push((domain, record));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryLedger;

    fn acme() -> TenantId {
        TenantId("acme".into())
    }

    fn pending(tenant: TenantId) -> DomainClaim {
        DomainClaim {
            record: DomainRecord {
                tenant,
                return_path: false,
            },
            pending: true,
        }
    }

    #[tokio::test]
    async fn a_pending_claim_is_invisible_to_senders_until_verified() {
        let ledger = MemoryLedger::default();
        let d = Domain::parse("acme.test").expect("domain");
        assert!(
            claim_domain(&ledger, &d, &pending(acme()))
                .await
                .expect("claim")
        );
        // A second claim, by anyone, does not overwrite the first.
        let other = pending(TenantId("other".into()));
        assert!(!claim_domain(&ledger, &d, &other).await.expect("claim"));
        assert_eq!(get_domain(&ledger, &d).await.expect("get"), None);
        assert!(
            domains_of_tenant(&ledger, &acme())
                .await
                .expect("list")
                .is_empty()
        );
        let claim = get_domain_claim(&ledger, &d).await.expect("claim");
        assert_eq!(claim, Some(pending(acme())));

        // Only the claimant's verification counts.
        let other = TenantId("other".into());
        assert!(!verify_domain(&ledger, &d, &other).await.expect("verify"));
        assert_eq!(get_domain(&ledger, &d).await.expect("get"), None);
        assert!(verify_domain(&ledger, &d, &acme()).await.expect("verify"));
        let record = get_domain(&ledger, &d)
            .await
            .expect("get")
            .expect("verified");
        assert_eq!(record.tenant, acme());
        assert_eq!(
            domains_of_tenant(&ledger, &acme()).await.expect("list"),
            std::slice::from_ref(&d)
        );
        // Verified records are stored as before the flag existed.
        let bytes = ledger.get(tables::DOMAINS, "acme.test").await.expect("get");
        assert_eq!(bytes.as_deref(), Some(&br#"{"tenant":"acme"}"#[..]));
    }

    #[tokio::test]
    async fn records_written_before_claims_existed_are_verified() {
        let ledger = MemoryLedger::default();
        ledger
            .put(
                tables::DOMAINS,
                "old.test",
                br#"{"tenant":"acme","return_path":true}"#,
            )
            .await
            .expect("put");
        let d = Domain::parse("old.test").expect("domain");
        let record = get_domain(&ledger, &d)
            .await
            .expect("get")
            .expect("verified");
        assert!(record.return_path);
        // put_domain (`baton domain add`) replaces a pending claim with a verified record.
        let other = Domain::parse("new.test").expect("domain");
        claim_domain(&ledger, &other, &pending(TenantId("squatter".into())))
            .await
            .expect("claim");
        put_domain(
            &ledger,
            &other,
            &DomainRecord {
                tenant: acme(),
                return_path: false,
            },
        )
        .await
        .expect("put");
        let record = get_domain(&ledger, &other)
            .await
            .expect("get")
            .expect("verified");
        assert_eq!(record.tenant, acme());
    }
}
