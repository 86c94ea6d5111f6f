//! Baton's domain model. Types here can only be built by parsing, so the rest of the
//! code never handles an unchecked address or id.

mod address;
mod author;
mod dsn;
mod envelope;
mod queue_id;
mod verp;

pub use address::{AddressError, Domain, Mailbox, Path, split_path_argument};
pub use author::{AuthorError, HeaderFacts};
pub use dsn::{EnvId, OriginalRecipient, ParamError, XText};
pub use envelope::{BodyType, Envelope, Identity, NotifyOn, Recipient, Ret, TenantId};
pub use queue_id::{QueueId, QueueIdError};
pub use verp::{Bounced, MAX_AGE_MS as VERP_MAX_AGE_MS, VerpError, VerpKey, bounce_domain_parent};
