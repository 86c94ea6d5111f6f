//! Administration commands. On the embedded backend they work on the data directory while
//! `baton serve` runs (the SQLite store is shared between processes); on the AWS backend
//! they use the same DynamoDB tables, S3 bucket and SQS queues as the gateway and functions.

use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::{Context, bail};
use baton_aws::AwsBackend;
use baton_config::Settings;
use baton_domain::{Domain, Envelope, TenantId};
use baton_embedded::EmbeddedBackend;
use baton_gateway::hash_password;
use baton_pipeline::job::Job;
use baton_pipeline::{dkim, queue_names, quota, records};
use baton_store::{BlobStore, DomainRecord, Ledger, UserRecord, put_domain, put_user};
use serde::Serialize;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The backend `storage.backend` names, with the runtime its calls run on.
struct Store {
    rt: tokio::runtime::Runtime,
    ledger: Arc<dyn Ledger>,
    blobs: Arc<dyn BlobStore>,
    embedded: Option<EmbeddedBackend>,
    aws: Option<AwsBackend>,
}

impl Store {
    fn ledger(&self) -> &dyn Ledger {
        self.ledger.as_ref()
    }
}

/// For commands that only read: never creates a data directory (an empty new one would
/// just print nothing), and says which one is missing.
fn open_existing(settings: &Settings) -> anyhow::Result<Store> {
    let dir = &settings.raw.data_dir;
    // On AWS, and when there is data, opening prepares the directory (refuses it if unsafe,
    // tightens what is inside).
    if settings.raw.storage.backend == "aws" || dir.join("baton.db").exists() {
        return open(settings);
    }
    // An unsafe directory is refused first: that is the more important thing to say.
    if dir.exists() {
        baton_embedded::check_data_dir(dir)
            .with_context(|| format!("opening data directory {}", dir.display()))?;
    }
    bail!(
        "no Baton data in {}: nothing was ever stored there. `baton serve` and the other \
         commands use the data_dir of the config (or --data-dir / BATON_DATA_DIR): give \
         them the same one",
        dir.display()
    )
}

fn open(settings: &Settings) -> anyhow::Result<Store> {
    let rt = runtime()?;
    if settings.raw.storage.backend == "aws" {
        let aws = rt.block_on(AwsBackend::connect(&settings.raw.aws));
        return Ok(Store {
            rt,
            ledger: Arc::new(aws.ledger()),
            blobs: Arc::new(aws.blob_store()),
            embedded: None,
            aws: Some(aws),
        });
    }
    let dir = &settings.raw.data_dir;
    let backend = EmbeddedBackend::open_for_admin(dir)
        .with_context(|| format!("opening data directory {}", dir.display()))?;
    Ok(Store {
        rt,
        ledger: Arc::new(backend.ledger()),
        blobs: Arc::new(backend.blob_store()),
        embedded: Some(backend),
        aws: None,
    })
}

pub fn aws_provision(settings: &Settings) -> anyhow::Result<()> {
    let store = open(settings)?;
    let Some(aws) = &store.aws else {
        bail!("storage.backend is not aws (use --backend aws)");
    };
    store.rt.block_on(baton_functions::provision(aws))?;
    println!(
        "provisioned bucket {}, queues {}-*, tables {}-*",
        aws.config.bucket, aws.config.prefix, aws.config.prefix
    );
    Ok(())
}

pub fn aws_sweep(settings: &Settings) -> anyhow::Result<()> {
    let store = open(settings)?;
    let Some(aws) = &store.aws else {
        bail!("storage.backend is not aws (use --backend aws)");
    };
    let report = store.rt.block_on(async {
        let intake = aws.queue(queue_names::INTAKE).await?;
        let dlq = aws
            .queue(&queue_names::dead_letter(queue_names::INTAKE))
            .await?;
        let ledger = aws.ledger();
        aws.sweep_orphans(&ledger, records::tables::EVENTS, &intake, &dlq)
            .await
            .map_err(anyhow::Error::from)
    })?;
    if report.skipped {
        println!("skipped: the intake queue or its dead-letter queue is not empty");
    } else {
        println!(
            "examined {} bodies, deleted {} never queued: {}",
            report.examined,
            report.deleted.len(),
            report.deleted.join(" ")
        );
    }
    Ok(())
}

fn check_name(kind: &str, s: &str) -> anyhow::Result<()> {
    if s.is_empty() || s.len() > 200 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("invalid {kind} {s:?}: use 1-200 characters without spaces");
    }
    Ok(())
}

