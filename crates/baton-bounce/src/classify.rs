//! Class and reason for one recipient: enhanced status code first, diagnostic text second.

use crate::report::{Action, Class, Reason};
use crate::rules::{Rules, Verdict};

/// Decides class and reason from what a report says about one recipient.
///
/// `status` is an enhanced status code (`5.1.1`; anything else is ignored), `diagnostic` the
/// remote server's words. See `rules.toml` for the order of decision.
pub fn classify(
    rules: &Rules,
    action: Option<Action>,
    status: Option<&str>,
    reply_code: Option<u16>,
    diagnostic: Option<&str>,
) -> (Class, Reason) {
    let code = status.and_then(parse_status);
    let status_rule = code.and_then(|code| rules.status_rule(code));
    let verdict = match status_rule {
        Some(rule) if !rule.text_first => Some(rule.verdict),
        _ => diagnostic
            .and_then(|text| rules.text_rule(text))
            .or(status_rule.map(|rule| rule.verdict)),
    };
    let verdict = verdict.unwrap_or(Verdict {
        reason: Reason::Unknown,
        class: None,
    });
    let class = if action == Some(Action::Delayed) {
        Class::Soft
    } else {
        verdict
            .class
            .or_else(|| code.and_then(|[class, _, _]| class_of_digit(class)))
            .or_else(|| reply_code.and_then(|reply| class_of_digit(reply / 100)))
            .unwrap_or(Class::Hard)
    };
    (class, verdict.reason)
}

fn class_of_digit(digit: u16) -> Option<Class> {
    match digit {
        5 => Some(Class::Hard),
        4 => Some(Class::Soft),
        _ => None,
    }
}

/// `C.S.D` with C in 2, 4, 5 and S, D of at most three digits.
pub(crate) fn parse_status(text: &str) -> Option<[u16; 3]> {
    let mut parts = text.trim().split('.');
    let mut code = [0u16; 3];
    for slot in &mut code {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    if parts.next().is_some() || !matches!(code[0], 2 | 4 | 5) {
        return None;
    }
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: Option<&str>, reply: Option<u16>, text: Option<&str>) -> (Class, Reason) {
        classify(Rules::defaults(), Some(Action::Failed), status, reply, text)
    }

    #[test]
    fn status_code_first() {
        assert_eq!(
            run(Some("5.1.1"), Some(550), Some("mailbox full")),
            (Class::Hard, Reason::UserUnknown)
        );
        assert_eq!(
            run(Some("4.2.2"), None, None),
            (Class::Soft, Reason::MailboxFull)
        );
        assert_eq!(
            run(Some("5.4.7"), None, None),
            (Class::Hard, Reason::Expired)
        );
    }

    #[test]
    fn vague_codes_defer_to_text() {
        assert_eq!(
            run(
                Some("5.7.1"),
                Some(554),
                Some("Client host blocked using zen.spamhaus.org")
            ),
            (Class::Hard, Reason::ReputationBlocklisted)
        );
        assert_eq!(
            run(Some("5.7.1"), Some(550), Some("Relaying denied")),
            (Class::Hard, Reason::RoutingError)
        );
        assert_eq!(
            run(Some("5.7.1"), Some(550), Some("go away")),
            (Class::Hard, Reason::PolicyBlock)
        );
        assert_eq!(
            run(Some("5.0.0"), Some(550), Some("User unknown")),
            (Class::Hard, Reason::UserUnknown)
        );
    }

    #[test]
    fn text_alone_and_class_fallbacks() {
        assert_eq!(
            run(None, Some(452), Some("Mailbox full")),
            (Class::Soft, Reason::MailboxFull)
        );
        assert_eq!(
            run(None, None, Some("no such user here")),
            (Class::Hard, Reason::UserUnknown)
        );
        assert_eq!(run(None, None, None), (Class::Hard, Reason::Unknown));
        let delayed = classify(
            Rules::defaults(),
            Some(Action::Delayed),
            Some("5.1.1"),
            None,
            None,
        );
        assert_eq!(delayed, (Class::Soft, Reason::UserUnknown));
    }

    #[test]
    fn status_syntax() {
        assert_eq!(parse_status("5.1.1"), Some([5, 1, 1]));
        assert_eq!(parse_status("4.7.606"), Some([4, 7, 606]));
        assert_eq!(parse_status("3.1.1"), None);
        assert_eq!(parse_status("5.1"), None);
        assert_eq!(parse_status("5.1.1.1"), None);
        assert_eq!(parse_status("5.1.1234"), None);
    }
}
