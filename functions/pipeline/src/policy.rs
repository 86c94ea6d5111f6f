//! Policy: the first stage after intake. Checks what receivers and tenants require, drops
//! suppressed recipients with a recorded reason, and passes the rest on to signing.

use baton_domain::{Domain, Envelope, HeaderFacts};
use baton_store::{QueueMessage, get_domain};

use crate::inbound;
use crate::job::{
    BounceAction, Failure, FailureSource, Job, WithOrigin, decode, encode, send_bounce,
};
use crate::messages::{self, MessageSummary};
use crate::records::{
    RcptState, RcptStatus, init_rcpt_state, rcpt_state, record_event, record_event_once,
    set_rcpt_state, suppressed,
};
use crate::ses_events;
use crate::{Disposition, Ports, StageError};
use serde_json::json;

/// How much of a body policy reads: the header section must fit (the gateway caps it).
/// (The stored body starts with our Received: field, so a little more than the section.)
const HEAD_MAX: usize = baton_config::HEADER_SECTION_MAX + 16 * 1024;

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Domain for Message-IDs policy adds.
    pub hostname: String,
    /// `bounces.subdomain`: mail to `<token>@<it>.<domain>` is a bounce coming back.
    pub bounce_subdomain: String,
    /// When soft bounces coming back by mail suppress.
    pub soft: crate::soft::SoftBounces,
    /// Parses them, with the operator's rules (`bounces.rules_file`) over the built-in ones.
    pub bounce_parser: std::sync::Arc<baton_bounce::Parser>,
}

/// What policy decided about a message.
#[derive(Debug)]
pub enum Decision {
    /// Nothing more to do here (refused, suppressed, a bounce coming back): recorded.
    Finished,
    /// Over quota: bring the message back after this long.
    RetryAfter(std::time::Duration),
    /// On to signing with these recipients and added headers.
    Pass(Box<WithOrigin<Job>>),
}

pub async fn handle(
    ports: &Ports,
    config: &PolicyConfig,
    message: &QueueMessage,
) -> Result<Disposition, StageError> {
    // The origin rides along to sign untouched: only mail the relay wrote says `Relay`.
    let record = decode::<WithOrigin<Envelope>>(&message.body)?;
    let id = record.record.queue_id;
    let head = ports.blobs.read_head(&id.to_string(), HEAD_MAX).await?;
    match decide(ports, config, record, &head, &message.attributes).await? {
        Decision::Finished => Ok(Disposition::Done),
        Decision::RetryAfter(after) => Ok(Disposition::RetryAfter(after)),
        Decision::Pass(job) => {
            ports
                .sign
                .send(
                    &encode(&job)?,
                    message.attributes.clone(),
                    Default::default(),
                )
                .await?;
            Ok(Disposition::Done)
        }
    }
}

