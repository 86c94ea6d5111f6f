//! The read-only commands: `queue list/cat`, `message list/show`, `capture list/show`,
//! `bounce list`, `suppression list`. They never create a data directory.

use std::io::Write;

use anyhow::{Context, bail};
use baton_config::Settings;
use baton_domain::{Envelope, QueueId};
use baton_pipeline::job::Job;
use baton_pipeline::messages::{self, Filter, MessageSummary};
use baton_pipeline::records::{self, RcptState};
use baton_pipeline::{capture, queue_names};
use serde::Serialize;

use crate::admin::{Store, open_existing};
use crate::output::{or_dash, print, quiet_on_closed_pipe, rfc3339_ms, terminal_safe, write_table};

fn parse_id(id: &str) -> anyhow::Result<QueueId> {
    id.parse().map_err(|_| {
        anyhow::anyhow!("invalid queue id {id:?} (26 characters, as `queued as` said)")
    })
}

fn pipeline_err(e: baton_pipeline::StageError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

#[derive(Serialize)]
struct RcptView {
    address: String,
    status: String,
    attempts: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    last_reply: String,
}

impl RcptView {
    fn new(address: &str, s: &RcptState) -> Self {
        RcptView {
            address: address.to_string(),
            status: status_word(s),
            attempts: s.attempts,
            last_reply: s.last_reply.clone(),
        }
    }
}

fn status_word(s: &RcptState) -> String {
    serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Recipients for a table cell: `bob@example.org(deferred)` once past "pending".
fn recipients_cell(addresses: &[String], states: &[RcptView]) -> String {
    addresses
        .iter()
        .map(
            |r| match states.iter().find(|s| s.address.eq_ignore_ascii_case(r)) {
                Some(s) if s.status != "pending" => format!("{r}({})", s.status),
                _ => r.clone(),
            },
        )
        .collect::<Vec<_>>()
        .join(",")
}

fn sender_cell(from: &str) -> String {
    if from.is_empty() {
        "<>".into()
    } else {
        from.to_string()
    }
}

#[derive(Serialize)]
struct QueueEntry {
    id: String,
    state: &'static str,
    received_at: String,
    from: String,
    recipients: Vec<String>,
    recipient_states: Vec<RcptView>,
    size: u64,
    tenant: Option<String>,
}

/// An intake record is an envelope; later stages carry a job around it.
fn envelope_of(body: &[u8]) -> Option<Envelope> {
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .or_else(|| serde_json::from_slice::<Job>(body).ok().map(|j| j.envelope))
}

/// What is in the queues now (unfinished messages); `message list` has the finished ones too.
pub fn queue_list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let store = open_existing(settings)?;
    let Some(embedded) = &store.embedded else {
        return aws_queue_counts(&store, json);
    };
    let ledger = store.ledger();
    let now_ms = crate::output::now_ms();
    let mut listed = Vec::new();
    store.rt.block_on(async {
        let stages = [
            (queue_names::INTAKE, "queued"),
            (queue_names::SIGN, "signing"),
            (queue_names::DELIVER, "delivering"),
        ];
        for (queue, label) in stages {
            for (name, dead) in [
                (queue.to_string(), false),
                (queue_names::dead_letter(queue), true),
            ] {
                for entry in embedded.list_queue(&name).await? {
                    let envelope = envelope_of(&entry.body).with_context(|| {
                        format!("queue entry {} of {name} is not a message", entry.id)
                    })?;
                    let state = if dead {
                        "dead"
                    } else if entry.in_flight {
                        "in-flight"
                    } else if entry.visible_at > now_ms {
                        "deferred"
                    } else {
                        label
                    };
                    let states = records::rcpt_states(ledger, &envelope.queue_id)
                        .await
                        .map_err(pipeline_err)?;
                    let summary = MessageSummary::new(&envelope, None);
                    listed.push(QueueEntry {
                        id: envelope.queue_id.to_string(),
                        state,
                        received_at: rfc3339_ms(summary.received_at),
                        from: summary.from,
                        recipients: summary.recipients,
                        recipient_states: states
                            .iter()
                            .map(|(address, s)| RcptView::new(address, s))
                            .collect(),
                        size: summary.size,
                        tenant: summary.tenant,
                    });
                }
            }
        }
        anyhow::Ok(())
    })?;
    print(
        json,
        &listed,
        &["ID", "RECEIVED", "STATE", "FROM", "RECIPIENTS"],
        || {
            listed
                .iter()
                .map(|m| {
                    vec![
                        m.id.clone(),
                        m.received_at.clone(),
                        m.state.to_string(),
                        sender_cell(&m.from),
                        recipients_cell(&m.recipients, &m.recipient_states),
                    ]
                })
                .collect()
        },
    )
}

/// SQS cannot list its messages: on AWS the queue view is the approximate counts.
fn aws_queue_counts(store: &Store, json: bool) -> anyhow::Result<()> {
    let Some(aws) = &store.aws else {
        bail!("no backend");
    };
    #[derive(Serialize)]
    struct Counts {
        queue: String,
        visible: u64,
        in_flight: u64,
        delayed: u64,
    }
    let counts = store.rt.block_on(async {
        let mut out = Vec::new();
        for stage in queue_names::ALL {
            for name in [stage.to_string(), queue_names::dead_letter(stage)] {
                let (visible, in_flight, delayed) =
                    aws.queue(&name).await?.approximate_counts().await?;
                out.push(Counts {
                    queue: name,
                    visible,
                    in_flight,
                    delayed,
                });
            }
        }
        anyhow::Ok(out)
    })?;
    // On stderr, so the table and the JSON stay what they say they are.
    eprintln!(
        "baton: SQS cannot list the messages it holds; these are its approximate counts. \
         `baton message list` lists the messages themselves."
    );
    print(
        json,
        &counts,
        &["QUEUE", "VISIBLE", "IN-FLIGHT", "DELAYED"],
        || {
            counts
                .iter()
                .map(|c| {
                    vec![
                        c.queue.clone(),
                        c.visible.to_string(),
                        c.in_flight.to_string(),
                        c.delayed.to_string(),
                    ]
                })
                .collect()
        },
    )
}

#[derive(Serialize)]
struct MessageView {
    id: String,
    received_at: String,
    state: &'static str,
    from: String,
    recipients: Vec<RcptView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    subject: String,
    size: u64,
}

impl MessageView {
    fn new(
        id: String,
        summary: MessageSummary,
        state: &'static str,
        rcpts: &[(String, RcptState)],
    ) -> Self {
        // Every envelope recipient, with its state once the policy stage recorded one.
        let recipients = summary
            .recipients
            .iter()
            .map(|address| {
                rcpts
                    .iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(address))
                    .map(|(a, s)| RcptView::new(a, s))
                    .unwrap_or_else(|| RcptView {
                        address: address.clone(),
                        status: "pending".into(),
                        attempts: 0,
                        last_reply: String::new(),
                    })
            })
            .collect();
        MessageView {
            id,
            received_at: rfc3339_ms(summary.received_at),
            state,
            from: summary.from,
            recipients,
            tenant: summary.tenant,
            subject: summary.subject,
            size: summary.size,
        }
    }

    fn recipients_cell(&self) -> String {
        let addresses: Vec<String> = self.recipients.iter().map(|r| r.address.clone()).collect();
        recipients_cell(&addresses, &self.recipients)
    }
}

