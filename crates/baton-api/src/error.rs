//! Errors as SES v2 returns them: the HTTP status, `x-amzn-ErrorType` (which the SDKs map to
//! their exception classes) and a JSON body with the message.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One failed request. `kind` is SES's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// A malformed or invalid request (SES: BadRequestException, 400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    /// The message itself is refused (SES: MessageRejected, 400), e.g. a sender the tenant
    /// does not own.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MessageRejected", message)
    }

    /// No such resource, or one of another tenant's (never 403: names must not leak).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFoundException", message)
    }

    /// A missing, malformed or wrong signature, or an unknown or revoked key.
    pub fn signature(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, kind, message)
    }

    /// Too many requests at once (SES: TooManyRequestsException, 429): the SDKs retry these
    /// with backoff.
    pub fn throttled(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            message,
        )
    }

    /// The body did not arrive in time.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeoutException",
            "the request body did not arrive in time",
        )
    }

    /// Storage did not answer: the SDKs retry these.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }
}

impl From<baton_store::StoreError> for ApiError {
    fn from(e: baton_store::StoreError) -> Self {
        tracing::error!(error = %e, "storage failed");
        ApiError::unavailable("storage is unavailable; retry later")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message }).to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        response
    }
}