/// Policy on one message whose stored body starts with `head` (at least its header
/// section, or the whole body): records, events and bounces, and the job for signing.
/// `attributes` go with any bounce it queues.
pub async fn decide(
    ports: &Ports,
    config: &PolicyConfig,
    record: WithOrigin<Envelope>,
    head: &[u8],
    attributes: &std::collections::BTreeMap<String, String>,
) -> Result<Decision, StageError> {
    let WithOrigin {
        record: envelope,
        origin,
    } = record;
    let head = &head[..head.len().min(HEAD_MAX)];
    let id = envelope.queue_id;
    let ledger = ports.ledger.as_ref();
    let now = ports.clock.unix_ms();
    // The gateway writes nothing but the body and the queue entry (its hot path); the
    // timeline's first line is recorded here, stamped with the time of acceptance, once
    // however often a quota deferral brings the message back.
    let accepted = format!(
        "from <{}> by {} [{}]{}{}, {} octets",
        envelope
            .mail_from
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        envelope.helo,
        envelope.client_ip,
        if envelope.tls { " over TLS" } else { "" },
        envelope
            .auth_user
            .as_deref()
            .map(|u| format!(" as {u}"))
            .unwrap_or_default(),
        envelope.size
    );
    record_event_once(
        ledger,
        &id,
        envelope.received_at * 1000,
        "gateway",
        "accepted",
        accepted,
    )
    .await?;
    let facts = HeaderFacts::parse(head);
    let summary = MessageSummary::new(&envelope, facts.subject.as_deref());
    messages::put_summary(ledger, &id, &summary).await?;
    if let Some(bounced) =
        inbound::returned(ports, &config.bounce_subdomain, &envelope, now).await?
    {
        inbound::handle(ports, config, &envelope, &bounced, now).await?;
        for rcpt in &envelope.recipients {
            let state = RcptState {
                status: RcptStatus::Delivered,
                attempts: 1,
                last_reply: "250 2.0.0 bounce processed".into(),
                remote_mta: None,
                updated_at: now,
                lease_until: 0,
            };
            set_rcpt_state(ledger, &id, &rcpt.address.to_string(), &state).await?;
        }
        return Ok(Decision::Finished);
    }
    if let Some(tenant) = &envelope.tenant
        && let Some(over) =
            crate::quota::take(ledger, tenant, envelope.recipients.len() as u64, now).await?
    {
        record_event(
            ledger,
            &id,
            now,
            "policy",
            "deferred",
            format!("{}: retry in {:?}", over.reason, over.retry_after),
        )
        .await?;
        return Ok(Decision::RetryAfter(over.retry_after));
    }
    // The session refuses these before 250; this catches what reached the queue otherwise.
    let whole_message_refusal = if let Err(e) = facts.author_check() {
        Some(Failure {
            recipient: String::new(),
            code: 550,
            enhanced: "5.6.0".into(),
            text: e.to_string(),
            remote_mta: None,
            source: FailureSource::Policy,
        })
    } else {
        sender_domain_refusal(ports, &envelope).await?
    };

    // SES's first event: Send for mail it will try, Reject for mail it refuses whole.
    // The summary was just written: no need to read it back.
    let about = ses_events::About::from_summary(&id, &summary);
    if let Some(a) = &about {
        match &whole_message_refusal {
            Some(r) => {
                let reason = format!("{} {} {}", r.code, r.enhanced, r.text);
                a.publish(
                    ports,
                    "Reject",
                    "",
                    json!({ "reject": { "reason": reason } }),
                )
                .await?
            }
            None => a.publish(ports, "Send", "", json!({ "send": {} })).await?,
        }
    }
    let mut failures = Vec::new();
    let mut pass = Vec::new();
    for rcpt in &envelope.recipients {
        let address = rcpt.address.to_string();
        // A redelivered intake message must not redo recipients that moved on.
        match rcpt_state(ledger, &id, &address).await? {
            Some(s) if s.status != RcptStatus::Pending => continue,
            Some(_) => {}
            None => init_rcpt_state(ledger, &id, &address, now).await?,
        }
        let (status, failure) = if let Some(refusal) = &whole_message_refusal {
            let mut f = refusal.clone();
            f.recipient = address.clone();
            (RcptStatus::Failed, Some(f))
        } else if let Some(s) = suppressed(ledger, envelope.tenant.as_ref(), &address)
            .await?
            .filter(|s| s.in_force(now))
        {
            let f = Failure {
                recipient: address.clone(),
                code: 550,
                enhanced: "5.7.1".into(),
                text: format!("Recipient is on the suppression list ({})", s.reason),
                remote_mta: None,
                source: FailureSource::Policy,
            };
            if let Some(a) = &about {
                let line = ses_events::BounceLine {
                    hard: true,
                    sub_type: "OnAccountSuppressionList",
                    recipient: &address,
                    status: &f.enhanced,
                    diagnostic: &f.text,
                };
                let feedback = ses_events::feedback_id(&id, "suppressed", &address);
                let event = ses_events::bounce(&line, &feedback, &config.hostname, now);
                a.publish(ports, "Bounce", &feedback, event).await?;
            }
            (RcptStatus::Suppressed, Some(f))
        } else {
            (RcptStatus::Pending, None)
        };
        match failure {
            Some(f) => {
                let state = RcptState {
                    status,
                    attempts: 0,
                    last_reply: format!("{} {} {}", f.code, f.enhanced, f.text),
                    remote_mta: None,
                    updated_at: now,
                    lease_until: 0,
                };
                set_rcpt_state(ledger, &id, &address, &state).await?;
                record_event(
                    ledger,
                    &id,
                    now,
                    "policy",
                    "rejected",
                    format!("{address}: {}", state.last_reply),
                )
                .await?;
                failures.push(f);
            }
            None => pass.push(address),
        }
    }

    if !failures.is_empty() {
        send_bounce(ports, &envelope, BounceAction::Failed, failures, attributes).await?;
    }
    if pass.is_empty() {
        return Ok(Decision::Finished);
    }
    let mut prefix = String::new();
    if !facts.has_date {
        prefix.push_str(&format!("Date: {}\r\n", rfc2822(envelope.received_at)));
    }
    if !facts.has_message_id {
        prefix.push_str(&format!("Message-ID: <{id}@{}>\r\n", config.hostname));
    }
    if !prefix.is_empty() {
        record_event(
            ledger,
            &id,
            now,
            "policy",
            "headers added",
            prefix.trim_end().replace("\r\n", "; "),
        )
        .await?;
    }
    record_event(ledger, &id, now, "policy", "passed", pass.join(", ")).await?;
    let mut job = Job::new(envelope, prefix);
    job.pending = pass;
    Ok(Decision::Pass(Box::new(WithOrigin {
        record: job,
        origin,
    })))
}

/// A tenant may send only from a registered domain of its own.
async fn sender_domain_refusal(
    ports: &Ports,
    envelope: &Envelope,
) -> Result<Option<Failure>, StageError> {
    let (Some(tenant), Some(from)) = (&envelope.tenant, &envelope.mail_from) else {
        return Ok(None);
    };
    let owned = match from.domain() {
        d @ Domain::Name(_) => get_domain(ports.ledger.as_ref(), d)
            .await?
            .is_some_and(|r| &r.tenant == tenant),
        Domain::Literal(_) => false,
    };
    Ok((!owned).then(|| Failure {
        recipient: String::new(),
        code: 550,
        enhanced: "5.7.1".into(),
        text: format!(
            "Sender domain {} is not registered for tenant {}",
            from.domain(),
            tenant.0
        ),
        remote_mta: None,
        source: FailureSource::Policy,
    }))
}

pub fn rfc2822(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".into())
}
