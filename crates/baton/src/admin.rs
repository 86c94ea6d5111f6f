//! Administration commands that change state (users, domains, tenants, AWS resources); the
//! read-only ones are in `inspect`. On the embedded backend they work on the data directory while
//! `baton serve` runs (the SQLite store is shared between processes); on the AWS backend
//! they use the same DynamoDB tables, S3 bucket and SQS queues as the gateway and functions.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, bail};
use baton_aws::AwsBackend;
use baton_config::Settings;
use baton_domain::{Domain, TenantId};
use baton_embedded::EmbeddedBackend;
use baton_gateway::hash_password;
use baton_pipeline::outbound::{HickoryMxResolver, MxResolver};
use baton_pipeline::{dkim, queue_names, quota, records, setup};
use baton_store::{
    BlobStore, DomainRecord, Ledger, UserRecord, get_domain, get_domain_claim, put_domain, put_user,
};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The backend `storage.backend` names, with the runtime its calls run on.
pub(crate) struct Store {
    pub(crate) rt: tokio::runtime::Runtime,
    ledger: Arc<dyn Ledger>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) embedded: Option<EmbeddedBackend>,
    pub(crate) aws: Option<AwsBackend>,
}

impl Store {
    pub(crate) fn ledger(&self) -> &dyn Ledger {
        self.ledger.as_ref()
    }
}

