//! The crate's one error type.

/// What can go wrong parsing a message or loading rules.
#[derive(Debug, thiserror::Error)]
pub enum BounceError {
    /// The input has no header section at all, so it is not a message.
    #[error("not an RFC 5322 message (no header section)")]
    NotAMessage,
    /// An operator's rules file is not valid TOML or does not have the rules' shape.
    #[error("rules file: {0}")]
    RulesToml(#[from] toml::de::Error),
    /// A `[[text]]` rule's pattern is not a valid regular expression.
    #[error("rules file: text rule {index} pattern {pattern:?}: {source}")]
    RulesPattern {
        index: usize,
        pattern: String,
        #[source]
        source: regex::Error,
    },
    /// A `[[status]]` rule's code is not `C.S.D` with `*` allowed for a part.
    #[error("rules file: status rule {index}: code {code:?} is not C.S.D (digits or *)")]
    RulesStatus { index: usize, code: String },
}
