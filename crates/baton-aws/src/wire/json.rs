//! The AWS JSON protocols (DynamoDB and SQS speak 1.0, EventBridge 1.1): a POST to the
//! service's endpoint naming the operation in `X-Amz-Target`, a JSON body each way, and
//! errors as `{"__type": "...#Code", "message": "..."}`.

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use super::{AwsClient, Call, CallError, Service};

impl Service {
    /// `X-Amz-Target`'s prefix and the content type's protocol version.
    fn json_protocol(self) -> (&'static str, &'static str) {
        match self {
            Service::DynamoDb => ("DynamoDB_20120810", "1.0"),
            Service::Sqs => ("AmazonSQS", "1.0"),
            Service::EventBridge => ("AWSEvents", "1.1"),
            Service::S3 => ("", ""),
        }
    }
}

impl AwsClient {
    /// Calls `operation` of a JSON-protocol service with `input`; returns its output.
    pub(crate) async fn json(
        &self,
        service: Service,
        operation: &str,
        input: &Value,
    ) -> Result<Value, CallError> {
        self.json_counted(service, operation, input, None, Duration::ZERO)
            .await
    }

    /// [`json`](Self::json), each attempt also filed in the request counter under
    /// `also_count`, and allowed `hold` longer than the request timeout (long polling).
    pub(crate) async fn json_counted(
        &self,
        service: Service,
        operation: &str,
        input: &Value,
        also_count: Option<(&'static str, String)>,
        hold: Duration,
    ) -> Result<Value, CallError> {
        let (prefix, version) = service.json_protocol();
        let call = Call {
            service,
            operation: operation.to_string(),
            also_count,
            method: Method::POST,
            url: format!("{}/", self.endpoint(service)),
            max_answer: super::MAX_ANSWER,
            check_ok: None,
            headers: vec![
                ("content-type", format!("application/x-amz-json-{version}")),
                ("x-amz-target", format!("{prefix}.{operation}")),
            ],
            body: serde_json::to_vec(input)
                .map_err(|e| CallError::Request(format!("{operation}: {e}")))?
                .into(),
            sign_payload: true,
            hold,
        };
        let reply = self.send(&call, parse_error).await?;
        if reply.body.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&reply.body)
            .map_err(|e| CallError::Transport(format!("{operation}: unreadable answer: {e}")))
    }
}

fn parse_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CallError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // SQS names its query-protocol code in a header as well ("Code;Sender").
    let query_code = headers
        .get("x-amzn-query-error")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .filter(|c| !c.is_empty());
    let type_code = parsed["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t));
    let code = type_code
        .or(query_code)
        .map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_string);
    let message = parsed["message"]
        .as_str()
        .or(parsed["Message"].as_str())
        .unwrap_or("")
        .to_string();
    CallError::service(status, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_the_type_after_its_namespace() {
        let e = parse_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}"#,
        );
        assert_eq!(e.code(), Some("ConditionalCheckFailedException"));
        assert_eq!(
            e.to_string(),
            "ConditionalCheckFailedException: The conditional request failed"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amzn-query-error",
            http::HeaderValue::from_static("AWS.SimpleQueueService.NonExistentQueue;Sender"),
        );
        let e = parse_error(StatusCode::BAD_REQUEST, &headers, b"not json");
        assert_eq!(e.code(), Some("AWS.SimpleQueueService.NonExistentQueue"));
        let e = parse_error(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"");
        assert_eq!(e.code(), Some("HTTP 503"));
    }
}
