//! Bounces that come back by mail to one of our return paths ([`crate::return_path`]).
//!
//! The gateway took the message from anyone, but only to an address whose MAC opens with the
//! relay's key; here the token is opened again (MAC and age), so it alone decides which
//! message and which recipient the bounce is about. The report (parsed by `baton-bounce`)
//! says what happened: a hard bounce or a complaint suppresses that recipient for the
//! message's tenant, a soft bounce is recorded, an auto-reply or an unreadable message is
//! only noted on the timeline. Nothing is ever sent in reply.

use baton_bounce::{Action, Class, Kind, Report};
use baton_domain::{Bounced, Domain, Envelope, QueueId, TenantId};
use baton_store::get_domain;

use crate::job::{BounceAction, Failure, FailureSource, send_bounce};
use crate::messages;
use crate::policy::PolicyConfig;
use crate::records::{self, BounceRecord, Suppression, put_bounce, record_event, suppress};
use crate::ses_events;
use crate::{Ports, StageError};

/// The bounced messages and recipients `envelope` is addressed to, when its recipients are
/// at our bounce domains (`<label>.<a registered sending domain>`): the return paths whose
/// MAC opens and that are young enough to act on, possibly none. `None` for any other
/// message. Mail to our bounce domains never goes on through the pipeline, whoever sent it
/// and whatever its tokens say: relayed, it would come straight back here (fail closed).
pub async fn returned(
    ports: &Ports,
    label: &str,
    envelope: &Envelope,
    now_ms: i64,
) -> Result<Option<Vec<Bounced>>, StageError> {
    let ledger = ports.ledger.as_ref();
    let mut at_ours = false;
    for r in &envelope.recipients {
        let domain = r.address.domain().to_string();
        if let Some(rest) = baton_domain::bounce_domain_parent(label, &domain)
            && let Ok(d) = Domain::parse(rest)
            && get_domain(ledger, &d).await?.is_some()
        {
            at_ours = true;
            break;
        }
    }
    if !at_ours {
        return Ok(None);
    }
    let key = baton_store::verp_key(ledger).await?;
    Ok(Some(
        envelope
            .recipients
            .iter()
            .filter_map(|r| {
                key.open(r.address.local(), &r.address.domain().to_string(), now_ms)
                    .ok()
            })
            .collect(),
    ))
}

/// The bounce parser with the operator's rules file (if any) over the built-in rules.
pub fn parser(rules_file: Option<&std::path::Path>) -> Result<baton_bounce::Parser, StageError> {
    let rules = match rules_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StageError::Permanent(format!("bounce rules {}: {e}", path.display()))
            })?;
            let own = baton_bounce::Rules::from_toml(&text).map_err(|e| {
                StageError::Permanent(format!("bounce rules {}: {e}", path.display()))
            })?;
            baton_bounce::Rules::default().merged(&own)
        }
        None => baton_bounce::Rules::default(),
    };
    Ok(baton_bounce::Parser::new(rules))
}

/// Acts on a bounce that came back: see the module documentation.
pub async fn handle(
    ports: &Ports,
    config: &PolicyConfig,
    envelope: &Envelope,
    bounced: &[Bounced],
    now_ms: i64,
) -> Result<(), StageError> {
    let soft = &config.soft;
    let ledger = ports.ledger.as_ref();
    let id = envelope.queue_id;
    let raw = ports
        .blobs
        .read_head(&id.to_string(), baton_bounce::MAX_INPUT)
        .await?;
    let report = config.bounce_parser.parse(&raw).ok();
    if bounced.is_empty() {
        let why = "none of its return paths opens (forged, or too old to act on)";
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
        // A token seen again (a replay, or the same report sent twice) acts once.
        if acted_before(ledger, &outcome, tenant.as_ref(), b, &address).await? {
            record_event(
                ledger,
                &id,
                now_ms,
                "bounce",
                "duplicate",
                "already acted on",
            )
            .await?;
            continue;
        }
        record_event(
            ledger,
            &b.queue_id,
            now_ms,
            "bounce",
            outcome.event(),
            format!("{address}: {} (reported in {id})", outcome.describe()),
        )
        .await?;
        if let Some(about) = ses_events::About::from_summary(&b.queue_id, &summary)
            && let Some((event_type, event)) = outcome.ses_event(&address, &id, now_ms)
        {
            let occurrence = format!("{id}/{address}");
            about.publish(ports, event_type, &occurrence, event).await?;
        }
        let repeated = match (&outcome, &tenant) {
            (Outcome::Bounce { hard: false, .. }, Some(t)) => {
                soft.note(ledger, t, &address, &b.queue_id, now_ms).await?
            }
            _ => None,
        };
        let suppression = match outcome.suppression_reason() {
            Some(reason) => Some((reason, None)),
            None => repeated.map(|n| (soft.reason(n), Some(soft.expiry(now_ms)))),
        };
        if let Some((reason, expires_at)) = suppression {
            let s = Suppression {
                reason,
                queue_id: Some(b.queue_id),
                at: now_ms,
                expires_at,
            };
            suppress(ledger, tenant.as_ref(), &address, &s).await?;
        }
        // The return path took the bounce the sender would have had: pass it on, as a DSN
        // of ours (headers only, NOTIFY honoured; the bounce stage sends it once).
        if let Some(failure) = outcome.failure(&address)
            && let Some(original) = summary.envelope_for(b.queue_id, &address)
        {
            let attributes = [("queue_id".to_string(), b.queue_id.to_string())].into();
            send_bounce(
                ports,
                &original,
                BounceAction::Reported,
                vec![failure],
                &attributes,
            )
            .await?;
        }
        // Last, as it is what marks the token as acted on (see `acted_before`): a failure
        // before it means the next try does everything again (each step is idempotent).
        if let Some(record) = outcome.bounce_record(tenant.clone(), b, &address, now_ms) {
            put_bounce(ledger, &record).await?;
        }
    }
    Ok(())
}