/// Messages, finished or not, newest last.
pub fn message_list(settings: &Settings, filter: &Filter, json: bool) -> anyhow::Result<()> {
    let store = open_existing(settings)?;
    let listed = store
        .rt
        .block_on(messages::list(store.ledger(), filter))
        .map_err(pipeline_err)?;
    let views: Vec<MessageView> = listed
        .into_iter()
        .map(|m| MessageView::new(m.id, m.summary, m.state.as_str(), &m.recipients))
        .collect();
    print(
        json,
        &views,
        &["ID", "RECEIVED", "STATE", "FROM", "RECIPIENTS", "SUBJECT"],
        || {
            views
                .iter()
                .map(|m| {
                    vec![
                        m.id.clone(),
                        m.received_at.clone(),
                        m.state.to_string(),
                        sender_cell(&m.from),
                        m.recipients_cell(),
                        or_dash(&m.subject),
                    ]
                })
                .collect()
        },
    )
}

#[derive(Serialize)]
struct EventView {
    at: String,
    stage: String,
    what: String,
    detail: String,
}

/// Per-recipient state and the timeline of one message.
pub fn message_show(settings: &Settings, id: &str, json: bool) -> anyhow::Result<()> {
    let id = parse_id(id)?;
    let store = open_existing(settings)?;
    let ledger = store.ledger();
    let (summary, states, events) = store
        .rt
        .block_on(async {
            let summary = messages::summary(ledger, &id).await?;
            let states = records::rcpt_states(ledger, &id).await?;
            let events = records::timeline(ledger, &id).await?;
            Ok::<_, baton_pipeline::StageError>((summary, states, events))
        })
        .map_err(pipeline_err)?;
    if summary.is_none() && states.is_empty() && events.is_empty() {
        bail!("no record of message {id}");
    }
    let rcpt_states: Vec<RcptState> = states.iter().map(|(_, s)| s.clone()).collect();
    let state = messages::MessageState::of(&rcpt_states).as_str();
    let summary = summary.unwrap_or_else(|| MessageSummary {
        // Recorded before summaries existed: what the recipient states tell.
        received_at: events.first().map_or(0, |e| e.at),
        from: String::new(),
        recipients: states.iter().map(|(a, _)| a.clone()).collect(),
        tenant: None,
        subject: String::new(),
        size: 0,
        envid: None,
        dsn_params: Vec::new(),
    });
    let view = MessageView::new(id.to_string(), summary, state, &states);
    let timeline: Vec<EventView> = events
        .into_iter()
        .map(|e| EventView {
            at: rfc3339_ms(e.at),
            stage: e.stage,
            what: e.what,
            detail: e.detail,
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        #[derive(Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            message: &'a MessageView,
            timeline: &'a [EventView],
        }
        let shown = Shown {
            message: &view,
            timeline: &timeline,
        };
        let written = serde_json::to_writer_pretty(&mut out, &shown)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out));
        return quiet_on_closed_pipe(written);
    }
    let written = (|| -> std::io::Result<()> {
        writeln!(out, "message   {}", view.id)?;
        writeln!(out, "received  {}", view.received_at)?;
        writeln!(out, "state     {}", view.state)?;
        writeln!(out, "from      {}", terminal_safe(&sender_cell(&view.from)))?;
        writeln!(out, "subject   {}", terminal_safe(&or_dash(&view.subject)))?;
        writeln!(out, "\nrecipients:")?;
        let rows: Vec<Vec<String>> = view
            .recipients
            .iter()
            .map(|r| {
                vec![
                    r.address.clone(),
                    r.status.clone(),
                    r.attempts.to_string(),
                    or_dash(&r.last_reply),
                ]
            })
            .collect();
        write_table(
            &mut out,
            &["ADDRESS", "STATUS", "ATTEMPTS", "LAST REPLY"],
            &rows,
        )?;
        writeln!(out, "\ntimeline:")?;
        let rows: Vec<Vec<String>> = timeline
            .iter()
            .map(|e| {
                vec![
                    e.at.clone(),
                    e.stage.clone(),
                    e.what.clone(),
                    e.detail.clone(),
                ]
            })
            .collect();
        write_table(&mut out, &["AT", "STAGE", "EVENT", "DETAIL"], &rows)
    })();
    quiet_on_closed_pipe(written)
}

