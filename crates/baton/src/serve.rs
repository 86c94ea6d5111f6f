//! `baton serve`.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baton_aws::AwsBackend;
use baton_config::Settings;
use baton_embedded::{EmbeddedBackend, EmbeddedOptions, RetentionPolicy, Schedule};
use baton_functions::local_runner::{self, RunnerConfig};
use baton_functions::{Function, Stage};
use baton_gateway::{Gateway, GatewayDeps};
use baton_pipeline::runtime::{self, DeadLetters};
use baton_pipeline::worker::WorkerConfig;
use baton_pipeline::{Ports, SystemClock, queue_names};
use baton_store::Queue;
use baton_telemetry::Format;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Receptions of a stage message before it is parked in the dead-letter queue.
const MAX_RECEIVES: u32 = 10;

fn pipeline_ports(backend: &EmbeddedBackend) -> (Ports, DeadLetters) {
    let queue = |name: &str| -> Arc<dyn Queue> {
        Arc::new(backend.queue(name, MAX_RECEIVES, Some(&queue_names::dead_letter(name))))
    };
    let dead_letter = |name: &str| -> Arc<dyn Queue> {
        Arc::new(backend.queue(&queue_names::dead_letter(name), u32::MAX, None))
    };
    let ports = Ports {
        blobs: Arc::new(backend.blob_store()),
        ledger: Arc::new(backend.ledger()),
        intake: queue(queue_names::INTAKE),
        sign: queue(queue_names::SIGN),
        deliver: queue(queue_names::DELIVER),
        bounce: queue(queue_names::BOUNCE),
        events: queue(queue_names::EVENTS),
        clock: Arc::new(SystemClock),
    };
    let dead = DeadLetters {
        intake: dead_letter(queue_names::INTAKE),
        sign: dead_letter(queue_names::SIGN),
        deliver: dead_letter(queue_names::DELIVER),
        bounce: dead_letter(queue_names::BOUNCE),
        events: dead_letter(queue_names::EVENTS),
    };
    (ports, dead)
}

pub fn run(settings: Settings) -> anyhow::Result<()> {
    let format = match settings.raw.log.format.as_str() {
        "json" => Format::Json,
        _ => Format::Text,
    };
    baton_telemetry::init(format, &settings.raw.log.filter);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("baton")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(settings))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    if settings.raw.storage.backend == "aws" {
        serve_aws(settings).await
    } else {
        serve_embedded(settings).await
    }
}

fn concurrency(settings: &Settings) -> runtime::Concurrency {
    let pipeline = &settings.raw.pipeline;
    runtime::Concurrency {
        // Fused, the intake workers deliver too.
        policy: if pipeline.fused {
            pipeline.deliver_workers
        } else {
            pipeline.policy_workers
        },
        sign: settings.raw.pipeline.sign_workers,
        deliver: settings.raw.pipeline.deliver_workers,
        fused: pipeline.fused,
        ..runtime::Concurrency::default()
    }
}

