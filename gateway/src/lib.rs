//! The edge SMTP gateway. It moves bytes between sockets and the SMTP session state machine
//! (`baton-smtp`), does TLS, enforces deadlines and connection limits, checks credentials,
//! and makes accepted messages durable through the storage ports before the session may
//! answer 250.

mod auth;
mod connection;
mod error;
mod intake;
mod proxy;
mod server;
mod stream;
pub mod tls;

pub use auth::{Authenticator, hash_password};
pub use error::GatewayError;
pub use intake::Intake;
pub use server::{Gateway, GatewayDeps};
