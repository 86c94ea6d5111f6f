//! Signing: DKIM signatures from the signing domain's active keys (RSA and Ed25519 at once
//! when both exist), prepended without touching the stored body.
//!
//! Two kinds of mail are signed, and nothing else:
//! - a tenant's own: the envelope carries the tenant (set from an authenticated identity,
//!   never from anonymous input) and the author domain is registered to that tenant;
//! - the relay's own (DSNs, delay notices): marked [`Origin::Relay`] by `bounce.rs`, which
//!   also wrote its From (`MAILER-DAEMON@<hostname>`), signed with the hostname's keys.
//!
//! Anything else (inbound mail, allow-listed relays, a From at the relay's hostname that a
//! client wrote) goes out unsigned: nobody obtains a customer's signature on mail that
//! customer did not submit, nor the relay's on mail the relay did not write.

use std::sync::Arc;

use baton_domain::{Domain, Envelope, HeaderFacts};
use baton_store::{QueueMessage, get_domain};

use crate::body::Body;
use crate::dkim;
use crate::job::{Job, Origin, WithOrigin, decode, encode};
use crate::records::record_event;
use crate::{Disposition, Ports, StageError};

/// Bodies above this are hashed on a blocking thread so that the async workers stay free.
const INLINE_SIGN_MAX: usize = 64 * 1024;

/// The header From's domain (DMARC alignment), decided by the parser the session and
/// policy use. `None` when the message has no single author domain.
pub fn signing_domain(head: &[u8]) -> Option<Domain> {
    HeaderFacts::parse(head).author_domain().cloned()
}

/// Why a message is not signed, or `None` when `domain` may be signed for this envelope.
async fn refusal(
    ports: &Ports,
    envelope: &Envelope,
    origin: Origin,
    domain: Option<&Domain>,
) -> Result<Option<String>, StageError> {
    if origin == Origin::Relay {
        // The relay wrote this message, its From and its envelope: the author domain must be
        // the hostname bounce.rs put in both (MAILER-DAEMON@<hostname>, HELO <hostname>).
        return Ok(match domain {
            Some(d) if d.to_string().eq_ignore_ascii_case(&envelope.helo) => None,
            Some(d) => Some(format!("relay mail from {d}, not {}", envelope.helo)),
            None => Some("no single author domain in From".into()),
        });
    }
    let Some(tenant) = &envelope.tenant else {
        return Ok(Some("not submitted by a tenant".into()));
    };
    let Some(domain) = domain else {
        return Ok(Some("no single author domain in From".into()));
    };
    let owner = get_domain(ports.ledger.as_ref(), domain).await?;
    Ok(match owner {
        Some(r) if &r.tenant == tenant => None,
        _ => Some(format!("{domain} is not a domain of tenant {}", tenant.0)),
    })
}

pub async fn handle(ports: &Ports, message: &QueueMessage) -> Result<Disposition, StageError> {
    let record = decode::<WithOrigin<Job>>(&message.body)?;
    let envelope = &record.record.envelope;
    let Some(share) = crate::body::reserve(envelope).await? else {
        return Ok(Disposition::RetryAfter(crate::body::LANE_FULL_RETRY));
    };
    let stored = Arc::new(crate::body::read(ports, envelope, share).await?);
    let job = sign(ports, record, stored).await?;
    ports
        .deliver
        .send(
            &encode(&job)?,
            message.attributes.clone(),
            Default::default(),
        )
        .await?;
    Ok(Disposition::Done)
}

/// Signs `record`'s message, whose stored body is `stored`, if it may be signed: the job
/// for delivery, with the signatures at the front of its prefix.
pub async fn sign(
    ports: &Ports,
    record: WithOrigin<Job>,
    stored: Arc<Body>,
) -> Result<Job, StageError> {
    let WithOrigin {
        record: mut job,
        origin,
    } = record;
    let id = job.envelope.queue_id;
    let ledger = ports.ledger.as_ref();
    let now = ports.clock.unix_ms();
    let domain = signing_domain(&stored);
    let keys = match refusal(ports, &job.envelope, origin, domain.as_ref()).await? {
        Some(why) => {
            record_event(ledger, &id, now, "sign", "not signed", why).await?;
            Vec::new()
        }
        None => {
            let d = domain.as_ref().map(ToString::to_string).unwrap_or_default();
            let keys = dkim::active_keys(ledger, &d).await?;
            if keys.is_empty() {
                let why = format!("no DKIM key for {d}");
                record_event(ledger, &id, now, "sign", "not signed", why).await?;
            }
            keys
        }
    };
    if !keys.is_empty() {
        let prefix = job.prefix.clone();
        let selectors: Vec<String> = keys
            .iter()
            .map(|k| format!("s={} a={}", k.selector, k.algorithm.as_str()))
            .collect();
        let signatures = if stored.len() <= INLINE_SIGN_MAX {
            dkim::sign(&[prefix.as_bytes(), &stored[..]], &keys)
        } else {
            tokio::task::spawn_blocking(move || {
                dkim::sign(&[prefix.as_bytes(), &stored[..]], &keys)
            })
            .await
            .map_err(|e| StageError::Transient(format!("signing task failed: {e}")))?
        }
        .map_err(|e| StageError::Permanent(e.to_string()))?;
        job.prefix = format!("{signatures}{}", job.prefix);
        let d = domain.map(|d| d.to_string()).unwrap_or_default();
        record_event(
            ledger,
            &id,
            now,
            "sign",
            "signed",
            format!("d={d} {}", selectors.join(", ")),
        )
        .await?;
    }
    Ok(job)
}
