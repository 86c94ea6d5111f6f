//! The SMTP server session as a state machine with no I/O.
//!
//! The gateway feeds received bytes to [`Session::advance`], writes whatever
//! [`Session::take_output`] returns, and acts on the returned [`Event`]: a TLS handshake, a
//! credential check, opening or committing a message. Everything about SMTP itself (command
//! syntax, sequencing, limits, relay control, body framing) is decided here and tested
//! without sockets.

mod body;
mod reply;
mod sasl;
mod session;

pub use body::{BodyDecoder, BodyInspector, ContentError, FramingError, Progress};
pub use reply::{Reply, canned};
pub use sasl::{Credentials, SaslError};
pub use session::{
    AuthOutcome, Event, ListenerKind, PeerInfo, ReceivedFields, ReturnPaths, Session,
    SessionConfig, SessionLimits, TlsInfo,
};
