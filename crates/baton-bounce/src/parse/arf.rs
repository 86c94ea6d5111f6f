//! RFC 5965 feedback reports (complaints): `message/feedback-report` with Feedback-Type and
//! Original-Rcpt-To; without Original-Rcpt-To, the To of the returned original message.

use mail_parser::{Message, MessageParser, PartType};

use super::text::{self, field_address, field_blocks, tidy};
use super::{Detected, Finding};
use crate::MAX_RECIPIENTS;
use crate::report::{Action, Kind};

pub(crate) fn detect(message: &Message<'_>) -> Option<Detected> {
    let report = message.parts.iter().find(|part| {
        text::content_type(part).is_some_and(|(c, s)| c == "message" && s == "feedback-report")
    })?;
    let body = String::from_utf8_lossy(report.contents());
    let body = text::cut_at(&body, text::MAX_TEXT);
    let mut feedback_type = None;
    let mut reporting_mta = None;
    let mut addresses: Vec<String> = Vec::new();
    for (name, value) in field_blocks(body, 4).into_iter().flatten() {
        match name.as_str() {
            "feedback-type" => feedback_type = tidy(&value),
            "reporting-mta" => reporting_mta = tidy(text::untyped(&value)),
            "original-rcpt-to" | "removal-recipient" => {
                if let Some(address) = field_address(&value) {
                    push_unique(&mut addresses, address);
                }
            }
            _ => {}
        }
    }
    if addresses.is_empty() {
        original_to(message, &mut addresses);
    }
    let is_complaint = feedback_type
        .as_deref()
        .is_none_or(|t| !t.eq_ignore_ascii_case("not-spam"));
    let findings = if is_complaint {
        addresses
            .into_iter()
            .take(MAX_RECIPIENTS)
            .map(|address| Finding {
                address,
                action: Some(Action::Complained),
                diagnostic: feedback_type.clone(),
                remote_mta: reporting_mta.clone(),
                ..Finding::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    Some(Detected {
        kind: Some(Kind::Arf),
        is_bounce: false,
        findings,
    })
}

fn push_unique(addresses: &mut Vec<String>, address: String) {
    if addresses.len() < MAX_RECIPIENTS
        && !addresses.iter().any(|a| a.eq_ignore_ascii_case(&address))
    {
        addresses.push(address);
    }
}

/// The To addresses of the returned message (message/rfc822 or text/rfc822-headers).
fn original_to(message: &Message<'_>, addresses: &mut Vec<String>) {
    for part in &message.parts {
        let headers;
        let original = match &part.body {
            PartType::Message(original) => original,
            PartType::Text(text)
                if text::content_type(part).is_some_and(|(_, s)| s == "rfc822-headers") =>
            {
                match MessageParser::default().parse_headers(text.as_bytes()) {
                    Some(parsed) => {
                        headers = parsed;
                        &headers
                    }
                    None => continue,
                }
            }
            _ => continue,
        };
        for address in original.to().into_iter().flat_map(|to| to.iter()) {
            if let Some(a) = address.address() {
                push_unique(addresses, a.to_string());
            }
        }
        if !addresses.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::report::{Action, Class, Kind, Reason};

    fn arf(rcpt_to: &str) -> String {
        format!(
            "From: feedback@isp.example\r\n\
To: abuse@sender.example\r\n\
Subject: FW: hello\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"A\"\r\n\
\r\n\
--A\r\n\
Content-Type: text/plain\r\n\
\r\n\
This is an email abuse report.\r\n\
--A\r\n\
Content-Type: message/feedback-report\r\n\
\r\n\
Feedback-Type: abuse\r\n\
User-Agent: SomeGenerator/1.0\r\n\
Version: 1\r\n\
Reporting-MTA: dns; mail.isp.example\r\n\
{rcpt_to}\
--A\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: news@sender.example\r\n\
To: Someone <someone@isp.example>\r\n\
Subject: hello\r\n\
\r\n\
Buy now.\r\n\
--A--\r\n"
        )
    }

    #[test]
    fn complaint_names_original_rcpt_to() {
        let report = crate::parse(arf("Original-Rcpt-To: <user@isp.example>\r\n").as_bytes())
            .expect("parses");
        assert_eq!(report.kind, Kind::Arf);
        assert!(!report.is_bounce);
        assert_eq!(report.recipients.len(), 1);
        let r = &report.recipients[0];
        assert_eq!(r.address, "user@isp.example");
        assert_eq!(r.action, Some(Action::Complained));
        assert_eq!(r.diagnostic.as_deref(), Some("abuse"));
        assert_eq!((r.class, r.reason), (Class::Hard, Reason::Complaint));
    }

    #[test]
    fn without_original_rcpt_to_the_original_to_counts() {
        let report = crate::parse(arf("").as_bytes()).expect("parses");
        assert_eq!(report.kind, Kind::Arf);
        let addrs: Vec<_> = report
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(addrs, ["someone@isp.example"]);
    }
}