/// Writes a stored message, as received, to standard output.
pub fn queue_cat(settings: &Settings, id: &str) -> anyhow::Result<()> {
    let id = parse_id(id)?;
    let store = open_existing(settings)?;
    let body = store
        .rt
        .block_on(store.blobs.read(&id.to_string()))
        .with_context(|| format!("no stored body for message {id}"))?;
    quiet_on_closed_pipe(std::io::stdout().lock().write_all(&body))
}

#[derive(Serialize)]
struct CapturedView {
    id: String,
    at: String,
    from: String,
    recipients: Vec<String>,
    subject: String,
    size: u64,
}

/// What routes with `target = "capture"` kept, oldest first.
pub fn capture_list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let store = open_existing(settings)?;
    let kept = store
        .rt
        .block_on(capture::list(store.ledger()))
        .map_err(pipeline_err)?;
    let views: Vec<CapturedView> = kept
        .into_iter()
        .map(|(id, c)| CapturedView {
            id,
            at: rfc3339_ms(c.at),
            from: c.from,
            recipients: c.recipients,
            subject: c.subject,
            size: c.size,
        })
        .collect();
    print(
        json,
        &views,
        &["ID", "CAPTURED", "FROM", "RECIPIENTS", "SUBJECT"],
        || {
            views
                .iter()
                .map(|c| {
                    vec![
                        c.id.clone(),
                        c.at.clone(),
                        sender_cell(&c.from),
                        c.recipients.join(","),
                        or_dash(&c.subject),
                    ]
                })
                .collect()
        },
    )
}

/// A captured message as it would have been sent (added headers and DKIM signatures first).
pub fn capture_show(settings: &Settings, id: &str) -> anyhow::Result<()> {
    let id = parse_id(id)?;
    let store = open_existing(settings)?;
    let kept = store
        .rt
        .block_on(capture::get(store.ledger(), &id))
        .map_err(pipeline_err)?;
    if kept.is_none() {
        bail!("message {id} was not captured (`baton capture list` lists what was)");
    }
    let body = store
        .rt
        .block_on(store.blobs.read(&capture::blob_key(&id)))?;
    quiet_on_closed_pipe(std::io::stdout().lock().write_all(&body))
}

