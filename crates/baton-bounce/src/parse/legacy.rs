//! Non-standard bounces, recognised from their text: Exim, qmail, Postfix and Sendmail
//! without DSN, Exchange/Office 365, Gmail, Yahoo, AOL, Lotus Notes, GroupWise and the many
//! "simple" formats that name the failed addresses after an introductory sentence.
//!
//! The text is the message's own readable parts, cut where the returned original begins.
//! A bounce needs a failure sentence and either a mail-system sender or subject, or a
//! sentence only bounces use. The failed addresses are those after the first failure
//! sentence, less the bounce's own sender and recipients and header lines of quoted mail.

use std::sync::LazyLock;

use mail_parser::Message;
use regex::Regex;

use super::text::{addresses, compile, cut_at, enhanced_status, reply_code, tidy};
use super::{Detected, Finding};
use crate::MAX_RECIPIENTS;
use crate::report::{Action, Kind};

/// Who sends bounces: matched against the From display name and local part.
static MAIL_SYSTEM: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)^(mailer[-_ ]?daemon|postmaster|mail ?delivery ?(subsystem|system|service)?|mail administrator|mail ?system|mailer|mdaemon|smtp32|.*delivery status|.*_smtp_mail_service|.*mail service|.*\bdaemon\b|e500_smtp|mail router|nobody|root|notes mail router|bounce.*|.*notification.*)",
    )
});

static BOUNCE_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)undeliver|undelivered|returned mail|return(ed)? to sender|delivery (status|failure|failed|problem|report|notification|error|delay)|mail delivery|failure notice|non[- ]?deliver|could not (be )?deliver|nondeliverable|mail (system )?error|bounced?\b|could not send|delayed mail|message (status|not delivered|delivery)|error sending|unable to deliver|failed mail|mail failure|delivery warning|rejected|mail not delivered|warning: message|nicht zustellbar|non remis|no entregado",
    )
});

/// Sentences that only bounces use: enough without a mail-system sender.
static STRONG: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)qmail-send program|created automatically by mail delivery software|could not be delivered to one or more of its recipients|following address(es)? had permanent fatal errors|delivery to the following recipients? (failed|was aborted)|did not reach the following recipient|wasn'?t able to deliver your message|unable to deliver message to the following address|this is the mail system at host|this is the postfix program|delivery has failed to these recipients|could not deliver message to the following recipient|message not delivered to the following addresses|the following recipient\(s\) could not be reached|this is the deliver program at|this is the email server at|message from interscan e-mail viruswall|here is your list of failed recipients|failed addresses follow|smtp error from remote mail(er| server)|the following addresses? failed",
    )
});

/// Sentences that say delivery failed or is delayed; the addresses follow the first one.
static INTRO: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)could ?n[o']t be delivered|could ?n[o']t deliver|can ?n[o']t be delivered|cannot deliver|unable to deliver|(was ?n[o']t|was not|were not|not been) (able to be )?delivered|wasn'?t able to deliver|not able to deliver|delivery (to the following recipients? )?(has )?failed|delivery failure|failed (to deliver|delivery|recipient|address)|did not reach|undeliverable|undelivered|permanent (fatal )?error|fatal error|following address(es)? (failed|had)|failed (recipients|addresses)|user unknown|unknown user|no such (user|mailbox|recipient|address)|returned mail|message (was )?not delivered|not delivered to|delivery problem|intended recipient|invalid final delivery userid|was rejected|rejected your message|recipient (address )?rejected|mailbox (is )?(unavailable|full)|over ?quota|error delivering|encountered delivery problems|has not (yet )?been delivered|(has been|is|was) delayed|problem with the e-?mail address|will (continue to|keep) (try|retry)|still being retried|delivery attempts? (will continue|failed)|this is the qmail-send program|mail delivery software|deliver program at|email server at|does not exist|doesn'?t exist|not (a )?(valid|known) (user|recipient|mailbox|address)|address (is )?invalid|here is your list of failed|failed addresses follow|no such user here|message could not be delivered",
    )
});

