//! RFC 3464 delivery status notifications: the `message/delivery-status` part
//! (and RFC 6533 `message/global-delivery-status`).

use mail_parser::{Message, PartType};

use super::text::{self, enhanced_status, field_address, field_blocks, reply_code, tidy, untyped};
use super::{Detected, Finding};
use crate::MAX_RECIPIENTS;
use crate::report::{Action, Kind};

/// Field blocks read from one delivery-status part (one per-message block + recipients).
const MAX_BLOCKS: usize = MAX_RECIPIENTS + 1;

/// `None` when the message has no delivery-status part. Otherwise a DSN report whose
/// findings are the failed and delayed recipients (possibly none).
pub(crate) fn detect(message: &Message<'_>) -> Option<Detected> {
    detect_at(message, 0)
}

/// Attached messages searched for a delivery-status part (a DSN forwarded as an attachment).
const MAX_DEPTH: usize = 2;

fn detect_at(message: &Message<'_>, depth: usize) -> Option<Detected> {
    let found = detect_here(message);
    if found.is_some() || depth >= MAX_DEPTH {
        return found;
    }
    message.parts.iter().find_map(|part| match &part.body {
        PartType::Message(inner) => detect_at(inner, depth + 1),
        _ => None,
    })
}

fn detect_here(message: &Message<'_>) -> Option<Detected> {
    let mut seen = false;
    let mut any_recipient = false;
    let mut findings = Vec::new();
    for part in &message.parts {
        let Some((ctype, subtype)) = text::content_type(part) else {
            continue;
        };
        if ctype != "message"
            || !matches!(
                subtype.as_str(),
                "delivery-status" | "global-delivery-status"
            )
        {
            continue;
        }
        seen = true;
        let body = String::from_utf8_lossy(part.contents());
        let body = text::cut_at(&body, super::text::MAX_TEXT);
        for finding in recipients(body) {
            any_recipient = true;
            if matches!(finding.action, Some(Action::Failed | Action::Delayed))
                && findings.len() < MAX_RECIPIENTS
                && !findings
                    .iter()
                    .any(|f: &Finding| f.address.eq_ignore_ascii_case(&finding.address))
            {
                findings.push(finding);
            }
        }
    }
    if !seen {
        return None;
    }
    Some(Detected {
        kind: Some(Kind::Dsn),
        // A DSN whose recipients were all delivered/relayed is a receipt, not a bounce.
        is_bounce: !findings.is_empty() || !any_recipient,
        findings,
    })
}

#[derive(Default)]
struct Fields {
    original: Option<String>,
    final_: Option<String>,
    action: Option<String>,
    status: Option<String>,
    diagnostic: Option<String>,
    remote_mta: Option<String>,
}

/// The recipient blocks of a delivery-status body. Tolerates MTAs that leave out the blank
/// line between recipients: a repeated recipient field starts a new block.
fn recipients(body: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for block in field_blocks(body, MAX_BLOCKS) {
        let mut current = Fields::default();
        for (name, value) in block {
            match name.as_str() {
                "original-recipient" => {
                    if current.original.is_some() {
                        out.extend(finish(std::mem::take(&mut current)));
                    }
                    current.original = field_address(&value);
                }
                "final-recipient" => {
                    if current.final_.is_some() {
                        out.extend(finish(std::mem::take(&mut current)));
                    }
                    current.final_ = field_address(&value);
                }
                "action" => current.action = Some(value),
                "status" => current.status = Some(value),
                "diagnostic-code" => current.diagnostic = Some(value),
                "remote-mta" => current.remote_mta = Some(value),
                _ => {}
            }
        }
        out.extend(finish(current));
        if out.len() >= MAX_RECIPIENTS * 2 {
            break;
        }
    }
    out
}

