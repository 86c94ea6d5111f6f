//! Where a tenant's events go: any number of named destinations, each an SQS queue, an
//! EventBridge bus or an HTTPS webhook (`baton events destination add`). Records live in
//! the `event_destinations` table under `<tenant>/<name>`; a webhook's signing secret lives
//! in the sealed `secrets` table, never beside the URL.

use base64::Engine;
use baton_store::{Ledger, tables::SECRETS};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::StageError;
use crate::records::get_json;

pub const TABLE: &str = "event_destinations";

/// Where one destination sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// A queue URL; the event is the message body.
    Sqs { queue_url: String },
    /// A bus name or ARN; the event is the entry's detail.
    Eventbridge { bus: String },
    /// An HTTPS URL; the event is POSTed, signed (see [`crate::webhook`]).
    Webhook { url: String },
}

impl Target {
    /// Refuses what can never work or would point back into the relay: a webhook that is
    /// not HTTPS or carries credentials, a queue of our own (`<own_prefix>-...`).
    pub fn check(&self, own_prefix: &str) -> Result<(), String> {
        match self {
            Target::Webhook { url } => {
                let u = Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
                if u.scheme() != "https" {
                    return Err(format!("{url:?}: a webhook must be https://"));
                }
                if !u.username().is_empty() || u.password().is_some() {
                    return Err(format!("{url:?}: no credentials in the URL"));
                }
                if u.host_str().is_none_or(str::is_empty) {
                    return Err(format!("{url:?}: no host"));
                }
                Ok(())
            }
            Target::Sqs { queue_url } => {
                let u = Url::parse(queue_url).map_err(|e| format!("{queue_url:?}: {e}"))?;
                let name = u
                    .path_segments()
                    .and_then(|mut s| s.next_back())
                    .unwrap_or_default();
                // Queue names are letters, digits, '-' and '_' (percent-escapes would hide
                // a name from the check below).
                let plain = name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !matches!(u.scheme(), "https" | "http") || name.is_empty() || !plain {
                    return Err(format!(
                        "{queue_url:?}: not an SQS standard queue URL (FIFO queues are not \
                         supported)"
                    ));
                }
                if !own_prefix.is_empty() && name.starts_with(&format!("{own_prefix}-")) {
                    return Err(format!("{queue_url:?}: one of the relay's own queues"));
                }
                Ok(())
            }
            Target::Eventbridge { bus } => {
                let ok = !bus.is_empty()
                    && bus.len() <= 1600
                    && bus
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/._:-".contains(&b));
                ok.then_some(())
                    .ok_or_else(|| format!("{bus:?}: not an event bus name or ARN"))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Sqs { queue_url } => format!("sqs {queue_url}"),
            Target::Eventbridge { bus } => format!("eventbridge {bus}"),
            Target::Webhook { url } => format!("webhook {url}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub tenant: String,
    pub name: String,
    pub target: Target,
    pub created_at: i64,
    /// A webhook's secret is stored under this id: an `add` that loses to an existing
    /// destination of the same name leaves an unused secret, never replaces the live one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_id: String,
}

/// A destination name: letters, digits, `-` and `_`, at most 64.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(())
        .ok_or_else(|| format!("{name:?}: use letters, digits, '-' and '_' (at most 64)"))
}

fn key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

fn secret_key(d: &Destination) -> String {
    format!("webhook/{}/{}/{}", d.tenant, d.name, d.secret_id)
}

/// Adds `destination`; a webhook gets a new signing secret, returned once. `Ok(None)` for
/// other kinds; an error if the name is taken.
pub async fn add(
    ledger: &dyn Ledger,
    destination: &Destination,
    own_prefix: &str,
) -> Result<Option<String>, StageError> {
    check_name(&destination.name).map_err(StageError::Permanent)?;
    check_name(&destination.tenant).map_err(StageError::Permanent)?;
    destination
        .target
        .check(own_prefix)
        .map_err(StageError::Permanent)?;
    let mut destination = destination.clone();
    let secret = match destination.target {
        Target::Webhook { .. } => {
            destination.secret_id = crate::hex(&random::<8>()?);
            Some(format!(
                "whsec_{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>()?)
            ))
        }
        _ => None,
    };
    // The secret first: a destination is never visible without the secret it signs with.
    if let Some(secret) = &secret {
        ledger
            .put(SECRETS, &secret_key(&destination), secret.as_bytes())
            .await?;
    }
    let destination = &destination;
    let bytes = serde_json::to_vec(destination)
        .map_err(|e| StageError::Permanent(format!("destination: {e}")))?;
    let k = key(&destination.tenant, &destination.name);
    if !ledger.put_if_absent(TABLE, &k, &bytes).await? {
        return Err(StageError::Permanent(format!(
            "tenant {} already has a destination {}: remove it first",
            destination.tenant, destination.name
        )));
    }
    Ok(secret)
}

/// Removes a destination and its secret; false if there was none.
pub async fn remove(ledger: &dyn Ledger, tenant: &str, name: &str) -> Result<bool, StageError> {
    let Some(destination) = get(ledger, tenant, name).await? else {
        return Ok(false);
    };
    ledger.delete(TABLE, &key(tenant, name)).await?;
    if !destination.secret_id.is_empty() {
        ledger.delete(SECRETS, &secret_key(&destination)).await?;
    }
    Ok(true)
}

pub async fn get(
    ledger: &dyn Ledger,
    tenant: &str,
    name: &str,
) -> Result<Option<Destination>, StageError> {
    get_json(ledger, TABLE, &key(tenant, name)).await
}

/// A tenant's destinations (everyone's when `None`), by tenant and name.
pub async fn list(
    ledger: &dyn Ledger,
    tenant: Option<&str>,
) -> Result<Vec<Destination>, StageError> {
    let prefix = tenant.map(|t| format!("{t}/")).unwrap_or_default();
    let mut out = Vec::new();
    for (k, bytes) in ledger.scan(TABLE, &prefix).await? {
        out.push(
            serde_json::from_slice::<Destination>(&bytes)
                .map_err(|e| StageError::Permanent(format!("{TABLE}/{k}: {e}")))?,
        );
    }
    out.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
    Ok(out)
}

/// A webhook's signing secret.
pub async fn secret(ledger: &dyn Ledger, destination: &Destination) -> Result<String, StageError> {
    let k = secret_key(destination);
    let bytes = ledger
        .get(SECRETS, &k)
        .await?
        .ok_or_else(|| StageError::Permanent(format!("no signing secret {SECRETS}/{k}")))?;
    String::from_utf8(bytes).map_err(|_| StageError::Permanent(format!("{SECRETS}/{k}: not text")))
}

fn random<const N: usize>() -> Result<[u8; N], StageError> {
    let mut bytes = [0u8; N];
    baton_store::random_bytes(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: Target) -> Result<(), String> {
        target.check("baton")
    }

    #[test]
    fn webhooks_are_https_without_credentials() {
        let hook = |url: &str| check(Target::Webhook { url: url.into() });
        assert!(hook("https://hooks.example.com/baton").is_ok());
        assert!(hook("http://hooks.example.com/baton").is_err());
        assert!(hook("https://user:pw@hooks.example.com/").is_err());
        assert!(hook("file:///etc/passwd").is_err());
        assert!(hook("not a url").is_err());
    }

    #[test]
    fn a_queue_of_the_relay_itself_is_refused() {
        let queue = |url: &str| {
            check(Target::Sqs {
                queue_url: url.into(),
            })
        };
        assert!(queue("https://sqs.eu-west-1.amazonaws.com/123456789012/acme-events").is_ok());
        assert!(queue("https://sqs.eu-west-1.amazonaws.com/123456789012/baton-intake").is_err());
        assert!(queue("https://sqs.eu-west-1.amazonaws.com/").is_err());
        assert!(queue("https://sqs.eu-west-1.amazonaws.com/123456789012/baton%2Dintake").is_err());
        assert!(queue("https://sqs.eu-west-1.amazonaws.com/123456789012/acme.fifo").is_err());
    }

    #[test]
    fn names_and_buses_are_plain() {
        assert!(check_name("hooks_1-a").is_ok());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
        let bus = |b: &str| check(Target::Eventbridge { bus: b.into() });
        assert!(bus("arn:aws:events:eu-west-1:123456789012:event-bus/acme").is_ok());
        assert!(bus("acme bus").is_err());
    }

    #[tokio::test]
    async fn a_webhook_gets_a_secret_kept_apart_and_removed_with_it() {
        let ledger = baton_store::memory::MemoryLedger::default();
        let d = Destination {
            tenant: "acme".into(),
            name: "hooks".into(),
            target: Target::Webhook {
                url: "https://hooks.example.com/".into(),
            },
            created_at: 1,
            secret_id: String::new(),
        };
        let made = add(&ledger, &d, "baton")
            .await
            .expect("add")
            .expect("secret");
        assert!(made.starts_with("whsec_") && made.len() > 40);
        let stored = get(&ledger, "acme", "hooks")
            .await
            .expect("get")
            .expect("row");
        assert_eq!(secret(&ledger, &stored).await.expect("kept"), made);
        let row = ledger
            .get(TABLE, "acme/hooks")
            .await
            .expect("get")
            .expect("row");
        assert!(!String::from_utf8_lossy(&row).contains(&made));
        assert!(
            add(&ledger, &d, "baton").await.is_err(),
            "a name is taken once"
        );
        assert_eq!(
            secret(&ledger, &stored).await.expect("kept"),
            made,
            "a refused add must not replace the live secret"
        );
        assert!(remove(&ledger, "acme", "hooks").await.expect("remove"));
        assert!(secret(&ledger, &stored).await.is_err());
        assert!(list(&ledger, Some("acme")).await.expect("list").is_empty());
    }
}
