//! What the Lambda functions share. Each function's `main.rs` is a thin wrapper:
//! [`Function::from_env`] builds the AWS ports and its stage from `BATON_*` variables (the
//! same keys as `baton.toml`), and [`Function::handle`] turns one `SqsEvent` into an
//! `SqsBatchResponse` with partial batch failures. `baton serve --backend aws` runs the
//! same `Function`s through [`local_runner`], which polls SQS as Lambda's event source
//! mapping would.

pub mod local_runner;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use baton_aws::{AwsBackend, LEDGER_TABLES, QueueSpec, queue_message_from_event};
use baton_config::{Config, Settings};
use baton_pipeline::driver::{Settled, process_batch};
use baton_pipeline::notify::CloudTargets;
use baton_pipeline::outbound::deadline;
use baton_pipeline::runtime::{DeadLetters, Stages};
use baton_pipeline::{Ports, StageError, SystemClock, queue_names};
use baton_store::{Queue, QueueMessage};
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Error)]
pub enum FunctionError {
    #[error("configuration: {0}")]
    Config(#[from] baton_config::ConfigError),
    #[error("setting up the stage: {0}")]
    Stage(#[from] baton_pipeline::StageError),
    #[error("AWS: {0}")]
    Aws(#[from] baton_aws::AwsError),
    #[error("this binary was built without the {0} stage (baton-functions feature \"{0}\")")]
    NotBuilt(&'static str),
    #[error(
        "not in a Lambda execution environment: {0} (this binary is a function's bootstrap, started by the Lambda runtime)"
    )]
    NotInLambda(String),
}

/// The variables the Lambda runtime client reads at start, checked before it runs:
/// `lambda_runtime` panics without them (and the `lambda` profile aborts on panic), so a
/// bootstrap started by hand would die on a signal instead of saying what is missing.
pub fn check_lambda_env() -> Result<(), FunctionError> {
    for name in [
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
    ] {
        if std::env::var_os(name).is_none() {
            return Err(FunctionError::NotInLambda(format!("{name} is not set")));
        }
    }
    let memory = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or_default();
    if memory.parse::<i32>().is_err() {
        return Err(FunctionError::NotInLambda(format!(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE is {memory:?}, not a number of MB"
        )));
    }
    Ok(())
}

/// The pipeline stages, each a function consuming one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Policy,
    Sign,
    Deliver,
    Bounce,
    /// Sends events to tenants' destinations.
    Events,
    /// Policy, signing and the first delivery attempt in one function on the intake queue
    /// (instead of Policy; Sign and Deliver then only take what it hands on and retries).
    Fused,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Policy,
        Stage::Sign,
        Stage::Deliver,
        Stage::Bounce,
        Stage::Events,
    ];

    /// The queue the stage consumes.
    pub fn queue(self) -> &'static str {
        match self {
            Stage::Policy => queue_names::INTAKE,
            Stage::Sign => queue_names::SIGN,
            Stage::Deliver => queue_names::DELIVER,
            Stage::Bounce => queue_names::BOUNCE,
            Stage::Events => queue_names::EVENTS,
            Stage::Fused => queue_names::INTAKE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Policy => "policy",
            Stage::Sign => "sign",
            Stage::Deliver => "deliver",
            Stage::Bounce => "bounce",
            Stage::Events => "events",
            Stage::Fused => "fused",
        }
    }

    /// The Lambda timeout (`infra/template.yaml` uses the same): delivery talks to remote
    /// MXs with their own timeouts; the others only to AWS.
    pub fn function_timeout(self) -> Duration {
        match self {
            Stage::Deliver | Stage::Fused => Duration::from_secs(300),
            _ => Duration::from_secs(30),
        }
    }
}

/// Receptions before SQS parks a message in the stage's dead-letter queue.
pub const MAX_RECEIVES: u32 = 10;

/// The queues `provision` creates, one per stage.
pub fn queue_specs() -> Vec<QueueSpec> {
    Stage::ALL
        .iter()
        .map(|s| QueueSpec {
            name: s.queue(),
            function_timeout: s.function_timeout(),
            max_receives: MAX_RECEIVES,
        })
        .collect()
}

/// Creates the bucket, every stage queue with its dead-letter queue, and the ledger tables.
pub async fn provision(aws: &AwsBackend) -> Result<(), FunctionError> {
    aws.provision(&queue_specs(), LEDGER_TABLES).await?;
    Ok(())
}