pub fn user_add(settings: &Settings, name: &str, tenant: &str) -> anyhow::Result<()> {
    check_name("user name", name)?;
    check_name("tenant", tenant)?;
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("empty password on stdin");
    }
    let hash = hash_password(password).map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    let backend = open(settings)?;
    let record = UserRecord {
        tenant: TenantId(tenant.to_string()),
        password_hash: hash,
    };
    backend
        .rt
        .block_on(put_user(backend.ledger(), name, &record))?;
    println!("user {name} added to tenant {tenant}");
    Ok(())
}

pub fn domain_add(settings: &Settings, domain: &str, tenant: &str) -> anyhow::Result<()> {
    check_name("tenant", tenant)?;
    let domain =
        Domain::parse(domain).map_err(|e| anyhow::anyhow!("invalid domain {domain:?}: {e}"))?;
    if domain.is_literal() {
        bail!("a sending domain must be a name, not an address literal");
    }
    let backend = open(settings)?;
    let ledger = backend.ledger();
    let record = DomainRecord {
        tenant: TenantId(tenant.to_string()),
    };
    let name = domain.to_string();
    let keys = backend.rt.block_on(async {
        put_domain(ledger, &domain, &record).await?;
        let mut keys = dkim::active_keys(ledger, &name)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if keys.is_empty() {
            keys = new_dkim_keys(ledger, &name).await?;
        }
        anyhow::Ok(keys)
    })?;
    println!("domain {domain} registered for tenant {tenant}");
    print_dns_records(&name, &keys);
    Ok(())
}

/// A new RSA-2048 and Ed25519 selector pair, stored; both sign from now on.
async fn new_dkim_keys(ledger: &dyn Ledger, domain: &str) -> anyhow::Result<Vec<dkim::DkimKey>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Selectors are named by the second; a rotation within the same second as the last one
    // takes the next free name instead of overwriting a published key.
    let taken: Vec<String> = dkim::all_keys(ledger, domain)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .map(|k| k.selector)
        .collect();
    let mut stamp = now;
    while taken
        .iter()
        .any(|s| *s == format!("b{stamp}r") || *s == format!("b{stamp}e"))
    {
        stamp += 1;
    }
    let mut keys = Vec::new();
    for (algorithm, suffix) in [
        (dkim::Algorithm::RsaSha256, "r"),
        (dkim::Algorithm::Ed25519Sha256, "e"),
    ] {
        let selector = format!("b{stamp}{suffix}");
        let key = dkim::generate_key(domain, &selector, algorithm, now)?;
        dkim::put_key(ledger, &key)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        keys.push(key);
    }
    Ok(keys)
}

fn print_dns_records(domain: &str, keys: &[dkim::DkimKey]) {
    println!("\nPublish these DNS records:");
    // Long values (RSA keys) as several quoted strings: one DNS string holds 255 octets.
    for r in dkim::dns_records(domain, keys) {
        println!("{}  {}  {}", r.name, r.rtype, r.zone_value());
    }
}