async fn serve_embedded(settings: Settings) -> anyhow::Result<()> {
    let data_dir = settings.raw.data_dir.clone();
    // First, so that whoever looks for the data knows where it is.
    tracing::info!(data_dir = %data_dir.display(), "using data directory");
    // Private (0700), and refused if others can write it, before anything is put in it;
    // opening the backend below tightens what is inside.
    baton_embedded::check_data_dir(&data_dir)?;
    // One server per data directory: the spool's crash recovery assumes it is alone.
    let lock = File::create(data_dir.join("serve.lock")).context("creating serve.lock")?;
    lock.try_lock()
        .map_err(|_| anyhow::anyhow!("another baton serve is running on {}", data_dir.display()))?;

    let storage = &settings.raw.storage;
    let backend = EmbeddedBackend::open(
        &data_dir,
        EmbeddedOptions {
            max_batch: storage.group_commit_max_batch,
            max_delay: storage.group_commit_max_delay,
            inline_max: storage.inline_body_max,
            ..EmbeddedOptions::default()
        },
    )
    .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    backend.recover().await.context("recovering the spool")?;
    let (ports, dead) = pipeline_ports(&backend);
    relay_keys(&settings, &ports).await?;
    let deps = GatewayDeps {
        blobs: ports.blobs.clone(),
        queue: ports.intake.clone(),
        ledger: ports.ledger.clone(),
    };
    let api_deps = GatewayDeps {
        blobs: deps.blobs.clone(),
        queue: deps.queue.clone(),
        ledger: deps.ledger.clone(),
    };
    let gateway = Gateway::bind(&settings, deps).await?;
    let (stop_workers, workers_stopped) = watch::channel(false);
    let sweeper_stopped = workers_stopped.clone();
    let api_stopped = workers_stopped.clone();
    let mut workers = if settings.raw.pipeline.run_stages {
        // Tenants' SQS and EventBridge destinations are AWS services, whichever the backend.
        let cloud = baton_functions::cloud_targets(&AwsBackend::connect(&settings.raw.aws).await);
        let stages = baton_pipeline::setup::stages(&settings, cloud)?;
        let config = WorkerConfig {
            batch: settings.raw.pipeline.batch,
            ..WorkerConfig::default()
        };
        runtime::spawn(
            ports,
            dead,
            stages,
            config,
            concurrency(&settings),
            workers_stopped,
        )
    } else {
        JoinSet::new()
    };
    // What AWS expires by TTL and lifecycle, deleted here: old ledger records, and bodies of
    // finished messages after `storage.retention_days`.
    let retention = RetentionPolicy {
        bodies: Duration::from_secs(u64::from(storage.retention_days) * 86_400),
        ..RetentionPolicy::default()
    };
    workers.spawn(baton_embedded::sweep_periodically(
        backend.clone(),
        retention,
        Schedule::default(),
        sweeper_stopped,
    ));
    spawn_api(&settings, &api_deps, &mut workers, api_stopped).await?;
    tracing::info!(
        data_dir = %data_dir.display(),
        backend = "embedded",
        stages = settings.raw.pipeline.run_stages,
        "baton started"
    );
    gateway.run(shutdown_signal()).await?;
    stop(stop_workers, &mut workers).await;
    drop(lock);
    Ok(())
}

/// The gateway on S3 + SQS + DynamoDB. With `pipeline.run_stages` the stages run here too,
/// as the Lambda functions would (same `Function`s fed `SqsEvent`s by a local runner);
/// without it, Lambda consumes the queues. A sweeper deletes bodies that were never queued.
async fn serve_aws(settings: Settings) -> anyhow::Result<()> {
    let aws = AwsBackend::connect(&settings.raw.aws).await;
    // Fail at start, not on the first message, when the resources are missing.
    let intake = aws
        .queue(queue_names::INTAKE)
        .await
        .context("opening the intake queue (create the resources with `baton aws provision`)")?;
    let (ports, dead) = baton_functions::aws_ports(&aws);
    // A gateway alone (Lambda runs the stages) has no access to DKIM keys by design
    // (infra/template.yaml, GatewayPolicy): only a process that signs looks after them.
    if settings.raw.pipeline.run_stages {
        relay_keys(&settings, &ports).await?;
    }
    let deps = GatewayDeps {
        blobs: ports.blobs.clone(),
        queue: Arc::new(intake.clone()),
        ledger: ports.ledger.clone(),
    };
    let api_deps = GatewayDeps {
        blobs: deps.blobs.clone(),
        queue: deps.queue.clone(),
        ledger: deps.ledger.clone(),
    };
    let gateway = Gateway::bind(&settings, deps).await?;
    let (stop_workers, workers_stopped) = watch::channel(false);
    let mut workers = JoinSet::new();
    if settings.raw.pipeline.run_stages {
        let cloud = baton_functions::cloud_targets(&aws);
        let stages = baton_pipeline::setup::stages(&settings, cloud)?;
        let c = concurrency(&settings);
        // Fused, one function takes intake in place of policy, as with the template's option.
        let intake = if c.fused { Stage::Fused } else { Stage::Policy };
        for stage in Stage::ALL.map(|s| if s == Stage::Policy { intake } else { s }) {
            let function = Function::new(stage, ports.clone(), &dead, &stages);
            let config = RunnerConfig {
                batch: settings.raw.pipeline.batch,
                concurrency: match stage {
                    Stage::Policy | Stage::Fused => c.policy,
                    Stage::Sign => c.sign,
                    Stage::Deliver => c.deliver,
                    Stage::Bounce => 1,
                    Stage::Events => c.events,
                },
                wait: Duration::from_secs(1),
                region: settings.raw.aws.region.clone(),
            };
            local_runner::spawn(
                &mut workers,
                function,
                aws.lazy_queue(stage.queue()),
                config,
                workers_stopped.clone(),
            );
        }
    }
    spawn_api(&settings, &api_deps, &mut workers, workers_stopped.clone()).await?;
    workers.spawn(sweep_periodically(aws.clone(), workers_stopped));
    tracing::info!(
        bucket = %settings.raw.aws.bucket,
        prefix = %settings.raw.aws.prefix,
        backend = "aws",
        stages = settings.raw.pipeline.run_stages,
        "baton started"
    );
    gateway.run(shutdown_signal()).await?;
    stop(stop_workers, &mut workers).await;
    // What this process cost in AWS requests (bench/aws-requests.sh reads these lines).
    aws.requests().log("aws requests");
    local_runner::log_invocations();
    Ok(())
}

