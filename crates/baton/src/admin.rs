//! Administration commands on the data directory. They work while `baton serve` runs: the
//! SQLite store is shared between processes.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use baton_config::Settings;
use baton_domain::{Domain, Envelope, TenantId};
use baton_embedded::EmbeddedBackend;
use baton_gateway::hash_password;
use baton_store::{BlobStore, DomainRecord, UserRecord, put_domain, put_user, queues};
use serde::Serialize;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn open(settings: &Settings) -> anyhow::Result<EmbeddedBackend> {
    let dir = &settings.raw.data_dir;
    EmbeddedBackend::open_for_admin(dir)
        .with_context(|| format!("opening data directory {}", dir.display()))
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
    runtime()?.block_on(put_user(&backend.ledger(), name, &record))?;
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
    let record = DomainRecord {
        tenant: TenantId(tenant.to_string()),
    };
    runtime()?.block_on(put_domain(&backend.ledger(), &domain, &record))?;
    println!("domain {domain} registered for tenant {tenant}");
    Ok(())
}

#[derive(Serialize)]
struct Listed {
    id: String,
    state: &'static str,
    from: String,
    recipients: Vec<String>,
    size: u64,
    received_at: i64,
    tenant: Option<String>,
}

pub fn queue_list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let backend = open(settings)?;
    let dead_letter = format!("{}-dlq", queues::INTAKE);
    let mut listed = Vec::new();
    runtime()?.block_on(async {
        for (queue, dead) in [(queues::INTAKE, false), (dead_letter.as_str(), true)] {
            for entry in backend.list_queue(queue).await? {
                let envelope: Envelope = serde_json::from_slice(&entry.body)
                    .with_context(|| format!("queue entry {} is not an envelope", entry.id))?;
                let state = if dead {
                    "dead"
                } else if entry.in_flight {
                    "in-flight"
                } else {
                    "queued"
                };
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
                    size: envelope.size,
                    received_at: envelope.received_at,
                    tenant: envelope.tenant.map(|t| t.0),
                });
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
        listed.iter().try_for_each(|m| {
            let from = if m.from.is_empty() {
                "<>"
            } else {
                m.from.as_str()
            };
            writeln!(
                out,
                "{}  {:<9}  {}  {}",
                m.id,
                m.state,
                from,
                m.recipients.join(",")
            )
        })
    };
    quiet_on_closed_pipe(written)
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
    let backend = open(settings)?;
    let body = runtime()?.block_on(backend.blob_store().read(&id.to_string()))?;
    quiet_on_closed_pipe(std::io::stdout().lock().write_all(&body))
}
