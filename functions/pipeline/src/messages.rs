//! One summary record per message (`baton message list`): who sent it to whom, when, and its
//! subject, written by the policy stage; the message's state is derived from its recipients.

use baton_domain::{BodyType, EnvId, Envelope, Mailbox, QueueId, Recipient, TenantId};
use baton_store::Ledger;
use serde::{Deserialize, Serialize};

use crate::StageError;
use crate::records::{RcptState, RcptStatus, get_json, put_json, rcpt_states, scan_json};

pub const TABLE: &str = "messages";

/// Longest subject kept in a summary (characters).
const SUBJECT_MAX: usize = 120;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSummary {
    /// Unix milliseconds of acceptance.
    pub received_at: i64,
    /// The envelope sender, empty for the null sender.
    pub from: String,
    pub recipients: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    pub size: u64,
    /// RFC 3461 parameters the client gave (ENVID; NOTIFY and ORCPT of the recipients that
    /// had them), for a DSN about a bounce that comes back later by mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<EnvId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dsn_params: Vec<Recipient>,
}

impl MessageSummary {
    pub fn new(envelope: &Envelope, subject: Option<&str>) -> Self {
        MessageSummary {
            received_at: envelope.received_at * 1000,
            from: envelope
                .mail_from
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            recipients: envelope
                .recipients
                .iter()
                .map(|r| r.address.to_string())
                .collect(),
            tenant: envelope.tenant.as_ref().map(|t| t.0.clone()),
            subject: subject.map(printable).unwrap_or_default(),
            size: envelope.size,
            envid: envelope.envid.clone(),
            dsn_params: envelope
                .recipients
                .iter()
                .filter(|r| r.notify.is_some() || r.orcpt.is_some())
                .cloned()
                .collect(),
        }
    }

    /// The envelope of message `id` as far as a DSN to its sender about `rcpt` needs it;
    /// `None` for the null sender or mail that is not a tenant's (no backscatter).
    pub fn envelope_for(&self, id: QueueId, rcpt: &str) -> Option<Envelope> {
        let sender = Mailbox::parse(&self.from).ok()?;
        let tenant = TenantId(self.tenant.clone()?);
        let recipient = self
            .dsn_params
            .iter()
            .find(|r| r.address.to_string().eq_ignore_ascii_case(rcpt))
            .cloned()
            .or_else(|| {
                Some(Recipient {
                    address: Mailbox::parse(rcpt).ok()?,
                    notify: None,
                    orcpt: None,
                })
            })?;
        Some(Envelope {
            queue_id: id,
            mail_from: Some(sender),
            recipients: vec![recipient],
            tenant: Some(tenant),
            auth_user: None,
            ret: None,
            envid: self.envid.clone(),
            body: BodyType::SevenBit,
            smtputf8: false,
            client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            helo: String::new(),
            tls: false,
            size: self.size,
            received_at: self.received_at / 1000,
        })
    }
}

/// Characters that change how a terminal shows text without showing themselves: controls
/// (escape sequences) and Unicode format characters (bidi overrides, zero-width ones), which
/// can disguise an address or shift a table's columns.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}')
}

/// A subject fit for a terminal line: nothing invisible (see [`is_invisible`]), whitespace
/// runs folded, and bounded.
pub(crate) fn printable(subject: &str) -> String {
    let mut out = String::new();
    for word in subject.split(|c: char| c.is_whitespace() || is_invisible(c)) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > SUBJECT_MAX {
        out = out.chars().take(SUBJECT_MAX - 1).collect();
        out.push('…');
    }
    out
}

/// Written once per message; a redelivered intake message writes the same record again.
pub async fn put_summary(
    ledger: &dyn Ledger,
    id: &QueueId,
    summary: &MessageSummary,
) -> Result<(), StageError> {
    put_json(ledger, TABLE, &id.to_string(), summary).await
}

pub async fn summary(
    ledger: &dyn Ledger,
    id: &QueueId,
) -> Result<Option<MessageSummary>, StageError> {
    get_json(ledger, TABLE, &id.to_string()).await
}

/// Every summary, oldest first (queue ids sort by arrival).
pub async fn summaries(ledger: &dyn Ledger) -> Result<Vec<(String, MessageSummary)>, StageError> {
    scan_json(ledger, TABLE, "").await
}

/// A message's state as one word, from its recipients' states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MessageState {
    /// Accepted; no recipient has been tried yet.
    Queued,
    /// At least one recipient is waiting for a retry.
    Deferred,
    /// Every recipient was delivered.
    Delivered,
    /// Some recipients were delivered, the others failed or were suppressed.
    Partial,
    /// No recipient was delivered: all failed or were suppressed.
    Failed,
}