/// The DKIM keys of the relay's hostname, which sign the DSNs it writes: made at the first
/// start (the DNS records to publish are logged then), found on every later one. Needs
/// read and write access to the `dkim_keys` table; without it the relay still runs and its
/// DSNs go out unsigned (their timelines say so), which is no reason to stop relaying.
async fn relay_keys(settings: &Settings, ports: &Ports) -> anyhow::Result<()> {
    let now = ports.clock.unix_ms() / 1000;
    let hostname = &settings.raw.hostname;
    if let Err(e) = baton_pipeline::setup::relay_keys(
        ports.ledger.as_ref(),
        hostname,
        settings.helo_name(),
        now,
    )
    .await
    {
        tracing::warn!(
            "cannot prepare the DKIM keys of hostname {hostname}: {e}; DSNs go out unsigned \
             (`baton domain rotate-dkim {hostname}` makes them)"
        );
    }
    Ok(())
}

async fn sweep_periodically(aws: AwsBackend, mut shutdown: watch::Receiver<bool>) {
    let every = (aws.config.orphan_after / 4).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let (Ok(intake), Ok(dlq)) = (
            aws.queue(queue_names::INTAKE).await,
            aws.queue(&queue_names::dead_letter(queue_names::INTAKE))
                .await,
        ) else {
            continue;
        };
        let ledger = aws.ledger();
        match aws
            .sweep_orphans(
                &ledger,
                baton_pipeline::records::tables::EVENTS,
                &intake,
                &dlq,
            )
            .await
        {
            Ok(r) if !r.deleted.is_empty() => {
                tracing::warn!(
                    deleted = r.deleted.len(),
                    "sweeper removed bodies that were never queued"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeper failed"),
        }
    }
}

/// The SES v2 API (`listen.api`), on the same store and intake queue as the gateway; it stops
/// with the workers.
async fn spawn_api(
    settings: &Settings,
    deps: &GatewayDeps,
    workers: &mut JoinSet<()>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(addr) = settings.api else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen.api {addr}"))?;
    let state = baton_api::ApiState::new(
        deps.ledger.clone(),
        deps.blobs.clone(),
        deps.queue.clone(),
        settings.raw.hostname.clone(),
        usize::try_from(settings.raw.api.max_body_memory).unwrap_or(usize::MAX),
    );
    // Identities are verified by their DKIM records, looked up where delivery looks.
    let dns =
        baton_pipeline::outbound::HickoryMxResolver::configured(&settings.raw.delivery.nameservers)
            .map_err(|e| anyhow::anyhow!("DNS resolver: {e}"))?;
    let state = Arc::new(
        state
            .with_dns(Arc::new(dns))
            .with_relay_names(&[settings.helo_name()], &settings.raw.bounces.subdomain),
    );
    // The SMTP listeners' certificate (the gateway has made a self-signed one by now if
    // none is configured).
    let tls = if settings.raw.api.tls {
        let raw = &settings.raw;
        let (config, _) =
            baton_gateway::tls::server_config(raw.tls.pair(), &raw.data_dir, &raw.hostname)?;
        Some(config)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "SES v2 API listening");
    let l = &settings.raw.limits;
    let limits = baton_api::Limits {
        max_connections: l.max_connections,
        max_connections_per_ip: l.max_connections_per_ip,
        // An HTTP client that says nothing for a minute is not coming back.
        idle: l.command_timeout.min(Duration::from_secs(60)),
        tls_handshake: l.tls_handshake_timeout,
        grace: l.shutdown_grace,
    };
    workers.spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(e) = baton_api::serve(listener, state, tls, limits, shutdown).await {
            tracing::error!(error = %e, "API listener failed");
        }
    });
    Ok(())
}

async fn stop(stop_workers: watch::Sender<bool>, workers: &mut JoinSet<()>) {
    let _ = stop_workers.send(true);
    // Each worker finishes the batch in hand; delivery attempts are bounded by their timeouts.
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
