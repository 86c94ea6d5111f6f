//! RFC 5321 paths (`<local@domain>`), parsed strictly enough to see the tricks that turn
//! a relay into an open relay: source routes, `%` and `!` routing, quoted `@`, IP literals.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Longest path RFC 5321 §4.5.3.1.3 allows, brackets excluded.
const MAX_PATH: usize = 256;
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("path must be enclosed in <>")]
    NotBracketed,
    #[error("path too long")]
    TooLong,
    #[error("empty local part")]
    EmptyLocal,
    #[error("malformed local part")]
    BadLocal,
    #[error("malformed domain")]
    BadDomain,
    #[error("missing @domain")]
    MissingDomain,
    #[error("malformed source route")]
    BadRoute,
    #[error("non-ASCII address requires SMTPUTF8")]
    NeedsUtf8,
}

/// A domain, lower-cased; either a host name or an address literal like `[192.0.2.1]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Domain {
    Name(String),
    Literal(IpAddr),
}

impl Domain {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(AddressError::BadDomain)?;
            let ip = match inner.get(..5) {
                Some(p) if p.eq_ignore_ascii_case("IPv6:") => inner[5..]
                    .parse::<std::net::Ipv6Addr>()
                    .map(IpAddr::V6)
                    .map_err(|_| AddressError::BadDomain)?,
                _ => inner
                    .parse::<std::net::Ipv4Addr>()
                    .map(IpAddr::V4)
                    .map_err(|_| AddressError::BadDomain)?,
            };
            return Ok(Domain::Literal(ip));
        }
        // Checked as stored: lower-casing can lengthen a name (`Ⱥ` is 2 octets, `ⱥ` 3), and
        // a stored name that no longer parses makes its envelope a poison queue record.
        let name = s.strip_suffix('.').unwrap_or(s).to_lowercase();
        if name.is_empty() || name.len() > MAX_DOMAIN {
            return Err(AddressError::BadDomain);
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || is_utf8_text(c));
            if !ok {
                return Err(AddressError::BadDomain);
            }
        }
        Ok(Domain::Name(name))
    }

    pub fn is_literal(&self) -> bool {
        matches!(self, Domain::Literal(_))
    }

    /// The host name, if this is not an address literal.
    pub fn name(&self) -> Option<&str> {
        match self {
            Domain::Name(n) => Some(n),
            Domain::Literal(_) => None,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(n),
            Domain::Literal(IpAddr::V4(ip)) => write!(f, "[{ip}]"),
            Domain::Literal(IpAddr::V6(ip)) => write!(f, "[IPv6:{ip}]"),
        }
    }
}

impl TryFrom<String> for Domain {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Domain::parse(&s)
    }
}

impl From<Domain> for String {
    fn from(d: Domain) -> String {
        d.to_string()
    }
}

/// `local@domain`. The local part is kept exactly as sent (quotes included): a relay must
/// never rewrite it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mailbox {
    local: String,
    domain: Domain,
}

impl Mailbox {
    /// Parses `local@domain` (no brackets, no route).
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let (local, domain) = split_mailbox(s)?;
        validate_local(local)?;
        Ok(Mailbox {
            local: local.to_string(),
            domain: Domain::parse(domain)?,
        })
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// True when the local part itself routes mail elsewhere: `a%b@c`, `b!a@c`, `"a@b"@c`.
    /// RFC 5321 treats these as the final host's business; a relay that honours them for
    /// untrusted clients is an open relay.
    pub fn has_routing_local_part(&self) -> bool {
        self.local.contains(['%', '!', '@'])
    }

    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.to_string().is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl TryFrom<String> for Mailbox {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Mailbox::parse(&s)
    }
}

impl From<Mailbox> for String {
    fn from(m: Mailbox) -> String {
        m.to_string()
    }
}

/// A parsed `<...>` path from MAIL FROM or RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// `None` for the null path `<>`.
    pub mailbox: Option<Mailbox>,
    /// The client sent an RFC 821 source route (`<@a,@b:user@c>`). Parsed, then ignored as
    /// RFC 5321 §C asks, but recorded so policy can refuse it.
    pub had_source_route: bool,
}

impl Path {
    /// Parses a bracketed path. `utf8` says whether SMTPUTF8 was given.
    pub fn parse(raw: &str, utf8: bool) -> Result<Self, AddressError> {
        let inner = raw
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix('>'))
            .ok_or(AddressError::NotBracketed)?;
        if inner.len() > MAX_PATH {
            return Err(AddressError::TooLong);
        }
        if !utf8 && !inner.is_ascii() {
            return Err(AddressError::NeedsUtf8);
        }
        if inner.is_empty() {
            return Ok(Path {
                mailbox: None,
                had_source_route: false,
            });
        }
        let (mailbox, had_source_route) = match inner.strip_prefix('@') {
            Some(route) => {
                let (hops, mailbox) = route.split_once(':').ok_or(AddressError::BadRoute)?;
                for hop in hops.split(",@") {
                    Domain::parse(hop).map_err(|_| AddressError::BadRoute)?;
                }
                (mailbox, true)
            }
            None => (inner, false),
        };
        Ok(Path {
            mailbox: Some(Mailbox::parse(mailbox)?),
            had_source_route,
        })
    }
}

