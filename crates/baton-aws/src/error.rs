use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use baton_store::StoreError;
use thiserror::Error;

/// Failures setting up the AWS backend. Failures of single operations are `StoreError`s.
#[derive(Debug, Error)]
pub enum AwsError {
    #[error("{what}: {detail}")]
    Service { what: String, detail: String },
    #[error("invalid AWS request: {0}")]
    Build(String),
}

impl AwsError {
    pub(crate) fn service<E: std::error::Error + 'static>(what: impl Into<String>, e: E) -> Self {
        AwsError::Service {
            what: what.into(),
            detail: causes(&e),
        }
    }

    /// Every AWS service failure may go away (throttling, outage); request-building errors
    /// are bugs.
    pub fn is_transient(&self) -> bool {
        matches!(self, AwsError::Service { .. })
    }
}

impl From<AwsError> for StoreError {
    fn from(e: AwsError) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// An SDK failure as a (transient) storage error: the service's error code and message, or
/// the cause chain of a failure to reach it (timeout, connection refused).
pub(crate) fn backend<E, R>(what: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let detail = match &e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("service error"),
            s.err().message().unwrap_or("")
        ),
        _ => causes(&e),
    };
    StoreError::Backend(format!("{what}: {detail}"))
}

/// A failure that is not an SDK call's (e.g. reading a response body).
pub(crate) fn other<E: std::error::Error + 'static>(what: &str, e: E) -> StoreError {
    StoreError::Backend(format!("{what}: {}", causes(&e)))
}

/// An error and its causes on one line, each said once: no Debug dumps of SDK internals
/// (the SDK's own `DisplayErrorContext` ends in one).
pub(crate) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = err.source();
    }
    out
}
