use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("storage backend is shutting down")]
    Closed,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("corrupt record {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Io(_) | StoreError::Backend(_) | StoreError::Closed
        )
    }

    /// The SMTP reply (code, enhanced code) a client gets when accepting its message hit
    /// this error: every storage failure during accept is temporary for the client.
    pub fn smtp_reply(&self) -> (u16, &'static str) {
        (451, "4.3.0")
    }
}

/// Rejects keys that could escape a directory or a table namespace.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 200
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
        && !key.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_string()))
    }
}
