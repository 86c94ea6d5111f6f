//! Bounce parsing and classification, with no I/O.
//!
//! [`parse`] reads one inbound message (bytes as received) and says what it is: a delivery
//! status notification ([`Kind::Dsn`]: RFC 3464 or one of the non-standard formats large
//! providers and older MTAs still send), a complaint ([`Kind::Arf`], RFC 5965), an automatic
//! reply ([`Kind::Autoreply`], RFC 3834: never a bounce) or none of these
//! ([`Kind::Unknown`]). Each failed or delayed recipient carries what the report said (action,
//! enhanced status, SMTP reply code, diagnostic, remote MTA) and a [`Class`] and [`Reason`]
//! decided by [`Rules`]: enhanced status code first, diagnostic text second. The rules are data
//! (`src/rules.toml`, embedded); operators extend or override them with their own TOML
//! ([`Rules::from_toml`], [`Rules::merged`]). The taxonomy of reasons is documented on
//! [`Reason`] and in this crate's README.
//!
//! Work is bounded: only the first [`MAX_INPUT`] bytes are read, at most [`MAX_RECIPIENTS`]
//! recipients are reported, and diagnostics and lines are cut to fixed lengths. No input makes
//! the parser panic (it is fuzzed).

mod classify;
mod error;
mod parse;
mod report;
mod rules;

pub use classify::classify;
pub use error::BounceError;
pub use parse::{Parser, parse};
pub use report::{Action, Class, Kind, Reason, Recipient, Report};
pub use rules::Rules;

/// Bytes of a message that are looked at; the rest is ignored (the report is at the start).
pub const MAX_INPUT: usize = 512 * 1024;
/// Recipients reported per message; more are dropped.
pub const MAX_RECIPIENTS: usize = 100;
/// Characters kept of a diagnostic (and of any single line scanned by the text detectors).
pub const MAX_DIAGNOSTIC: usize = 1000;
