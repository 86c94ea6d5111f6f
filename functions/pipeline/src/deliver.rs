//! Delivery: one SMTP transaction per destination domain with all its pending recipients;
//! per-recipient outcomes; retries with exponential backoff and jitter; expiry; bounces.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::body::Share;
use crate::outbound::{ClientConfig, Message, MxResolver, Outcome, RcptSpec, Route, route_for};
use baton_store::QueueMessage;
use rand::Rng;

use crate::ses_events;
use serde_json::json;

use crate::job::{BounceAction, Failure, Job, decode, encode, send_bounce};
use crate::records::{Claim, RcptState, RcptStatus, claim_rcpt, record_event, set_rcpt_state};
use crate::{Disposition, Ports, StageError};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Give up after this long since acceptance.
    pub max_age: Duration,
    /// Tell the sender once after this long.
    pub delay_notice_after: Duration,
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1`: initial × 2^(attempt-1), capped, ±20 % jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        Duration::from_secs_f64((capped * jitter).max(0.1))
    }
}

#[derive(Clone)]
pub struct DeliverStage {
    pub resolver: Arc<dyn MxResolver>,
    pub client: ClientConfig,
    pub routes: Vec<Route>,
    pub retry: RetryPolicy,
    /// Which tenant mail goes out from per-recipient return paths.
    pub return_paths: crate::return_path::ReturnPathPolicy,
}

impl DeliverStage {
    /// How long a worker owns a recipient it is sending to: longer than one attempt can
    /// take (connect, commands and DATA for each MX tried, at most a few).
    pub fn lease(&self) -> Duration {
        let c = &self.client;
        ((c.connect_timeout + c.command_timeout * 6 + c.data_timeout) * 2)
            .min(Duration::from_secs(15 * 60))
    }
}

pub async fn handle(
    ports: &Ports,
    stage: &DeliverStage,
    message: &QueueMessage,
) -> Result<Disposition, StageError> {
    let job: Job = decode(&message.body)?;
    attempt(ports, stage, &job, None, &message.attributes).await
}

/// One delivery attempt of `job` to every recipient still pending. `body` is the stored
/// body when the caller has read it already (the fused path); otherwise it is read here,
/// once a recipient has been claimed. `attributes` go with any job it queues.
pub async fn attempt(
    ports: &Ports,
    stage: &DeliverStage,
    job: &Job,
    body: Option<&[u8]>,
    attributes: &BTreeMap<String, String>,
) -> Result<Disposition, StageError> {
    let envelope = &job.envelope;
    let id = envelope.queue_id;
    let ledger = ports.ledger.as_ref();
    let now = ports.clock.unix_ms();
    // The body's share of memory is reserved before any recipient is claimed: a job whose
    // large body finds the lane full goes back to its queue owning nobody.
    let body: Result<&[u8], Share> = match body {
        Some(body) => Ok(body),
        None => match crate::body::reserve(envelope).await? {
            Some(share) => Err(share),
            None => return Ok(Disposition::RetryAfter(crate::body::LANE_FULL_RETRY)),
        },
    };

    // Idempotent per recipient: a final state is never sent again, and of two copies of
    // this job in flight at once only the one that claims a recipient sends to it.
    let mut pending = Vec::new();
    let mut busy = None;
    for rcpt in job.pending_recipients() {
        match claim_rcpt(ledger, &id, &rcpt, now, stage.lease()).await? {
            Claim::Claimed => pending.push(rcpt),
            Claim::Final => {}
            Claim::Busy(left) => busy = Some(left.max(busy.unwrap_or_default())),
        }
    }
    if pending.is_empty() {
        // Another copy owns what is left: look again once its lease ends, in case it died.
        return Ok(match busy {
            Some(left) => Disposition::RetryAfter(left + Duration::from_secs(1)),
            None => Disposition::Done,
        });
    }

    // The prefix (added headers) and the stored body go out one after the other, never
    // joined into a second copy of the message.
    let read;
    let body = match body {
        Ok(body) => body,
        Err(share) => {
            read = crate::body::read(ports, envelope, share).await?;
            &read
        }
    };

    let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rcpt in &pending {
        let domain = rcpt
            .rsplit_once('@')
            .map(|(_, d)| d.to_lowercase())
            .unwrap_or_default();
        by_domain.entry(domain).or_default().push(rcpt.clone());
    }

    let attempt = job.attempt + 1;
    // SES-shaped events, published once the delivery's own work is recorded (below).
    let mut events: Vec<(&str, String, serde_json::Value)> = Vec::new();
    let mut failures = Vec::new();
    let mut deferred = Vec::new();
    let sender = envelope.mail_from.as_ref().map(ToString::to_string);
    let about = ses_events::About::message(ledger, envelope).await?;
    let return_paths =
        crate::return_path::ReturnPaths::for_envelope(ledger, &stage.return_paths, envelope)
            .await?;
    for (domain, rcpts) in by_domain {
        let specs = rcpts
            .iter()
            .map(|r| {
                let original = envelope
                    .recipients
                    .iter()
                    .find(|x| x.address.to_string().eq_ignore_ascii_case(r));
                RcptSpec {
                    address: r.clone(),
                    notify: original.and_then(|o| o.notify).map(notify_param),
                    orcpt: original.and_then(|o| o.orcpt.clone()),
                }
            })
            .collect::<Vec<_>>();
        let results = if route_for(&stage.routes, &domain).is_some_and(|r| r.capture) {
            crate::capture::keep(ports, envelope, job.prefix.as_bytes(), body, &rcpts, now).await?
        } else {
            // With return paths, one transaction per recipient, each from its own (as Postfix's
            // VERP): a bounce that comes back later names the message and the recipient.
            let batches: Vec<(Option<String>, Vec<RcptSpec>)> = match &return_paths {
                Some(paths) => specs
                    .into_iter()
                    .map(|spec| {
                        let from = paths.sender(&spec.address).or_else(|| sender.clone());
                        (from, vec![spec])
                    })
                    .collect(),
                None => vec![(sender.clone(), specs)],
            };
            let mut results = Vec::new();
            for (from, specs) in batches {
                let msg = transaction(job, body, from.as_deref(), specs);
                results.extend(
                    crate::outbound::deliver(
                        &domain,
                        &msg,
                        stage.resolver.as_ref(),
                        &stage.routes,
                        &stage.client,
                    )
                    .await,
                );
            }
            results
        };
        for r in results {
            let reply = format!(
                "{} {} {}",
                r.code,
                r.enhanced.as_deref().unwrap_or(""),
                r.text
            )
            .replace("  ", " ");
            let status = match r.outcome {
                Outcome::Delivered => RcptStatus::Delivered,
                Outcome::Failed => RcptStatus::Failed,
                Outcome::Deferred => RcptStatus::Deferred,
            };
            let state = RcptState {
                status,
                attempts: attempt,
                last_reply: reply.clone(),
                remote_mta: r.remote_host.clone(),
                updated_at: now,
                lease_until: 0,
            };
            set_rcpt_state(ledger, &id, &r.address, &state).await?;
            let what = match r.outcome {
                Outcome::Delivered => "delivered",
                Outcome::Failed => "failed",
                Outcome::Deferred => "deferred",
            };
            let via = r
                .remote_host
                .as_deref()
                .map(|h| format!(" via {h}"))
                .unwrap_or_default();
            record_event(
                ledger,
                &id,
                now,
                "deliver",
                what,
                format!("{}{via}: {reply} (attempt {attempt})", r.address),
            )
            .await?;
            let failure = Failure {
                recipient: r.address.clone(),
                code: r.code,
                enhanced: r
                    .enhanced
                    .clone()
                    .unwrap_or_else(|| default_enhanced(r.code)),
                text: r.text.clone(),
                remote_mta: r.remote_host.clone(),
                source: Default::default(),
            };
            if about.is_some() {
                let remote = r.remote_host.clone().unwrap_or_default();
                match r.outcome {
                    Outcome::Delivered => {
                        let event = json!({ "delivery": {
                            "timestamp": ses_events::iso8601(now),
                            "processingTimeMillis": (now - envelope.received_at * 1000).max(0),
                            "recipients": [r.address],
                            "smtpResponse": reply,
                            "reportingMTA": remote,
                        }});
                        events.push(("Delivery", r.address.clone(), event));
                    }
                    Outcome::Deferred => {
                        let expires = envelope.received_at * 1000
                            + i64::try_from(stage.retry.max_age.as_millis()).unwrap_or(i64::MAX);
                        let event = json!({ "deliveryDelay": {
                            "timestamp": ses_events::iso8601(now),
                            "delayType": if failure.enhanced.ends_with(".2.2") {
                                "MailboxFull"
                            } else {
                                "TransientCommunicationFailure"
                            },
                            "expirationTime": ses_events::iso8601(expires),
                            "delayedRecipients": [{
                                "emailAddress": r.address,
                                "status": failure.enhanced,
                                "diagnosticCode": format!("smtp; {reply}"),
                            }],
                            "reportingMTA": remote,
                        }});
                        let occurrence = format!("{}#{attempt}", r.address);
                        events.push(("DeliveryDelay", occurrence, event));
                    }
                    // The bounce stage publishes it, with the other failures.
                    Outcome::Failed => {}
                }
            }
            match r.outcome {
                Outcome::Delivered => {}
                Outcome::Failed => failures.push(failure),
                Outcome::Deferred => deferred.push(failure),
            }
        }
    }

    let age = Duration::from_millis((now - envelope.received_at * 1000).max(0) as u64);
    let mut delay_notified = job.delay_notified;
    if !deferred.is_empty() && age >= stage.retry.max_age {
        // Expired: the last temporary reply becomes a permanent failure (RFC 3463 4.4.7).
        for f in &mut deferred {
            let state = RcptState {
                status: RcptStatus::Failed,
                attempts: attempt,
                last_reply: format!(
                    "expired after {attempt} attempts: {} {} {}",
                    f.code, f.enhanced, f.text
                ),
                remote_mta: f.remote_mta.clone(),
                updated_at: now,
                lease_until: 0,
            };
            set_rcpt_state(ledger, &id, &f.recipient, &state).await?;
            f.enhanced = "4.4.7".into();
            f.text = format!(
                "Message expired after {attempt} attempts; last reply: {}",
                f.text
            );
        }
        record_event(
            ledger,
            &id,
            now,
            "deliver",
            "expired",
            format!("{} recipient(s)", deferred.len()),
        )
        .await?;
        failures.append(&mut deferred);
    } else if !deferred.is_empty() {
        if !delay_notified && age >= stage.retry.delay_notice_after {
            send_bounce(
                ports,
                envelope,
                BounceAction::Delayed,
                deferred.clone(),
                attributes,
            )
            .await?;
            delay_notified = true;
        }
        let delay = stage.retry.delay(attempt);
        let next = Job {
            envelope: envelope.clone(),
            prefix: job.prefix.clone(),
            pending: deferred.iter().map(|f| f.recipient.clone()).collect(),
            attempt,
            delay_notified,
        };
        ports
            .deliver
            .send(&encode(&next)?, attributes.clone(), delay)
            .await?;
        record_event(
            ledger,
            &id,
            now,
            "deliver",
            "retry scheduled",
            format!("in {}s", delay.as_secs()),
        )
        .await?;
    }
    if !failures.is_empty() {
        send_bounce(ports, envelope, BounceAction::Failed, failures, attributes).await?;
    }
    // Last: the recipients' states are final now, so a retry of this job would not come
    // back here, and a failure to publish must not undo or repeat the delivery. Said loudly.
    if let Some(a) = &about {
        for (event_type, occurrence, event) in events {
            if let Err(e) = a.publish(ports, event_type, &occurrence, event).await {
                tracing::error!(event_type, %occurrence, error = %e, "event not published");
            }
        }
    }
    Ok(Disposition::Done)
}

fn notify_param(n: baton_domain::NotifyOn) -> String {
    if n.never {
        return "NEVER".into();
    }
    let mut parts = Vec::new();
    if n.success {
        parts.push("SUCCESS");
    }
    if n.failure {
        parts.push("FAILURE");
    }
    if n.delay {
        parts.push("DELAY");
    }
    parts.join(",")
}

fn default_enhanced(code: u16) -> String {
    match code {
        200..=299 => "2.0.0".into(),
        400..=499 => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

/// One outgoing transaction of `job`'s message.
fn transaction<'a>(
    job: &'a Job,
    body: &'a [u8],
    mail_from: Option<&'a str>,
    recipients: Vec<RcptSpec>,
) -> Message<'a> {
    let envelope = &job.envelope;
    Message {
        mail_from,
        recipients,
        prefix: job.prefix.as_bytes(),
        body,
        smtputf8: envelope.smtputf8,
        eight_bit: envelope.body == baton_domain::BodyType::EightBitMime,
        envid: envelope.envid.as_ref(),
        ret_hdrs: envelope.ret.map(|r| r == baton_domain::Ret::Hdrs),
    }
}
