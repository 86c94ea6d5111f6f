//! DKIM keys and signing (RFC 6376, Ed25519 per RFC 8463) with mail-auth. Keys live in the
//! ledger (table `dkim_keys`, key `<domain>/<selector>`); a domain may have an RSA and an
//! Ed25519 key active at once (dual signing) and older selectors kept until retired.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use baton_store::Ledger;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::generate::DkimKeyPair;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::PrivateKeyDer;
use serde::{Deserialize, Serialize};

use crate::StageError;

pub const TABLE: &str = "dkim_keys";

/// Signed when present. From, To, Subject, Date and Message-ID are listed twice
/// (over-signed): a copy added later breaks the signature instead of riding along.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Subject",
    "Date",
    "Date",
    "To",
    "To",
    "Cc",
    "Message-ID",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Message-ID",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    /// RSA: PKCS#1 DER; Ed25519: PKCS#8 DER; base64 in the record.
    pub private_key_b64: String,
    pub public_key_b64: String,
    pub created_at: i64,
    pub retired: bool,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .field("retired", &self.retired)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("unusable key {selector}: {reason}")]
    Key { selector: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// A new 2048-bit RSA or Ed25519 key.
pub fn generate_key(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    now: i64,
) -> Result<DkimKey, DkimError> {
    let pair = match algorithm {
        Algorithm::RsaSha256 => DkimKeyPair::generate_rsa(2048),
        Algorithm::Ed25519Sha256 => DkimKeyPair::generate_ed25519(),
    }
    .map_err(|e| DkimError::Generate(e.to_string()))?;
    Ok(DkimKey {
        domain: domain.to_lowercase(),
        selector: selector.to_string(),
        algorithm,
        private_key_b64: b64(pair.private_key()),
        public_key_b64: b64(pair.public_key()),
        created_at: now,
        retired: false,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub name: String,
    pub rtype: &'static str,
    pub value: String,
}

/// What to publish: a DKIM TXT record per key, an SPF and a DMARC suggestion.
pub fn dns_records(domain: &str, keys: &[DkimKey]) -> Vec<DnsRecord> {
    let mut out: Vec<DnsRecord> = keys
        .iter()
        .filter(|k| !k.retired)
        .map(|k| {
            let kind = match k.algorithm {
                Algorithm::RsaSha256 => "rsa",
                Algorithm::Ed25519Sha256 => "ed25519",
            };
            DnsRecord {
                name: format!("{}._domainkey.{domain}", k.selector),
                rtype: "TXT",
                value: format!("v=DKIM1; k={kind}; p={}", k.public_key_b64),
            }
        })
        .collect();
    out.push(DnsRecord {
        name: domain.to_string(),
        rtype: "TXT",
        value: "v=spf1 a mx ~all".into(),
    });
    out.push(DnsRecord {
        name: format!("_dmarc.{domain}"),
        rtype: "TXT",
        value: format!("v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"),
    });
    out
}

/// A key parsed into a ready signer. Parsing an RSA key costs more than signing with it,
/// so parsed signers are kept.
enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// Keyed by the public key itself: unique per key, whatever the selector names.
type SignerCache = Mutex<HashMap<String, Arc<Signer>>>;

fn signer_cache() -> &'static SignerCache {
    static CACHE: OnceLock<SignerCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn signer(key: &DkimKey) -> Result<Arc<Signer>, DkimError> {
    let id = format!("{}/{}/{}", key.domain, key.selector, key.public_key_b64);
    if let Some(s) = signer_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
    {
        return Ok(s.clone());
    }
    let bad = |reason: String| DkimError::Key {
        selector: key.selector.clone(),
        reason,
    };
    let der = unb64(&key.private_key_b64).ok_or_else(|| bad("private key is not base64".into()))?;
    // The builder is a typestate per key type, hence the macro rather than a function.
    macro_rules! build {
        ($k:expr) => {
            DkimSigner::from_key($k)
                .domain(key.domain.clone())
                .selector(key.selector.clone())
                .headers(SIGNED_HEADERS.iter().copied())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
        };
    }
    let signer = match key.algorithm {
        Algorithm::RsaSha256 => Signer::Rsa(build!(
            RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(der.into()))
                .map_err(|e| bad(e.to_string()))?
        )),
        Algorithm::Ed25519Sha256 => Signer::Ed25519(build!(
            Ed25519Key::from_pkcs8_der(&der).map_err(|e| bad(e.to_string()))?
        )),
    };
    let signer = Arc::new(signer);
    let mut cache = signer_cache().lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() > 10_000 {
        cache.clear();
    }
    cache.insert(id, signer.clone());
    Ok(signer)
}

/// DKIM-Signature fields (each ending in CRLF) for `chunks` (the message, possibly in
/// parts: prefix headers, then the stored body), one per key; t= is now.
pub fn sign(chunks: &[&[u8]], keys: &[DkimKey]) -> Result<String, DkimError> {
    let mut out = String::new();
    for key in keys.iter().filter(|k| !k.retired) {
        let signature = match signer(key)?.as_ref() {
            Signer::Rsa(s) => s.sign_chained(chunks.iter().copied()),
            Signer::Ed25519(s) => s.sign_chained(chunks.iter().copied()),
        }
        .map_err(|e| DkimError::Sign(e.to_string()))?;
        out.push_str(&signature.to_header());
    }
    Ok(out)
}

pub async fn put_key(ledger: &dyn Ledger, key: &DkimKey) -> Result<(), StageError> {
    let k = format!("{}/{}", key.domain, key.selector);
    ledger
        .put(TABLE, &k, &serde_json::to_vec(key).unwrap_or_default())
        .await?;
    Ok(())
}

pub async fn all_keys(ledger: &dyn Ledger, domain: &str) -> Result<Vec<DkimKey>, StageError> {
    let mut out = Vec::new();
    for (k, v) in ledger
        .scan(TABLE, &format!("{}/", domain.to_lowercase()))
        .await?
    {
        out.push(
            serde_json::from_slice(&v).map_err(|e| StageError::Permanent(format!("{k}: {e}")))?,
        );
    }
    Ok(out)
}

pub async fn active_keys(ledger: &dyn Ledger, domain: &str) -> Result<Vec<DkimKey>, StageError> {
    Ok(all_keys(ledger, domain)
        .await?
        .into_iter()
        .filter(|k| !k.retired)
        .collect())
}
