//! SES's Attachments (Simple and Template content) and the MIME body they shape:
//! `multipart/mixed` around the text/HTML and the attachments, with INLINE parts kept beside
//! the HTML in `multipart/related` so `cid:` references resolve. Names, types, descriptions
//! and content ids are checked before anything is built: nothing with CR, LF or NUL, nothing
//! that is not a plain `type/subtype`.

use std::borrow::Cow;

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};
use serde::Deserialize;

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Attachment {
    /// Base64, as the SDKs send a blob.
    pub raw_content: String,
    pub content_disposition: Option<String>,
    pub file_name: String,
    pub content_description: Option<String>,
    pub content_id: Option<String>,
    /// BASE64, QUOTED_PRINTABLE or SEVEN_BIT: checked, then left to mail-builder, which picks
    /// an encoding the bytes survive (a SEVEN_BIT claim over 8-bit bytes would not).
    pub content_transfer_encoding: Option<String>,
    pub content_type: Option<String>,
}

/// An attachment checked and decoded.
struct Part {
    inline: bool,
    file_name: String,
    content_type: String,
    description: Option<String>,
    content_id: Option<String>,
    bytes: Vec<u8>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// RFC 2045 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

fn check(a: &Attachment) -> Result<Part, ApiError> {
    use base64::Engine;
    let name = &a.file_name;
    if name.is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) {
        return Err(bad(
            "Attachment FileName: 1 to 255 characters, no control characters",
        ));
    }
    let content_type = match &a.content_type {
        None => "application/octet-stream".to_string(),
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            let plain = lower.len() <= 78
                && lower
                    .split_once('/')
                    .is_some_and(|(ty, sub)| is_token(ty) && is_token(sub));
            // A multipart or message type would claim a structure the bytes are not given in.
            if !plain || lower.starts_with("multipart/") || lower.starts_with("message/") {
                return Err(bad(format!(
                    "Attachment ContentType {t:?} is not a plain type/subtype"
                )));
            }
            lower
        }
    };
    let inline = match a.content_disposition.as_deref() {
        None | Some("ATTACHMENT") => false,
        Some("INLINE") => true,
        Some(other) => {
            return Err(bad(format!(
                "ContentDisposition {other:?}: ATTACHMENT or INLINE"
            )));
        }
    };
    if let Some(e) = a.content_transfer_encoding.as_deref()
        && !["BASE64", "QUOTED_PRINTABLE", "SEVEN_BIT"].contains(&e)
    {
        return Err(bad(format!(
            "ContentTransferEncoding {e:?}: BASE64, QUOTED_PRINTABLE or SEVEN_BIT"
        )));
    }
    if let Some(d) = &a.content_description
        && (d.chars().count() > 1000 || d.chars().any(char::is_control))
    {
        return Err(bad(
            "ContentDescription: at most 1000 characters, no control characters",
        ));
    }
    let content_id = match &a.content_id {
        None => None,
        Some(id) => {
            let id = id.trim_start_matches('<').trim_end_matches('>');
            let ok = !id.is_empty()
                && id.len() <= 78
                && id
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"<>\"\\()[],;:".contains(&b));
            if !ok {
                return Err(bad(format!("ContentId {id:?} is not a content id")));
            }
            Some(id.to_string())
        }
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(a.raw_content.as_bytes())
        .map_err(|e| bad(format!("Attachment RawContent is not base64: {e}")))?;
    Ok(Part {
        inline,
        file_name: name.clone(),
        content_type,
        description: a.content_description.clone(),
        content_id,
        bytes,
    })
}

fn mime(part: Part) -> MimePart<'static> {
    let disposition = if part.inline { "inline" } else { "attachment" };
    let mut mime = MimePart::new(
        ContentType::new(part.content_type),
        BodyPart::Binary(Cow::Owned(part.bytes)),
    )
    .header(
        "Content-Disposition",
        ContentType::new(disposition).attribute("filename", part.file_name),
    );
    if let Some(id) = part.content_id {
        mime = mime.cid(id);
    }
    if let Some(d) = part.description {
        mime = mime.header("Content-Description", Text::new(d));
    }
    mime
}

