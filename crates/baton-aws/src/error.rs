use baton_store::StoreError;
use thiserror::Error;

use crate::wire::CallError;

/// Failures setting up the AWS backend. Failures of single operations are `StoreError`s.
#[derive(Debug, Error)]
pub enum AwsError {
    #[error("{what}: {detail}")]
    Service { what: String, detail: String },
    #[error("invalid AWS request: {0}")]
    Build(String),
}

impl AwsError {
    pub(crate) fn service(what: impl Into<String>, e: CallError) -> Self {
        AwsError::Service {
            what: what.into(),
            detail: e.to_string(),
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

/// A failed call as a (transient) storage error: the service's error code and message, or
/// the cause chain of a failure to reach it (timeout, connection refused).
pub(crate) fn backend(what: &str, e: CallError) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

/// An error and its causes on one line, each said once (reqwest's errors nest the
/// connection failure's cause several levels down).
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
