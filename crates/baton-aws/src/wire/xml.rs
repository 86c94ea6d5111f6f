//! The little XML S3 speaks to us: error documents, a multipart upload's id, a listing
//! page (read with roxmltree), and the two bodies we send (built here, every text escaped).

use roxmltree::{Document, Node};

fn child_text<'a>(node: Node<'a, 'a>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.tag_name().name() == name)
        .and_then(|c| c.text())
}

/// S3 may send whitespace before the document (keep-alive while a long request runs), which
/// an XML parser refuses before a declaration.
fn document(body: &[u8]) -> Option<Document<'_>> {
    Document::parse(std::str::from_utf8(body).ok()?.trim_start()).ok()
}

/// The root element's name, if `body` is an XML document.
pub(crate) fn root_name(body: &[u8]) -> Option<String> {
    Some(document(body)?.root_element().tag_name().name().to_string())
}

/// `(Code, Message)` of an `<Error>` document (S3 sends one even with a 200 status when a
/// CompleteMultipartUpload fails after it started answering).
pub(crate) fn error(body: &[u8]) -> Option<(String, String)> {
    let doc = document(body)?;
    let root = doc.root_element();
    if root.tag_name().name() != "Error" {
        return None;
    }
    Some((
        child_text(root, "Code").unwrap_or("").to_string(),
        child_text(root, "Message").unwrap_or("").to_string(),
    ))
}

/// The text of the root element's child `name` (`UploadId`).
pub(crate) fn root_child(body: &[u8], name: &str) -> Option<String> {
    let doc = document(body)?;
    child_text(doc.root_element(), name).map(str::to_string)
}

/// One page of ListObjectsV2.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ListPage {
    /// Key and LastModified (ISO 8601) of each object.
    pub objects: Vec<(String, String)>,
    /// The continuation token, if the listing goes on.
    pub next: Option<String>,
}

pub(crate) fn list_page(body: &[u8]) -> Option<ListPage> {
    let doc = document(body)?;
    let root = doc.root_element();
    let objects = root
        .children()
        .filter(|c| c.tag_name().name() == "Contents")
        .filter_map(|c| {
            Some((
                child_text(c, "Key")?.to_string(),
                child_text(c, "LastModified")?.to_string(),
            ))
        })
        .collect();
    let truncated = child_text(root, "IsTruncated") == Some("true");
    let next = child_text(root, "NextContinuationToken")
        .filter(|_| truncated)
        .map(str::to_string);
    Some(ListPage { objects, next })
}

/// Escapes text for an XML element's content.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The body of CompleteMultipartUpload: each part's number and ETag.
pub(crate) fn complete_multipart(parts: &[(u32, String)]) -> String {
    let mut out = String::from("<CompleteMultipartUpload>");
    for (number, etag) in parts {
        out.push_str(&format!(
            "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
            escape(etag)
        ));
    }
    out.push_str("</CompleteMultipartUpload>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_errors_upload_ids_and_listing_pages() {
        let err = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"#;
        assert_eq!(
            error(err),
            Some((
                "NoSuchKey".into(),
                "The specified key does not exist.".into()
            ))
        );
        let started = br#"<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><UploadId>u&amp;1</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(error(started), None);
        assert_eq!(root_child(started, "UploadId").as_deref(), Some("u&1"));
        let page = br#"<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated><Contents><Key>messages/a</Key><LastModified>2026-12-04T10:00:00.000Z</LastModified></Contents><Contents><Key>messages/b</Key><LastModified>2026-12-04T11:00:00.000Z</LastModified></Contents><NextContinuationToken>t+/=</NextContinuationToken></ListBucketResult>"#;
        let page = list_page(page).expect("page");
        assert_eq!(page.objects.len(), 2);
        assert_eq!(page.objects[1].0, "messages/b");
        assert_eq!(page.next.as_deref(), Some("t+/="));
        assert_eq!(error(b"not xml"), None);
        let kept_alive = b"\n  \n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>m</Message></Error>";
        assert_eq!(
            error(kept_alive).map(|e| e.0).as_deref(),
            Some("InternalError")
        );
        assert_eq!(
            root_name(started).as_deref(),
            Some("InitiateMultipartUploadResult")
        );
    }

    #[test]
    fn bodies_we_send_escape_their_text() {
        assert_eq!(
            complete_multipart(&[(1, "\"abc\"".into())]),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>\
             <ETag>&quot;abc&quot;</ETag></Part></CompleteMultipartUpload>"
        );
        assert_eq!(escape("<a&b>"), "&lt;a&amp;b&gt;");
    }
}
