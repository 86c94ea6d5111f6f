//! The SMTP envelope of an accepted message: everything the pipeline needs besides the body.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{Domain, EnvId, Mailbox, OriginalRecipient, QueueId};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub String);

impl TenantId {
    /// A new tenant's name: 1 to 64 ASCII letters, digits, `.`, `_` or `-`. Ledger keys are
    /// `<tenant>/...` and a tenant's records are listed by that prefix, so a `/` would let
    /// one tenant's name reach into another's records (`acme/x` under `acme`).
    pub fn parse(name: &str) -> Result<TenantId, String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(TenantId(name.to_string()))
        } else {
            Err(format!(
                "tenant {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
            ))
        }
    }
}

#[cfg(test)]
mod tenant_tests {
    use super::TenantId;

    #[test]
    fn tenant_names_cannot_extend_or_reach_into_another_tenants_keys() {
        for good in ["acme", "acme-eu.2", "A_b"] {
            assert!(TenantId::parse(good).is_ok(), "{good}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "acme/x",
            "acme\\x",
            "acme x",
            "acme\n",
            "acmé",
            long.as_str(),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
    }
}

/// Who a session authenticated as, and which sending domains that tenant owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub tenant: TenantId,
    pub domains: Vec<Domain>,
}

/// DSN RET (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ret {
    Full,
    Hdrs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyType {
    #[default]
    #[serde(rename = "7bit")]
    SevenBit,
    #[serde(rename = "8bitmime")]
    EightBitMime,
}

/// DSN NOTIFY (RFC 3461 §4.1). `never` excludes the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NotifyOn {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
    pub never: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: Mailbox,
    /// `None` when the client gave no NOTIFY (the default behaviour then applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyOn>,
    /// ORCPT, decoded, with its address type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<OriginalRecipient>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub queue_id: QueueId,
    /// `None` is the null reverse path `<>`.
    pub mail_from: Option<Mailbox>,
    pub recipients: Vec<Recipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<EnvId>,
    #[serde(default)]
    pub body: BodyType,
    #[serde(default)]
    pub smtputf8: bool,
    pub client_ip: IpAddr,
    pub helo: String,
    pub tls: bool,
    /// Body size in octets as stored, Received header included.
    pub size: u64,
    /// Unix seconds.
    pub received_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_json() {
        let env = Envelope {
            queue_id: QueueId::generate(),
            mail_from: None,
            recipients: vec![Recipient {
                address: Mailbox::parse("b@example.org").expect("mailbox"),
                notify: Some(NotifyOn {
                    failure: true,
                    ..NotifyOn::default()
                }),
                orcpt: Some(OriginalRecipient::from_param("rfc822;b@example.org").expect("orcpt")),
            }],
            tenant: Some(TenantId("acme".into())),
            auth_user: Some("alice".into()),
            ret: Some(Ret::Hdrs),
            envid: Some(EnvId::from_xtext("abc").expect("envid")),
            body: BodyType::EightBitMime,
            smtputf8: false,
            client_ip: "127.0.0.1".parse().expect("ip"),
            helo: "client.example".into(),
            tls: true,
            size: 42,
            received_at: 1_700_000_000,
        };
        let json = serde_json::to_string(&env).expect("serialize");
        let back: Envelope = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, env);
    }
}
