//! Access keys for the API, one tenant each (`baton key create --tenant T`). The key id and
//! its record live in `api_keys`; the secret lives in the sealed `secrets` table under its
//! own partition (`apikey/<id>`), apart from everything else and never listed.

use baton_domain::TenantId;
use baton_store::{Ledger, StoreError, tables::SECRETS};
use serde::{Deserialize, Serialize};

pub const TABLE: &str = "api_keys";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub tenant: String,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// A new key: its id and secret, shown once.
pub struct NewKey {
    pub id: String,
    pub secret: String,
}

fn secret_key(id: &str) -> String {
    format!("apikey/{id}")
}

const ID_PREFIX: &str = "BTN";
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Ids look like AWS's (20 upper-case letters and digits, here starting `BTN`), so SDKs and
/// tools that check their shape take them.
fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 17];
    baton_store::random_bytes(&mut bytes)?;
    let tail: String = bytes
        .iter()
        .map(|b| ID_ALPHABET[usize::from(b & 31)] as char)
        .collect();
    Ok(format!("{ID_PREFIX}{tail}"))
}

/// Whether `id` is one we could have made: nothing else is looked up.
pub fn is_well_formed(id: &str) -> bool {
    id.len() == 20 && id.starts_with(ID_PREFIX) && id.bytes().all(|b| ID_ALPHABET.contains(&b))
}

pub async fn create(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    now_ms: i64,
) -> Result<NewKey, StoreError> {
    use base64::Engine;
    let mut secret = [0u8; 30];
    baton_store::random_bytes(&mut secret)?;
    let secret = base64::engine::general_purpose::STANDARD.encode(secret);
    loop {
        let id = new_id()?;
        // The secret first: a key is never usable without it.
        ledger
            .put(SECRETS, &secret_key(&id), secret.as_bytes())
            .await?;
        let record = KeyRecord {
            tenant: tenant.0.clone(),
            created_at: now_ms,
            revoked_at: None,
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Backend(e.to_string()))?;
        if ledger.put_if_absent(TABLE, &id, &bytes).await? {
            return Ok(NewKey { id, secret });
        }
    }
}

/// The tenant and secret of a key in force; `None` for an unknown or revoked one.
pub async fn lookup(
    ledger: &dyn Ledger,
    id: &str,
) -> Result<Option<(TenantId, String)>, StoreError> {
    // Only ids we could have made are looked up: nothing else reaches the ledger.
    if !is_well_formed(id) {
        return Ok(None);
    }
    let Some(bytes) = ledger.get(TABLE, id).await? else {
        return Ok(None);
    };
    let record: KeyRecord = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        key: format!("{TABLE}/{id}"),
        reason: e.to_string(),
    })?;
    if record.revoked_at.is_some() {
        return Ok(None);
    }
    let Some(secret) = ledger.get(SECRETS, &secret_key(id)).await? else {
        return Ok(None);
    };
    let secret = String::from_utf8(secret).map_err(|_| StoreError::Corrupt {
        key: secret_key(id),
        reason: "not text".into(),
    })?;
    Ok(Some((TenantId(record.tenant), secret)))
}

/// Every key (of `tenant`, when given), by id, without secrets.
pub async fn list(
    ledger: &dyn Ledger,
    tenant: Option<&str>,
) -> Result<Vec<(String, KeyRecord)>, StoreError> {
    let mut out = Vec::new();
    for (id, bytes) in ledger.scan(TABLE, "").await? {
        let record: KeyRecord =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                key: format!("{TABLE}/{id}"),
                reason: e.to_string(),
            })?;
        if tenant.is_none_or(|t| t == record.tenant) {
            out.push((id, record));
        }
    }
    Ok(out)
}

/// Revokes a key: it stops working at once, and its secret is deleted. False if unknown.
pub async fn revoke(ledger: &dyn Ledger, id: &str, now_ms: i64) -> Result<bool, StoreError> {
    let Some(bytes) = ledger.get(TABLE, id).await? else {
        return Ok(false);
    };
    let mut record: KeyRecord =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            key: format!("{TABLE}/{id}"),
            reason: e.to_string(),
        })?;
    record.revoked_at.get_or_insert(now_ms);
    let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Backend(e.to_string()))?;
    ledger.put(TABLE, id, &bytes).await?;
    ledger.delete(SECRETS, &secret_key(id)).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_works_until_revoked_and_lists_without_its_secret() {
        let ledger = baton_store::memory::MemoryLedger::default();
        let acme = TenantId("acme".into());
        let key = create(&ledger, &acme, 1).await.expect("create");
        assert!(
            key.id.starts_with("BTN") && key.id.len() == 20,
            "{}",
            key.id
        );
        assert_eq!(
            lookup(&ledger, &key.id).await.expect("lookup"),
            Some((acme.clone(), key.secret.clone()))
        );
        let listed = list(&ledger, Some("acme")).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert!(
            !serde_json::to_string(&listed[0].1)
                .expect("json")
                .contains(&key.secret)
        );
        assert!(list(&ledger, Some("other")).await.expect("list").is_empty());
        assert!(revoke(&ledger, &key.id, 2).await.expect("revoke"));
        assert_eq!(lookup(&ledger, &key.id).await.expect("lookup"), None);
        assert_eq!(lookup(&ledger, "not-a-key").await.expect("lookup"), None);
    }
}
