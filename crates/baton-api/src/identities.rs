//! Email identities (Create/Get/List/DeleteEmailIdentity): a tenant's sending domains, the
//! same records `baton domain add` makes, with their DKIM keys. Only domains: an address
//! identity would let a tenant claim one mailbox of a domain another tenant sends from.
//!
//! As in SES, a created identity is a pending claim with fresh DKIM keys; it sends only once
//! DNS shows one of its DKIM records (checked when the identity is read), which proves the
//! tenant controls the domain. Another tenant's domain reads as absent (404); claiming it, a
//! name under it or above it is refused without saying whose it is. Squatting (a pending
//! claim of a name its claimant does not control) is for the operator to end: `baton domain
//! add <domain> --tenant <owner>` replaces the claim.

use std::sync::Arc;
use std::time::Duration;

use baton_domain::{Domain, TenantId};
use baton_pipeline::dkim::{self, DkimKey};
use baton_pipeline::outbound::{HickoryMxResolver, LiteralResolver, TxtResolver};
use baton_store::{
    DomainClaim, DomainRecord, Ledger, claim_domain, domain_claims, get_domain_claim, tables,
    verify_domain,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

/// The DNS lookups of one identity check (at most one per active selector) share this.
const DNS_BUDGET: Duration = Duration::from_secs(5);
/// Selectors looked up per check: a domain has an RSA and an Ed25519 key active.
const MAX_SELECTORS: usize = 2;
/// ListEmailIdentities checks pending identities in DNS within this, then answers.
const LIST_BUDGET: Duration = Duration::from_secs(5);

/// What identity management needs besides the ledger.
pub struct IdentityPolicy {
    /// Where the DKIM records are looked for.
    pub dns: Arc<dyn TxtResolver>,
    /// The relay's own names (hostname, HELO name): their keys sign its DSNs.
    pub relay_names: Vec<String>,
    /// `bounces.subdomain`: `<label>.<domain>` receives the bounces of `<domain>`'s mail.
    pub bounce_label: String,
}

impl IdentityPolicy {
    /// The system's resolvers, the relay's `hostname`, and the default bounce label.
    pub fn new(hostname: &str) -> Self {
        IdentityPolicy {
            dns: system_dns(),
            relay_names: vec![hostname.to_string()],
            bounce_label: "bounce".into(),
        }
    }

    fn is_relay_name(&self, name: &str) -> bool {
        let first = name.split('.').next().unwrap_or_default();
        first.eq_ignore_ascii_case(&self.bounce_label)
            || self
                .relay_names
                .iter()
                .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name))
    }
}

