//! Outbound SMTP: MX resolution (RFC 5321 §5.1, RFC 7505), routes, and a client that makes one
//! transaction per destination with every pending recipient, reporting per-recipient outcomes.
//!
//! `client` runs the session (EHLO, STARTTLS, AUTH, the transaction, pooling); `wire` is its
//! only way to the socket (the one command-line writer, the body writer, the bounded reply
//! reader); `dot` stuffs the body as it streams; `auth` holds credentials and the exchange;
//! `deadline` limits every network step to the time a scope has left.

mod auth;
mod client;
pub mod deadline;
mod dot;
mod mx;
mod tls;
mod wire;

pub use auth::Credentials;
pub use client::{ClientConfig, ConnectionPool, Message, Outcome, RcptResult, RcptSpec, deliver};
pub use mx::{HickoryMxResolver, LiteralResolver, MxHost, MxResolver, ResolveError, TxtResolver};
pub use tls::{opportunistic_tls, verified_tls};

/// Like a Postfix transport map entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// "example.com", "*.example.com" or "*".
    pub pattern: String,
    /// A smarthost (host, port) instead of the MX lookup.
    pub target: Option<(String, u16)>,
    /// Keep the mail in the data dir instead of sending it (`target = "capture"`).
    pub capture: bool,
    /// Never send in plaintext: a host without STARTTLS means "try later".
    pub require_tls: bool,
    /// AUTH to the target, only ever over TLS (credentials imply `require_tls`).
    pub auth: Option<Credentials>,
    /// Authenticate the target's certificate with this config (routes with credentials);
    /// `None`: opportunistic TLS.
    pub verify: Option<VerifiedTls>,
}

/// A TLS client config that verifies the server (see [`verified_tls`]).
#[derive(Clone)]
pub struct VerifiedTls(pub std::sync::Arc<rustls::ClientConfig>);

impl std::fmt::Debug for VerifiedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifiedTls")
    }
}

impl PartialEq for VerifiedTls {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for VerifiedTls {}

/// The most specific route for `domain`: exact, then the longest `*.suffix`, then `*`.
pub fn route_for<'a>(routes: &'a [Route], domain: &str) -> Option<&'a Route> {
    let domain = domain.to_ascii_lowercase();
    if let Some(r) = routes
        .iter()
        .find(|r| r.pattern.eq_ignore_ascii_case(&domain))
    {
        return Some(r);
    }
    routes
        .iter()
        .filter_map(|r| {
            let suffix = r.pattern.strip_prefix("*.")?;
            let suffix = suffix.to_ascii_lowercase();
            domain
                .ends_with(&format!(".{suffix}"))
                .then_some((suffix.len(), r))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, r)| r)
        .or_else(|| routes.iter().find(|r| r.pattern == "*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(p: &str) -> Route {
        Route {
            pattern: p.into(),
            capture: false,
            target: None,
            require_tls: false,
            auth: None,
            verify: None,
        }
    }

    #[test]
    fn most_specific_route_wins() {
        let routes = [
            route("*"),
            route("*.example.com"),
            route("*.eu.example.com"),
            route("example.com"),
        ];
        assert_eq!(
            route_for(&routes, "Example.com").map(|r| r.pattern.as_str()),
            Some("example.com")
        );
        assert_eq!(
            route_for(&routes, "mx.eu.example.com").map(|r| r.pattern.as_str()),
            Some("*.eu.example.com")
        );
        assert_eq!(
            route_for(&routes, "a.example.com").map(|r| r.pattern.as_str()),
            Some("*.example.com")
        );
        assert_eq!(
            route_for(&routes, "other.org").map(|r| r.pattern.as_str()),
            Some("*")
        );
        assert_eq!(route_for(&routes[1..], "other.org"), None);
    }
}
