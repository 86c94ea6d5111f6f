//! The AWS wire: every request the backend makes, signed with SigV4 (`aws-sigv4`, the
//! SDK's own signer) and sent over one reqwest client. It replaces the generated SDK
//! clients, of which we used 25 operations: their stack was 1.3 MB of every Lambda zip
//! (issue 12). Each attempt is counted when it starts; transport failures, 5xx and
//! throttling are retried with jittered backoff, as the SDK's standard retry mode does.

pub(crate) mod credentials;
pub(crate) mod json;
pub(crate) mod s3;
mod signing;
pub(crate) mod xml;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use baton_config::Aws;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::requests::RequestCounter;
use credentials::CredentialSource;

/// Attempts per call, the SDK's standard retry mode's default.
const MAX_ATTEMPTS: u32 = 3;
/// The first retry's backoff ceiling; it doubles per retry (jittered, as the SDK does).
const BACKOFF_BASE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    S3,
    Sqs,
    DynamoDb,
    EventBridge,
}

impl Service {
    pub(crate) const ALL: [Service; 4] = [
        Service::S3,
        Service::Sqs,
        Service::DynamoDb,
        Service::EventBridge,
    ];

    /// The service's part of `AWS_ENDPOINT_URL_<SERVICE>`.
    fn env_name(self) -> &'static str {
        match self {
            Service::S3 => "S3",
            Service::Sqs => "SQS",
            Service::DynamoDb => "DYNAMODB",
            Service::EventBridge => "EVENTBRIDGE",
        }
    }

    /// The name requests are signed for and the endpoint's first label.
    fn signing_name(self) -> &'static str {
        match self {
            Service::S3 => "s3",
            Service::Sqs => "sqs",
            Service::DynamoDb => "dynamodb",
            Service::EventBridge => "events",
        }
    }

    /// The name the request counter files attempts under.
    pub(crate) fn counter_name(self) -> &'static str {
        match self {
            Service::EventBridge => "eventbridge",
            other => other.signing_name(),
        }
    }
}

/// A failed call: the service's answer, or no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CallError {
    #[error("{code}: {message}")]
    Service {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Transport(String),
    /// The request could not be built or signed: sending it again cannot help.
    #[error("cannot build the request: {0}")]
    Request(String),
    #[error("no AWS credentials: {0}")]
    Credentials(String),
}

impl CallError {
    /// The service's answer `status` with its error `code` and `message`.
    pub(crate) fn service(status: StatusCode, code: String, message: String) -> Self {
        CallError::Service {
            status: status.as_u16(),
            code,
            message,
        }
    }

    /// The service's error code (`NoSuchKey`, `ConditionalCheckFailedException`).
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            CallError::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the same request may succeed if sent again.
    fn is_retryable(&self) -> bool {
        match self {
            CallError::Transport(_) => true,
            CallError::Credentials(_) | CallError::Request(_) => false,
            CallError::Service { status, code, .. } => {
                matches!(status, 500 | 502 | 503 | 504 | 429)
                    || THROTTLING.contains(&code.as_str())
                    || TRANSIENT.contains(&code.as_str())
            }
        }
    }
}

/// Throttling codes the SDK retries (aws-smithy-runtime's standard classifier).
const THROTTLING: [&str; 12] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
];

/// Other codes the SDK retries: S3's own timeouts (a slow part upload) and server errors
/// S3 reports inside a 200 answer.
const TRANSIENT: [&str; 4] = [
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
];

/// The largest answer read into memory, except an S3 object's (bounded by what we stored).
pub(crate) const MAX_ANSWER: usize = 16 << 20;

/// Reads a 2xx answer's body for a failure reported inside it.
pub(crate) type CheckOk = fn(&[u8]) -> Result<(), CallError>;