/// The system's resolvers; without a usable resolv.conf, none (identities stay pending).
pub fn system_dns() -> Arc<dyn TxtResolver> {
    match HickoryMxResolver::system() {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver: API identities cannot be verified");
            Arc::new(LiteralResolver)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateRequest {
    pub email_identity: String,
    #[serde(default)]
    pub tags: Vec<Value>,
    pub dkim_signing_attributes: Option<Value>,
    pub configuration_set_name: Option<String>,
}

/// The one stored form of a domain name: A-labels (an IDN and its punycode are one name),
/// lower case, no trailing dot, at least two labels (a top-level domain is no sending
/// domain, and claiming one would block every name under it).
pub fn normalise(value: &str) -> Result<Domain, ApiError> {
    let bad = || ApiError::bad_request(format!("{value:?} is not a domain name"));
    if value.contains('@') {
        return Err(ApiError::bad_request(
            "only domain identities are supported, not email addresses",
        ));
    }
    let trimmed = value.strip_suffix('.').unwrap_or(value);
    // Strict: STD3 rules (letters, digits, hyphens) and DNS lengths.
    let ascii = idna::domain_to_ascii_strict(trimmed).map_err(|_| bad())?;
    if !ascii.is_ascii() || !ascii.contains('.') || ascii.ends_with('.') {
        return Err(bad());
    }
    match Domain::parse(&ascii) {
        Ok(d) if !d.is_literal() => Ok(d),
        _ => Err(bad()),
    }
}

/// Whether `name` is, contains or lies under a domain another tenant holds (verified or
/// pending): mail.acme.test would send as acme's brand, and a claim of acme.test's parent
/// would shadow it.
fn conflicts(name: &str, tenant: &TenantId, claims: &[(Domain, DomainClaim)]) -> bool {
    let related = |a: &str, b: &str| a == b || a.ends_with(&format!(".{b}"));
    claims.iter().any(|(d, c)| {
        let held = d.to_string();
        &c.record.tenant != tenant && (related(name, &held) || related(&held, name))
    })
}

fn stage(e: baton_pipeline::StageError) -> ApiError {
    tracing::error!(error = %e, "DKIM keys");
    ApiError::unavailable("DKIM keys cannot be read or made")
}

fn cannot_use(name: &str) -> ApiError {
    ApiError::bad_request(format!("{name} cannot be used"))
}

/// The `p=` of a DKIM record, whitespace removed (RFC 6376 3.6.1 allows folding in it).
fn p_tag(record: &str) -> Option<String> {
    record.split(';').find_map(|tag| {
        let (name, value) = tag.split_once('=')?;
        (name.trim() == "p").then(|| value.chars().filter(|c| !c.is_whitespace()).collect())
    })
}

/// Whether DNS shows one of `keys`' DKIM records with our public key. A lookup that fails
/// or takes too long counts as not published.
pub async fn published(dns: &dyn TxtResolver, domain: &str, keys: &[DkimKey]) -> bool {
    let look = async {
        for key in keys.iter().take(MAX_SELECTORS) {
            let name = format!("{}._domainkey.{domain}", key.selector);
            let ours = [dkim::record_public_key(key), key.public_key_b64.clone()];
            match dns.txt(&name).await {
                Ok(records) => {
                    if records
                        .iter()
                        .filter_map(|r| p_tag(r))
                        .any(|p| ours.contains(&p))
                    {
                        return true;
                    }
                }
                Err(e) => tracing::debug!(%name, error = %e, "DKIM record lookup"),
            }
        }
        false
    };
    tokio::time::timeout(DNS_BUDGET, look)
        .await
        .unwrap_or(false)
}

/// A pending claim of `tenant`'s becomes verified if DNS shows its keys; whether the
/// identity is verified now.
async fn check(
    policy: &IdentityPolicy,
    ledger: &dyn Ledger,
    tenant: &TenantId,
    domain: &Domain,
    keys: &[DkimKey],
) -> Result<bool, ApiError> {
    if !published(policy.dns.as_ref(), &domain.to_string(), keys).await {
        return Ok(false);
    }
    let verified = verify_domain(ledger, domain, tenant).await?;
    if verified {
        tracing::info!(domain = %domain, tenant = %tenant.0, "identity verified by DNS");
    }
    Ok(verified)
}

/// What a tenant publishes: one DKIM TXT record per active key. A Baton extension of the
/// answer (SES hosts these itself behind CNAMEs); SDKs ignore fields they do not know.
fn dkim_records(name: &str, keys: &[DkimKey]) -> Value {
    dkim::dkim_records(name, keys)
        .into_iter()
        .map(|r| json!({ "Name": r.name, "Type": r.rtype, "Value": r.value }))
        .collect()
}

fn identity(name: &str, keys: &[DkimKey], verified: bool) -> Value {
    let status = match (keys.is_empty(), verified) {
        (true, _) => "NOT_STARTED",
        (false, true) => "SUCCESS",
        (false, false) => "PENDING",
    };
    json!({
        "IdentityType": "DOMAIN",
        "VerifiedForSendingStatus": verified,
        "VerificationStatus": if verified { "SUCCESS" } else { "PENDING" },
        "DkimAttributes": {
            "SigningEnabled": !keys.is_empty(),
            "Status": status,
            "Tokens": keys.iter().map(|k| k.selector.clone()).collect::<Vec<_>>(),
            "SigningAttributesOrigin": "AWS_SES",
        },
        "DkimRecords": dkim_records(name, keys),
    })
}

/// `tenant`'s claim of the domain, pending or verified, else NotFound.
async fn owned(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    value: &str,
) -> Result<(Domain, DomainClaim), ApiError> {
    let missing = || ApiError::not_found(format!("Email identity {value} does not exist"));
    let d = normalise(value).map_err(|_| missing())?;
    match get_domain_claim(ledger, &d).await? {
        Some(c) if &c.record.tenant == tenant => Ok((d, c)),
        _ => Err(missing()),
    }
}

pub async fn create(
    policy: &IdentityPolicy,
    ledger: &dyn Ledger,
    tenant: &TenantId,
    request: &CreateRequest,
    now_secs: i64,
) -> Result<Value, ApiError> {
    if request.dkim_signing_attributes.is_some() {
        return Err(ApiError::bad_request(
            "DkimSigningAttributes (bring your own key) is not supported",
        ));
    }
    let d = normalise(&request.email_identity)?;
    let name = d.to_string();
    if policy.is_relay_name(&name) {
        // Its keys sign the relay's own DSNs, or its mail is the relay's bounces.
        return Err(cannot_use(&name));
    }
    let taken = |c: Option<DomainClaim>| match c {
        Some(c) if &c.record.tenant == tenant => ApiError {
            status: axum::http::StatusCode::BAD_REQUEST,
            kind: "AlreadyExistsException",
            message: format!("Email identity {name} already exists"),
        },
        _ => cannot_use(&name),
    };
    if let Some(c) = get_domain_claim(ledger, &d).await? {
        return Err(taken(Some(c)));
    }
    if conflicts(&name, tenant, &domain_claims(ledger).await?) {
        return Err(cannot_use(&name));
    }
    let claim = DomainClaim {
        record: DomainRecord {
            tenant: tenant.clone(),
            return_path: false,
        },
        pending: true,
    };
    if !claim_domain(ledger, &d, &claim).await? {
        return Err(taken(get_domain_claim(ledger, &d).await?));
    }
    // Another tenant may have claimed a parent or subdomain since the look above: then both
    // claims see each other here and neither stays.
    let keys = match domain_claims(ledger).await {
        Ok(claims) if !conflicts(&name, tenant, &claims) => {
            // Nobody held the name: keys an earlier owner left are retired, never handed on.
            dkim::fresh_keys(ledger, &name, now_secs)
                .await
                .map_err(stage)
        }
        Ok(_) => Err(cannot_use(&name)),
        Err(e) => Err(e.into()),
    };
    let keys = match keys {
        Ok(k) => k.keys().to_vec(),
        Err(e) => {
            ledger.delete(tables::DOMAINS, &name).await?;
            return Err(e);
        }
    };
    tracing::info!(domain = %name, tenant = %tenant.0, "identity claimed, pending DNS");
    let mut out = identity(&name, &keys, false);
    if let Some(o) = out.as_object_mut() {
        // CreateEmailIdentity's answer has no VerificationStatus in SES.
        o.remove("VerificationStatus");
    }
    Ok(out)
}

pub async fn get(
    policy: &IdentityPolicy,
    ledger: &dyn Ledger,
    tenant: &TenantId,
    value: &str,
) -> Result<Value, ApiError> {
    let (d, claim) = owned(ledger, tenant, value).await?;
    let name = d.to_string();
    let keys = dkim::active_keys(ledger, &name).await.map_err(stage)?;
    let verified = !claim.pending || check(policy, ledger, tenant, &d, &keys).await?;
    let mut out = identity(&name, &keys, verified);
    if let Some(o) = out.as_object_mut() {
        o.insert("FeedbackForwardingStatus".into(), true.into());
        o.insert("Tags".into(), json!([]));
    }
    Ok(out)
}

pub async fn list(
    policy: &IdentityPolicy,
    ledger: &dyn Ledger,
    tenant: &TenantId,
) -> Result<Value, ApiError> {
    let deadline = tokio::time::Instant::now() + LIST_BUDGET;
    let mut identities = Vec::new();
    for (d, claim) in domain_claims(ledger).await? {
        if &claim.record.tenant != tenant {
            continue;
        }
        let mut verified = !claim.pending;
        // Pending ones are checked while the budget lasts; the rest say PENDING this time.
        if !verified && tokio::time::Instant::now() < deadline {
            let keys = dkim::active_keys(ledger, &d.to_string())
                .await
                .map_err(stage)?;
            let checked =
                tokio::time::timeout_at(deadline, check(policy, ledger, tenant, &d, &keys));
            verified = checked.await.unwrap_or(Ok(false))?;
        }
        identities.push(json!({
            "IdentityType": "DOMAIN",
            "IdentityName": d.to_string(),
            "SendingEnabled": verified,
            "VerificationStatus": if verified { "SUCCESS" } else { "PENDING" },
        }));
    }
    Ok(json!({ "EmailIdentities": identities }))
}

/// The domain stops being the tenant's (its mail is refused from then on), and the keys it
/// signed with are retired: whoever claims the name next gets new selectors, never these,
/// whose records the tenant published.
pub async fn delete(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    value: &str,
) -> Result<Value, ApiError> {
    let (d, _) = owned(ledger, tenant, value).await?;
    let name = d.to_string();
    // Read before the record goes: retiring only these leaves alone the keys of a claim
    // made right after the delete.
    let keys = dkim::active_keys(ledger, &name).await.map_err(stage)?;
    ledger.delete(tables::DOMAINS, &name).await?;
    dkim::retire(ledger, &keys).await.map_err(stage)?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use baton_pipeline::outbound::ResolveError;
    use baton_store::get_domain;
    use baton_store::memory::MemoryLedger;

    use super::*;

    /// TXT records by name; a name listed in `failing` answers SERVFAIL-like errors.
    #[derive(Default)]
    struct FakeDns {
        records: Mutex<HashMap<String, Vec<String>>>,
        failing: Mutex<Vec<String>>,
    }

    impl FakeDns {
        fn publish(&self, name: &str, value: &str) {
            let mut records = self.records.lock().expect("lock");
            records.entry(name.into()).or_default().push(value.into());
        }
    }

    #[async_trait::async_trait]
    impl TxtResolver for FakeDns {
        async fn txt(&self, name: &str) -> Result<Vec<String>, ResolveError> {
            if self.failing.lock().expect("lock").iter().any(|n| n == name) {
                return Err(ResolveError::Temporary("SERVFAIL".into()));
            }
            let records = self.records.lock().expect("lock");
            records.get(name).cloned().ok_or(ResolveError::NoSuchDomain)
        }
    }

    fn policy() -> (IdentityPolicy, Arc<FakeDns>) {
        let dns = Arc::new(FakeDns::default());
        let policy = IdentityPolicy {
            dns: dns.clone(),
            relay_names: vec!["relay.test.".into(), "helo.test".into()],
            bounce_label: "bounce".into(),
        };
        (policy, dns)
    }

    fn tenant(name: &str) -> TenantId {
        TenantId(name.into())
    }

    fn request(name: &str) -> CreateRequest {
        CreateRequest {
            email_identity: name.into(),
            tags: Vec::new(),
            dkim_signing_attributes: None,
            configuration_set_name: None,
        }
    }

    fn kind(r: Result<Value, ApiError>) -> &'static str {
        r.err().map(|e| e.kind).unwrap_or("ok")
    }

    fn records(answer: &Value) -> Vec<(String, String)> {
        answer["DkimRecords"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| {
                (
                    r["Name"].as_str().unwrap_or_default().into(),
                    r["Value"].as_str().unwrap_or_default().into(),
                )
            })
            .collect()
    }

    #[test]
    fn names_are_normalised_to_one_ascii_form() {
        let name = |v: &str| normalise(v).map(|d| d.to_string()).map_err(|e| e.kind);
        assert_eq!(name("Acmé.Test."), Ok("xn--acm-dma.test".into()));
        assert_eq!(name("xn--acm-dma.test"), Ok("xn--acm-dma.test".into()));
        assert_eq!(name("MAIL.Acme.Test"), Ok("mail.acme.test".into()));
        for bad in [
            "test",
            "acme.test..",
            "a_b.test",
            "-a.test",
            "acme.test\r\nX: y",
            "a\0.test",
            "",
            "[127.0.0.1]",
            "news@acme.test",
        ] {
            assert_eq!(name(bad), Err("BadRequestException"), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn claims_are_refused_for_others_names_their_kin_and_the_relays() {
        let (policy, _) = policy();
        let ledger = MemoryLedger::default();
        let (acme, other) = (tenant("acme"), tenant("other"));
        let made = create(&policy, &ledger, &acme, &request("corp.acme.test"), 100)
            .await
            .expect("create");
        assert_eq!(made["VerifiedForSendingStatus"], false, "{made}");
        assert_eq!(made["DkimAttributes"]["Status"], "PENDING", "{made}");
        assert_eq!(
            made["DkimAttributes"]["Tokens"].as_array().map(Vec::len),
            Some(2),
            "{made}"
        );
        // Pending: nothing that sends sees it.
        let d = normalise("corp.acme.test").expect("domain");
        assert_eq!(get_domain(&ledger, &d).await.expect("get"), None);

        let again = create(&policy, &ledger, &acme, &request("Corp.Acme.Test."), 100).await;
        assert_eq!(kind(again), "AlreadyExistsException");
        for name in [
            "corp.acme.test",
            "mail.corp.acme.test",
            "acme.test",
            "relay.test",
            "helo.test",
            "bounce.other.test",
        ] {
            let refused = create(&policy, &ledger, &other, &request(name), 100).await;
            let e = refused.expect_err(name);
            assert_eq!(e.kind, "BadRequestException", "{name}");
            assert!(!e.message.contains("acme\""), "says whose: {}", e.message);
        }
        // The claimant may add names of its own under its claim.
        let sub = create(
            &policy,
            &ledger,
            &acme,
            &request("mail.corp.acme.test"),
            100,
        )
        .await;
        assert_eq!(kind(sub), "ok");
        // An IDN and its A-label are one name.
        assert_eq!(
            kind(create(&policy, &ledger, &acme, &request("acmé.test"), 100).await),
            "ok"
        );
        let twin = create(&policy, &ledger, &other, &request("xn--acm-dma.test"), 100).await;
        assert_eq!(kind(twin), "BadRequestException");
        // Another tenant's pending claim reads as absent.
        assert_eq!(
            kind(get(&policy, &ledger, &other, "corp.acme.test").await),
            "NotFoundException"
        );
        assert_eq!(
            kind(delete(&ledger, &other, "corp.acme.test").await),
            "NotFoundException"
        );
    }

    #[tokio::test]
    async fn dns_showing_our_key_verifies_the_claim_and_nothing_else_does() {
        let (policy, dns) = policy();
        let ledger = MemoryLedger::default();
        let acme = tenant("acme");
        let made = create(&policy, &ledger, &acme, &request("acme.test"), 100)
            .await
            .expect("create");
        let published = records(&made);
        assert_eq!(published.len(), 2, "{made}");
        let d = normalise("acme.test").expect("domain");
        let (rsa_name, rsa_value) = published
            .iter()
            .find(|(_, v)| v.contains("k=rsa"))
            .cloned()
            .expect("rsa");

        // Not published, published with another key, or DNS failing: pending.
        let got = get(&policy, &ledger, &acme, "acme.test")
            .await
            .expect("get");
        assert_eq!(
            (
                got["VerifiedForSendingStatus"].clone(),
                got["DkimAttributes"]["Status"].clone()
            ),
            (false.into(), "PENDING".into())
        );
        dns.publish(
            &rsa_name,
            "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnotours",
        );
        dns.failing
            .lock()
            .expect("lock")
            .push(rsa_name.replace("r._", "e._"));
        let listed = list(&policy, &ledger, &acme).await.expect("list");
        assert_eq!(
            listed["EmailIdentities"][0]["VerificationStatus"], "PENDING",
            "{listed}"
        );
        assert_eq!(get_domain(&ledger, &d).await.expect("get"), None);

        // Our key, folded as zone files fold it: verified, and now it sends.
        let (head, tail) = rsa_value.split_at(rsa_value.len() / 2);
        dns.publish(&rsa_name, &format!("{head} \t{tail}"));
        let got = get(&policy, &ledger, &acme, "acme.test")
            .await
            .expect("get");
        assert_eq!(got["VerifiedForSendingStatus"], true, "{got}");
        assert_eq!(got["VerificationStatus"], "SUCCESS", "{got}");
        assert_eq!(got["DkimAttributes"]["Status"], "SUCCESS", "{got}");
        let record = get_domain(&ledger, &d)
            .await
            .expect("get")
            .expect("verified");
        assert_eq!(record.tenant, acme);
        let listed = list(&policy, &ledger, &acme).await.expect("list");
        assert_eq!(
            listed["EmailIdentities"][0]["SendingEnabled"], true,
            "{listed}"
        );
    }

    #[tokio::test]
    async fn a_name_claimed_again_after_delete_gets_new_keys() {
        let (policy, dns) = policy();
        let ledger = MemoryLedger::default();
        let (acme, other) = (tenant("acme"), tenant("other"));
        let first = create(&policy, &ledger, &acme, &request("acme.test"), 100)
            .await
            .expect("create");
        for (name, value) in records(&first) {
            dns.publish(&name, &value);
        }
        let got = get(&policy, &ledger, &acme, "acme.test")
            .await
            .expect("get");
        assert_eq!(got["VerifiedForSendingStatus"], true, "{got}");
        delete(&ledger, &acme, "acme.test").await.expect("delete");
        assert!(
            dkim::active_keys(&ledger, "acme.test")
                .await
                .expect("keys")
                .is_empty()
        );

        // acme's records are still in DNS: they neither sign for nor verify the next owner.
        let second = create(&policy, &ledger, &other, &request("acme.test"), 100)
            .await
            .expect("create");
        let tokens = |a: &Value| a["DkimAttributes"]["Tokens"].clone();
        assert_ne!(tokens(&first), tokens(&second));
        assert!(
            records(&first)
                .iter()
                .all(|r| !records(&second).contains(r))
        );
        let got = get(&policy, &ledger, &other, "acme.test")
            .await
            .expect("get");
        assert_eq!(got["VerifiedForSendingStatus"], false, "{got}");

        // Keys left behind without a record (as by an older version's delete) are retired too.
        dkim::add_key_pair(&ledger, "left.test", 50)
            .await
            .expect("keys");
        let made = create(&policy, &ledger, &other, &request("left.test"), 100)
            .await
            .expect("create");
        let active = dkim::active_keys(&ledger, "left.test").await.expect("keys");
        assert_eq!(active.len(), 2);
        assert!(active.iter().all(|k| k.created_at == 100), "{made}");
    }
}