/// The columns `bounce list` and `suppression list` show, as (header, JSON field).
fn columns(table: &str) -> &'static [(&'static str, &'static str)] {
    match table {
        records::tables::BOUNCES => &[
            ("AT", "at"),
            ("RECIPIENT", "recipient"),
            ("KIND", "kind"),
            ("CODE", "code"),
            ("STATUS", "enhanced"),
            ("QUEUE ID", "queue_id"),
            ("REPLY", "reply"),
        ],
        _ => &[
            ("AT", "at"),
            ("TENANT/ADDRESS", "key"),
            ("QUEUE ID", "queue_id"),
            ("EXPIRES", "expires_at"),
            ("REASON", "reason"),
        ],
    }
}

fn cell(v: &serde_json::Value, field: &str) -> String {
    match (field, v.get(field)) {
        ("kind", _) => match v.get("hard").and_then(serde_json::Value::as_bool) {
            Some(true) => "hard".into(),
            Some(false) => "soft".into(),
            None => "-".into(),
        },
        (_, Some(serde_json::Value::String(s))) => or_dash(s),
        (_, Some(serde_json::Value::Null) | None) => "-".into(),
        (_, Some(other)) => other.to_string(),
    }
}

/// Lists a ledger table of JSON records (bounces, suppression), each with its key.
pub fn table_list(settings: &Settings, table: &str, json: bool) -> anyhow::Result<()> {
    let store = open_existing(settings)?;
    let rows = store.rt.block_on(store.ledger().scan(table, ""))?;
    let mut values = Vec::with_capacity(rows.len());
    for (key, bytes) in rows {
        let mut value: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("record {key} of {table}"))?;
        if let Some(obj) = value.as_object_mut() {
            // Times for people and machines alike: RFC 3339, milliseconds, UTC.
            for field in ["at", "expires_at"] {
                if let Some(ms) = obj.get(field).and_then(serde_json::Value::as_i64) {
                    obj.insert(field.into(), rfc3339_ms(ms).into());
                }
            }
            obj.insert("key".into(), key.into());
        }
        values.push(value);
    }
    // Keys order by tenant first: people read a history oldest to newest.
    values.sort_by(|a, b| {
        a.get("at")
            .and_then(|v| v.as_str())
            .cmp(&b.get("at").and_then(|v| v.as_str()))
    });
    let cols = columns(table);
    let headers: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
    print(json, &values, &headers, || {
        values
            .iter()
            .map(|v| cols.iter().map(|(_, f)| cell(v, f)).collect())
            .collect()
    })
}

/// Tenants' SES-shaped events, oldest first (the most recent `limit`).
pub fn events(
    settings: &Settings,
    tenant: Option<&str>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_existing(settings)?;
    let mut all = store
        .rt
        .block_on(baton_pipeline::ses_events::list(store.ledger(), tenant))
        .map_err(pipeline_err)?;
    let events = all.split_off(all.len().saturating_sub(limit));
    print(
        json,
        &events,
        &["AT", "TENANT", "EVENT", "MESSAGE", "DETAIL"],
        || {
            events
                .iter()
                .map(|e| {
                    vec![
                        baton_pipeline::ses_events::event_time(e),
                        e.mail.sending_account_id.clone(),
                        e.event_type.clone(),
                        e.mail.message_id.clone(),
                        event_detail(e),
                    ]
                })
                .collect()
        },
    )
}

/// The gist of an event's object for a table cell.
fn event_detail(e: &baton_pipeline::ses_events::SesEvent) -> String {
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string()
    };
    let first = |v: &serde_json::Value, list: &str, k: &str| {
        v.get(list)
            .and_then(|l| l.get(0))
            .map(|r| text(r, k))
            .unwrap_or_default()
    };
    match e.detail.iter().next() {
        Some((kind, v)) => match kind.as_str() {
            "bounce" => format!(
                "{} {} {} {}",
                text(v, "bounceType"),
                text(v, "bounceSubType"),
                first(v, "bouncedRecipients", "emailAddress"),
                first(v, "bouncedRecipients", "status")
            ),
            "complaint" => format!(
                "{} {}",
                first(v, "complainedRecipients", "emailAddress"),
                text(v, "complaintFeedbackType")
            ),
            "delivery" => format!(
                "{} {}",
                v.get("recipients")
                    .and_then(|r| r.get(0))
                    .and_then(|r| r.as_str())
                    .unwrap_or(""),
                text(v, "smtpResponse")
            ),
            "deliveryDelay" => format!(
                "{} {}",
                first(v, "delayedRecipients", "emailAddress"),
                text(v, "delayType")
            ),
            "reject" => text(v, "reason"),
            _ => e.mail.destination.join(","),
        },
        None => e.mail.destination.join(","),
    }
}
