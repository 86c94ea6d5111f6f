//! The SES v2-compatible HTTP API (issue 10, in progress): requests signed with AWS
//! Signature Version 4 by per-tenant access keys, answered with SES's paths, JSON shapes and
//! error types, so that an application moves to Baton by changing only its endpoint and keys.
//! Today: SendEmail with Simple (attachments, Reply-To, tags, feedback address), Raw and
//! Template content, SendBulkEmail, email templates (Create/Get/Update/Delete/List and
//! TestRender, rendered with Handlebars), GetAccount, domain identities, the suppression
//! list operations, access keys.

pub mod account;
pub mod attachments;
pub mod auth;
pub mod bulk;
pub mod error;
pub mod identities;
pub mod keys;
pub mod render;
pub mod router;
pub mod send;
#[cfg(feature = "server")]
pub mod server;
pub mod sigv4;
pub mod suppression;
pub mod template_routes;
pub mod templates;

pub use error::ApiError;
pub use router::{ApiState, router};
#[cfg(feature = "server")]
pub use server::{Limits, serve};