/// The message body: text and/or HTML (alternative), INLINE parts related to the HTML,
/// other attachments (and INLINE ones without HTML to relate to) mixed in.
pub fn body(
    text: Option<&str>,
    html: Option<&str>,
    attachments: &[Attachment],
) -> Result<MimePart<'static>, ApiError> {
    if text.is_none() && html.is_none() {
        return Err(bad("Body needs Text or Html"));
    }
    let parts = attachments
        .iter()
        .map(check)
        .collect::<Result<Vec<_>, _>>()?;
    let (inline, mut mixed): (Vec<Part>, Vec<Part>) =
        parts.into_iter().partition(|p| p.inline && html.is_some());
    let text = text.map(|t| MimePart::new("text/plain", BodyPart::Text(t.to_string().into())));
    let html = html.map(|h| {
        let html = MimePart::new("text/html", BodyPart::Text(h.to_string().into()));
        if inline.is_empty() {
            html
        } else {
            let mut related = vec![html];
            related.extend(inline.into_iter().map(mime));
            MimePart::new("multipart/related", related)
        }
    });
    let main = match (text, html) {
        (Some(t), Some(h)) => MimePart::new("multipart/alternative", vec![t, h]),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => return Err(bad("Body needs Text or Html")),
    };
    if mixed.is_empty() {
        return Ok(main);
    }
    let mut all = vec![main];
    all.extend(mixed.drain(..).map(mime));
    Ok(MimePart::new("multipart/mixed", all))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(name: &str, disposition: &str, content_type: &str) -> Attachment {
        Attachment {
            raw_content: "AAEC/w==".into(),
            content_disposition: Some(disposition.into()),
            file_name: name.into(),
            content_description: None,
            content_id: Some("logo@acme".into()),
            content_transfer_encoding: None,
            content_type: Some(content_type.into()),
        }
    }

    fn built(a: &[Attachment]) -> String {
        let part = body(Some("t"), Some("<img src=cid:logo@acme>"), a).expect("builds");
        let bytes = mail_builder::MessageBuilder::new()
            .subject("s")
            .body(part)
            .write_to_vec()
            .expect("writes");
        String::from_utf8(bytes).expect("ascii")
    }

    #[test]
    fn attachments_are_mixed_and_inline_parts_related_to_the_html() {
        let m = built(&[
            attachment("report.pdf", "ATTACHMENT", "application/pdf"),
            attachment("logo.png", "INLINE", "image/png"),
        ]);
        let mixed = m.find("multipart/mixed").expect("mixed");
        let alternative = m.find("multipart/alternative").expect("alternative");
        let related = m.find("multipart/related").expect("related");
        assert!(mixed < alternative && alternative < related, "{m}");
        assert!(m.contains("attachment; filename=\"report.pdf\""), "{m}");
        assert!(m.contains("inline; filename=\"logo.png\""), "{m}");
        assert!(m.contains("Content-ID: <logo@acme>"), "{m}");
        assert!(m.contains("AAEC/w=="), "the bytes, base64: {m}");
        // Without attachments: just the alternative.
        assert!(!built(&[]).contains("multipart/mixed"));
    }

    #[test]
    fn names_types_and_ids_that_could_break_headers_are_refused() {
        for a in [
            attachment("a\r\nBcc: x@evil.example", "ATTACHMENT", "text/plain"),
            attachment("a\0.txt", "ATTACHMENT", "text/plain"),
            attachment("", "ATTACHMENT", "text/plain"),
            attachment("a.txt", "ATTACHMENT", "text/plain\r\nX: y"),
            attachment("a.txt", "ATTACHMENT", "text/plain; charset=x"),
            attachment("a.txt", "ATTACHMENT", "multipart/mixed"),
            attachment("a.txt", "ATTACHMENT", "nonsense"),
            attachment("a.txt", "SIDEWAYS", "text/plain"),
            Attachment {
                content_id: Some("a>\r\nX: y".into()),
                ..attachment("a.txt", "INLINE", "text/plain")
            },
            Attachment {
                content_description: Some("d\r\nX: y".into()),
                ..attachment("a.txt", "INLINE", "text/plain")
            },
            Attachment {
                raw_content: "not base64!".into(),
                ..attachment("a.txt", "INLINE", "text/plain")
            },
        ] {
            let e = body(Some("t"), None, std::slice::from_ref(&a)).map(|_| ());
            assert_eq!(e.expect_err("refused").kind, "BadRequestException", "{a:?}");
        }
    }
}