/// The ports on AWS. Queues are looked up on first use.
pub fn aws_ports(aws: &AwsBackend) -> (Ports, DeadLetters) {
    let q = |name: &str| -> Arc<dyn Queue> { Arc::new(aws.lazy_queue(name)) };
    let dlq = |name: &str| -> Arc<dyn Queue> {
        Arc::new(aws.lazy_queue(&queue_names::dead_letter(name)))
    };
    let ports = Ports {
        blobs: Arc::new(aws.blob_store()),
        ledger: Arc::new(aws.ledger()),
        intake: q(queue_names::INTAKE),
        sign: q(queue_names::SIGN),
        deliver: q(queue_names::DELIVER),
        bounce: q(queue_names::BOUNCE),
        events: q(queue_names::EVENTS),
        clock: Arc::new(SystemClock),
    };
    let dead = DeadLetters {
        intake: dlq(queue_names::INTAKE),
        sign: dlq(queue_names::SIGN),
        deliver: dlq(queue_names::DELIVER),
        bounce: dlq(queue_names::BOUNCE),
        events: dlq(queue_names::EVENTS),
    };
    (ports, dead)
}

/// Tenants' SQS queues and EventBridge buses, through the backend's clients.
pub fn cloud_targets(aws: &AwsBackend) -> Arc<dyn CloudTargets> {
    Arc::new(AwsCloudTargets(aws.event_targets()))
}

struct AwsCloudTargets(baton_aws::EventTargets);

#[async_trait::async_trait]
impl CloudTargets for AwsCloudTargets {
    async fn send_to_queue(
        &self,
        queue_url: &str,
        body: &str,
        event_id: &str,
        event_type: &str,
    ) -> Result<(), StageError> {
        Ok(self
            .0
            .send_to_queue(queue_url, body, event_id, event_type)
            .await?)
    }

    async fn put_event(
        &self,
        bus: &str,
        source: &str,
        detail_type: &str,
        detail: &str,
    ) -> Result<(), StageError> {
        Ok(self.0.put_event(bus, source, detail_type, detail).await?)
    }
}

/// How a function spends an invocation's time.
#[derive(Debug, Clone)]
pub struct Limits {
    /// One record's worst case: a record is not started with less time left than this
    /// before the invocation deadline (it goes back to the queue instead).
    pub budget: Duration,
    /// Kept back from the deadline so a record's network work ends in time to record its
    /// outcome (ledger, retry job) before the invocation ends.
    pub settle: Duration,
    /// Records of one event handled at once, so one slow record never holds up the others.
    pub concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            budget: Duration::ZERO,
            settle: Duration::from_secs(2),
            concurrency: 1,
        }
    }
}

impl Limits {
    /// The events stage's: a batch's webhook calls at once (a slow receiver holds up only
    /// its own calls), each started only with a whole webhook deadline left.
    pub fn events(settings: &Settings) -> Limits {
        Limits {
            budget: settings.raw.events.webhook_timeout + Duration::from_secs(1),
            settle: Duration::from_secs(2),
            concurrency: 10,
        }
    }

    /// The deliver stage's limits from its settings: an attempt's worst case is a connect, a
    /// command and the body (each MX step is bounded by these), capped at half the function
    /// timeout so the default timeouts still leave the function work to do.
    pub fn deliver(settings: &Settings) -> Limits {
        let d = &settings.raw.delivery;
        Limits {
            budget: (d.connect_timeout + d.command_timeout + d.data_timeout)
                .min(Stage::Deliver.function_timeout() / 2),
            settle: Duration::from_secs(5),
            concurrency: settings.raw.pipeline.deliver_workers.max(1),
        }
    }
}

/// One stage bound to its queue, ready to take SQS events.
#[derive(Clone)]
pub struct Function {
    stage: Stage,
    ports: Ports,
    queue: Arc<dyn Queue>,
    dead_letter: Arc<dyn Queue>,
    handler: Arc<dyn baton_pipeline::runtime::Stage>,
    limits: Limits,
}

impl Function {
    pub fn new(stage: Stage, ports: Ports, dead: &DeadLetters, stages: &Stages) -> Function {
        let handler = match stage {
            Stage::Policy => stages.policy.clone(),
            Stage::Sign => stages.sign.clone(),
            Stage::Deliver => stages.deliver.clone(),
            Stage::Bounce => stages.bounce.clone(),
            Stage::Events => stages.events.clone(),
            Stage::Fused => stages.fused.clone(),
        };
        Self::with_handler(stage, ports, dead, handler)
    }

