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
            detail: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
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

/// An SDK failure as a (transient) storage error, with the whole error chain in the text.
pub(crate) fn backend<E: std::error::Error + 'static>(what: &str, e: E) -> StoreError {
    StoreError::Backend(format!(
        "{what}: {}",
        aws_sdk_s3::error::DisplayErrorContext(e)
    ))
}
