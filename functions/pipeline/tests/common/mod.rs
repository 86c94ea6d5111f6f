//! Test support shared by the pipeline's integration tests.
#![allow(dead_code)]

pub mod fixtures;

use std::sync::Arc;

use baton_embedded::{EmbeddedBackend, EmbeddedOptions};
use baton_pipeline::{Ports, SystemClock, queue_names};
use baton_store::Queue;

/// Ports over a fresh embedded backend (real SQLite and spool) in `dir`.
pub fn embedded_ports(dir: &std::path::Path) -> Ports {
    let backend = EmbeddedBackend::open(dir, EmbeddedOptions::default()).expect("backend");
    let q = |n: &str| -> Arc<dyn Queue> { Arc::new(backend.queue(n, 5, None)) };
    Ports {
        blobs: Arc::new(backend.blob_store()),
        ledger: Arc::new(backend.ledger()),
        intake: q(queue_names::INTAKE),
        sign: q(queue_names::SIGN),
        deliver: q(queue_names::DELIVER),
        bounce: q(queue_names::BOUNCE),
        events: q(queue_names::EVENTS),
        clock: Arc::new(SystemClock),
    }
}
