//! S3's REST protocol: the bucket in the host name (or, with `force_path_style`, the path),
//! the key as the path with each segment percent-encoded, sub-resources as the query, and
//! errors as XML documents.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{AwsClient, Call, CallError, CheckOk, Reply, Service, xml};

/// What SigV4 leaves unencoded: letters, digits and `-._~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// One S3 request: `key` empty for the bucket itself.
pub(crate) struct S3Request<'a> {
    pub operation: &'a str,
    pub method: Method,
    pub key: &'a str,
    pub query: Vec<(&'a str, String)>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// Whether the payload is hashed into the signature (small control bodies are; message
    /// bodies are not).
    pub sign_payload: bool,
    /// The longest answer accepted (an object's body is bounded by what we stored).
    pub max_answer: usize,
    /// Reads a 2xx answer for a failure reported inside it.
    pub check_ok: Option<CheckOk>,
}

impl<'a> S3Request<'a> {
    pub(crate) fn new(operation: &'a str, method: Method, key: &'a str) -> Self {
        S3Request {
            operation,
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            sign_payload: true,
            max_answer: super::MAX_ANSWER,
            check_ok: None,
        }
    }
}

impl AwsClient {
    /// The URL of `key` (empty: the bucket) in `bucket`.
    pub(crate) fn s3_url(&self, bucket: &str, key: &str) -> String {
        let path = key.split('/').map(encode).collect::<Vec<_>>().join("/");
        let endpoint = self.endpoint(Service::S3);
        // A dotted bucket name would not match S3's wildcard certificate as a host name.
        let dotted_over_tls = bucket.contains('.') && endpoint.starts_with("https://");
        if self.force_path_style() || dotted_over_tls {
            return format!("{endpoint}/{}/{path}", encode(bucket));
        }
        match endpoint.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://{bucket}.{host}/{path}"),
            None => format!("{endpoint}/{}/{path}", encode(bucket)),
        }
    }

    pub(crate) async fn s3(&self, bucket: &str, req: S3Request<'_>) -> Result<Reply, CallError> {
        let mut url = self.s3_url(bucket, req.key);
        if !req.query.is_empty() {
            let query = req
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            url = format!("{url}?{query}");
        }
        let call = Call {
            service: Service::S3,
            operation: req.operation.to_string(),
            also_count: None,
            method: req.method,
            url,
            headers: req.headers,
            body: req.body,
            sign_payload: req.sign_payload,
            hold: Duration::ZERO,
            max_answer: req.max_answer,
            check_ok: req.check_ok,
        };
        self.send(&call, parse_error).await
    }
}

fn parse_error(status: StatusCode, _headers: &HeaderMap, body: &[u8]) -> CallError {
    let (code, message) = xml::error(body).unwrap_or_else(|| {
        let code = match status {
            StatusCode::NOT_FOUND => "NotFound".to_string(),
            StatusCode::FORBIDDEN => "Forbidden".to_string(),
            s => format!("HTTP {}", s.as_u16()),
        };
        (code, String::new())
    });
    CallError::service(status, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::credentials::CredentialSource;
    use crate::wire::test_client;

    fn client(endpoint: &str, path_style: bool) -> AwsClient {
        let config = baton_config::Aws {
            endpoint_url: endpoint.into(),
            force_path_style: path_style,
            ..Default::default()
        };
        test_client(config, CredentialSource::Missing("test"))
    }

    #[test]
    fn urls_put_the_bucket_where_the_style_says_and_encode_keys() {
        assert_eq!(
            client("", false).s3_url("bucket", "messages/a@b c"),
            "https://bucket.s3.eu-west-1.amazonaws.com/messages/a%40b%20c"
        );
        assert_eq!(
            client("http://localhost:4566", true).s3_url("bucket", "messages/x"),
            "http://localhost:4566/bucket/messages/x"
        );
        assert_eq!(
            client("http://localhost:4566", false).s3_url("bucket", ""),
            "http://bucket.localhost:4566/"
        );
        assert_eq!(
            client("", false).s3_url("mail.example.com", "messages/x"),
            "https://s3.eu-west-1.amazonaws.com/mail.example.com/messages/x"
        );
        assert_eq!(encode("t+/="), "t%2B%2F%3D");
    }

    #[test]
    fn errors_without_a_document_are_named_by_status() {
        let e = parse_error(StatusCode::NOT_FOUND, &HeaderMap::new(), b"");
        assert_eq!(e.code(), Some("NotFound"));
        let e = parse_error(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>",
        );
        assert_eq!(e.code(), Some("NoSuchKey"));
    }
}