/// Whether this outcome for this token already had its effect (a bounce record, or a
/// complaint's suppression, for the same message and recipient).
async fn acted_before(
    ledger: &dyn baton_store::Ledger,
    outcome: &Outcome,
    tenant: Option<&TenantId>,
    b: &Bounced,
    address: &str,
) -> Result<bool, StageError> {
    Ok(match outcome {
        Outcome::Bounce { .. } => records::bounce_of(ledger, tenant, &b.queue_id, address)
            .await?
            .is_some(),
        Outcome::Complaint { .. } => records::suppressed(ledger, tenant, address)
            .await?
            .is_some_and(|s| s.queue_id == Some(b.queue_id) && s.reason.starts_with("complaint")),
        _ => false,
    })
}

impl Outcome {
    /// A bounce as the failure a DSN to the sender reports.
    fn failure(&self, address: &str) -> Option<Failure> {
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
        let enhanced = if status.is_empty() {
            if *hard { "5.0.0" } else { "4.0.0" }.to_string()
        } else {
            status.clone()
        };
        let code = match *reply_code {
            0 if *hard => 550,
            0 => 450,
            code => code,
        };
        // The DSN writes "<code> <status> <text>": the remote's own prefix is not repeated.
        let text = diagnostic
            .strip_prefix(&format!("{code} "))
            .map(|rest| rest.strip_prefix(&format!("{enhanced} ")).unwrap_or(rest))
            .unwrap_or(diagnostic);
        // Whoever holds the token wrote this, and the DSN carries our signature: short,
        // and marked as the remote's words.
        let text: String = text.chars().take(DIAGNOSTIC_MAX).collect();
        let text = format!("(reported by the remote MTA) {text}");
        Some(Failure {
            recipient: address.to_string(),
            code,
            enhanced: enhanced.clone(),
            text: text.to_string(),
            remote_mta: remote_mta.clone(),
            source: FailureSource::Delivery,
        })
    }
}

/// Characters of a remote diagnostic passed on in our DSN.
const DIAGNOSTIC_MAX: usize = 200;

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
    /// A delay warning: delivery is still being tried; no bounce.
    Delayed {
        status: String,
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
        (Kind::Dsn, Some(l)) if l.action == Some(Action::Delayed) => Outcome::Delayed {
            status: l.status.clone().unwrap_or_default(),
        },
        (Kind::Dsn, Some(l)) if matches!(l.action, Some(Action::Failed) | None) => {
            Outcome::Bounce {
                hard: l.class == Class::Hard,
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
            Outcome::Delayed { .. } => "delay reported",
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
            Outcome::Delayed { status } => format!("still being tried ({status})"),
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
                    sub_type: ses_events::bounce_sub_type(*hard, status),
                    recipient: address,
                    status,
                    diagnostic,
                };
                let remote = remote_mta.as_deref().unwrap_or("unknown");
                let feedback = ses_events::feedback_id(report, "mail", address);
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
                    "feedbackId": ses_events::feedback_id(report, "mail", address),
                    "complaintFeedbackType": feedback,
                }}),
            )),
            Outcome::Delayed { .. } | Outcome::AutoReply | Outcome::Unreadable => None,
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
            } if !records::about_the_sender(status) => {
                Some(format!("hard bounce by mail: {status} {reason}"))
            }
            Outcome::Complaint { feedback } => Some(format!("complaint: {feedback}")),
            _ => None,
        }
    }
}
