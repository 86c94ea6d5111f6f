//! Runs the stages as in-process workers over a set of queues (`baton serve`).

use std::sync::{Arc, Mutex};

use baton_store::Queue;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::bounce::{self, BounceConfig};
use crate::policy::{self, PolicyConfig};
use crate::poll_outage::OutageLog;
use crate::worker::{self, WorkerConfig};
use crate::{Disposition, Ports, StageError};

/// The dead-letter queue of each stage queue.
#[derive(Clone)]
pub struct DeadLetters {
    pub intake: Arc<dyn Queue>,
    pub sign: Arc<dyn Queue>,
    pub deliver: Arc<dyn Queue>,
    pub bounce: Arc<dyn Queue>,
    pub events: Arc<dyn Queue>,
}

/// A stage handler as the runtime sees it.
#[async_trait::async_trait]
pub trait Stage: Send + Sync + 'static {
    async fn handle(
        &self,
        ports: &Ports,
        message: &baton_store::QueueMessage,
    ) -> Result<Disposition, StageError>;
}

pub struct PolicyStage(pub PolicyConfig);
pub struct SignStage;
pub struct DeliverStage(pub crate::deliver::DeliverStage);
pub struct BounceStage(pub BounceConfig);
pub struct NotifyStage(pub crate::notify::NotifyStage);
pub struct FusedStage(pub crate::fused::FusedStage);

#[async_trait::async_trait]
impl Stage for FusedStage {
    async fn handle(
        &self,
        ports: &Ports,
        message: &baton_store::QueueMessage,
    ) -> Result<Disposition, StageError> {
        crate::fused::handle(ports, &self.0, message).await
    }
}

#[async_trait::async_trait]
impl Stage for NotifyStage {
    async fn handle(
        &self,
        ports: &Ports,
        message: &baton_store::QueueMessage,
    ) -> Result<Disposition, StageError> {
        crate::notify::handle(ports, &self.0, message).await
    }
}

#[async_trait::async_trait]
impl Stage for SignStage {
    async fn handle(
        &self,
        ports: &Ports,
        message: &baton_store::QueueMessage,
    ) -> Result<Disposition, StageError> {
        crate::sign::handle(ports, message).await
    }
}

#[async_trait::async_trait]
impl Stage for DeliverStage {
    async fn handle(
        &self,
        ports: &Ports,
        message: &baton_store::QueueMessage,
    ) -> Result<Disposition, StageError> {
        crate::deliver::handle(ports, &self.0, message).await
    }
}

#[async_trait::async_trait]
impl Stage for PolicyStage {
    async fn handle(
        &self,
        ports: &Ports,
        message: &baton_store::QueueMessage,
    ) -> Result<Disposition, StageError> {
        policy::handle(ports, &self.0, message).await
    }
}

#[async_trait::async_trait]
impl Stage for BounceStage {
    async fn handle(
        &self,
        ports: &Ports,
        message: &baton_store::QueueMessage,
    ) -> Result<Disposition, StageError> {
        bounce::handle(ports, &self.0, message).await
    }
}

pub struct Stages {
    pub policy: Arc<dyn Stage>,
    /// Policy, signing and the first delivery attempt in one job: takes intake instead of
    /// `policy` when [`Concurrency::fused`] says so.
    pub fused: Arc<dyn Stage>,
    pub sign: Arc<dyn Stage>,
    pub deliver: Arc<dyn Stage>,
    pub bounce: Arc<dyn Stage>,
    pub events: Arc<dyn Stage>,
}

/// Starts one worker per stage. They stop, finishing their batch, when `shutdown` is true.
/// How many workers poll each stage's queue. Every stage waits on storage commits, and
/// delivery on the network, so each gets several.
#[derive(Debug, Clone)]
pub struct Concurrency {
    pub policy: usize,
    pub sign: usize,
    pub deliver: usize,
    /// Webhook calls wait on the tenant's server.
    pub events: usize,
    /// Intake is taken by the fused path (`policy` workers of it), not by policy alone.
    pub fused: bool,
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency {
            policy: 8,
            sign: 8,
            deliver: 32,
            events: 16,
            fused: false,
        }
    }
}

/// Starts the workers. They stop, finishing their batch, when `shutdown` is true.
pub fn spawn(
    ports: Ports,
    dead: DeadLetters,
    stages: Stages,
    config: WorkerConfig,
    concurrency: Concurrency,
    shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let plan = [
        (
            ports.intake.clone(),
            dead.intake,
            if concurrency.fused {
                stages.fused
            } else {
                stages.policy
            },
            concurrency.policy.max(1),
        ),
        (
            ports.sign.clone(),
            dead.sign,
            stages.sign,
            concurrency.sign.max(1),
        ),
        (
            ports.deliver.clone(),
            dead.deliver,
            stages.deliver,
            concurrency.deliver.max(1),
        ),
        (ports.bounce.clone(), dead.bounce, stages.bounce, 1),
        (
            ports.events.clone(),
            dead.events,
            stages.events,
            concurrency.events.max(1),
        ),
    ];
    for (queue, dlq, stage, workers) in plan {
        // One outage log per queue, shared by its workers: an outage is logged once.
        let outages = Arc::new(Mutex::new(OutageLog::new(queue.name())));
        for _ in 0..workers {
            let (ports, stage, queue, dlq) =
                (ports.clone(), stage.clone(), queue.clone(), dlq.clone());
            let (config, outages) = (config.clone(), outages.clone());
            let shutdown = shutdown.clone();
            set.spawn(async move {
                worker::run(queue, dlq, config, outages, shutdown, move |m| {
                    let (ports, stage) = (ports.clone(), stage.clone());
                    async move { stage.handle(&ports, &m).await }
                })
                .await;
            });
        }
    }
    set
}
