//! Signing: DKIM signatures from the signing domain's active keys (RSA and Ed25519 at once
//! when both exist), prepended without touching the stored body.

use baton_store::QueueMessage;

use crate::dkim;
use crate::job::{Job, decode, encode};
use crate::records::record_event;
use crate::{Disposition, Ports, StageError};

/// The header From's domain, so the signature aligns for DMARC; the envelope sender's when
/// the header has no usable address.
pub fn signing_domain(head: &[u8], job: &Job) -> Option<String> {
    mail_parser::MessageParser::new()
        .parse_headers(head)
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_lowercase()))
        .or_else(|| {
            job.envelope
                .mail_from
                .as_ref()
                .and_then(|m| m.domain().name().map(str::to_string))
        })
}

pub async fn handle(ports: &Ports, message: &QueueMessage) -> Result<Disposition, StageError> {
    let mut job: Job = decode(&message.body)?;
    let id = job.envelope.queue_id;
    let ledger = ports.ledger.as_ref();
    let now = ports.clock.unix_ms();
    let stored = ports.blobs.read(&id.to_string()).await?;
    let domain = signing_domain(&stored, &job);
    let keys = match &domain {
        Some(d) => dkim::active_keys(ledger, d).await?,
        None => Vec::new(),
    };
    let domain = domain.unwrap_or_default();
    if keys.is_empty() {
        record_event(
            ledger,
            &id,
            now,
            "sign",
            "not signed",
            format!("no DKIM key for {domain}"),
        )
        .await?;
    } else {
        let signatures = dkim::sign(&[job.prefix.as_bytes(), &stored], &keys)
            .map_err(|e| StageError::Permanent(e.to_string()))?;
        let selectors: Vec<String> = keys
            .iter()
            .map(|k| format!("s={} a={}", k.selector, k.algorithm.as_str()))
            .collect();
        job.prefix = format!("{signatures}{}", job.prefix);
        record_event(
            ledger,
            &id,
            now,
            "sign",
            "signed",
            format!("d={domain} {}", selectors.join(", ")),
        )
        .await?;
    }
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
