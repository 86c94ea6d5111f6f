//! Bounces that come back by mail to one of our return paths ([`crate::return_path`]).
//!
//! The gateway took the message from anyone, but only to an address whose MAC opens with the
//! relay's key; here the token is opened again (MAC and age), so it alone decides which
//! message and which recipient the bounce is about. The report (parsed by `baton-bounce`)
//! says what happened: a hard bounce or a complaint suppresses that recipient for the
//! message's tenant, a soft bounce is recorded, an auto-reply or an unreadable message is
//! only noted on the timeline. Nothing is ever sent in reply.

use baton_bounce::{Action, Class, Kind, Report};
use baton_domain::{Bounced, Envelope, QueueId, TenantId};

use crate::messages;
use crate::records::{BounceRecord, Suppression, put_bounce, record_event, suppress};
use crate::ses_events;
use crate::soft::SoftBounces;
use crate::{Ports, StageError};

/// The bounced messages and recipients `envelope` is addressed to, when every recipient is
/// one of our return paths (at `<label>.<domain>`, its MAC opening with our key): those
/// still young enough to act on, possibly none. `None` for any other message. Our return
/// paths never go on through the pipeline: relayed, they would come straight back here.
pub async fn returned(
    ports: &Ports,
    label: &str,
    envelope: &Envelope,
    now_ms: i64,
) -> Result<Option<Vec<Bounced>>, StageError> {
    if envelope.tenant.is_some() || envelope.recipients.is_empty() {
        return Ok(None);
    }
    let at_bounce_domain = |d: &str| {
        d.split_once('.')
            .is_some_and(|(first, rest)| first.eq_ignore_ascii_case(label) && rest.contains('.'))
    };
    if !envelope
        .recipients
        .iter()
        .all(|r| at_bounce_domain(&r.address.domain().to_string()))
    {
        return Ok(None);
    }
    let key = baton_store::verp_key(ports.ledger.as_ref()).await?;
    let mut ours = Vec::new();
    for r in &envelope.recipients {
        // Someone else's address that looks like a bounce domain: ordinary mail.
        let Ok(b) = key.verify(r.address.local(), &r.address.domain().to_string()) else {
            return Ok(None);
        };
        ours.push(b);
    }
    Ok(Some(
        ours.into_iter()
            .filter(|b| {
                now_ms.saturating_sub(b.queue_id.unix_ms()) <= baton_domain::VERP_MAX_AGE_MS
            })
            .collect(),
    ))
}

/// Acts on a bounce that came back: see the module documentation.
pub async fn handle(
    ports: &Ports,
    envelope: &Envelope,
    bounced: &[Bounced],
    soft: &SoftBounces,
    now_ms: i64,
) -> Result<(), StageError> {
    let ledger = ports.ledger.as_ref();
    let id = envelope.queue_id;
    let raw = ports
        .blobs
        .read_head(&id.to_string(), baton_bounce::MAX_INPUT)
        .await?;
    let report = baton_bounce::parse(&raw).ok();
    if bounced.is_empty() {
        let why = "its return paths are too old to act on";
        record_event(ledger, &id, now_ms, "bounce", "ignored", why).await?;
    }
    for b in bounced {
        let Some(summary) = messages::summary(ledger, &b.queue_id).await? else {
            record_event(
                ledger,
                &id,
                now_ms,
                "bounce",
                "ignored",
                format!("no record of message {}", b.queue_id),
            )
            .await?;
            continue;
        };
        let Some(address) = summary.recipients.get(usize::from(b.index)).cloned() else {
            record_event(
                ledger,
                &id,
                now_ms,
                "bounce",
                "ignored",
                format!("message {} has no recipient {}", b.queue_id, b.index),
            )
            .await?;
            continue;
        };
        let tenant = summary.tenant.clone().map(TenantId);
        let outcome = outcome(report.as_ref(), &address);
        record_event(
            ledger,
            &id,
            now_ms,
            "bounce",
            "received",
            format!("for {} to {address}: {}", b.queue_id, outcome.describe()),
        )
        .await?;
        record_event(
            ledger,
            &b.queue_id,
            now_ms,
            "bounce",
            outcome.event(),
            format!("{address}: {} (reported in {id})", outcome.describe()),
        )
        .await?;
        if let Some(record) = outcome.bounce_record(tenant.clone(), b, &address, now_ms) {
            put_bounce(ledger, &record).await?;
        }
        if let Some(about) = ses_events::About::from_summary(&b.queue_id, &summary)
            && let Some((event_type, event)) = outcome.ses_event(&address, &id, now_ms)
        {
            about.publish(ledger, now_ms, event_type, event).await?;
        }
        let repeated = match (&outcome, &tenant) {
            (Outcome::Bounce { hard: false, .. }, Some(t)) => {
                soft.note(ledger, t, &address, &b.queue_id, now_ms).await?
            }
            _ => None,
        };
        if let Some(reason) = outcome
            .suppression_reason()
            .or_else(|| repeated.map(|n| soft.reason(n)))
        {
            let s = Suppression {
                reason,
                queue_id: Some(b.queue_id),
                at: now_ms,
            };
            suppress(ledger, tenant.as_ref(), &address, &s).await?;
        }
    }
    Ok(())
}

