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
    /// RSA: PKCS#1 DER as generated (SubjectPublicKeyInfo is accepted too); Ed25519: the
    /// raw 32-byte key. The DNS record's form comes from [`record_public_key`].
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

/// The most octets one DNS character-string holds (RFC 1035 3.3); a longer TXT value is
/// published as several strings, which receivers concatenate (RFC 6376 3.6.2.2).
pub const TXT_STRING_MAX: usize = 255;

impl DnsRecord {
    /// The value cut into character-strings of at most [`TXT_STRING_MAX`] octets.
    pub fn strings(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = self.value.as_str();
        while rest.len() > TXT_STRING_MAX {
            let mut cut = TXT_STRING_MAX;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = rest.split_at(cut);
            out.push(head);
            rest = tail;
        }
        out.push(rest);
        out
    }

    /// The value as a zone file writes it: quoted strings separated by spaces,
    /// e.g. `"v=DKIM1; k=rsa; p=MIIB..." "...IDAQAB"`.
    pub fn zone_value(&self) -> String {
        self.strings()
            .iter()
            .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters, DER.
const RSA_ALGORITHM_ID: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// A DER element: tag, definite length, content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if content.len() < 0x80 {
        out.push(content.len() as u8);
    } else {
        let len = content.len().to_be_bytes();
        let skip = len.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (len.len() - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Whether `der` is a PKCS#1 RSAPublicKey: a SEQUENCE whose first element is an INTEGER
/// (the modulus). A SubjectPublicKeyInfo starts with a SEQUENCE (the algorithm) instead.
fn is_pkcs1_public_key(der: &[u8]) -> bool {
    let (Some(0x30), Some(&len)) = (der.first(), der.get(1)) else {
        return false;
    };
    let header = if len < 0x80 {
        2
    } else {
        2 + usize::from(len & 0x7f)
    };
    der.get(header) == Some(&0x02)
}

/// SubjectPublicKeyInfo around a PKCS#1 RSAPublicKey (RFC 3279 2.3.1).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(pkcs1.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(pkcs1);
    let mut content = RSA_ALGORITHM_ID.to_vec();
    content.extend(der(0x03, &bits));
    der(0x30, &content)
}

/// The `p=` of a key's DKIM record. RSA is published as SubjectPublicKeyInfo (what
/// `opendkim-genkey` prints): OpenDKIM cannot use a bare PKCS#1 key, which keys stored by
/// older versions hold, so those are converted here. Ed25519 is the raw key (RFC 8463).
pub fn record_public_key(key: &DkimKey) -> String {
    match key.algorithm {
        Algorithm::RsaSha256 => match unb64(&key.public_key_b64) {
            Some(der) if is_pkcs1_public_key(&der) => b64(&rsa_spki(&der)),
            _ => key.public_key_b64.clone(),
        },
        Algorithm::Ed25519Sha256 => key.public_key_b64.clone(),
    }
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
                value: format!("v=DKIM1; k={kind}; p={}", record_public_key(k)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genrsa 1024`, then `openssl rsa -RSAPublicKey_out` and `-pubout` (DER).
    const PKCS1_1024: &str = "MIGJAoGBAKhb3bGCgMShJC2W1AsKJOF0lQAKAGJ8wi/hEF9EmYMRW2J6avIc2tTR+ILSYKdOe7hEEevttUYb575nLAyfpzDSkbpByKuQvi/0pGN4PBZgb3PBQcRCZkZgAimuMrj2znWtnkeYvJVlXeg/pGcQR0VZyOrF30JnmK3MynB/4ZIDAgMBAAE=";
    const SPKI_1024: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCoW92xgoDEoSQtltQLCiThdJUACgBifMIv4RBfRJmDEVtiemryHNrU0fiC0mCnTnu4RBHr7bVGG+e+ZywMn6cw0pG6QcirkL4v9KRjeDwWYG9zwUHEQmZGYAIprjK49s51rZ5HmLyVZV3oP6RnEEdFWcjqxd9CZ5itzMpwf+GSAwIDAQAB";

    fn stored_rsa(public_key_b64: &str) -> DkimKey {
        DkimKey {
            domain: "example.com".into(),
            selector: "s1".into(),
            algorithm: Algorithm::RsaSha256,
            private_key_b64: String::new(),
            public_key_b64: public_key_b64.into(),
            created_at: 0,
            retired: false,
        }
    }

    fn dkim_record(domain: &str, key: &DkimKey) -> DnsRecord {
        dns_records(domain, std::slice::from_ref(key)).remove(0)
    }

    #[test]
    fn rsa_record_is_subject_public_key_info_as_openssl_writes_it() {
        // A key stored by an older version (PKCS#1) is converted when printed.
        assert_eq!(record_public_key(&stored_rsa(PKCS1_1024)), SPKI_1024);
        // One already in SPKI form is published as it is.
        assert_eq!(record_public_key(&stored_rsa(SPKI_1024)), SPKI_1024);
    }

    #[test]
    fn new_rsa_2048_record_publishes_spki_not_pkcs1() {
        let key = generate_key("example.com", "b1r", Algorithm::RsaSha256, 0).expect("key");
        assert!(
            key.public_key_b64.starts_with("MIIBCg"),
            "mail-auth gives PKCS#1"
        );
        let record = dkim_record("example.com", &key);
        assert_eq!(record.name, "b1r._domainkey.example.com");
        assert!(
            record
                .value
                .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
            "{}",
            record.value
        );
        let spki = unb64(&record_public_key(&key)).expect("base64");
        assert_eq!(spki.len(), 294);
        assert_eq!(
            &spki[24..],
            unb64(&key.public_key_b64).expect("b64").as_slice()
        );
    }

    #[test]
    fn ed25519_record_is_the_raw_key() {
        let key = generate_key("example.com", "b1e", Algorithm::Ed25519Sha256, 0).expect("key");
        let record = dkim_record("example.com", &key);
        let p = record
            .value
            .strip_prefix("v=DKIM1; k=ed25519; p=")
            .expect("prefix");
        assert_eq!(unb64(p).expect("base64").len(), 32);
        assert_eq!(record.strings(), vec![record.value.as_str()]);
    }

    #[test]
    fn long_txt_value_is_split_into_strings_of_at_most_255_octets() {
        let key = generate_key("example.com", "b1r", Algorithm::RsaSha256, 0).expect("key");
        let record = dkim_record("example.com", &key);
        assert!(
            record.value.len() > TXT_STRING_MAX,
            "{}",
            record.value.len()
        );
        let strings = record.strings();
        assert_eq!(strings.len(), 2);
        assert!(strings.iter().all(|s| s.len() <= TXT_STRING_MAX));
        assert_eq!(strings[0].len(), TXT_STRING_MAX);
        assert_eq!(strings.concat(), record.value);
        assert_eq!(
            record.zone_value(),
            format!("\"{}\" \"{}\"", strings[0], strings[1])
        );

        let exact = DnsRecord {
            name: "x".into(),
            rtype: "TXT",
            value: "a".repeat(2 * TXT_STRING_MAX + 1),
        };
        let lens: Vec<usize> = exact.strings().iter().map(|s| s.len()).collect();
        assert_eq!(lens, [255, 255, 1]);
        let short = DnsRecord {
            name: "x".into(),
            rtype: "TXT",
            value: "v=spf1 a mx ~all".into(),
        };
        assert_eq!(short.zone_value(), "\"v=spf1 a mx ~all\"");
    }

    #[test]
    fn quotes_in_a_value_are_escaped() {
        let record = DnsRecord {
            name: "x".into(),
            rtype: "TXT",
            value: r#"a"b\c"#.into(),
        };
        assert_eq!(record.zone_value(), r#""a\"b\\c""#);
    }
}
