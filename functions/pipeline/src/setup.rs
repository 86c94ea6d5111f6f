//! Builds the stages from the typed configuration.

use std::sync::Arc;
use std::time::Duration;

use baton_config::Settings;
use baton_domain::Domain;
use baton_store::Ledger;

use crate::StageError;
use crate::bounce::BounceConfig;
use crate::deliver;
use crate::dkim::{self, EnsuredKeys};
use crate::notify::CloudTargets;
use crate::outbound::{
    ClientConfig, ConnectionPool, Credentials, HickoryMxResolver, MxResolver, Route, VerifiedTls,
    opportunistic_tls, verified_tls,
};
use crate::policy::PolicyConfig;
use crate::runtime::{
    BounceStage, DeliverStage, FusedStage, NotifyStage, PolicyStage, SignStage, Stages,
};

/// The stages as `settings` configures them (shared by `baton serve` and the Lambda
/// functions, so both behave alike). `cloud` sends events to tenants' SQS queues and EventBridge
/// buses: the AWS backend's clients, on both backends, since those destinations are AWS
/// services.
pub fn stages(settings: &Settings, cloud: Arc<dyn CloudTargets>) -> Result<Stages, StageError> {
    check_hostname(settings)?;
    let policy = policy(settings)?;
    let deliver = deliver(settings)?;
    Ok(Stages {
        fused: Arc::new(FusedStage(fused(policy.clone(), deliver.clone()))),
        policy: Arc::new(PolicyStage(policy)),
        sign: Arc::new(SignStage),
        deliver: Arc::new(DeliverStage(deliver)),
        bounce: Arc::new(BounceStage(bounce(settings))),
        events: Arc::new(NotifyStage(notify(settings, cloud)?)),
    })
}

// One builder per stage, so a Lambda function that runs one stage builds (and links) only
// that one: `baton_functions` calls just its own stage's builder. [`stages`] composes them.

/// EHLO and DSNs must name a real host; a placeholder is only for a loopback trial. Every
/// stage checks it, as [`stages`] does, so each function starts (or refuses to) alike.
pub fn check_hostname(settings: &Settings) -> Result<(), StageError> {
    settings
        .check_delivery_hostname(true)
        .map_err(|e| StageError::Permanent(e.to_string()))
}

fn soft_bounces(settings: &Settings) -> crate::soft::SoftBounces {
    let raw = &settings.raw;
    crate::soft::SoftBounces {
        threshold: raw.bounces.soft_threshold,
        window: raw.bounces.soft_window,
        suppress_for: raw.bounces.soft_suppression,
    }
}

/// The policy stage's configuration (also the fused stage's first step).
pub fn policy(settings: &Settings) -> Result<PolicyConfig, StageError> {
    let raw = &settings.raw;
    Ok(PolicyConfig {
        hostname: raw.hostname.clone(),
        bounce_subdomain: raw.bounces.subdomain.clone(),
        soft: soft_bounces(settings),
        bounce_parser: Arc::new(crate::inbound::parser(raw.bounces.rules_file.as_deref())?),
    })
}