/// The characters of `s` that stand outside quoted strings, with their byte offsets.
fn unquoted(s: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut in_quote = false;
    let mut escaped = false;
    s.char_indices().filter(move |&(_, c)| {
        if escaped {
            escaped = false;
            return false;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            _ => return !in_quote,
        }
        false
    })
}

/// Splits at the `@` that is outside any quoted string; the last such `@` separates the domain.
fn split_mailbox(s: &str) -> Result<(&str, &str), AddressError> {
    let at = unquoted(s)
        .filter(|&(_, c)| c == '@')
        .last()
        .map(|(i, _)| i)
        .ok_or(AddressError::MissingDomain)?;
    Ok((&s[..at], &s[at + 1..]))
}

/// Splits a command argument that starts with a bracketed path (`<...> PARAMS`) into the
/// path, brackets included, and the rest. A `>` inside a quoted local part does not end it.
pub fn split_path_argument(arg: &str) -> Option<(&str, &str)> {
    if !arg.starts_with('<') {
        return None;
    }
    let (end, _) = unquoted(arg).find(|&(_, c)| c == '>')?;
    Some((&arg[..=end], &arg[end + 1..]))
}

/// A non-ASCII character an SMTPUTF8 address may hold: not a C1 control (U+0080..U+009F),
/// which would reach header fields and logs as NEL and friends. Found by fuzz/address.
fn is_utf8_text(c: char) -> bool {
    !c.is_ascii() && !c.is_control()
}

fn validate_local(local: &str) -> Result<(), AddressError> {
    if local.is_empty() {
        return Err(AddressError::EmptyLocal);
    }
    if local.len() > MAX_LOCAL {
        return Err(AddressError::TooLong);
    }
    if let Some(q) = local.strip_prefix('"') {
        let body = q.strip_suffix('"').ok_or(AddressError::BadLocal)?;
        let mut escaped = false;
        for c in body.chars() {
            if escaped {
                if !(' '..='~').contains(&c) {
                    return Err(AddressError::BadLocal);
                }
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' || (c.is_ascii() && !(' '..='~').contains(&c)) || c.is_control() {
                return Err(AddressError::BadLocal);
            }
        }
        return if escaped {
            Err(AddressError::BadLocal)
        } else {
            Ok(())
        };
    }
    // Dot-string: atoms of atext separated by single dots.
    for atom in local.split('.') {
        let ok = !atom.is_empty()
            && atom.chars().all(|c| {
                c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_utf8_text(c)
            });
        if !ok {
            return Err(AddressError::BadLocal);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbox(raw: &str) -> Mailbox {
        Path::parse(raw, false)
            .expect("parses")
            .mailbox
            .expect("not null")
    }

    #[test]
    fn parses_plain_and_null_paths() {
        let m = mbox("<Alice@Example.COM>");
        assert_eq!(m.local(), "Alice");
        assert_eq!(m.domain(), &Domain::Name("example.com".into()));
        assert_eq!(Path::parse("<>", false).expect("null").mailbox, None);
    }

    #[test]
    fn routing_tricks_are_visible() {
        assert!(mbox("<x%evil.test@good.test>").has_routing_local_part());
        assert!(mbox("<evil.test!x@good.test>").has_routing_local_part());
        let quoted = mbox("<\"x@evil.test\"@good.test>");
        assert!(quoted.has_routing_local_part());
        assert_eq!(quoted.domain(), &Domain::Name("good.test".into()));
        let routed = Path::parse("<@good.test,@b.test:x@evil.test>", false).expect("route");
        assert!(routed.had_source_route);
        assert_eq!(
            routed.mailbox.expect("mailbox").domain(),
            &Domain::Name("evil.test".into())
        );
        assert!(mbox("<x@[127.0.0.1]>").domain().is_literal());
        assert!(mbox("<x@[IPv6:::1]>").domain().is_literal());
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "x@y",
            "<x>",
            "<@y>",
            "<x@>",
            "<x..y@z>",
            "<x@-y.z>",
            "<\"x@y>",
            "<x@[1.2.3]>",
            "<a b@c>",
        ] {
            assert!(Path::parse(bad, false).is_err(), "{bad} should fail");
        }
        assert_eq!(
            Path::parse("<jösé@example.com>", false),
            Err(AddressError::NeedsUtf8)
        );
        assert!(Path::parse("<jösé@example.com>", true).is_ok());
    }
}