/// Adds a new selector pair; the old selectors keep signing until retired, so receivers
/// that cached the old key still verify during the switch.
pub fn domain_rotate_dkim(settings: &Settings, domain: &str) -> anyhow::Result<()> {
    let domain =
        Domain::parse(domain).map_err(|e| anyhow::anyhow!("invalid domain {domain:?}: {e}"))?;
    let name = domain.to_string();
    let backend = open(settings)?;
    let ledger = backend.ledger();
    let keys = backend.rt.block_on(async {
        if baton_store::get_domain(ledger, &domain).await?.is_none() {
            bail!("domain {name} is not registered (baton domain add)");
        }
        new_dkim_keys(ledger, &name).await?;
        dkim::active_keys(ledger, &name)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    println!(
        "new DKIM selectors added for {name}; retire old ones with `baton domain retire-dkim {name} SELECTOR`"
    );
    print_dns_records(&name, &keys);
    Ok(())
}

pub fn domain_retire_dkim(settings: &Settings, domain: &str, selector: &str) -> anyhow::Result<()> {
    let backend = open(settings)?;
    let ledger = backend.ledger();
    let domain = domain.to_lowercase();
    backend.rt.block_on(async {
        let keys = dkim::all_keys(ledger, &domain)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(mut key) = keys.into_iter().find(|k| k.selector == selector) else {
            bail!("no selector {selector} for {domain}");
        };
        key.retired = true;
        dkim::put_key(ledger, &key)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    println!(
        "selector {selector} of {domain} retired: it no longer signs (keep its DNS record a few days)"
    );
    Ok(())
}

pub fn tenant_quota(
    settings: &Settings,
    tenant: &str,
    per_second: Option<u64>,
    per_day: Option<u64>,
) -> anyhow::Result<()> {
    check_name("tenant", tenant)?;
    let backend = open(settings)?;
    let ledger = backend.ledger();
    let tenant = TenantId(tenant.to_string());
    let settings = backend
        .rt
        .block_on(async {
            let mut s = quota::tenant_settings(ledger, &tenant).await?;
            if let Some(n) = per_second {
                s.max_per_second = (n > 0).then_some(n);
            }
            if let Some(n) = per_day {
                s.max_per_day = (n > 0).then_some(n);
            }
            quota::put_tenant_settings(ledger, &tenant, &s).await?;
            Ok::<_, baton_pipeline::StageError>(s)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let show = |v: Option<u64>| {
        v.map(|n| n.to_string())
            .unwrap_or_else(|| "unlimited".into())
    };
    println!(
        "tenant {}: {} messages/s, {} messages/day",
        tenant.0,
        show(settings.max_per_second),
        show(settings.max_per_day)
    );
    Ok(())
}

#[derive(Serialize)]
struct RcptView {
    address: String,
    status: String,
    attempts: u32,
    last_reply: String,
}

#[derive(Serialize)]
struct Listed {
    id: String,
    state: &'static str,
    from: String,
    recipients: Vec<String>,
    recipient_states: Vec<RcptView>,
    size: u64,
    received_at: i64,
    tenant: Option<String>,
}

/// An intake record is an envelope; later stages carry a job around it.
fn envelope_of(body: &[u8]) -> Option<Envelope> {
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .or_else(|| serde_json::from_slice::<Job>(body).ok().map(|j| j.envelope))
}

pub fn queue_list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let backend = open_existing(settings)?;
    let Some(embedded) = &backend.embedded else {
        return aws_queue_counts(&backend, json);
    };
    let ledger = backend.ledger();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut listed = Vec::new();
    backend.rt.block_on(async {
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
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    listed.push(Listed {
                        id: envelope.queue_id.to_string(),
                        state,
                        from: envelope
                            .mail_from
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                        recipients: envelope
                            .recipients
                            .iter()
                            .map(|r| r.address.to_string())
                            .collect(),
                        recipient_states: states
                            .into_iter()
                            .map(|(address, s)| RcptView {
                                address,
                                status: format!("{:?}", s.status).to_lowercase(),
                                attempts: s.attempts,
                                last_reply: s.last_reply,
                            })
                            .collect(),
                        size: envelope.size,
                        received_at: envelope.received_at,
                        tenant: envelope.tenant.map(|t| t.0),
                    });
                }
            }
        }
        anyhow::Ok(())
    })?;
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &listed)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        // One line per message (the contract in docs/SMTP-REPLIES.md); a recipient that has
        // moved past "pending" shows its state, e.g. `bob@example.org(deferred)`.
        listed.iter().try_for_each(|m| {
            let from = if m.from.is_empty() {
                "<>"
            } else {
                m.from.as_str()
            };
            let rcpts: Vec<String> = m
                .recipients
                .iter()
                .map(|r| {
                    match m
                        .recipient_states
                        .iter()
                        .find(|s| s.address.eq_ignore_ascii_case(r))
                    {
                        Some(s) if s.status != "pending" => format!("{r}({})", s.status),
                        _ => r.clone(),
                    }
                })
                .collect();
            writeln!(
                out,
                "{}  {:<10}  {}  {}",
                m.id,
                m.state,
                from,
                rcpts.join(",")
            )
        })
    };
    quiet_on_closed_pipe(written)
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
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &counts)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        counts.iter().try_for_each(|c| {
            writeln!(
                out,
                "{:<14} visible={} in-flight={} delayed={}",
                c.queue, c.visible, c.in_flight, c.delayed
            )
        })
    };
    quiet_on_closed_pipe(written)
}

