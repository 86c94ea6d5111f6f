//! `baton serve`.

use std::fs::File;
use std::sync::Arc;

use anyhow::Context;
use baton_config::Settings;
use baton_embedded::{EmbeddedBackend, EmbeddedOptions};
use baton_gateway::{Gateway, GatewayDeps};
use baton_store::queues;
use baton_telemetry::Format;

/// Receptions of an intake message before it is parked in the dead-letter queue.
const INTAKE_MAX_RECEIVES: u32 = 10;

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
    let dead_letter = format!("{}-dlq", queues::INTAKE);
    let deps = GatewayDeps {
        blobs: Arc::new(backend.blob_store()),
        queue: Arc::new(backend.queue(queues::INTAKE, INTAKE_MAX_RECEIVES, Some(&dead_letter))),
        ledger: Arc::new(backend.ledger()),
    };
    let gateway = Gateway::bind(&settings, deps).await?;
    tracing::info!(data_dir = %data_dir.display(), backend = "embedded", "baton started");
    gateway.run(shutdown_signal()).await?;
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