fn finish(fields: Fields) -> Option<Finding> {
    // Prefer Original-Recipient (what the sender wrote) when it is a whole address.
    let address = fields
        .original
        .filter(|a| a.contains('@'))
        .or(fields.final_)?;
    let diagnostic = fields.diagnostic.as_deref().map(untyped).and_then(tidy);
    let status = fields.status.as_deref().and_then(enhanced_status);
    let from_diagnostic = diagnostic.as_deref().and_then(enhanced_status);
    let status_hint = match (&status, &from_diagnostic) {
        (Some(reported), Some(specific))
            if reported.ends_with(".0.0") && reported.get(..1) == specific.get(..1) =>
        {
            Some(specific.clone())
        }
        (None, Some(specific)) => Some(specific.clone()),
        _ => None,
    };
    let reply = diagnostic.as_deref().and_then(reply_code);
    let action = fields
        .action
        .as_deref()
        .and_then(action_of)
        .or_else(
            || match status.as_deref().or(from_diagnostic.as_deref())?.get(..1)? {
                "2" => Some(Action::Delivered),
                "4" => Some(Action::Delayed),
                _ => Some(Action::Failed),
            },
        )
        .or(Some(Action::Failed));
    Some(Finding {
        address,
        action,
        status: status.or(from_diagnostic),
        reply_code: reply,
        diagnostic,
        remote_mta: fields.remote_mta.as_deref().map(untyped).and_then(tidy),
        status_hint,
        context: None,
    })
}

/// The action keyword, tolerating comments and case (`Failed (bad address)`).
fn action_of(value: &str) -> Option<Action> {
    let word = value.trim().to_ascii_lowercase();
    if word.starts_with("fail") {
        Some(Action::Failed)
    } else if word.starts_with("delay") {
        Some(Action::Delayed)
    } else if word.starts_with("deliver") {
        Some(Action::Delivered)
    } else if word.starts_with("relay") {
        Some(Action::Relayed)
    } else if word.starts_with("expand") {
        Some(Action::Expanded)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::report::{Class, Kind, Reason};

    const DSN: &str = "From: MAILER-DAEMON@mx.example.org\r\n\
To: bounces@example.com\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\
\r\n\
--B\r\n\
Content-Type: text/plain\r\n\
\r\n\
I'm sorry to have to inform you that your message could not be delivered.\r\n\
--B\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.org\r\n\
\r\n\
Original-Recipient: rfc822;Alice@Example.net\r\n\
Final-Recipient: rfc822; alice@example.net\r\n\
Action: failed\r\n\
Status: 5.0.0\r\n\
Remote-MTA: dns; mx1.example.net\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <alice@example.net>: Recipient address\r\n\
\trejected: User unknown in local recipient table\r\n\
Final-Recipient: rfc822; bob@example.net\r\n\
Action: delayed\r\n\
Status: 4.2.2\r\n\
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full\r\n\
\r\n\
Final-Recipient: rfc822; carol@example.net\r\n\
Action: delivered\r\n\
Status: 2.0.0\r\n\
--B--\r\n";

    #[test]
    fn failed_and_delayed_recipients_with_their_fields() {
        let report = crate::parse(DSN.as_bytes()).expect("parses");
        assert_eq!(report.kind, Kind::Dsn);
        assert!(report.is_bounce);
        assert_eq!(report.recipients.len(), 2, "{report:#?}");
        let alice = &report.recipients[0];
        assert_eq!(alice.address, "Alice@Example.net");
        assert_eq!(alice.status.as_deref(), Some("5.0.0"));
        assert_eq!(alice.reply_code, Some(550));
        assert_eq!(alice.remote_mta.as_deref(), Some("mx1.example.net"));
        assert_eq!(
            alice.diagnostic.as_deref(),
            Some(
                "550 5.1.1 <alice@example.net>: Recipient address rejected: User unknown in local recipient table"
            )
        );
        assert_eq!(
            (alice.class, alice.reason),
            (Class::Hard, Reason::UserUnknown)
        );
        let bob = &report.recipients[1];
        assert_eq!((bob.class, bob.reason), (Class::Soft, Reason::MailboxFull));
    }

    #[test]
    fn delivery_receipt_is_not_a_bounce() {
        let receipt = DSN
            .replace("Action: failed", "Action: relayed")
            .replace("Action: delayed", "Action: delivered");
        let report = crate::parse(receipt.as_bytes()).expect("parses");
        assert_eq!(report.kind, Kind::Dsn);
        assert!(!report.is_bounce);
        assert!(report.recipients.is_empty());
    }
}