/// The deliver stage: MX resolver, routes (with their credentials), SMTP client, retries.
pub fn deliver(settings: &Settings) -> Result<deliver::DeliverStage, StageError> {
    let raw = &settings.raw;
    let d = &raw.delivery;
    let resolver: Arc<dyn MxResolver> = if d.nameservers.is_empty() {
        Arc::new(
            HickoryMxResolver::system()
                .map_err(|e| StageError::Permanent(format!("DNS resolver: {e}")))?,
        )
    } else {
        Arc::new(
            HickoryMxResolver::with_nameservers(&d.nameservers)
                .map_err(|e| StageError::Permanent(format!("DNS resolver: {e}")))?,
        )
    };
    let mut routes = Vec::with_capacity(d.routes.len());
    for r in &d.routes {
        let password = r
            .resolve_password()
            .map_err(|e| StageError::Permanent(format!("route credentials: {e}")))?;
        // Credentials go only to a server whose certificate we verified.
        let verify = if r.username.is_some() || r.tls_ca_file.is_some() {
            let tls = verified_tls(r.tls_ca_file.as_deref()).map_err(|e| {
                StageError::Permanent(format!("route {}: TLS roots: {e}", r.pattern))
            })?;
            Some(VerifiedTls(tls))
        } else {
            None
        };
        routes.push(Route {
            pattern: r.pattern.clone(),
            capture: r.is_capture(),
            target: r.target.as_deref().and_then(|t| {
                let (host, port) = t.rsplit_once(':')?;
                Some((host.to_string(), port.parse().ok()?))
            }),
            require_tls: r.require_tls,
            auth: r
                .username
                .clone()
                .zip(password)
                .map(|(user, password)| Credentials::new(user, password)),
            verify,
        });
    }
    let helo = if d.helo_name.is_empty() {
        raw.hostname.clone()
    } else {
        d.helo_name.clone()
    };
    Ok(deliver::DeliverStage {
        resolver,
        client: ClientConfig {
            helo_name: helo,
            port: d.port,
            connect_timeout: d.connect_timeout,
            command_timeout: d.command_timeout,
            data_timeout: d.data_timeout,
            tls: opportunistic_tls()
                .map_err(|e| StageError::Permanent(format!("TLS client: {e}")))?,
            // Like Postfix's connection cache: a few idle sessions per address, briefly.
            // As many idle sessions per next hop as deliveries can run at once: fewer, and
            // every delivery past them would open a new connection to the same host.
            pool: Some(Arc::new(ConnectionPool::new(
                Duration::from_secs(5),
                raw.pipeline.deliver_workers.max(1),
            ))),
        },
        routes,
        retry: deliver::RetryPolicy {
            initial: d.retry_initial,
            max: d.retry_max,
            max_age: d.max_age,
            delay_notice_after: d.delay_notice_after,
        },
        return_paths: crate::return_path::ReturnPathPolicy {
            label: raw.bounces.subdomain.clone(),
            every_domain: raw.bounces.return_path,
        },
    })
}

/// The bounce stage's configuration.
pub fn bounce(settings: &Settings) -> BounceConfig {
    BounceConfig {
        hostname: settings.raw.hostname.clone(),
        soft: soft_bounces(settings),
    }
}

/// The events stage: tenants' queues and buses through `cloud`, webhooks over HTTPS.
pub fn notify(
    settings: &Settings,
    cloud: Arc<dyn CloudTargets>,
) -> Result<crate::notify::NotifyStage, StageError> {
    let raw = &settings.raw;
    Ok(crate::notify::NotifyStage {
        cloud,
        webhooks: crate::webhook::WebhookClient::new(&raw.events)?,
        own_prefix: raw.aws.prefix.clone(),
    })
}

/// Policy, signing and the first delivery attempt in one job.
pub fn fused(policy: PolicyConfig, deliver: deliver::DeliverStage) -> crate::fused::FusedStage {
    crate::fused::FusedStage { policy, deliver }
}

/// The DKIM keys of the relay's own `hostname`, which sign the mail the relay writes itself
/// (DSNs and delay notices, From `MAILER-DAEMON@<hostname>`; see `sign.rs`). Made at the
/// first start, or whenever the hostname has no active key, with the DNS records to publish
/// logged once, when they are made. A hostname an admin registered to a tenant
/// (`domain add`) keeps its keys: they sign both that tenant's mail and the relay's.
/// `None` when the hostname is no domain name to sign for. `sending_host` is the name the
/// logged SPF record names (`Settings::helo_name`).
pub async fn relay_keys(
    ledger: &dyn Ledger,
    hostname: &str,
    sending_host: &str,
    now_secs: i64,
) -> Result<Option<EnsuredKeys>, StageError> {
    let domain = match Domain::parse(hostname) {
        Ok(Domain::Name(name)) => name,
        _ => {
            tracing::warn!(
                hostname,
                "hostname is not a domain name: mail the relay writes (DSNs) goes out unsigned"
            );
            return Ok(None);
        }
    };
    let keys = dkim::ensure_keys(ledger, &domain, now_secs).await?;
    let selectors = keys
        .keys()
        .iter()
        .map(|k| k.selector.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match &keys {
        // No fields: the text format would append them to the last record. One record a
        // line, as `domain add` prints them.
        EnsuredKeys::Created(k) => tracing::info!(
            "created DKIM keys for {domain}, which sign the mail the relay writes (DSNs); \
             publish these DNS records:\n{}",
            dkim::zone_lines(&domain, k, sending_host)
        ),
        EnsuredKeys::Existing(_) => {
            tracing::debug!(domain, selectors, "DKIM keys for mail the relay writes")
        }
    }
    Ok(Some(keys))
}