/// One request, before signing.
pub(crate) struct Call {
    pub service: Service,
    /// The operation, as the request counter and error messages name it.
    pub operation: String,
    /// A second tally each attempt goes to (DynamoDB's per-table breakdown).
    pub also_count: Option<(&'static str, String)>,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// Whether the payload's SHA-256 goes into the signature (`x-amz-content-sha256`). S3
    /// object bodies go unsigned: TLS covers them in transit, hashing them costs CPU per byte.
    pub sign_payload: bool,
    /// Time the service may hold the request on purpose (SQS long polling), on top of the
    /// configured request timeout.
    pub hold: Duration,
    /// The longest answer body accepted.
    pub max_answer: usize,
    /// Reads a 2xx answer's body for a failure S3 reports inside it (CompleteMultipartUpload).
    pub check_ok: Option<CheckOk>,
}

/// A successful answer.
pub(crate) struct Reply {
    pub headers: HeaderMap,
    pub body: Bytes,
}

struct Inner {
    /// Built on the first request, not at start: loading the platform's root certificates
    /// would otherwise delay a Lambda function's first invocation request.
    http: OnceLock<Result<reqwest::Client, String>>,
    credentials: CredentialSource,
    region: String,
    /// Base URL per service, in [`Service::ALL`] order.
    endpoints: [String; 4],
    force_path_style: bool,
    timeout: Duration,
    counter: RequestCounter,
}

/// Signs and sends requests; cheap to clone (one connection pool).
#[derive(Clone)]
pub(crate) struct AwsClient(Arc<Inner>);

impl AwsClient {
    pub(crate) fn new(
        config: &Aws,
        credentials: CredentialSource,
        region: String,
        counter: RequestCounter,
    ) -> AwsClient {
        let endpoints = Service::ALL.map(|s| endpoint_for(config, s, &region, env_var));
        AwsClient(Arc::new(Inner {
            http: OnceLock::new(),
            credentials,
            region,
            endpoints,
            force_path_style: config.force_path_style,
            timeout: config.request_timeout,
            counter,
        }))
    }

    pub(crate) fn region(&self) -> &str {
        &self.0.region
    }

    /// The base URL of a service's endpoint (see [`endpoint_for`]).
    pub(crate) fn endpoint(&self, service: Service) -> &str {
        &self.0.endpoints[service as usize]
    }

    pub(crate) fn counter(&self) -> &RequestCounter {
        &self.0.counter
    }

    pub(crate) fn force_path_style(&self) -> bool {
        self.0.force_path_style
    }