    /// The stage's `handler` bound to the stage's queue and dead-letter queue.
    pub fn with_handler(
        stage: Stage,
        ports: Ports,
        dead: &DeadLetters,
        handler: Arc<dyn baton_pipeline::runtime::Stage>,
    ) -> Function {
        let (queue, dead_letter) = match stage {
            Stage::Policy | Stage::Fused => (ports.intake.clone(), dead.intake.clone()),
            Stage::Sign => (ports.sign.clone(), dead.sign.clone()),
            Stage::Deliver => (ports.deliver.clone(), dead.deliver.clone()),
            Stage::Bounce => (ports.bounce.clone(), dead.bounce.clone()),
            Stage::Events => (ports.events.clone(), dead.events.clone()),
        };
        Function {
            stage,
            ports,
            queue,
            dead_letter,
            handler,
            limits: Limits::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Function {
        self.limits = limits;
        self
    }

    /// What a Lambda function does at cold start: settings from `BATON_*` variables, JSON
    /// logs, AWS clients from the standard chain. Makes no network request.
    pub async fn from_env(stage: Stage) -> Result<Function, FunctionError> {
        let settings = Config::load(None, std::env::vars())?;
        baton_telemetry::init(baton_telemetry::Format::Json, &settings.raw.log.filter);
        // A function is never a local trial: deliver greets next hops and bounce writes DSNs
        // under this name.
        if matches!(stage, Stage::Deliver | Stage::Bounce | Stage::Fused) {
            settings.check_delivery_hostname(false)?;
        }
        Self::from_settings(stage, &settings).await
    }

    pub async fn from_settings(
        stage: Stage,
        settings: &Settings,
    ) -> Result<Function, FunctionError> {
        let aws = AwsBackend::connect(&settings.raw.aws).await;
        let (ports, dead) = aws_ports(&aws);
        let function = Function::with_handler(stage, ports, &dead, handler(stage, settings, &aws)?);
        Ok(match stage {
            Stage::Deliver | Stage::Fused => function.with_limits(Limits::deliver(settings)),
            Stage::Events => function.with_limits(Limits::events(settings)),
            _ => function,
        })
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Handles every record of the event with no deadline (the local runner).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        self.handle_until(event, None).await
    }

    /// Handles every record of the event before `deadline` (Lambda's, from the invocation
    /// context). A record that failed transiently is reported as a batch item failure (SQS
    /// makes it visible again after the backoff the driver set); finished, postponed and
    /// dead-lettered records are not, so one bad record never makes the whole batch run
    /// again. Records run `limits.concurrency` at a time, each with its network steps cut at
    /// the deadline less `limits.settle`, so a tarpitting MX defers its own message only. A
    /// record not started because less than `limits.budget` was left goes back to the
    /// queue at once, reported as a failure but not as an error.
    pub async fn handle_until(
        &self,
        event: SqsEvent,
        deadline: Option<SystemTime>,
    ) -> SqsBatchResponse {
        let deadline = deadline.map(|d| {
            let left = d.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now() + left
        });
        let mut response = SqsBatchResponse::default();
        let mut messages = Vec::with_capacity(event.records.len());
        for record in &event.records {
            match queue_message_from_event(record) {
                Ok(m) => messages.push(m),
                Err(e) => {
                    // Not even decodable: park it with the reason rather than loop on it.
                    let id = record.message_id.clone().unwrap_or_default();
                    let body = record.body.clone().unwrap_or_default();
                    let reason = [("dead_letter_reason".to_string(), e.to_string())].into();
                    tracing::error!(stage = self.stage.name(), message = %id, error = %e, "undecodable record: dead-lettered");
                    if self
                        .dead_letter
                        .send(body.as_bytes(), reason, Duration::ZERO)
                        .await
                        .is_err()
                    {
                        response.batch_item_failures.push(failure(id));
                    }
                }
            }
        }

        // An attempt's worst case, but never more than half of what this invocation was
        // given: a function deployed with a shorter timeout than we assumed still starts
        // work instead of handing every record back until it is dead-lettered.
        let budget = match deadline {
            Some(d) => self
                .limits
                .budget
                .min(d.saturating_duration_since(Instant::now()) / 2),
            None => self.limits.budget,
        };
        let slots = Arc::new(Semaphore::new(self.limits.concurrency.max(1)));
        let mut running = JoinSet::new();
        let mut ids = std::collections::HashMap::new();
        let mut not_started = Vec::new();
        for message in messages {
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left < budget.max(self.limits.settle)) {
                not_started.push(message);
                continue;
            }
            let (function, id) = (self.clone(), message.id.clone());
            let task = running.spawn(async move {
                let _slot = slot;
                function.run_one(message, deadline).await
            });
            ids.insert(task.id(), id);
        }
        while let Some(joined) = running.join_next_with_id().await {
            match joined {
                Ok((_, (id, Settled::Retry))) => response.batch_item_failures.push(failure(id)),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(stage = self.stage.name(), error = %e, "record handler panicked");
                    if let Some(id) = ids.remove(&e.id()) {
                        response.batch_item_failures.push(failure(id));
                    }
                }
            }
        }
        if !not_started.is_empty() {
            tracing::info!(
                stage = self.stage.name(),
                records = not_started.len(),
                "not enough time left in this invocation: records go back to the queue"
            );
        }
        for message in not_started {
            // Visible again at once for the next invocation, not after the visibility timeout.
            let _ = self
                .queue
                .change_visibility(&message.receipt, Duration::ZERO)
                .await;
            response.batch_item_failures.push(failure(message.id));
        }
        response
    }

