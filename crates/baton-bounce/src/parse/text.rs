//! Shared text helpers: bounded text of a message, field blocks, addresses, codes.

use std::sync::LazyLock;

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};
use regex::Regex;

use crate::MAX_DIAGNOSTIC;

/// Characters of human-readable text looked at per message.
pub(crate) const MAX_TEXT: usize = 64 * 1024;

static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"[A-Za-z0-9._%+\-=/!#$&'*?^`{|}~]+@[A-Za-z0-9\-_]+(?:\.[A-Za-z0-9\-_]+)+")
});
static ENHANCED: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?:^|[^\d.])([245]\.\d{1,3}\.\d{1,3})(?:[^\d.]|\.\s|\.$|$)"));
static REPLY: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?:^|[^\d.#])([45][0-5]\d)(?:[ \-)]|$)"));

/// A built-in pattern; they are all literals checked by the unit tests, so this never fails
/// in practice, and a pattern that did fail would match nothing rather than panic.
pub(crate) fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|_| {
        #[allow(clippy::unwrap_used)] // `[^\s\S]` is a valid pattern that matches nothing.
        Regex::new(r"[^\s\S]").unwrap()
    })
}

/// Content type `type/subtype` of a part, lowercased.
pub(crate) fn content_type(part: &MessagePart<'_>) -> Option<(String, String)> {
    let ct = part.content_type()?;
    Some((
        ct.ctype().to_ascii_lowercase(),
        ct.subtype().unwrap_or_default().to_ascii_lowercase(),
    ))
}

/// The human-readable text of the message's own parts (not of attached messages), at most
/// [`MAX_TEXT`] bytes; HTML is turned into text.
pub(crate) fn readable_text(message: &Message<'_>) -> String {
    let mut out = String::new();
    for part in &message.parts {
        if out.len() >= MAX_TEXT {
            break;
        }
        let ct = content_type(part);
        let subtype = ct.as_ref().map(|(_, s)| s.as_str());
        match &part.body {
            PartType::Text(text) if subtype != Some("rfc822-headers") => {
                push_bounded(&mut out, text)
            }
            PartType::Html(html) => {
                let cut = cut_at(html, MAX_TEXT);
                push_bounded(&mut out, &mail_parser::decoders::html::html_to_text(cut));
            }
            _ => {}
        }
    }
    out
}

fn push_bounded(out: &mut String, text: &str) {
    let room = MAX_TEXT.saturating_sub(out.len());
    out.push_str(cut_at(text, room));
    out.push('\n');
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut_at(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One diagnostic-sized string: whitespace runs collapsed, at most [`MAX_DIAGNOSTIC`] chars.
pub(crate) fn tidy(text: &str) -> Option<String> {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if out.len() + word.len() + 1 > MAX_DIAGNOSTIC {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !c.is_control()));
    }
    (!out.is_empty()).then_some(out)
}

/// RFC 822-style field blocks (as in message/delivery-status): blocks split by blank lines,
/// each a list of (lowercased name, unfolded value). Lines are cut to [`MAX_DIAGNOSTIC`].
pub(crate) fn field_blocks(text: &str, max_blocks: usize) -> Vec<Vec<(String, String)>> {
    let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = cut_at(line, MAX_DIAGNOSTIC);
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
                if blocks.len() >= max_blocks {
                    return blocks;
                }
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut()
                && value.len() < MAX_DIAGNOSTIC
            {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') {
                current.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

/// Addresses in `text` with their byte offsets, in order, with surrounding punctuation and
/// `smtp=`/`SMTP:` style prefixes removed.
pub(crate) fn addresses(text: &str) -> impl Iterator<Item = (usize, &str)> {
    ADDRESS.find_iter(text).map(|m| {
        let mut address = m.as_str();
        for prefix in ["smtp=", "smtp:", "rfc822=", "rfc822;"] {
            if address.len() > prefix.len()
                && address.is_char_boundary(prefix.len())
                && address[..prefix.len()].eq_ignore_ascii_case(prefix)
            {
                address = &address[prefix.len()..];
            }
        }
        let address = address
            .trim_start_matches(['\'', '`', '{', '|', '=', '/'])
            .trim_end_matches(['.', '\'', '-', '}', '|']);
        (m.start(), address)
    })
}

/// The first enhanced status code (`5.1.1`) in `text`.
pub(crate) fn enhanced_status(text: &str) -> Option<String> {
    let caps = ENHANCED.captures(text)?;
    Some(caps.get(1)?.as_str().to_string())
}

/// The first SMTP reply code (4xx or 5xx) in `text`.
pub(crate) fn reply_code(text: &str) -> Option<u16> {
    let caps = REPLY.captures(text)?;
    caps.get(1)?.as_str().parse().ok()
}

/// An address from a field value such as `rfc822; <User@Example.com>` or `"Name" <a@b>`.
pub(crate) fn field_address(value: &str) -> Option<String> {
    let value = match value.split_once(';') {
        Some((kind, rest)) if !kind.contains('@') => rest,
        _ => value,
    };
    let value = value.trim();
    let inner = match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value,
    };
    let inner = inner.trim().trim_matches(['"', '\'']).trim();
    let first = inner.split_whitespace().next()?;
    (!first.is_empty()).then(|| first.to_string())
}

/// The value of a typed field (`dns; mx.example.com`, `smtp; 550 ...`) without its type.
pub(crate) fn untyped(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest)) if !kind.trim().is_empty() && !kind.contains(' ') => rest.trim(),
        _ => value.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_in_text() {
        assert_eq!(
            enhanced_status("smtp; 550 5.1.1 <a@b.c>: user unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(enhanced_status("version 1.5.1.2 is out"), None);
        assert_eq!(enhanced_status("#5.1.1 smtp;550"), Some("5.1.1".into()));
        assert_eq!(reply_code("smtp; 550 5.1.1 user unknown"), Some(550));
        assert_eq!(reply_code("host said: 421-4.7.0 try later"), Some(421));
        assert_eq!(reply_code("in 1550 years"), None);
    }

    #[test]
    fn field_values() {
        assert_eq!(
            field_address("rfc822; <User@Example.com>").as_deref(),
            Some("User@Example.com")
        );
        assert_eq!(field_address("rfc822;a@b.c").as_deref(), Some("a@b.c"));
        assert_eq!(field_address("<a@b.c>").as_deref(), Some("a@b.c"));
        assert_eq!(field_address("rfc822; "), None);
        assert_eq!(untyped("dns; mx.example.com"), "mx.example.com");
        assert_eq!(untyped("smtp; 550 no"), "550 no");
    }

    #[test]
    fn blocks_unfold_and_split() {
        let blocks = field_blocks(
            "Reporting-MTA: dns; x\n\nFinal-Recipient: rfc822; a@b.c\nDiagnostic-Code: smtp; 550\n  user unknown\n",
            10,
        );
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            blocks[1][1],
            ("diagnostic-code".into(), "smtp; 550 user unknown".into())
        );
    }

    #[test]
    fn cuts_on_char_boundaries() {
        assert_eq!(cut_at("aé", 2), "a");
        assert_eq!(tidy("  a \n\t b "), Some("a b".into()));
        let addrs: Vec<_> = addresses("<x.y@example.com>: and 'q@r.st'. SMTP=Z@a.bc")
            .map(|(_, a)| a)
            .collect();
        assert_eq!(addrs, ["x.y@example.com", "q@r.st", "Z@a.bc"]);
    }
}