    /// Sends `call`, retrying what may go away; `parse_error` reads a failed answer.
    pub(crate) async fn send(
        &self,
        call: &Call,
        parse_error: fn(StatusCode, &HeaderMap, &[u8]) -> CallError,
    ) -> Result<Reply, CallError> {
        let mut attempt = 1;
        loop {
            let result = self.attempt(call, parse_error).await;
            match result {
                Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(operation = %call.operation, attempt, error = %e, "retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        call: &Call,
        parse_error: fn(StatusCode, &HeaderMap, &[u8]) -> CallError,
    ) -> Result<Reply, CallError> {
        let http = self
            .0
            .http
            .get_or_init(|| crate::http::transport(self.0.timeout.min(Duration::from_secs(3))))
            .as_ref()
            .map_err(|e| CallError::Request(e.clone()))?;
        let credentials = self.0.credentials.get().await?;
        let request = signing::signed_request(call, &credentials, &self.0.region)?;
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))
            .map_err(|e| CallError::Request(format!("{}: {e}", call.operation)))?;
        // Counted as it goes out: retries too, as AWS bills them.
        let counter = &self.0.counter;
        counter.count(call.service.counter_name(), &call.operation);
        if let Some((service, operation)) = &call.also_count {
            counter.count(service, operation);
        }
        // The answer must start within the timeout (plus what the call may be held); the
        // body may take longer, as long as it keeps coming: a large object read in region is
        // fast, a stalled one is cut off.
        let timeout = self.0.timeout + call.hold;
        let transport = |e: reqwest::Error| {
            // Said in these words so that `baton` can add what to check (crates/baton main.rs).
            let reach = if e.is_connect() {
                "cannot reach AWS: "
            } else {
                ""
            };
            CallError::Transport(format!("{reach}{}", crate::error::causes(&e)))
        };
        let mut response = tokio::time::timeout(timeout, http.execute(request))
            .await
            .map_err(|_| CallError::Transport(format!("no answer within {timeout:?}")))?
            .map_err(transport)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let expected = response.content_length().unwrap_or(0).min(64 << 20);
        let mut body = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        loop {
            let chunk = tokio::time::timeout(self.0.timeout, response.chunk())
                .await
                .map_err(|_| {
                    CallError::Transport(format!(
                        "answer stalled for {:?} after {} bytes",
                        self.0.timeout,
                        body.len()
                    ))
                })?
                .map_err(transport)?;
            match chunk {
                Some(c) if body.len() + c.len() > call.max_answer => {
                    return Err(CallError::Request(format!(
                        "{}: answer longer than {} bytes",
                        call.operation, call.max_answer
                    )));
                }
                Some(c) => body.extend_from_slice(&c),
                None => break,
            }
        }
        let body = Bytes::from(body);
        if status.is_success() {
            if let Some(check) = call.check_ok {
                check(&body)?;
            }
            Ok(Reply { headers, body })
        } else {
            Err(parse_error(status, &headers, &body))
        }
    }
}

/// A set, non-empty environment variable.
pub(crate) fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where `service`'s requests go: the config's endpoint (DynamoDB's own first), else
/// `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL` (the precedence aws-config gives
/// them), else the regional endpoint. Other partitions (China, GovCloud) and FIPS
/// endpoints are named through these.
fn endpoint_for(
    config: &Aws,
    service: Service,
    region: &str,
    env: impl Fn(&str) -> Option<String>,
) -> String {
    let configured = Some(config.dynamodb_endpoint_url.clone())
        .filter(|u| service == Service::DynamoDb && !u.is_empty())
        .or_else(|| Some(config.endpoint_url.clone()).filter(|u| !u.is_empty()))
        .or_else(|| env(&format!("AWS_ENDPOINT_URL_{}", service.env_name())))
        .or_else(|| env("AWS_ENDPOINT_URL"));
    match configured {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => format!("https://{}.{region}.amazonaws.com", service.signing_name()),
    }
}

/// A client for unit tests: region eu-west-1, a fresh counter.
#[cfg(test)]
pub(crate) fn test_client(config: Aws, credentials: CredentialSource) -> AwsClient {
    AwsClient::new(
        &config,
        credentials,
        "eu-west-1".into(),
        RequestCounter::default(),
    )
}

/// A server that answers each connection with the next of `answers` (status, body) and
/// records the request lines and headers it got.
#[cfg(test)]
pub(crate) async fn scripted_server(
    answers: Vec<(u16, &'static str)>,
) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (status, body) in answers {
            let Ok((mut s, _)) = listener.accept().await else {
                break;
            };
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).await.unwrap_or(0);
            seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.0\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
        seen
    });
    (url, task)
}

/// Full jitter: a random wait up to the attempt's ceiling.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE * 2u32.pow(attempt.saturating_sub(1).min(6));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    ceiling.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_retried_client_errors_not() {
        let service = |status: u16, code: &str| CallError::Service {
            status,
            code: code.into(),
            message: String::new(),
        };
        assert!(service(500, "InternalError").is_retryable());
        assert!(service(400, "ThrottlingException").is_retryable());
        assert!(service(400, "ProvisionedThroughputExceededException").is_retryable());
        assert!(service(503, "SlowDown").is_retryable());
        assert!(!service(400, "ConditionalCheckFailedException").is_retryable());
        assert!(!service(404, "NoSuchKey").is_retryable());
        assert!(!service(403, "SignatureDoesNotMatch").is_retryable());
        assert!(CallError::Transport("reset".into()).is_retryable());
        assert!(!CallError::Credentials("none".into()).is_retryable());
    }

    fn signing(config: Aws) -> AwsClient {
        let creds = aws_credential_types::Credentials::new("AKID", "secret", None, None, "t");
        test_client(config, CredentialSource::Fixed(creds))
    }

    fn client(endpoint: &str) -> AwsClient {
        signing(Aws {
            endpoint_url: endpoint.into(),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn server_errors_are_retried_and_every_attempt_counted() {
        let (url, server) = scripted_server(vec![
            (500, r#"{"__type":"InternalServerError"}"#),
            (
                400,
                r#"{"__type":"x#ThrottlingException","message":"slow down"}"#,
            ),
            (200, r#"{"QueueUrl":"u"}"#),
        ])
        .await;
        let c = client(&url);
        let out = c
            .json(
                Service::Sqs,
                "GetQueueUrl",
                &serde_json::json!({"QueueName": "q"}),
            )
            .await
            .expect("third attempt succeeds");
        assert_eq!(out["QueueUrl"], "u");
        let seen = server.await.expect("server");
        assert_eq!(seen.len(), 3);
        for request in &seen {
            let lower = request.to_ascii_lowercase();
            assert!(
                lower.contains("x-amz-target: amazonsqs.getqueueurl"),
                "{request}"
            );
            assert!(
                lower.contains("authorization: aws4-hmac-sha256 credential=akid/"),
                "{request}"
            );
        }
        let counted = c.counter().snapshot();
        assert_eq!(counted.service_total("sqs"), 3, "{}", counted.summary());
    }

    #[tokio::test]
    async fn client_errors_are_answered_at_once() {
        let (url, server) = scripted_server(vec![(
            400,
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"no"}"#,
        )])
        .await;
        let c = client(&url);
        let err = c
            .json(Service::DynamoDb, "PutItem", &serde_json::json!({}))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Some("ConditionalCheckFailedException"));
        assert_eq!(server.await.expect("server").len(), 1);
        assert_eq!(c.counter().snapshot().service_total("dynamodb"), 1);
    }

    /// An answer whose body stops coming is cut off (and retried), not waited on forever.
    #[tokio::test]
    async fn a_stalled_body_is_a_transport_failure() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        // Holds every connection open (body unfinished) until the test ends.
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial")
                    .await;
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(s);
            }
        });
        let c = signing(Aws {
            endpoint_url: url,
            request_timeout: Duration::from_millis(300),
            ..Default::default()
        });
        let err = c
            .json(Service::Sqs, "GetQueueUrl", &serde_json::json!({}))
            .await
            .expect_err("stalled");
        server.abort();
        assert!(err.to_string().contains("stalled"), "{err}");
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            MAX_ATTEMPTS as usize
        );
    }

    #[test]
    fn endpoints_come_from_the_config_then_the_environment_then_the_region() {
        let env = |name: &str| match name {
            "AWS_ENDPOINT_URL_SQS" => Some("http://sqs.local:1/".to_string()),
            "AWS_ENDPOINT_URL" => Some("http://all.local:2".to_string()),
            _ => None,
        };
        let none = |_: &str| None;
        let empty = Aws::default();
        assert_eq!(
            endpoint_for(&empty, Service::Sqs, "eu-west-1", env),
            "http://sqs.local:1"
        );
        assert_eq!(
            endpoint_for(&empty, Service::S3, "eu-west-1", env),
            "http://all.local:2"
        );
        assert_eq!(
            endpoint_for(&empty, Service::EventBridge, "eu-west-1", none),
            "https://events.eu-west-1.amazonaws.com"
        );
        let local = Aws {
            endpoint_url: "http://localhost:4566".into(),
            dynamodb_endpoint_url: "http://localhost:8000".into(),
            ..Default::default()
        };
        assert_eq!(
            endpoint_for(&local, Service::Sqs, "eu-west-1", env),
            "http://localhost:4566"
        );
        assert_eq!(
            endpoint_for(&local, Service::DynamoDb, "eu-west-1", env),
            "http://localhost:8000"
        );
    }

    /// A request that never went out (no credentials) is not counted as one AWS bills.
    #[tokio::test]
    async fn only_requests_sent_are_counted() {
        let config = Aws {
            endpoint_url: "http://127.0.0.1:9".into(),
            ..Default::default()
        };
        let c = test_client(config, CredentialSource::Missing("none here"));
        let err = c
            .json(Service::Sqs, "GetQueueUrl", &serde_json::json!({}))
            .await
            .expect_err("no credentials");
        assert!(matches!(err, CallError::Credentials(_)), "{err}");
        assert_eq!(c.counter().snapshot().total(), 0);
    }

    #[test]
    fn backoff_stays_under_its_doubling_ceiling() {
        for attempt in 1..5 {
            assert!(backoff(attempt) <= BACKOFF_BASE * 2u32.pow(attempt - 1));
        }
    }
}