pub fn message_show(settings: &Settings, id: &str) -> anyhow::Result<()> {
    let id: baton_domain::QueueId = id
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid queue id {id:?}"))?;
    let backend = open_existing(settings)?;
    let ledger = backend.ledger();
    let (states, events) = backend
        .rt
        .block_on(async {
            let states = records::rcpt_states(ledger, &id).await?;
            let events = records::timeline(ledger, &id).await?;
            Ok::<_, baton_pipeline::StageError>((states, events))
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if states.is_empty() && events.is_empty() {
        bail!("no record of message {id}");
    }
    let mut out = std::io::stdout().lock();
    let written = (|| -> std::io::Result<()> {
        writeln!(out, "message {id}")?;
        writeln!(out, "recipients:")?;
        for (address, s) in &states {
            writeln!(
                out,
                "  {address:<32} {:<10} attempts={} {}",
                format!("{:?}", s.status).to_lowercase(),
                s.attempts,
                s.last_reply
            )?;
        }
        writeln!(out, "timeline:")?;
        for e in &events {
            let at = rfc3339_ms(e.at);
            writeln!(out, "  {at}  {:<8} {:<22} {}", e.stage, e.what, e.detail)?;
        }
        Ok(())
    })();
    quiet_on_closed_pipe(written)
}

/// Lists a ledger table of JSON records (bounces, suppression), each with its key.
pub fn table_list(settings: &Settings, table: &str, json: bool) -> anyhow::Result<()> {
    let backend = open_existing(settings)?;
    let rows = backend.rt.block_on(backend.ledger().scan(table, ""))?;
    let mut values = Vec::with_capacity(rows.len());
    for (key, bytes) in rows {
        let mut value: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("record {key} of {table}"))?;
        if let Some(obj) = value.as_object_mut() {
            // Times for people and machines alike: RFC 3339, milliseconds, UTC.
            if let Some(ms) = obj.get("at").and_then(serde_json::Value::as_i64) {
                obj.insert("at".into(), rfc3339_ms(ms).into());
            }
            obj.insert("key".into(), key.into());
        }
        values.push(value);
    }
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &values)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_table(&mut out, table, &values)
    };
    quiet_on_closed_pipe(written)
}

/// The columns `bounce list` and `suppression list` show, as (header, JSON field).
fn columns(table: &str) -> &'static [(&'static str, &'static str)] {
    match table {
        "bounces" => &[
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
            ("REASON", "reason"),
        ],
    }
}

/// Aligned columns with a header; the last column takes the rest of the line.
fn write_table(
    out: &mut impl Write,
    table: &str,
    values: &[serde_json::Value],
) -> std::io::Result<()> {
    let cols = columns(table);
    let cell = |v: &serde_json::Value, field: &str| -> String {
        match (field, v.get(field)) {
            ("kind", _) => match v.get("hard").and_then(serde_json::Value::as_bool) {
                Some(true) => "hard".into(),
                Some(false) => "soft".into(),
                None => "-".into(),
            },
            (_, Some(serde_json::Value::String(s))) => s.clone(),
            (_, Some(serde_json::Value::Null) | None) => "-".into(),
            (_, Some(other)) => other.to_string(),
        }
    };
    let rows: Vec<Vec<String>> = values
        .iter()
        .map(|v| cols.iter().map(|(_, f)| cell(v, f)).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |out: &mut dyn Write, cells: &[String]| -> std::io::Result<()> {
        let last = cells.len() - 1;
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        writeln!(out, "{}", text.join("  ").trim_end())
    };
    let header: Vec<String> = cols.iter().map(|(h, _)| h.to_string()).collect();
    line(out, &header)?;
    for r in &rows {
        line(out, r)?;
    }
    Ok(())
}

/// `2026-12-02T03:23:03.053Z`: one precision everywhere, so columns line up.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// `baton queue list | head` must not end with an error when `head` stops reading.
fn quiet_on_closed_pipe(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub fn queue_cat(settings: &Settings, id: &str) -> anyhow::Result<()> {
    let id: baton_domain::QueueId = id
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid queue id {id:?}"))?;
    let backend = open_existing(settings)?;
    let body = backend.rt.block_on(backend.blobs.read(&id.to_string()))?;
    quiet_on_closed_pipe(std::io::stdout().lock().write_all(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_one_precision_and_tables_line_up() {
        assert_eq!(rfc3339_ms(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_005), "2023-11-14T22:13:20.005Z");
        let rows = vec![
            serde_json::json!({"at": "2023-11-14T22:13:20.000Z", "recipient": "a@x", "hard": true,
                "code": 550, "enhanced": "5.1.1", "queue_id": "Q1", "reply": "no such user"}),
            serde_json::json!({"at": "2023-11-14T22:13:21.000Z", "recipient": "longer@example.org",
                "hard": false, "code": 450, "enhanced": "4.2.2", "queue_id": "Q2", "reply": "full"}),
        ];
        let mut out = Vec::new();
        write_table(&mut out, "bounces", &rows).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("AT") && lines[0].contains("RECIPIENT"),
            "{text}"
        );
        let col = |l: &str| {
            l.find("hard")
                .or_else(|| l.find("soft"))
                .or_else(|| l.find("KIND"))
        };
        assert_eq!(col(lines[0]), col(lines[1]), "{text}");
        assert_eq!(col(lines[1]), col(lines[2]), "{text}");
    }
}
