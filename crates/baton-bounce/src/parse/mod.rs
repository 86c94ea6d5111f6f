//! From bytes to a [`Report`]: MIME by mail-parser, then the detectors in order of trust.
//!
//! 1. an RFC 5965 feedback report ([`arf`]);
//! 2. an RFC 3464 `message/delivery-status` part ([`dsn`]);
//! 3. a clear auto-reply (X-Autoreply, Precedence, vacation subjects; [`autoreply`]);
//! 4. a non-standard bounce recognised from its text ([`legacy`]);
//! 5. any other `Auto-Submitted` message is an auto-reply; else unknown.

mod arf;
mod autoreply;
mod dsn;
mod legacy;
mod text;

use mail_parser::MessageParser;

use crate::report::{Action, Kind, Recipient, Report};
use crate::rules::Rules;
use crate::{BounceError, MAX_INPUT, MAX_RECIPIENTS, classify};

/// What a detector found about one recipient, before classification.
#[derive(Debug, Clone, Default)]
pub(crate) struct Finding {
    pub address: String,
    pub action: Option<Action>,
    pub status: Option<String>,
    pub reply_code: Option<u16>,
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
    /// A more specific status for classification than the reported one (e.g. the DSN says
    /// 5.0.0 and its diagnostic 5.1.1).
    pub status_hint: Option<String>,
    /// Wider text to classify by when the diagnostic matches no rule.
    pub context: Option<String>,
}

/// A detector's answer.
#[derive(Debug, Default)]
pub(crate) struct Detected {
    pub kind: Option<Kind>,
    pub is_bounce: bool,
    pub findings: Vec<Finding>,
}

/// A parser bound to a rule set. Build once, share freely.
#[derive(Debug, Clone, Default)]
pub struct Parser {
    rules: Rules,
}

impl Parser {
    pub fn new(rules: Rules) -> Parser {
        Parser { rules }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Parses one message. Errors only when the input has no header section at all.
    pub fn parse(&self, raw: &[u8]) -> Result<Report, BounceError> {
        parse_with(&self.rules, raw)
    }
}

/// Parses one message with the default rules.
pub fn parse(raw: &[u8]) -> Result<Report, BounceError> {
    parse_with(Rules::defaults(), raw)
}

fn parse_with(rules: &Rules, raw: &[u8]) -> Result<Report, BounceError> {
    let raw = &raw[..raw.len().min(MAX_INPUT)];
    let message = MessageParser::default()
        .parse(raw)
        .filter(|message| !message.headers().is_empty())
        .ok_or(BounceError::NotAMessage)?;
    let detected = detect(&message);
    let kind = detected.kind.unwrap_or(Kind::Unknown);
    let recipients = detected
        .findings
        .into_iter()
        .take(MAX_RECIPIENTS)
        .map(|finding| recipient(rules, kind, finding))
        .collect();
    Ok(Report {
        file: None,
        is_bounce: detected.is_bounce,
        kind,
        recipients,
    })
}

fn detect(message: &mail_parser::Message<'_>) -> Detected {
    if let Some(found) = arf::detect(message) {
        return found;
    }
    let dsn = dsn::detect(message);
    // Trust a delivery-status part that named recipients, bounced or not.
    if let Some(found) = &dsn
        && (!found.findings.is_empty() || !found.is_bounce)
    {
        return dsn.unwrap_or_default();
    }
    if let Some(found) = autoreply::detect_clear(message) {
        return found;
    }
    let text = text::readable_text(message);
    if let Some(found) = legacy::detect(message, &text, dsn.is_some()) {
        return found;
    }
    if let Some(found) = dsn {
        // A delivery-status part with no recipient we could read.
        return found;
    }
    if let Some(found) = autoreply::detect_any(message) {
        return found;
    }
    Detected::default()
}

fn recipient(rules: &Rules, kind: Kind, finding: Finding) -> Recipient {
    let (class, reason) = match kind {
        Kind::Arf => (crate::Class::Hard, crate::Reason::Complaint),
        Kind::Autoreply => (crate::Class::Soft, crate::Reason::AutoReply),
        Kind::Dsn | Kind::Unknown => {
            let status = finding.status_hint.as_deref().or(finding.status.as_deref());
            let first = classify(
                rules,
                finding.action,
                status,
                finding.reply_code,
                finding.diagnostic.as_deref(),
            );
            match (&first, finding.context.as_deref()) {
                ((_, crate::Reason::Unknown), Some(context)) => classify(
                    rules,
                    finding.action,
                    status,
                    finding.reply_code,
                    Some(context),
                ),
                _ => first,
            }
        }
    };
    Recipient {
        address: finding.address,
        action: finding.action,
        status: finding.status,
        reply_code: finding.reply_code,
        diagnostic: finding.diagnostic,
        remote_mta: finding.remote_mta,
        class,
        reason,
    }
}
