//! Bounces: a bounce record per failed recipient, a suppression entry for hard bounces, and
//! a DSN (RFC 3464) back to the envelope sender through the same pipeline, marked as the
//! relay's own mail ([`Origin::Relay`]) so that sign signs it with the hostname's key.

use baton_domain::{Envelope, Mailbox, QueueId, Recipient};
use baton_store::QueueMessage;

use crate::job::{BounceAction, BounceJob, Failure, FailureSource, Origin, WithOrigin, decode};
use crate::policy::rfc2822;
use crate::records::{BounceRecord, Suppression, put_bounce, record_event, suppress};
use crate::{Disposition, Ports, StageError};

const HEAD_MAX: usize = baton_config::HEADER_SECTION_MAX;

#[derive(Debug, Clone)]
pub struct BounceConfig {
    /// Reporting-MTA and the DSN's From domain.
    pub hostname: String,
    pub soft: crate::soft::SoftBounces,
}

pub async fn handle(
    ports: &Ports,
    config: &BounceConfig,
    message: &QueueMessage,
) -> Result<Disposition, StageError> {
    let job: BounceJob = decode(&message.body)?;
    let envelope = &job.envelope;
    let id = envelope.queue_id;
    let ledger = ports.ledger.as_ref();
    let now = ports.clock.unix_ms();

    let about = crate::ses_events::About::message(ledger, envelope).await?;
    if job.action == BounceAction::Failed {
        for f in &job.failures {
            let record = BounceRecord {
                tenant: envelope.tenant.clone(),
                queue_id: id,
                recipient: f.recipient.clone(),
                code: f.code,
                enhanced: f.enhanced.clone(),
                reply: f.text.clone(),
                remote_mta: f.remote_mta.clone(),
                at: now,
                hard: f.is_hard(),
            };
            put_bounce(ledger, &record).await?;
            // Only a delivery failure of a tenant's own mail suppresses: a policy refusal
            // says nothing about the recipient, and anonymous mail must never be able to
            // get an address suppressed.
            if let Some(tenant) = &envelope.tenant
                && f.source == FailureSource::Delivery
            {
                let reason = if record.hard && crate::records::about_the_sender(&f.enhanced) {
                    None
                } else if record.hard {
                    Some((format!("{} {} {}", f.code, f.enhanced, f.text), None))
                } else {
                    // A soft failure suppresses only when it keeps happening, and for a while.
                    let repeated = config
                        .soft
                        .note(ledger, tenant, &f.recipient, &id, now)
                        .await?;
                    repeated.map(|n| (config.soft.reason(n), Some(config.soft.expiry(now))))
                };
                if let Some((reason, expires_at)) = reason {
                    let entry = Suppression {
                        reason,
                        queue_id: Some(id),
                        at: now,
                        expires_at,
                    };
                    suppress(ledger, Some(tenant), &f.recipient, &entry).await?;
                }
            }
            // Policy refusals have their own events (Reject, suppression Bounce).
            if let Some(a) = &about
                && f.source == FailureSource::Delivery
            {
                use crate::ses_events::{BounceLine, bounce, bounce_sub_type, feedback_id};
                let line = BounceLine {
                    hard: record.hard,
                    sub_type: bounce_sub_type(record.hard, &f.enhanced),
                    recipient: &f.recipient,
                    status: &f.enhanced,
                    diagnostic: &format!("{} {} {}", f.code, f.enhanced, f.text),
                };
                let remote = f.remote_mta.as_deref().unwrap_or(&config.hostname);
                let feedback = feedback_id(&id, "delivery", &f.recipient);
                let event = bounce(&line, &feedback, remote, now);
                a.publish(ports, "Bounce", &feedback, event).await?;
            }
            let kind = if record.hard {
                "hard bounce"
            } else {
                "soft bounce"
            };
            record_event(
                ledger,
                &id,
                now,
                "bounce",
                kind,
                format!("{}: {} {} {}", f.recipient, f.code, f.enhanced, f.text),
            )
            .await?;
        }
    }

    let Some(sender) = &envelope.mail_from else {
        record_event(ledger, &id, now, "bounce", "no DSN", "null sender").await?;
        return Ok(Disposition::Done);
    };
    // No backscatter: the sender of unauthenticated mail may be forged.
    if envelope.tenant.is_none() {
        let why = "not an authenticated submission";
        record_event(ledger, &id, now, "bounce", "no DSN", why).await?;
        return Ok(Disposition::Done);
    }
    let wanted: Vec<&Failure> = job
        .failures
        .iter()
        .filter(|f| wants_notice(envelope, &f.recipient, job.action))
        .collect();
    if wanted.is_empty() {
        record_event(ledger, &id, now, "bounce", "no DSN", "NOTIFY excludes it").await?;
        return Ok(Disposition::Done);
    }
    // One DSN per (message, action, recipients): a redelivered bounce job sends none again.
    let mut rcpts: Vec<&str> = wanted.iter().map(|f| f.recipient.as_str()).collect();
    rcpts.sort_unstable();
    // A failure we saw and one reported later by mail are the same news: one DSN.
    let kind = match job.action {
        BounceAction::Failed | BounceAction::Reported => "Failed",
        BounceAction::Delayed => "Delayed",
    };
    let guard = format!("{id}/{kind}/{}", rcpts.join(","));
    if !ledger.put_if_absent("dsn_sent", &guard, b"1").await? {
        return Ok(Disposition::Done);
    }

    // Headers only, whatever RET asked for: the DSN is signed with the relay's key, and a
    // signed copy of a body the sender chose could be replayed as our mail (DKIM replay).
    // A bounce reported by mail can come after the body's retention: a DSN without it.
    let original = match ports.blobs.read_head(&id.to_string(), HEAD_MAX).await {
        Err(baton_store::StoreError::NotFound(_)) if job.action == BounceAction::Reported => {
            Vec::new()
        }
        other => other?,
    };
    let dsn_id = QueueId::generate();
    let dsn = build_dsn(
        config,
        envelope,
        job.action,
        &wanted,
        &original,
        &dsn_id,
        now / 1000,
    );
    let mut writer = ports.blobs.create(&dsn_id.to_string()).await?;
    writer.write(&dsn).await?;
    let size = writer.commit().await?;
    let dsn_envelope = Envelope {
        queue_id: dsn_id,
        mail_from: None,
        recipients: vec![Recipient {
            address: sender.clone(),
            notify: None,
            orcpt: None,
        }],
        tenant: None,
        auth_user: None,
        ret: None,
        envid: None,
        body: baton_domain::BodyType::SevenBit,
        smtputf8: false,
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        helo: config.hostname.clone(),
        tls: false,
        size,
        received_at: now / 1000,
    };
    let attributes = [("queue_id".to_string(), dsn_id.to_string())].into();
    ports
        .intake
        .send(
            // Marked as the relay's own, which is what lets sign use the hostname's key.
            &crate::job::encode(&WithOrigin {
                record: dsn_envelope,
                origin: Origin::Relay,
            })?,
            attributes,
            Default::default(),
        )
        .await?;
    let what = match job.action {
        BounceAction::Failed | BounceAction::Reported => "DSN sent (failed)",
        BounceAction::Delayed => "DSN sent (delayed)",
    };
    record_event(
        ledger,
        &id,
        now,
        "bounce",
        what,
        format!("to {sender} as {dsn_id}"),
    )
    .await?;
    Ok(Disposition::Done)
}