/// Where the returned original (or its headers) begins.
static ORIGINAL: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?im)^[\s>*=-]*(-+ ?)?(original message|returned message|undelivered message|unsent message|start of returned message|below this line is a copy|this is a copy of|a copy of (the|your) (original )?message|the (original )?message (was|is) (attached|included|below)|included is a copy|(original|returned) (mail|message) (follows|below|header|attached)|message text follows|the header of the original|here is your returned mail|old message:|your message reads|headers? of (the |your )?(original |returned )?message|return-path:|received: from|received: by|----- ?the following (is|are) (the|a copy)|end of message|the text you sent follows|message headers follow|content-type: message/(rfc822|delivery-status))",
    )
});

/// A delay warning rather than a failure.
static WARNING: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)has not yet been delivered|not yet been delivered|attempts will continue|(has been|is|was) delayed|warning message only|will (continue to|keep) (try|retry)|still being retried|will be retried|warning: could not send|delayed mail|delivery delay|transient (non-fatal )?error|is a temporary error|will retry|will try again|retry (for|until)|message (is )?delayed|no action is required on your part",
    )
});

/// Header lines of quoted mail and session lines that name the sender, not the recipient.
static SKIP_LINE: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)^[\s>]*(from|reply-to|sender|return-path|received|message-id|date|subject|in-reply-to|references|cc|bcc|x-[a-z0-9-]+|envelope-from|content-[a-z-]+|list-[a-z-]+|errors-to|mail from|>>> mail from|by|id)\s*:|mail from:|message-id|\bfrom:?\s*<|sender:|originally (sent )?by|(the original|your) message (was )?(sent )?from|sender (address )?was",
    )
});

/// A line that is only `<address>:` (qmail and its descendants).
static QMAIL_LIST: LazyLock<Regex> = LazyLock::new(|| compile(r"(?m)^<[^<>\s]+@[^<>\s]+>:\s*$"));

/// Formats that name the failed address in a fixed phrase; when one matches, only those
/// addresses count (their notices also quote other addresses).
static PINPOINT: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?im)address\s+to\s+which\s+your\s+message\s+was\s+addressed,\s*([^\s,]+@[^\s,]+),|intended recipient:\s*<?([^\s<>]+@[^\s<>]+?)>?\s*$|undeliverable address:\s*<?([^\s<>]+@[^\s<>]+?)>?\s*$|failed recipient:\s*<?([^\s<>]+@[^\s<>]+?)>?\s*$|error-for:\s+([^\s<>]+@[^\s<>]+)",
    )
});

/// Sendmail's alias expansion note.
static EXPANDED_FROM: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"(?i)\((?:expanded|generated) from:?\s*<?([^\s<>()]+@[^\s<>()]+)>?\)")
});

