//! RFC 3834 automatic replies: recognised so that they are never taken for bounces.

use std::sync::LazyLock;

use mail_parser::Message;
use regex::Regex;

use super::text::compile;
use super::{Detected, Finding};
use crate::report::Kind;

/// Subjects of vacation and out-of-office replies, in the languages seen most.
static VACATION_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"(?i)^\s*(auto(matic|matisk)?[ _-]?(reply|response|respond|antwort|svar)|auto:|out of (the )?office|away from (the |my )?(office|desk|email)|on vacation|vacation (reply|message|notice)|^vacation\b|abwesenheit|r[ée]ponse automatique|absence|autosvar|automaattinen vastaus|risposta automatica|respuesta autom[áa]tica|odpowied[źz] automatyczna|automatyczna odpowied[źz]|resposta autom[áa]tica|fuera de la oficina|je suis absent|i am (currently )?(out|away))",
    )
});

/// Headers only auto-responders set, and vacation subjects: an auto-reply unless the sender
/// is a mail system (some MTAs mark their bounces `Auto-Submitted: auto-replied`).
pub(crate) fn detect_clear(message: &Message<'_>) -> Option<Detected> {
    let header = |name: &'static str| message.header_raw(name).map(str::trim);
    let marked = header("X-Autoreply").is_some()
        || header("X-Autorespond").is_some()
        || header("X-Autoresponse").is_some()
        || header("Precedence").is_some_and(|p| p.eq_ignore_ascii_case("auto_reply"))
        || header("Auto-Submitted")
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("auto-replied"))
        || message
            .subject()
            .is_some_and(|s| VACATION_SUBJECT.is_match(s));
    if !marked || super::legacy::from_mail_system(message) {
        return None;
    }
    Some(reply(message))
}

/// Any other `Auto-Submitted` value but `no`.
pub(crate) fn detect_any(message: &Message<'_>) -> Option<Detected> {
    let value = message
        .header_raw("Auto-Submitted")?
        .trim()
        .to_ascii_lowercase();
    (!value.is_empty() && !value.starts_with("no")).then(|| reply(message))
}

fn reply(message: &Message<'_>) -> Detected {
    let from = message
        .from()
        .and_then(|from| from.first())
        .and_then(|addr| addr.address())
        .map(str::to_string);
    Detected {
        kind: Some(Kind::Autoreply),
        is_bounce: false,
        findings: from
            .map(|address| Finding {
                address,
                ..Finding::default()
            })
            .into_iter()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::report::{Kind, Reason};

    fn message(headers: &str) -> String {
        format!(
            "From: Ann <ann@example.net>\r\nTo: news@example.com\r\n{headers}\r\nI am away until Monday.\r\n"
        )
    }

    #[test]
    fn headers_and_subjects_mark_auto_replies() {
        for headers in [
            "Subject: Re: hi\r\nAuto-Submitted: auto-replied\r\n",
            "Subject: Re: hi\r\nX-Autoreply: yes\r\n",
            "Subject: Re: hi\r\nX-Autorespond: yes\r\n",
            "Subject: Re: hi\r\nPrecedence: auto_reply\r\n",
            "Subject: Out of Office: hi\r\n",
            "Subject: Automatic reply: hi\r\n",
            "Subject: Re: hi\r\nAuto-Submitted: auto-generated\r\n",
        ] {
            let report = crate::parse(message(headers).as_bytes()).expect("parses");
            assert_eq!(report.kind, Kind::Autoreply, "{headers}");
            assert!(!report.is_bounce);
            assert_eq!(report.recipients[0].address, "ann@example.net");
            assert_eq!(report.recipients[0].reason, Reason::AutoReply);
        }
    }

    #[test]
    fn auto_submitted_no_is_an_ordinary_message() {
        let report = crate::parse(message("Subject: hi\r\nAuto-Submitted: no\r\n").as_bytes())
            .expect("parses");
        assert_eq!(report.kind, Kind::Unknown);
        assert!(!report.is_bounce);
    }
}
