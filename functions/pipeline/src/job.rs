//! What travels on the stage queues after intake.

use baton_domain::Envelope;
use serde::{Deserialize, Serialize};

use crate::StageError;

/// A message on its way through sign and deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub envelope: Envelope,
    /// Header fields to put before the stored body, CRLF-terminated: DKIM signatures first,
    /// then headers policy added (Date, Message-ID). The stored body is never rewritten.
    #[serde(default)]
    pub prefix: String,
    /// Recipients still to deliver; empty means all of the envelope's.
    #[serde(default)]
    pub pending: Vec<String>,
    /// Delivery attempts made so far.
    #[serde(default)]
    pub attempt: u32,
    /// A delay notification was already sent.
    #[serde(default)]
    pub delay_notified: bool,
}

impl Job {
    pub fn new(envelope: Envelope, prefix: String) -> Self {
        Job {
            envelope,
            prefix,
            pending: Vec::new(),
            attempt: 0,
            delay_notified: false,
        }
    }

    pub fn pending_recipients(&self) -> Vec<String> {
        if self.pending.is_empty() {
            self.envelope
                .recipients
                .iter()
                .map(|r| r.address.to_string())
                .collect()
        } else {
            self.pending.clone()
        }
    }
}

/// Who wrote a message. Only the relay's own code (`bounce.rs`) says [`Origin::Relay`]; a
/// record without the field, which is everything the gateway queues, is the client's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    Client,
    /// A DSN or delay notice: signed with the key of the relay's hostname (`sign.rs`).
    Relay,
}

impl Origin {
    pub fn is_client(&self) -> bool {
        *self == Origin::Client
    }
}

/// A queue record (an [`Envelope`] on intake, a [`Job`] on sign) with its [`Origin`] beside
/// it: the record's own fields plus `"origin": "relay"` for mail the relay wrote. Nothing a
/// client sends can add the field: the gateway serializes an `Envelope`, which has no such
/// key and escapes every string it holds. Client records are written without it, so they
/// read the same as before and older readers ignore it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithOrigin<T> {
    #[serde(flatten)]
    pub record: T,
    #[serde(default, skip_serializing_if = "Origin::is_client")]
    pub origin: Origin,
}

pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, StageError> {
    serde_json::from_slice(body)
        .map_err(|e| StageError::Permanent(format!("undecodable queue record: {e}")))
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StageError> {
    serde_json::to_vec(value).map_err(|e| StageError::Permanent(format!("cannot encode: {e}")))
}

/// Why a recipient will not get the message (or not yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub recipient: String,
    pub code: u16,
    pub enhanced: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    #[serde(default, skip_serializing_if = "FailureSource::is_delivery")]
    pub source: FailureSource,
}

/// Who decided a failure. Only a delivery failure says something about the recipient
/// (and may suppress it); a policy refusal is about the message or its sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureSource {
    #[default]
    Delivery,
    Policy,
}

impl FailureSource {
    fn is_delivery(&self) -> bool {
        *self == FailureSource::Delivery
    }
}

impl Failure {
    /// Permanent failures (5xx) are hard bounces; delays and expiries of 4xx are soft.
    pub fn is_hard(&self) -> bool {
        self.code >= 500 && !self.enhanced.starts_with("4.")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BounceAction {
    /// RFC 3464 Action: failed.
    Failed,
    /// RFC 3464 Action: delayed (still trying).
    Delayed,
    /// Failed after we delivered, as a remote MTA reported later by mail to the return path
    /// (`inbound` has already recorded it): only the DSN the sender would have had.
    Reported,
}

/// Work for the bounce stage: records, suppression, and a DSN to the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceJob {
    pub envelope: Envelope,
    pub action: BounceAction,
    pub failures: Vec<Failure>,
}

/// Hands failures (or delays) of `envelope` to the bounce stage.
pub async fn send_bounce(
    ports: &crate::Ports,
    envelope: &Envelope,
    action: BounceAction,
    failures: Vec<Failure>,
    attributes: &std::collections::BTreeMap<String, String>,
) -> Result<(), StageError> {
    let job = BounceJob {
        envelope: envelope.clone(),
        action,
        failures,
    };
    ports
        .bounce
        .send(
            &encode(&job)?,
            attributes.clone(),
            std::time::Duration::ZERO,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_domain::{Mailbox, QueueId, Recipient};

    fn envelope(helo: &str) -> Envelope {
        Envelope {
            queue_id: QueueId::generate(),
            mail_from: Some(Mailbox::parse("a@acme.test").expect("mailbox")),
            recipients: vec![Recipient {
                address: Mailbox::parse("b@example.org").expect("mailbox"),
                notify: None,
                orcpt: None,
            }],
            tenant: None,
            auth_user: None,
            ret: None,
            envid: None,
            body: Default::default(),
            smtputf8: false,
            client_ip: "192.0.2.1".parse().expect("ip"),
            helo: helo.into(),
            tls: false,
            size: 1,
            received_at: 1_700_000_000,
        }
    }

    #[test]
    fn a_bare_record_is_the_clients_and_relay_mail_says_so() {
        let env = envelope("client.example");
        let bare = encode(&env).expect("json");
        let read: WithOrigin<Envelope> = decode(&bare).expect("decode");
        assert_eq!(read.origin, Origin::Client);
        assert_eq!(read.record, env);
        // A client record is written exactly as before.
        let client = WithOrigin {
            record: env.clone(),
            origin: Origin::Client,
        };
        assert_eq!(encode(&client).expect("json"), bare);

        let relay = WithOrigin {
            record: Job::new(env.clone(), "X: y\r\n".into()),
            origin: Origin::Relay,
        };
        let json = encode(&relay).expect("json");
        assert_eq!(decode::<WithOrigin<Job>>(&json).expect("decode"), relay);
        // Readers of the bare type ignore the field.
        assert_eq!(decode::<Job>(&json).expect("decode"), relay.record);
    }

    #[test]
    fn no_client_string_can_smuggle_the_relay_origin() {
        // HELO is the freest thing a client hands the gateway; whatever it holds stays a string.
        let env = envelope(r#"x","origin":"relay","y":"#);
        let read: WithOrigin<Envelope> = decode(&encode(&env).expect("json")).expect("decode");
        assert_eq!(read.origin, Origin::Client);
        assert_eq!(read.record.helo, env.helo);
    }
}
