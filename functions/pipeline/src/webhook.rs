//! Webhook calls for event destinations: one HTTPS POST per event, signed so the receiver
//! can tell it came from us and when.
//!
//! Headers: `Baton-Event-Id: <id>` (the same on every retry: receivers dedupe on it) and
//! `Baton-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<id>.<body>")>`, the
//! key being the `whsec_...` secret as printed; the id is signed so that a captured call
//! cannot be replayed under a new id past the receiver's deduplication. Receivers should refuse a `t` more than a few
//! minutes old, which stops replays. Only 2xx counts as delivered; no redirects are followed.
//!
//! A webhook URL is chosen by whoever configures destinations, so it must not become a way
//! into the relay's own network: unless `events.webhook_allow_private`, names that resolve
//! only to loopback, private, link-local or otherwise non-public addresses are refused, and
//! the addresses checked are the ones connected to (no second lookup to rebind).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use baton_config::Events;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::StageError;

/// `t=<timestamp>,v1=<hex>` for event `id` with `body`, sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: i64, id: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(format!("{timestamp}.{id}.").as_bytes());
    ctx.update(body);
    let tag = ctx.sign();
    format!("t={timestamp},v1={}", crate::hex(tag.as_ref()))
}

/// Addresses a webhook may connect to: public unicast only.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(a),
        },
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    !(a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o0 == 0
        || o0 >= 240
        || (o0 == 100 && (64..128).contains(&o1)) // shared address space (CGNAT)
        || (o0 == 192 && o1 == 0 && o2 == 0) // IETF protocol assignments
        || (o0 == 198 && (18..20).contains(&o1))) // benchmarking
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: would reach IPv4 behind it
        || s[0] == 0x2002 // 6to4: an IPv4 address inside
        || (s[0] == 0x2001 && s[1] == 0) // Teredo: likewise
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated, still routed privately)
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only
        || s[..4] == [0, 0, 0, 0] // ::/64: IPv4-compatible, -mapped and -translated forms
        || a.to_ipv4().is_some())
}

/// Resolves with the system resolver and keeps only addresses a webhook may reach.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Sends signed webhook calls.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookClient {
    pub fn new(config: &Events) -> Result<WebhookClient, StageError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .connect_timeout(config.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve and connect for us, past the
            // address check below.
            .no_proxy()
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
            .https_only(true);
        if !config.webhook_allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        if let Some(path) = &config.webhook_ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                StageError::Permanent(format!("events.webhook_ca_file {}: {e}", path.display()))
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                StageError::Permanent(format!("events.webhook_ca_file {}: {e}", path.display()))
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| StageError::Permanent(format!("webhook client: {e}")))?;
        Ok(WebhookClient {
            http,
            allow_private: config.webhook_allow_private,
        })
    }

    /// POSTs `body`; Ok only for a 2xx answer. Failures are transient: the queue retries
    /// with backoff and dead-letters after its limit.
    pub async fn post(
        &self,
        url: &str,
        secret: &str,
        event_id: &str,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), StageError> {
        let parsed = Url::parse(url)
            .map_err(|e| StageError::Permanent(format!("webhook URL does not parse: {e}")))?;
        // Paths and queries often carry a token of the receiver's: logs get the origin only.
        let url = parsed.origin().ascii_serialization();
        // An address in the URL is not looked up, so the resolver cannot check it.
        if !self.allow_private
            && let Some(ip) = literal_ip(&parsed)
            && !is_public(ip)
        {
            return Err(StageError::Permanent(format!(
                "webhook {url}: {ip} is not a public address"
            )));
        }
        let response = self
            .http
            .post(parsed)
            .header("content-type", "application/json")
            .header("baton-event-id", event_id)
            .header(
                "baton-signature",
                signature(secret, now_secs, event_id, body),
            )
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| {
                StageError::Transient(format!("webhook {url}: {}", causes(&e.without_url())))
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(StageError::Transient(format!(
                "webhook {url}: HTTP {status}"
            )))
        }
    }
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        // Same inputs as `printf '1700000000.e1.{"a":1}' | openssl dgst -sha256 -hmac whsec_test`.
        assert_eq!(
            signature("whsec_test", 1_700_000_000, "e1", br#"{"a":1}"#),
            "t=1700000000,v1=8cb5c32b8d434072b6206b1faf7ed951f064edb0aacf124b57d751cdf11d1215"
        );
        let base = signature("whsec_test", 1_700_000_000, "e1", br#"{"a":1}"#);
        assert_ne!(
            signature("whsec_test", 1_700_000_001, "e1", br#"{"a":1}"#),
            base
        );
        assert_ne!(
            signature("whsec_test", 1_700_000_000, "e2", br#"{"a":1}"#),
            base
        );
    }

    #[test]
    fn only_public_addresses_are_reachable() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:0:7f00:1",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
            "fec0::1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["93.184.216.34", "2606:2800:220:1::1", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }
}