/// For commands that only read: never creates a data directory (an empty new one would
/// just print nothing), and says which one is missing.
pub(crate) fn open_existing(settings: &Settings) -> anyhow::Result<Store> {
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

pub(crate) fn open(settings: &Settings) -> anyhow::Result<Store> {
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
    // The return-path key: made here, where the roles that only read it cannot.
    store
        .rt
        .block_on(baton_store::verp_key(store.ledger()))
        .context("preparing the return-path key")?;
    // Where Lambda runs the stages no `serve` creates the keys DSNs are signed with.
    let hostname = &settings.raw.hostname;
    let keys = store
        .rt
        .block_on(setup::relay_keys(
            store.ledger(),
            hostname,
            settings.helo_name(),
            now_secs(),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match keys {
        Some(dkim::EnsuredKeys::Created(keys)) => {
            println!(
                "created DKIM keys for {hostname}, which sign the mail the relay writes (DSNs)"
            );
            print_dns_records(settings, hostname, &keys);
        }
        Some(dkim::EnsuredKeys::Existing(_)) => {
            println!(
                "DKIM keys for {hostname} (DSNs) exist: `baton domain rotate-dkim {hostname}` replaces them"
            );
        }
        None => {}
    }
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

/// The names the code reads on AWS, from the configuration, by the functions the backend
/// itself names them with: the bucket, each stage queue and its dead-letter queue (as the
/// functions open them), each ledger table (as the ledger names them) and the hostname.
/// Makes no request.
pub fn aws_names(settings: &Settings) -> anyhow::Result<()> {
    let store = open(settings)?;
    let Some(aws) = &store.aws else {
        bail!("storage.backend is not aws (use --backend aws)");
    };
    let queues: Vec<String> = queue_names::ALL
        .iter()
        .flat_map(|q| {
            [
                aws.queue_name(q),
                aws.queue_name(&queue_names::dead_letter(q)),
            ]
        })
        .collect();
    let ledger = aws.ledger();
    let tables: Vec<String> = baton_aws::LEDGER_TABLES
        .iter()
        .map(|t| ledger.table_name(t.name))
        .collect();
    let names = serde_json::json!({
        "bucket": aws.config.bucket,
        "queues": queues,
        "tables": tables,
        "hostname": settings.raw.hostname,
    });
    println!("{}", serde_json::to_string_pretty(&names)?);
    Ok(())
}

pub(crate) fn check_name(kind: &str, s: &str) -> anyhow::Result<()> {
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
    if is_relay_hostname(settings, &domain.to_string()) {
        // Its keys sign the relay's own DSNs: a tenant owning it could sign as MAILER-DAEMON.
        bail!(
            "{domain} is this relay's hostname, whose DKIM keys sign the DSNs it writes: no \
             tenant may send as it (use another domain, or `baton domain rotate-dkim {domain}`)"
        );
    }
    let backend = open(settings)?;
    let ledger = backend.ledger();
    let record = DomainRecord {
        tenant: TenantId(tenant.to_string()),
        return_path: false,
    };
    let name = domain.to_string();
    let (before, keys) = backend.rt.block_on(async {
        let before = get_domain_claim(ledger, &domain).await?;
        put_domain(ledger, &domain, &record).await?;
        // A name nobody held, or another tenant's unproven claim, gets selectors of its
        // own: never keys an earlier owner published, or a squatter's.
        let fresh = match &before {
            None => true,
            Some(c) => c.pending && c.record.tenant != record.tenant,
        };
        let keys = if fresh {
            dkim::fresh_keys(ledger, &name, now_secs()).await
        } else {
            dkim::ensure_keys(ledger, &name, now_secs()).await
        }
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::Ok((before, keys.keys().to_vec()))
    })?;
    if let Some(c) = before.filter(|c| c.pending) {
        println!(
            "{domain} was claimed through the API by tenant {}, not yet proven by DNS: the \
             claim is replaced",
            c.record.tenant.0
        );
    }
    println!("domain {domain} registered for tenant {tenant}");
    print_dns_records(settings, &name, &keys);
    // Bounces come back to <subdomain>.<domain> (the return paths tenant mail goes out
    // from), and SPF checks that domain: the MX names where bounces arrive (hostname), SPF
    // the addresses mail leaves from (the EHLO name: behind NAT gateways another name).
    let bounce = format!("{}.{name}", settings.raw.bounces.subdomain);
    let host = settings.raw.hostname.trim_end_matches('.');
    let sending = settings.helo_name().trim_end_matches('.');
    println!("{bounce}  MX  10 {host}.");
    println!("{bounce}  TXT  \"v=spf1 a:{sending} -all\"");
    if !settings.raw.bounces.return_path {
        println!(
            "# once published, `baton domain verify {name}` sends its mail from return paths \
             at {bounce}, so bounces that come later are tied to message and recipient"
        );
    }
    Ok(())
}

/// Turns return paths on for `domain` once its bounce domain's MX names this relay.
pub fn domain_verify(settings: &Settings, domain: &str) -> anyhow::Result<()> {
    let domain =
        Domain::parse(domain).map_err(|e| anyhow::anyhow!("invalid domain {domain:?}: {e}"))?;
    let store = open_existing(settings)?;
    let ledger = store.ledger();
    let bounce = format!("{}.{domain}", settings.raw.bounces.subdomain);
    let host = settings
        .raw
        .hostname
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let nameservers = &settings.raw.delivery.nameservers;
    let resolver = if nameservers.is_empty() {
        HickoryMxResolver::system()
    } else {
        HickoryMxResolver::with_nameservers(nameservers)
    }
    .map_err(|e| anyhow::anyhow!("DNS resolver: {e}"))?;
    store.rt.block_on(async {
        let Some(mut record) = get_domain(ledger, &domain).await? else {
            bail!("{domain} is not registered: `baton domain add {domain} --tenant T` first");
        };
        let hosts = match resolver.resolve(&bounce).await {
            Ok(hosts) => hosts,
            Err(e) => bail!("{bounce}: {e}; publish `{bounce}  MX  10 {host}.` and try again"),
        };
        // Every most-preferred MX must be us: a sender tries those first, and a bounce
        // taken by another host never reaches the pipeline.
        let best = hosts.iter().map(|h| h.preference).min();
        let found: Vec<String> = hosts
            .iter()
            .filter(|h| Some(h.preference) == best)
            .map(|h| h.name.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        if found.is_empty() || found.iter().any(|name| *name != host) {
            bail!(
                "{bounce} has MX {}, not {host}: publish `{bounce}  MX  10 {host}.` and try \
                 again (until then mail from {domain} keeps its sender's return path)",
                found.join(", ")
            );
        }
        // The key return paths are made and checked with. The stages may only read it, so
        // the admin who turns return paths on makes it (once: the first writer wins).
        baton_store::verp_key(ledger)
            .await
            .context("preparing the return-path key")?;
        record.return_path = true;
        put_domain(ledger, &domain, &record).await?;
        anyhow::Ok(())
    })?;
    println!(
        "{domain}: return paths on; its mail goes out from <token>@{bounce}, whose bounces \
         come back to {host}"
    );
    Ok(())
}

/// Whether `domain` is the relay's own hostname (as configured, any case, trailing dot or not).
fn is_relay_hostname(settings: &Settings, domain: &str) -> bool {
    let hostname = settings.raw.hostname.trim_end_matches('.');
    domain.trim_end_matches('.').eq_ignore_ascii_case(hostname)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn print_dns_records(settings: &Settings, domain: &str, keys: &[dkim::DkimKey]) {
    // Long values (RSA keys) as several quoted strings: one DNS string holds 255 octets.
    println!(
        "\nPublish these DNS records:\n{}",
        dkim::zone_lines(domain, keys, settings.helo_name())
    );
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
        // The relay's own hostname has keys too (they sign DSNs) without being a tenant's.
        let relay_own = is_relay_hostname(settings, &name);
        if !relay_own && baton_store::get_domain(ledger, &domain).await?.is_none() {
            bail!("domain {name} is not registered (baton domain add)");
        }
        let added = dkim::add_key_pair(ledger, &name, now_secs())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if added.len() < 2 {
            bail!("another process added keys for {name} at the same moment: run it again");
        }
        dkim::active_keys(ledger, &name)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    println!(
        "new DKIM selectors added for {name}; retire old ones with `baton domain retire-dkim {name} SELECTOR`"
    );
    print_dns_records(settings, &name, &keys);
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

pub fn suppression_remove(
    settings: &Settings,
    address: &str,
    tenant: Option<&str>,
) -> anyhow::Result<()> {
    let store = open_existing(settings)?;
    let tenant = tenant.map(|t| TenantId(t.to_string()));
    let removed = store
        .rt
        .block_on(records::unsuppress(
            store.ledger(),
            tenant.as_ref(),
            address,
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let list = tenant
        .as_ref()
        .map(|t| format!("tenant {}'s suppression list", t.0))
        .unwrap_or_else(|| "the relay-wide suppression list".into());
    if !removed {
        bail!("{address} is not on {list}");
    }
    println!("{address} removed from {list}: mail to it goes out again");
    Ok(())
}