/// RFC 3461 §4.1: without NOTIFY, failures and (at the MTA's choice) delays are reported.
fn wants_notice(envelope: &Envelope, rcpt: &str, action: BounceAction) -> bool {
    let notify = envelope
        .recipients
        .iter()
        .find(|r| r.address.to_string().eq_ignore_ascii_case(rcpt))
        .and_then(|r| r.notify);
    match (notify, action) {
        (None, _) => true,
        (Some(n), _) if n.never => false,
        (Some(n), BounceAction::Failed | BounceAction::Reported) => n.failure,
        (Some(n), BounceAction::Delayed) => n.delay,
    }
}

fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn original_recipient(envelope: &Envelope, rcpt: &str) -> Option<String> {
    // Decoded and printable only (a domain type), so it is safe in a DSN field.
    envelope
        .recipients
        .iter()
        .find(|r: &&Recipient| r.address.to_string().eq_ignore_ascii_case(rcpt))
        .and_then(|r| r.orcpt.as_ref())
        .map(ToString::to_string)
}

/// Builds the DSN by hand rather than with a MIME builder: RFC 3464 wants the
/// message/delivery-status part in plain 7bit fields, exactly as written here.
pub fn build_dsn(
    config: &BounceConfig,
    envelope: &Envelope,
    action: BounceAction,
    failures: &[&Failure],
    original: &[u8],
    dsn_id: &QueueId,
    now_secs: i64,
) -> Vec<u8> {
    let host = &config.hostname;
    let boundary = format!("{dsn_id}/{host}");
    let to = envelope
        .mail_from
        .as_ref()
        .map(Mailbox::to_string)
        .unwrap_or_default();
    let (subject, intro, action_word) = match action {
        BounceAction::Failed | BounceAction::Reported => (
            "Undelivered Mail Returned to Sender",
            "Your message could not be delivered to one or more recipients.\r\nThis is a permanent error; the recipients listed below will not be retried.",
            "failed",
        ),
        BounceAction::Delayed => (
            "Delayed Mail (still being retried)",
            "Your message has not been delivered yet to one or more recipients.\r\nThis is only a warning: delivery will be retried; you need not resend it.",
            "delayed",
        ),
    };
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n"
    ));
    m.push_str(&format!("To: <{}>\r\n", ascii(&to)));
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str(&format!("Date: {}\r\n", rfc2822(now_secs)));
    m.push_str(&format!("Message-ID: <{dsn_id}@{host}>\r\n"));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated delivery status notification.\r\n\r\n");

    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ));
    m.push_str(&format!(
        "This is the mail system at {host}.\r\n\r\n{intro}\r\n\r\n"
    ));
    for f in failures {
        m.push_str(&format!(
            "<{}>: {} {} {}\r\n",
            ascii(&f.recipient),
            f.code,
            f.enhanced,
            ascii(&f.text)
        ));
    }
    m.push_str("\r\n");

    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!("Reporting-MTA: dns; {host}\r\n"));
    if let Some(envid) = &envelope.envid {
        m.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
    }
    m.push_str(&format!(
        "Arrival-Date: {}\r\n",
        rfc2822(envelope.received_at)
    ));
    for f in failures {
        m.push_str("\r\n");
        m.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\n",
            ascii(&f.recipient)
        ));
        if let Some(orcpt) = original_recipient(envelope, &f.recipient) {
            m.push_str(&format!("Original-Recipient: {orcpt}\r\n"));
        }
        m.push_str(&format!("Action: {action_word}\r\n"));
        m.push_str(&format!("Status: {}\r\n", f.enhanced));
        if let Some(remote) = &f.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {}\r\n", ascii(remote)));
        }
        m.push_str(&format!(
            "Diagnostic-Code: smtp; {} {} {}\r\n",
            f.code,
            f.enhanced,
            ascii(&f.text)
        ));
    }
    m.push_str("\r\n");

    let mut out = m.into_bytes();
    let end = original
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(original.len());
    out.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
    );
    out.extend_from_slice(&original[..end]);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_domain::{NotifyOn, Ret};

    fn envelope() -> Envelope {
        Envelope {
            queue_id: QueueId::generate(),
            mail_from: Some(Mailbox::parse("sender@acme.test").expect("mailbox")),
            recipients: vec![Recipient {
                address: Mailbox::parse("gone@example.org").expect("mailbox"),
                notify: Some(NotifyOn {
                    failure: true,
                    ..NotifyOn::default()
                }),
                orcpt: Some(
                    baton_domain::OriginalRecipient::from_param("rfc822;Gone@example.org")
                        .expect("orcpt"),
                ),
            }],
            tenant: None,
            auth_user: None,
            ret: Some(Ret::Hdrs),
            envid: Some(baton_domain::EnvId::from_xtext("ENV42").expect("envid")),
            body: Default::default(),
            smtputf8: false,
            client_ip: "127.0.0.1".parse().expect("ip"),
            helo: "c".into(),
            tls: true,
            size: 10,
            received_at: 1_700_000_000,
        }
    }

    #[test]
    fn dsn_has_the_rfc3464_parts() {
        // RET=FULL too: a signed DSN returns the headers only (no replayable body).
        let env = Envelope {
            ret: Some(Ret::Full),
            ..envelope()
        };
        let f = Failure {
            recipient: "gone@example.org".into(),
            code: 550,
            enhanced: "5.1.1".into(),
            text: "No such user".into(),
            remote_mta: Some("mx.example.org".into()),
            source: Default::default(),
        };
        let dsn = build_dsn(
            &BounceConfig {
                hostname: "relay.test".into(),
                soft: Default::default(),
            },
            &env,
            BounceAction::Failed,
            &[&f],
            b"Subject: hi\r\nFrom: sender@acme.test\r\n\r\nsecret body\r\n",
            &QueueId::generate(),
            1_700_000_100,
        );
        let text = String::from_utf8(dsn).expect("ascii");
        for needle in [
            "Content-Type: multipart/report; report-type=delivery-status;",
            "Content-Type: message/delivery-status",
            "Reporting-MTA: dns; relay.test",
            "Original-Envelope-Id: ENV42",
            "Final-Recipient: rfc822; gone@example.org",
            "Original-Recipient: rfc822;Gone@example.org",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx.example.org",
            "Diagnostic-Code: smtp; 550 5.1.1 No such user",
            "Content-Type: text/rfc822-headers",
            "Subject: hi",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(
            !text.contains("secret body"),
            "a DSN never returns the body"
        );
        let parsed = mail_parser::MessageParser::new()
            .parse(text.as_bytes())
            .expect("parses");
        assert_eq!(parsed.parts.len(), 4, "multipart root + three parts");
    }

    #[test]
    fn notify_decides_who_gets_a_notice() {
        let mut env = envelope();
        assert!(wants_notice(&env, "gone@example.org", BounceAction::Failed));
        assert!(!wants_notice(
            &env,
            "gone@example.org",
            BounceAction::Delayed
        ));
        env.recipients[0].notify = Some(NotifyOn {
            never: true,
            ..NotifyOn::default()
        });
        assert!(!wants_notice(
            &env,
            "gone@example.org",
            BounceAction::Failed
        ));
        env.recipients[0].notify = None;
        assert!(wants_notice(
            &env,
            "gone@example.org",
            BounceAction::Delayed
        ));
    }
}
