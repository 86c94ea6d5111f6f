//! Per-recipient return paths for tenant mail (`bounces.return_path`): recipient `i` of
//! message `ID` from `sender@acme.example` goes out from
//! `<token>@<bounces.subdomain>.acme.example`, the token made by the relay's key
//! ([`baton_domain::VerpKey`]), so a bounce that comes back by mail names both.

use baton_domain::{Envelope, VerpKey};
use baton_store::Ledger;

use crate::StageError;

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
        label: &str,
        envelope: &'a Envelope,
    ) -> Result<Option<ReturnPaths<'a>>, StageError> {
        let (Some(_), Some(from)) = (&envelope.tenant, &envelope.mail_from) else {
            return Ok(None);
        };
        Ok(Some(ReturnPaths {
            key: baton_store::verp_key(ledger).await?,
            domain: format!("{label}.{}", from.domain()).to_ascii_lowercase(),
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
