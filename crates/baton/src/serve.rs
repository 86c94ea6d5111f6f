//! `baton serve`.

use std::fs::File;
use std::sync::Arc;

use anyhow::Context;
use baton_config::Settings;
use baton_embedded::{EmbeddedBackend, EmbeddedOptions};
use baton_gateway::{Gateway, GatewayDeps};
use baton_pipeline::bounce::BounceConfig;
use baton_pipeline::deliver;
use baton_pipeline::outbound::{
    ClientConfig, ConnectionPool, HickoryMxResolver, MxResolver, Route, opportunistic_tls,
};
use baton_pipeline::policy::PolicyConfig;
use baton_pipeline::runtime::{
    self, BounceStage, DeadLetters, DeliverStage, PolicyStage, SignStage, Stages,
};
use baton_pipeline::worker::WorkerConfig;
use baton_pipeline::{Ports, SystemClock, queue_names};
use baton_store::Queue;
use baton_telemetry::Format;
use std::time::Duration;
use tokio::sync::watch;

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
        clock: Arc::new(SystemClock),
    };
    let dead = DeadLetters {
        intake: dead_letter(queue_names::INTAKE),
        sign: dead_letter(queue_names::SIGN),
        deliver: dead_letter(queue_names::DELIVER),
        bounce: dead_letter(queue_names::BOUNCE),
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
    let data_dir = settings.raw.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
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
    let deps = GatewayDeps {
        blobs: ports.blobs.clone(),
        queue: ports.intake.clone(),
        ledger: ports.ledger.clone(),
    };
    let gateway = Gateway::bind(&settings, deps).await?;
    let (stop_workers, workers_stopped) = watch::channel(false);
    let mut workers = if settings.raw.pipeline.run_stages {
        let stages = baton_pipeline::setup::stages(&settings)?;
        let config = WorkerConfig {
            batch: settings.raw.pipeline.batch,
            ..WorkerConfig::default()
        };
        let concurrency = runtime::Concurrency {
            policy: settings.raw.pipeline.policy_workers,
            sign: settings.raw.pipeline.sign_workers,
            deliver: settings.raw.pipeline.deliver_workers,
        };
        Some(runtime::spawn(
            ports,
            dead,
            stages,
            config,
            concurrency,
            workers_stopped,
        ))
    } else {
        None
    };
    tracing::info!(
        data_dir = %data_dir.display(),
        backend = "embedded",
        stages = settings.raw.pipeline.run_stages,
        "baton started"
    );
    gateway.run(shutdown_signal()).await?;
    if let Some(workers) = workers.as_mut() {
        let _ = stop_workers.send(true);
        // Each worker finishes the batch in hand; delivery attempts are bounded by their timeouts.
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while workers.join_next().await.is_some() {}
        })
        .await;
    }
    drop(lock);
    Ok(())
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
