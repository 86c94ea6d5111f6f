//! Per-recipient return paths for tenant mail (for every domain with `bounces.return_path`,
//! else for the domains `baton domain verify` turned them on for): recipient `i` of
//! message `ID` from `sender@acme.example` goes out from
//! `<token>@<bounces.subdomain>.acme.example`, the token made by the relay's key
//! ([`baton_domain::VerpKey`]), so a bounce that comes back by mail names both.

use baton_domain::{Domain, Envelope, VerpKey};
use baton_store::{Ledger, get_domain};

use crate::StageError;

/// Which mail gets return paths.
#[derive(Debug, Clone)]
pub struct ReturnPathPolicy {
    /// `bounces.subdomain`.
    pub label: String,
    /// `bounces.return_path`: every tenant domain, verified or not.
    pub every_domain: bool,
}

pub struct ReturnPaths<'a> {
    key: VerpKey,
    domain: String,
    envelope: &'a Envelope,
}

impl<'a> ReturnPaths<'a> {
    /// Return paths for this envelope: only a tenant's mail with a sender gets them
    /// (inbound and allow-listed mail keeps its own, and the null sender stays null).
    pub async fn for_envelope(
        ledger: &dyn Ledger,
        policy: &ReturnPathPolicy,
        envelope: &'a Envelope,
    ) -> Result<Option<ReturnPaths<'a>>, StageError> {
        let (Some(_), Some(from)) = (&envelope.tenant, &envelope.mail_from) else {
            return Ok(None);
        };
        // Without the bounce domain's MX, bounces to it would be lost and its SPF would fail.
        if !policy.every_domain {
            let verified = match Domain::parse(&from.domain().to_string()) {
                Ok(d) => get_domain(ledger, &d).await?.is_some_and(|r| r.return_path),
                Err(_) => false,
            };
            if !verified {
                return Ok(None);
            }
        }
        Ok(Some(ReturnPaths {
            key: baton_store::verp_key(ledger).await?,
            domain: format!("{}.{}", policy.label, from.domain()).to_ascii_lowercase(),
            envelope,
        }))
    }

    /// The envelope sender for `rcpt`, one of the envelope's recipients.
    pub fn sender(&self, rcpt: &str) -> Option<String> {
        let index = self
            .envelope
            .recipients
            .iter()
            .position(|r| r.address.to_string().eq_ignore_ascii_case(rcpt))?;
        let index = u16::try_from(index).ok()?;
        let local = self
            .key
            .local_part(&self.domain, &self.envelope.queue_id, index);
        Some(format!("{local}@{}", self.domain))
    }
}