/// What a returned report says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Bounce {
        hard: bool,
        status: String,
        reply_code: u16,
        diagnostic: String,
        remote_mta: Option<String>,
        reason: String,
    },
    Complaint {
        feedback: String,
    },
    AutoReply,
    Unreadable,
}

/// The report's line for `address` (or its only line: the token, not the report, says who
/// the recipient was), read as an outcome.
fn outcome(report: Option<&Report>, address: &str) -> Outcome {
    let Some(report) = report else {
        return Outcome::Unreadable;
    };
    let line = report
        .recipients
        .iter()
        .find(|r| r.address.eq_ignore_ascii_case(address))
        .or(match report.recipients.as_slice() {
            [only] => Some(only),
            _ => None,
        });
    match (report.kind, line) {
        (Kind::Arf, line) => Outcome::Complaint {
            feedback: line
                .map(|l| word(&l.reason))
                .unwrap_or_else(|| "complaint".into()),
        },
        (Kind::Autoreply, _) => Outcome::AutoReply,
        (Kind::Dsn, Some(l))
            if matches!(
                l.action,
                Some(Action::Failed) | Some(Action::Delayed) | None
            ) =>
        {
            Outcome::Bounce {
                hard: l.class == Class::Hard && l.action != Some(Action::Delayed),
                status: l.status.clone().unwrap_or_default(),
                reply_code: l.reply_code.unwrap_or(0),
                diagnostic: l.diagnostic.clone().unwrap_or_default(),
                remote_mta: l.remote_mta.clone(),
                reason: word(&l.reason),
            }
        }
        _ => Outcome::Unreadable,
    }
}

fn word<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Outcome {
    fn event(&self) -> &'static str {
        match self {
            Outcome::Bounce { hard: true, .. } => "bounced",
            Outcome::Bounce { hard: false, .. } => "soft bounce",
            Outcome::Complaint { .. } => "complaint",
            Outcome::AutoReply => "auto-reply",
            Outcome::Unreadable => "unrecognised reply",
        }
    }

    fn describe(&self) -> String {
        match self {
            Outcome::Bounce {
                hard,
                status,
                diagnostic,
                reason,
                ..
            } => format!(
                "{} bounce {status} {reason}: {diagnostic}",
                if *hard { "hard" } else { "soft" }
            ),
            Outcome::Complaint { feedback } => format!("complaint ({feedback})"),
            Outcome::AutoReply => "automatic reply, not a bounce".into(),
            Outcome::Unreadable => "not a report we can read".into(),
        }
    }

    fn bounce_record(
        &self,
        tenant: Option<TenantId>,
        b: &Bounced,
        address: &str,
        at: i64,
    ) -> Option<BounceRecord> {
        let Outcome::Bounce {
            hard,
            status,
            reply_code,
            diagnostic,
            remote_mta,
            ..
        } = self
        else {
            return None;
        };
        Some(BounceRecord {
            tenant,
            queue_id: b.queue_id,
            recipient: address.to_string(),
            code: *reply_code,
            enhanced: status.clone(),
            reply: diagnostic.clone(),
            remote_mta: remote_mta.clone(),
            at,
            hard: *hard,
        })
    }

    /// The SES event for this outcome, if it has one (auto-replies and unreadable reports
    /// have none in SES's vocabulary).
    fn ses_event(
        &self,
        address: &str,
        report: &QueueId,
        now_ms: i64,
    ) -> Option<(&'static str, serde_json::Value)> {
        match self {
            Outcome::Bounce {
                hard,
                status,
                diagnostic,
                remote_mta,
                ..
            } => {
                let line = ses_events::BounceLine {
                    hard: *hard,
                    sub_type: ses_events::bounce_sub_type(status),
                    recipient: address,
                    status,
                    diagnostic,
                };
                let remote = remote_mta.as_deref().unwrap_or("unknown");
                let feedback = ses_events::feedback_id(report, 0);
                Some((
                    "Bounce",
                    ses_events::bounce(&line, &feedback, remote, now_ms),
                ))
            }
            Outcome::Complaint { feedback } => Some((
                "Complaint",
                serde_json::json!({ "complaint": {
                    "complainedRecipients": [{ "emailAddress": address }],
                    "timestamp": ses_events::iso8601(now_ms),
                    "feedbackId": ses_events::feedback_id(report, 0),
                    "complaintFeedbackType": feedback,
                }}),
            )),
            Outcome::AutoReply | Outcome::Unreadable => None,
        }
    }

    /// Hard bounces and complaints suppress; soft bounces and the rest do not.
    fn suppression_reason(&self) -> Option<String> {
        match self {
            Outcome::Bounce {
                hard: true,
                status,
                reason,
                ..
            } => Some(format!("hard bounce by mail: {status} {reason}")),
            Outcome::Complaint { feedback } => Some(format!("complaint: {feedback}")),
            _ => None,
        }
    }
}
