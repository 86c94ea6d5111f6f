//! The relay's own secrets, in the `secrets` ledger table (sealed at rest: AES-GCM under the
//! master key on the embedded backend, KMS on AWS): the return-path MAC key here, and the
//! webhook signing secrets of event destinations (`baton_pipeline::event_destinations`).

use baton_domain::VerpKey;

use crate::{Ledger, StoreError, tables};

const VERP: &str = "verp";
const SECRET_LEN: usize = 32;

/// The return-path MAC key, made on first use. Every process that asks gets the same key:
/// the first writer wins (`put_if_absent`) and the others read what it wrote.
pub async fn verp_key(ledger: &dyn Ledger) -> Result<VerpKey, StoreError> {
    if let Some(secret) = ledger.get(tables::SECRETS, VERP).await? {
        return from_bytes(&secret);
    }
    let mut secret = [0u8; SECRET_LEN];
    random_bytes(&mut secret)?;
    if !ledger.put_if_absent(tables::SECRETS, VERP, &secret).await? {
        let stored = ledger
            .get(tables::SECRETS, VERP)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{}/{VERP}", tables::SECRETS)))?;
        return from_bytes(&stored);
    }
    from_bytes(&secret)
}

fn from_bytes(secret: &[u8]) -> Result<VerpKey, StoreError> {
    VerpKey::new(secret).map_err(|e| StoreError::Corrupt {
        key: format!("{}/{VERP}", tables::SECRETS),
        reason: e.to_string(),
    })
}

/// Fills `out` from the system's CSPRNG: every secret and key id the relay makes.
pub fn random_bytes(out: &mut [u8]) -> Result<(), StoreError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| StoreError::Backend("no randomness for a new secret".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryLedger;

    #[tokio::test]
    async fn the_key_is_made_once_and_read_back_by_everyone() {
        let ledger = MemoryLedger::default();
        let id = baton_domain::QueueId::generate();
        let first = verp_key(&ledger).await.expect("made");
        let again = verp_key(&ledger).await.expect("read");
        let token = first.local_part("b.test", &id, 0);
        assert!(again.open(&token, "b.test", id.unix_ms()).is_ok());
        let stored = ledger
            .get(tables::SECRETS, VERP)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored.len(), SECRET_LEN);
    }
}