impl MessageState {
    pub const ALL: [MessageState; 5] = [
        MessageState::Queued,
        MessageState::Deferred,
        MessageState::Delivered,
        MessageState::Partial,
        MessageState::Failed,
    ];

    pub fn of(states: &[RcptState]) -> Self {
        let has = |s: RcptStatus| states.iter().any(|r| r.status == s);
        if states.is_empty() || has(RcptStatus::Pending) {
            MessageState::Queued
        } else if has(RcptStatus::Deferred) {
            MessageState::Deferred
        } else if !has(RcptStatus::Delivered) {
            MessageState::Failed
        } else if states.iter().all(|r| r.status == RcptStatus::Delivered) {
            MessageState::Delivered
        } else {
            MessageState::Partial
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Deferred => "deferred",
            MessageState::Delivered => "delivered",
            MessageState::Partial => "partial",
            MessageState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for MessageState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageState::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = MessageState::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown state {s:?}: one of {}", names.join(", "))
            })
    }
}

/// A message with its recipients' states.
pub struct Listed {
    pub id: String,
    pub summary: MessageSummary,
    pub state: MessageState,
    pub recipients: Vec<(String, RcptState)>,
}

/// What `baton message list` selects. Address filters match a part of the address, case
/// insensitively ("@example.org" selects a domain).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Received at or after (Unix ms).
    pub since_ms: Option<i64>,
    pub state: Option<MessageState>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The most recent this many (after the other filters).
    pub limit: usize,
}

impl Filter {
    fn keeps_summary(&self, s: &MessageSummary) -> bool {
        let contains = |hay: &str, needle: &str| {
            hay.to_ascii_lowercase()
                .contains(&needle.to_ascii_lowercase())
        };
        self.since_ms.is_none_or(|t| s.received_at >= t)
            && self.from.as_deref().is_none_or(|f| contains(&s.from, f))
            && self
                .to
                .as_deref()
                .is_none_or(|t| s.recipients.iter().any(|r| contains(r, t)))
    }
}

/// The newest `filter.limit` messages that pass the filter, oldest first.
pub async fn list(ledger: &dyn Ledger, filter: &Filter) -> Result<Vec<Listed>, StageError> {
    let mut out = Vec::new();
    // Newest first, so the limit stops the walk (and the per-message recipient reads).
    for (id, summary) in summaries(ledger).await?.into_iter().rev() {
        if out.len() >= filter.limit {
            break;
        }
        // Ids sort by arrival: everything further is older still.
        if filter.since_ms.is_some_and(|t| summary.received_at < t) {
            break;
        }
        if !filter.keeps_summary(&summary) {
            continue;
        }
        let queue_id: QueueId = id
            .parse()
            .map_err(|_| StageError::Permanent(format!("{TABLE}/{id}: not a queue id")))?;
        let recipients = rcpt_states(ledger, &queue_id).await?;
        let states: Vec<RcptState> = recipients.iter().map(|(_, s)| s.clone()).collect();
        let state = MessageState::of(&states);
        if filter.state.is_some_and(|want| want != state) {
            continue;
        }
        out.push(Listed {
            id,
            summary,
            state,
            recipients,
        });
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpt(status: RcptStatus) -> RcptState {
        RcptState {
            status,
            attempts: 1,
            last_reply: String::new(),
            remote_mta: None,
            updated_at: 0,
            lease_until: 0,
        }
    }

    #[test]
    fn a_message_state_sums_up_its_recipients() {
        use MessageState::*;
        use RcptStatus as R;
        let cases: &[(&[RcptStatus], MessageState)] = &[
            (&[], Queued),
            (&[R::Pending, R::Delivered], Queued),
            (&[R::Deferred, R::Delivered], Deferred),
            (&[R::Delivered, R::Delivered], Delivered),
            (&[R::Delivered, R::Failed], Partial),
            (&[R::Delivered, R::Suppressed], Partial),
            (&[R::Failed, R::Suppressed], Failed),
        ];
        for (rcpts, want) in cases {
            let states: Vec<_> = rcpts.iter().map(|s| rcpt(*s)).collect();
            assert_eq!(MessageState::of(&states), *want, "{rcpts:?}");
        }
        assert_eq!("Delivered".parse::<MessageState>(), Ok(Delivered));
        let refusal = "done".parse::<MessageState>().err().unwrap_or_default();
        assert!(refusal.contains("queued"), "{refusal}");
    }

    #[test]
    fn subjects_are_one_bounded_line_without_controls() {
        assert_eq!(
            printable("Hello\r\n\tworld\x1b[31m red"),
            "Hello world [31m red"
        );
        let long = "x".repeat(500);
        assert_eq!(printable(&long).chars().count(), SUBJECT_MAX);
    }
}
