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

/// One DKIM TXT record per key.
pub fn dkim_records(domain: &str, keys: &[DkimKey]) -> Vec<DnsRecord> {
    keys.iter()
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
        .collect()
}

/// What to publish: a DKIM TXT record per key, an SPF and a DMARC suggestion. SPF names
/// `sending_host`, whose A records are the addresses mail leaves from (the EHLO name,
/// `Settings::helo_name`): the relay's own name on one machine, the sending IPs' name behind
/// NAT gateways. `a` or `mx` would name the domain's own servers, which send none of it.
pub fn dns_records(domain: &str, keys: &[DkimKey], sending_host: &str) -> Vec<DnsRecord> {
    let mut out = dkim_records(domain, keys);
    out.push(DnsRecord {
        name: domain.to_string(),
        rtype: "TXT",
        value: format!("v=spf1 a:{} ~all", sending_host.trim_end_matches('.')),
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

fn record_key(key: &DkimKey) -> String {
    format!("{}/{}", key.domain, key.selector)
}

pub async fn put_key(ledger: &dyn Ledger, key: &DkimKey) -> Result<(), StageError> {
    ledger
        .put(
            TABLE,
            &record_key(key),
            &serde_json::to_vec(key).unwrap_or_default(),
        )
        .await?;
    Ok(())
}

/// Stores `key` unless its selector is taken; whether it was stored.
pub async fn put_new_key(ledger: &dyn Ledger, key: &DkimKey) -> Result<bool, StageError> {
    Ok(ledger
        .put_if_absent(
            TABLE,
            &record_key(key),
            &serde_json::to_vec(key).unwrap_or_default(),
        )
        .await?)
}

/// A new RSA-2048 and Ed25519 selector pair for `domain`, named `b<stamp>r` and `b<stamp>e`
/// where stamp is `now_secs`, or the next second whose names are free (a rotation within the
/// second of the last one never overwrites a published key). Each key is stored only if its
/// name is still free, RSA first; when another writer took the RSA name meanwhile, nothing
/// is stored. Returns the keys stored, which sign from now on. `baton domain add` and the
/// relay's own keys ([`ensure_keys`]) both come from here.
pub async fn add_key_pair(
    ledger: &dyn Ledger,
    domain: &str,
    now_secs: i64,
) -> Result<Vec<DkimKey>, StageError> {
    // Generated before the names are chosen: the slow part stays out of the window between
    // reading the taken names and claiming one.
    let generate = |algorithm| {
        generate_key(domain, "", algorithm, now_secs)
            .map_err(|e| StageError::Permanent(e.to_string()))
    };
    let pair = [
        generate(Algorithm::RsaSha256)?,
        generate(Algorithm::Ed25519Sha256)?,
    ];
    let taken: Vec<String> = all_keys(ledger, domain)
        .await?
        .into_iter()
        .map(|k| k.selector)
        .collect();
    let name = |stamp: i64, algorithm| match algorithm {
        Algorithm::RsaSha256 => format!("b{stamp}r"),
        Algorithm::Ed25519Sha256 => format!("b{stamp}e"),
    };
    let mut stamp = now_secs;
    while pair
        .iter()
        .any(|k| taken.contains(&name(stamp, k.algorithm)))
    {
        stamp += 1;
    }
    let mut stored = Vec::new();
    for mut key in pair {
        key.selector = name(stamp, key.algorithm);
        if !put_new_key(ledger, &key).await? {
            break;
        }
        stored.push(key);
    }
    Ok(stored)
}

/// What [`ensure_keys`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnsuredKeys {
    /// Active keys were there (made by an earlier start, another process, or `domain add`).
    Existing(Vec<DkimKey>),
    /// This call made them: their DNS records are still to be published.
    Created(Vec<DkimKey>),
}

impl EnsuredKeys {
    pub fn keys(&self) -> &[DkimKey] {
        match self {
            EnsuredKeys::Existing(k) | EnsuredKeys::Created(k) => k,
        }
    }
}

/// The active keys of `domain`, and a new pair ([`add_key_pair`]) when there is none.
/// Idempotent, and safe when several processes start at once: names are claimed with
/// `put_if_absent`, so writers racing within a second store one pair between them; writers
/// seconds apart may both store a pair, and then every one whose key is not the oldest
/// active key (by creation time, then selector) retires its own pair again. The oldest pair
/// is never retired, as only its writer could retire it. Only a pair stored before another
/// writer even looked may stay active beside that writer's: both sign, harmlessly.
pub async fn ensure_keys(
    ledger: &dyn Ledger,
    domain: &str,
    now_secs: i64,
) -> Result<EnsuredKeys, StageError> {
    let active = active_keys(ledger, domain).await?;
    if !active.is_empty() {
        return Ok(EnsuredKeys::Existing(active));
    }
    let mine = add_key_pair(ledger, domain, now_secs).await?;
    settle(ledger, domain, mine).await
}

/// The second half of [`ensure_keys`], after this writer stored `mine`.
async fn settle(
    ledger: &dyn Ledger,
    domain: &str,
    mine: Vec<DkimKey>,
) -> Result<EnsuredKeys, StageError> {
    let active = active_keys(ledger, domain).await?;
    let is_mine = |k: &DkimKey| mine.iter().any(|m| m.selector == k.selector);
    let oldest = active
        .iter()
        .min_by(|a, b| (a.created_at, &a.selector).cmp(&(b.created_at, &b.selector)));
    if mine.is_empty() {
        return Ok(EnsuredKeys::Existing(active));
    }
    if oldest.is_some_and(is_mine) {
        return Ok(EnsuredKeys::Created(active));
    }
    retire(ledger, &mine).await?;
    Ok(EnsuredKeys::Existing(
        active.into_iter().filter(|k| !is_mine(k)).collect(),
    ))
}

/// Marks `keys` retired: they sign no more. Their records stay, so their selector names
/// are never handed out again.
pub async fn retire(ledger: &dyn Ledger, keys: &[DkimKey]) -> Result<(), StageError> {
    for key in keys {
        let retired = DkimKey {
            retired: true,
            ..key.clone()
        };
        put_key(ledger, &retired).await?;
    }
    Ok(())
}

/// Keys for a new owner of `domain`: whatever is active (left by an earlier owner, whose
/// records may still be published) is retired first, so the new owner never signs with, or
/// is verified by, selectors someone else published. Then [`ensure_keys`], which makes a
/// pair under names never used before.
pub async fn fresh_keys(
    ledger: &dyn Ledger,
    domain: &str,
    now_secs: i64,
) -> Result<EnsuredKeys, StageError> {
    retire(ledger, &active_keys(ledger, domain).await?).await?;
    ensure_keys(ledger, domain, now_secs).await
}

/// The records to publish as `baton domain add` prints them: one per line, name, type and
/// the value as a zone file writes it.
pub fn zone_lines(domain: &str, keys: &[DkimKey], sending_host: &str) -> String {
    dns_records(domain, keys, sending_host)
        .iter()
        .map(|r| format!("{}  {}  {}", r.name, r.rtype, r.zone_value()))
        .collect::<Vec<_>>()
        .join("\n")
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
    use baton_store::StoreError;
    use baton_store::memory::MemoryLedger;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn names(keys: &[DkimKey]) -> Vec<&str> {
        let mut out: Vec<&str> = keys.iter().map(|k| k.selector.as_str()).collect();
        out.sort_unstable();
        out
    }

    #[tokio::test]
    async fn ensure_keys_makes_one_pair_once() {
        let ledger = MemoryLedger::default();
        let made = ensure_keys(&ledger, "relay.test", 100)
            .await
            .expect("ensure");
        let EnsuredKeys::Created(keys) = &made else {
            panic!("{made:?}")
        };
        assert_eq!(names(keys), ["b100e", "b100r"]);
        let algorithms: Vec<Algorithm> = keys.iter().map(|k| k.algorithm).collect();
        assert!(algorithms.contains(&Algorithm::RsaSha256), "{algorithms:?}");
        assert!(
            algorithms.contains(&Algorithm::Ed25519Sha256),
            "{algorithms:?}"
        );
        // Every later start finds them.
        let again = ensure_keys(&ledger, "relay.test", 200)
            .await
            .expect("again");
        assert_eq!(
            again,
            EnsuredKeys::Existing(active_keys(&ledger, "relay.test").await.expect("keys"))
        );
        assert_eq!(names(again.keys()), ["b100e", "b100r"]);
        // Once all are retired, a new pair; the retired names are never reused.
        for mut key in all_keys(&ledger, "relay.test").await.expect("keys") {
            key.retired = true;
            put_key(&ledger, &key).await.expect("retire");
        }
        let next = ensure_keys(&ledger, "relay.test", 100).await.expect("next");
        assert_eq!(names(next.keys()), ["b101e", "b101r"]);
    }

    #[tokio::test]
    async fn fresh_keys_never_hand_over_an_earlier_owners_selectors() {
        let ledger = MemoryLedger::default();
        let first = ensure_keys(&ledger, "acme.test", 100).await.expect("first");
        let fresh = fresh_keys(&ledger, "acme.test", 100).await.expect("fresh");
        assert!(matches!(fresh, EnsuredKeys::Created(_)), "{fresh:?}");
        assert_eq!(names(fresh.keys()), ["b101e", "b101r"]);
        let active = active_keys(&ledger, "acme.test").await.expect("active");
        assert_eq!(names(&active), ["b101e", "b101r"]);
        for old in first.keys() {
            assert!(
                !active
                    .iter()
                    .any(|k| k.public_key_b64 == old.public_key_b64),
                "{old:?} still active"
            );
        }
        retire(&ledger, &active).await.expect("retire");
        assert!(
            active_keys(&ledger, "acme.test")
                .await
                .expect("active")
                .is_empty()
        );
        assert_eq!(all_keys(&ledger, "acme.test").await.expect("all").len(), 4);
    }

    /// A ledger where another process stores its pair (made at `other_secs`) right after
    /// our scan number `at_scan` of the keys: 1 is our first look, 2 the look for free names.
    struct Interloper {
        inner: MemoryLedger,
        other_secs: i64,
        at_scan: usize,
        scans: AtomicUsize,
    }

    impl Interloper {
        fn new(other_secs: i64, at_scan: usize) -> Self {
            Interloper {
                inner: MemoryLedger::default(),
                other_secs,
                at_scan,
                scans: AtomicUsize::new(0),
            }
        }
    }

    #[async_trait::async_trait]
    impl Ledger for Interloper {
        async fn get(&self, t: &str, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(t, k).await
        }
        async fn put(&self, t: &str, k: &str, v: &[u8]) -> Result<(), StoreError> {
            self.inner.put(t, k, v).await
        }
        async fn put_if_absent(&self, t: &str, k: &str, v: &[u8]) -> Result<bool, StoreError> {
            self.inner.put_if_absent(t, k, v).await
        }
        async fn replace_if(
            &self,
            t: &str,
            k: &str,
            e: &[u8],
            v: &[u8],
        ) -> Result<bool, StoreError> {
            self.inner.replace_if(t, k, e, v).await
        }
        async fn delete(&self, t: &str, k: &str) -> Result<(), StoreError> {
            self.inner.delete(t, k).await
        }
        async fn scan(&self, t: &str, p: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            let seen = self.inner.scan(t, p).await?;
            if self.scans.fetch_add(1, Ordering::SeqCst) + 1 == self.at_scan {
                add_key_pair(&self.inner, "relay.test", self.other_secs)
                    .await
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
            }
            Ok(seen)
        }
    }

    #[tokio::test]
    async fn a_writer_racing_within_the_same_second_stores_nothing() {
        // The other process took the names between our look for free ones and our write.
        let ledger = Interloper::new(100, 2);
        let got = ensure_keys(&ledger, "relay.test", 100)
            .await
            .expect("ensure");
        assert!(matches!(got, EnsuredKeys::Existing(_)), "{got:?}");
        assert_eq!(names(got.keys()), ["b100e", "b100r"]);
        let all = all_keys(&ledger.inner, "relay.test").await.expect("all");
        assert_eq!(names(&all), ["b100e", "b100r"], "nothing of ours stored");
    }

    #[tokio::test]
    async fn a_later_writer_that_lost_a_race_retires_its_own_pair() {
        let ledger = Interloper::new(100, 1);
        let got = ensure_keys(&ledger, "relay.test", 105)
            .await
            .expect("ensure");
        // Ours (b105) were stored after theirs (b100) and are retired: theirs sign.
        assert!(matches!(got, EnsuredKeys::Existing(_)), "{got:?}");
        assert_eq!(names(got.keys()), ["b100e", "b100r"]);
        let active = active_keys(&ledger.inner, "relay.test")
            .await
            .expect("keys");
        assert_eq!(names(&active), ["b100e", "b100r"]);
        assert_eq!(
            all_keys(&ledger.inner, "relay.test")
                .await
                .expect("all")
                .len(),
            4
        );

        // The older writer keeps its pair (the other one retires its own when it looks).
        let ledger = Interloper::new(110, 1);
        let got = ensure_keys(&ledger, "relay.test", 105)
            .await
            .expect("ensure");
        assert!(matches!(got, EnsuredKeys::Created(_)), "{got:?}");
        let active = active_keys(&ledger.inner, "relay.test")
            .await
            .expect("keys");
        assert!(names(&active).contains(&"b105r"), "{active:?}");
    }

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

    #[test]
    fn spf_names_the_sending_host_not_the_domain_s_own_servers() {
        let records = dns_records("example.com", &[stored_rsa(SPKI_1024)], "out.example.net.");
        let spf: Vec<_> = records
            .iter()
            .filter(|r| r.value.starts_with("v=spf1"))
            .collect();
        assert_eq!(spf.len(), 1, "{records:?}");
        assert_eq!(spf[0].name, "example.com");
        assert_eq!(spf[0].value, "v=spf1 a:out.example.net ~all");
        assert_eq!(
            dkim_records("example.com", &[stored_rsa(SPKI_1024)]).len(),
            1
        );
    }

    fn dkim_record(domain: &str, key: &DkimKey) -> DnsRecord {
        dkim_records(domain, std::slice::from_ref(key)).remove(0)
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
