//! What the parser returns; serialises to the JSON that `baton bounce parse` prints.

use serde::{Deserialize, Serialize};

/// One parsed message: `{"file", "is_bounce", "kind", "recipients"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Where the message came from; the parser leaves it `None`, the caller fills it in.
    pub file: Option<String>,
    /// True when the message reports that delivery failed or is delayed (a DSN of any format),
    /// even if no recipient could be read from it. False for complaints and auto-replies.
    pub is_bounce: bool,
    pub kind: Kind,
    /// Failed or delayed recipients (DSN), the complaining recipient (ARF) or the replying
    /// address (auto-reply). At most [`crate::MAX_RECIPIENTS`].
    pub recipients: Vec<Recipient>,
}

/// What kind of message this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A delivery status notification: RFC 3464 or a non-standard bounce.
    Dsn,
    /// An RFC 5965 abuse/feedback report (complaint).
    Arf,
    /// An automatic reply (vacation, out of office): recorded, not a bounce.
    Autoreply,
    /// None of the above.
    Unknown,
}

/// One recipient of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    pub address: String,
    /// The DSN action; inferred for non-standard bounces; `null` for auto-replies.
    pub action: Option<Action>,
    /// Enhanced status code `C.S.D` (RFC 3463), as reported or found in the diagnostic.
    pub status: Option<String>,
    /// The SMTP reply code, from the diagnostic.
    pub reply_code: Option<u16>,
    /// The remote server's words (Diagnostic-Code without its type, or the legacy text).
    pub diagnostic: Option<String>,
    /// The remote MTA's name (Remote-MTA without its type).
    pub remote_mta: Option<String>,
    pub class: Class,
    pub reason: Reason,
}

/// RFC 3464 action, plus `complained` for ARF reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
    Complained,
}

/// Hard: the address should not be tried again. Soft: a later attempt may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Hard,
    Soft,
}

/// Why delivery failed: the taxonomy the rules map status codes and diagnostics onto.
///
/// | reason | meaning | typical codes |
/// |---|---|---|
/// | `user_unknown` | the mailbox does not exist | 5.1.1, 5.1.0, 550 "no such user" |
/// | `mailbox_disabled` | the mailbox exists but is disabled, closed or moved | 5.2.1, 5.1.6 |
/// | `mailbox_full` | over quota | 5.2.2, 4.2.2 |
/// | `message_too_large` | too big for the recipient | 5.3.4, 5.2.3 |
/// | `policy_block` | refused by local policy (relaying denied, sender not allowed, auth/DMARC) | 5.7.1, 5.7.26 |
/// | `spam_block` | refused as spam | 5.7.1 "spam" |
/// | `content_rejected` | refused for its content: virus, attachment, media type | 5.6.x, 5.7.1 "virus" |
/// | `reputation_blocklisted` | the sending IP or domain is on a blocklist or has bad reputation | 5.7.1 "blocked using", 5.7.606 |
/// | `rate_limited` | too many messages or connections | 4.7.0 "rate", 421 |
/// | `dns_failure` | the recipient domain does not resolve or has no MX | 5.1.2, 5.4.4 |
/// | `routing_error` | no route: mail loop, relaying refused by the destination, bad routing | 5.4.x, 5.4.6 |
/// | `network_error` | could not connect or the connection broke | 4.4.1, 4.4.2 |
/// | `system_error` | the receiving system failed (disk, config, protocol) | 4.3.x, 5.3.x |
/// | `expired` | gave up after retrying | 4.4.7, 5.4.7 |
/// | `auto_reply` | an automatic reply, not a bounce | - |
/// | `complaint` | the recipient reported the message as abuse (ARF) | - |
/// | `unknown` | nothing matched | - |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    UserUnknown,
    MailboxDisabled,
    MailboxFull,
    MessageTooLarge,
    PolicyBlock,
    SpamBlock,
    ContentRejected,
    ReputationBlocklisted,
    RateLimited,
    DnsFailure,
    RoutingError,
    NetworkError,
    SystemError,
    Expired,
    AutoReply,
    Complaint,
    Unknown,
}
