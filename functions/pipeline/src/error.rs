use baton_store::StoreError;

/// Why a stage could not finish a message.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Worth retrying later (storage unavailable, peer down...).
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed (undecodable record, missing body): goes to the dead-letter queue.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl StageError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StageError::Transient(_))
    }
}

impl From<StoreError> for StageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(k) => StageError::Permanent(format!("missing {k}")),
            StoreError::Corrupt { key, reason } => {
                StageError::Permanent(format!("corrupt {key}: {reason}"))
            }
            StoreError::InvalidKey(k) => StageError::Permanent(format!("invalid key {k}")),
            other => StageError::Transient(other.to_string()),
        }
    }
}