    /// One record through the driver, within the invocation's time.
    async fn run_one(&self, message: QueueMessage, deadline: Option<Instant>) -> (String, Settled) {
        let id = message.id.clone();
        let (ports, handler) = (&self.ports, &self.handler);
        let work = process_batch(
            self.queue.as_ref(),
            self.dead_letter.as_ref(),
            vec![message],
            |m| async move { handler.handle(ports, &m).await },
        );
        let settled = match deadline {
            None => work.await,
            Some(end) => {
                let network_end = end.checked_sub(self.limits.settle).unwrap_or(end);
                let hard_end = end.checked_sub(self.limits.settle / 2).unwrap_or(end);
                match tokio::time::timeout_at(hard_end, deadline::within(network_end, work)).await {
                    Ok(settled) => settled,
                    Err(_) => {
                        // Still busy at the end (storage hanging, not the network): SQS
                        // brings it back; recipient claims keep a late copy from resending.
                        tracing::warn!(stage = self.stage.name(), message = %id, "record unfinished at the invocation deadline");
                        vec![(id.clone(), Settled::Retry)]
                    }
                }
            }
        };
        settled.into_iter().next().unwrap_or((id, Settled::Retry))
    }
}

/// Only `stage`'s handler, built by its own builder: a function binary calls this with one
/// stage and is built with only that stage's feature (`infra/package-functions.sh`), so it
/// links that stage's code and dependencies and no other's. A stage whose feature is off
/// is refused at start.
fn handler(
    stage: Stage,
    settings: &Settings,
    aws: &AwsBackend,
) -> Result<Arc<dyn baton_pipeline::runtime::Stage>, FunctionError> {
    // No stage is used with no stage feature (the API function's build).
    #[allow(unused_imports)]
    use baton_pipeline::{runtime, setup};
    setup::check_hostname(settings)?;
    let _ = aws; // only the events stage's handler uses the AWS clients
    match stage {
        #[cfg(feature = "policy")]
        Stage::Policy => Ok(Arc::new(runtime::PolicyStage(setup::policy(settings)?))),
        #[cfg(feature = "sign")]
        Stage::Sign => Ok(Arc::new(runtime::SignStage)),
        #[cfg(feature = "deliver")]
        Stage::Deliver => Ok(Arc::new(runtime::DeliverStage(setup::deliver(settings)?))),
        #[cfg(feature = "bounce")]
        Stage::Bounce => Ok(Arc::new(runtime::BounceStage(setup::bounce(settings)))),
        #[cfg(feature = "events")]
        Stage::Events => Ok(Arc::new(runtime::NotifyStage(setup::notify(
            settings,
            cloud_targets(aws),
        )?))),
        #[cfg(feature = "fused")]
        Stage::Fused => Ok(Arc::new(runtime::FusedStage(setup::fused(
            setup::policy(settings)?,
            setup::deliver(settings)?,
        )))),
        #[allow(unreachable_patterns)]
        other => Err(FunctionError::NotBuilt(other.name())),
    }
}

fn failure(id: String) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id;
    f
}