/// Words just before an address that make it the sender, not a recipient.
static SENDER_BEFORE: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?i)(\bfrom|sender|sent by|mail from:?)\s*[<(\x22']?\s*$"));

const MAX_LINES: usize = 400;

/// The From of this message is a mail system (MAILER-DAEMON, postmaster, ...).
pub(crate) fn from_mail_system(message: &Message<'_>) -> bool {
    let Some(from) = message.from().and_then(|from| from.first()) else {
        return false;
    };
    let local = from
        .address()
        .and_then(|a| a.split('@').next())
        .unwrap_or_default();
    MAIL_SYSTEM.is_match(local) || from.name().is_some_and(|name| MAIL_SYSTEM.is_match(name))
}

/// `has_report`: the message has a delivery-status part we could not read, which is as good
/// as a mail-system sender.
pub(crate) fn detect(message: &Message<'_>, text: &str, has_report: bool) -> Option<Detected> {
    let subject = message.subject().unwrap_or_default();
    let notice = match ORIGINAL.find(text) {
        Some(m) => &text[..m.start()],
        None => text,
    };
    let intro = INTRO.find(notice);
    let strong = STRONG.is_match(notice);
    let system = from_mail_system(message);
    let bounce_subject = BOUNCE_SUBJECT.is_match(subject);
    let recognised = match intro {
        Some(_) => strong || system || bounce_subject || has_report,
        None => {
            (system && (bounce_subject || QMAIL_LIST.is_match(notice)))
                || (has_report && bounce_subject)
        }
    };
    if !recognised {
        return None;
    }
    let action = if WARNING.is_match(notice) || WARNING.is_match(subject) {
        Action::Delayed
    } else {
        Action::Failed
    };
    let from = intro.map_or(0, |m| line_start(notice, m.start()));
    let context = tidy(cut_at(&notice[from..], 2000));
    let excluded = own_addresses(message);
    let mut findings: Vec<Finding> = Vec::new();
    let pinpointed: Vec<&str> = PINPOINT
        .captures_iter(notice)
        .filter_map(|caps| caps.iter().skip(1).flatten().next())
        .map(|m| m.as_str())
        .collect();
    let body = if pinpointed.is_empty() {
        &notice[from..]
    } else {
        ""
    };
    for address in pinpointed {
        if plausible(address, &excluded)
            && !findings
                .iter()
                .any(|f| f.address.eq_ignore_ascii_case(address))
        {
            findings.push(finding(address, None, action, context.clone()));
        }
    }
    let lines: Vec<&str> = body.lines().take(MAX_LINES).collect();
    for (index, line) in lines.iter().enumerate() {
        if findings.len() >= MAX_RECIPIENTS {
            break;
        }
        if SKIP_LINE.is_match(line) {
            continue;
        }
        let line = cut_at(line, crate::MAX_DIAGNOSTIC);
        // Sendmail: "<list@here> ... (expanded from: <member@there>)": the address the
        // sender used is the expanded-from one.
        if let Some(caps) = EXPANDED_FROM.captures(line)
            && let Some(expanded) = caps.get(1)
        {
            match findings.last_mut() {
                Some(last) => last.address = expanded.as_str().to_string(),
                None => findings.push(finding(expanded.as_str(), None, action, context.clone())),
            }
            continue;
        }
        for (at, address) in addresses(line) {
            if !plausible(address, &excluded)
                || SENDER_BEFORE.is_match(&line[..at])
                || findings
                    .iter()
                    .any(|f| f.address.eq_ignore_ascii_case(address))
            {
                continue;
            }
            let diagnostic = diagnostic_after(&lines, index, address);
            findings.push(finding(address, diagnostic, action, context.clone()));
        }
    }
    if findings.is_empty() && intro.is_some() {
        aol_screen_names(message, &notice[from..], action, &mut findings);
    }
    Some(Detected {
        kind: Some(Kind::Dsn),
        is_bounce: true,
        findings,
    })
}

fn finding(
    address: &str,
    diagnostic: Option<String>,
    action: Action,
    context: Option<String>,
) -> Finding {
    let status = diagnostic.as_deref().and_then(enhanced_status);
    let reply = diagnostic.as_deref().and_then(reply_code);
    Finding {
        address: address.to_string(),
        action: Some(action),
        status,
        reply_code: reply,
        diagnostic,
        remote_mta: None,
        status_hint: None,
        context,
    }
}

/// AOL names refused screen names without a domain, one per indented line.
fn aol_screen_names(
    message: &Message<'_>,
    body: &str,
    action: Action,
    findings: &mut Vec<Finding>,
) {
    let from_aol = message
        .from()
        .and_then(|from| from.first())
        .and_then(|a| a.address())
        .is_some_and(|a| a.to_ascii_lowercase().ends_with("@aol.com"));
    if !from_aol {
        return;
    }
    for line in body.lines().skip(1).take(MAX_LINES) {
        let name = line.trim();
        if line.starts_with([' ', '\t'])
            && !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            && findings.len() < MAX_RECIPIENTS
        {
            findings.push(finding(
                &format!("{name}@aol.com"),
                None,
                action,
                tidy(cut_at(body, 2000)),
            ));
        }
    }
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// Addresses the bounce itself carries: its sender and recipients are not the failed ones.
fn own_addresses(message: &Message<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for list in [
        message.from(),
        message.to(),
        message.cc(),
        message.reply_to(),
        message.sender(),
    ]
    .into_iter()
    .flatten()
    {
        out.extend(
            list.iter()
                .filter_map(|a| a.address())
                .map(str::to_ascii_lowercase),
        );
    }
    if let Some(path) = message.return_address() {
        out.push(path.to_ascii_lowercase());
    }
    out
}

fn plausible(address: &str, excluded: &[String]) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let local_lower = local.to_ascii_lowercase();
    let digits = local.bytes().filter(u8::is_ascii_digit).count();
    !local.is_empty()
        && domain.contains('.')
        && !matches!(
            local_lower.as_str(),
            "postmaster" | "mailer-daemon" | "mailer_daemon" | "abuse"
        )
        && digits < 10
        && !excluded.iter().any(|e| e.eq_ignore_ascii_case(address))
}

/// The rest of the address's line and the lines that follow it, up to a blank line or the
/// next line naming another address.
fn diagnostic_after(lines: &[&str], index: usize, address: &str) -> Option<String> {
    let mut out = String::new();
    if let Some(line) = lines.get(index) {
        out.push_str(&line.replacen(address, "", 1));
    }
    for line in lines.iter().skip(index + 1).take(4) {
        if line.trim().is_empty() || (line.contains('@') && !line.contains(address)) {
            break;
        }
        out.push(' ');
        out.push_str(line);
    }
    let out = tidy(out.trim_matches(|c: char| c.is_whitespace() || "<>:,;()".contains(c)))?;
    (out.len() > 3).then_some(out)
}

#[cfg(test)]
mod tests {
    use crate::report::{Action, Class, Kind, Reason};

    fn bounce(from: &str, subject: &str, body: &str) -> crate::Report {
        let raw = format!(
            "From: {from}\r\nTo: list-bounces@example.com\r\nSubject: {subject}\r\n\r\n{body}"
        );
        crate::parse(raw.as_bytes()).expect("parses")
    }

    #[test]
    fn qmail() {
        let report = bounce(
            "MAILER-DAEMON@mx.example.net",
            "failure notice",
            "Hi. This is the qmail-send program at mx.example.net.\n\
I'm afraid I wasn't able to deliver your message to the following addresses.\n\
This is a permanent error; I've given up. Sorry it didn't work out.\n\n\
<gone@example.net>:\n\
Sorry, no mailbox here by that name. (#5.1.1)\n\n\
--- Below this line is a copy of the message.\n\n\
Return-Path: <list-bounces@example.com>\nTo: other@example.org\n",
        );
        assert_eq!(report.kind, Kind::Dsn);
        assert!(report.is_bounce);
        assert_eq!(report.recipients.len(), 1, "{report:#?}");
        let r = &report.recipients[0];
        assert_eq!(r.address, "gone@example.net");
        assert_eq!(r.status.as_deref(), Some("5.1.1"));
        assert_eq!((r.class, r.reason), (Class::Hard, Reason::UserUnknown));
    }

    #[test]
    fn exim() {
        let report = bounce(
            "Mail Delivery System <Mailer-Daemon@mx.example.net>",
            "Mail delivery failed: returning message to sender",
            "This message was created automatically by mail delivery software.\n\n\
A message that you sent could not be delivered to one or more of its\n\
recipients. This is a permanent error. The following address(es) failed:\n\n\
  full@example.net\n\
    SMTP error from remote mail server after RCPT TO:<full@example.net>:\n\
    host mx.example.net [192.0.2.1]: 552 5.2.2 Mailbox full\n\n\
------ This is a copy of the message, including all the headers. ------\n",
        );
        let r = &report.recipients[0];
        assert_eq!(report.recipients.len(), 1, "{report:#?}");
        assert_eq!(r.address, "full@example.net");
        assert_eq!(r.reply_code, Some(552));
        assert_eq!(r.reason, Reason::MailboxFull);
    }

    #[test]
    fn delay_warning_is_soft() {
        let report = bounce(
            "postmaster@mx.example.net",
            "Delivery Status Notification (Delay)",
            "This is an automatically generated Delivery Status Notification.\n\n\
THIS IS A WARNING MESSAGE ONLY.\n\nYOU DO NOT NEED TO RESEND YOUR MESSAGE.\n\n\
Delivery to the following recipients has been delayed.\n\n       slow@example.net\n",
        );
        let r = &report.recipients[0];
        assert_eq!(r.address, "slow@example.net");
        assert_eq!(r.action, Some(Action::Delayed));
        assert_eq!(r.class, Class::Soft);
    }

    #[test]
    fn ordinary_mail_is_not_a_bounce() {
        let report = bounce(
            "friend@example.org",
            "lunch?",
            "Could not be delivered? No, I got it. Write to me@example.org\n",
        );
        assert_eq!(report.kind, Kind::Unknown);
        assert!(!report.is_bounce);
        assert!(report.recipients.is_empty());
    }
}
