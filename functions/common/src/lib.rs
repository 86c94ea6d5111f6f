//! What the four Lambda functions share. Each function's `main.rs` is a thin wrapper:
//! [`Function::from_env`] builds the AWS ports and its stage from `BATON_*` variables (the
//! same keys as `baton.toml`), and [`Function::handle`] turns one `SqsEvent` into an
//! `SqsBatchResponse` with partial batch failures. `baton serve --backend aws` runs the
//! same `Function`s through [`local_runner`], which polls SQS as Lambda's event source
//! mapping would.

pub mod local_runner;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use baton_aws::{AwsBackend, LEDGER_TABLES, QueueSpec, queue_message_from_event};
use baton_config::{Config, Settings};
use baton_pipeline::driver::{Settled, process_batch};
use baton_pipeline::runtime::{DeadLetters, Stages};
use baton_pipeline::{Ports, SystemClock, queue_names};
use baton_store::Queue;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FunctionError {
    #[error("configuration: {0}")]
    Config(#[from] baton_config::ConfigError),
    #[error("setting up the stage: {0}")]
    Stage(#[from] baton_pipeline::StageError),
    #[error("AWS: {0}")]
    Aws(#[from] baton_aws::AwsError),
}

/// The pipeline stages, each a function consuming one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Policy,
    Sign,
    Deliver,
    Bounce,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Policy, Stage::Sign, Stage::Deliver, Stage::Bounce];

    /// The queue the stage consumes.
    pub fn queue(self) -> &'static str {
        match self {
            Stage::Policy => queue_names::INTAKE,
            Stage::Sign => queue_names::SIGN,
            Stage::Deliver => queue_names::DELIVER,
            Stage::Bounce => queue_names::BOUNCE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Policy => "policy",
            Stage::Sign => "sign",
            Stage::Deliver => "deliver",
            Stage::Bounce => "bounce",
        }
    }

    /// The Lambda timeout (`infra/template.yaml` uses the same): delivery talks to remote
    /// MXs with their own timeouts; the others only to AWS.
    pub fn function_timeout(self) -> Duration {
        match self {
            Stage::Deliver => Duration::from_secs(300),
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
        clock: Arc::new(SystemClock),
    };
    let dead = DeadLetters {
        intake: dlq(queue_names::INTAKE),
        sign: dlq(queue_names::SIGN),
        deliver: dlq(queue_names::DELIVER),
        bounce: dlq(queue_names::BOUNCE),
    };
    (ports, dead)
}

/// One stage bound to its queue, ready to take SQS events.
#[derive(Clone)]
pub struct Function {
    stage: Stage,
    ports: Ports,
    queue: Arc<dyn Queue>,
    dead_letter: Arc<dyn Queue>,
    handler: Arc<dyn baton_pipeline::runtime::Stage>,
}

impl Function {
    pub fn new(stage: Stage, ports: Ports, dead: &DeadLetters, stages: &Stages) -> Function {
        let (queue, dead_letter, handler) = match stage {
            Stage::Policy => (
                ports.intake.clone(),
                dead.intake.clone(),
                stages.policy.clone(),
            ),
            Stage::Sign => (ports.sign.clone(), dead.sign.clone(), stages.sign.clone()),
            Stage::Deliver => (
                ports.deliver.clone(),
                dead.deliver.clone(),
                stages.deliver.clone(),
            ),
            Stage::Bounce => (
                ports.bounce.clone(),
                dead.bounce.clone(),
                stages.bounce.clone(),
            ),
        };
        Function {
            stage,
            ports,
            queue,
            dead_letter,
            handler,
        }
    }

    /// What a Lambda function does at cold start: settings from `BATON_*` variables, JSON
    /// logs, AWS clients from the standard chain. Makes no network request.
    pub async fn from_env(stage: Stage) -> Result<Function, FunctionError> {
        let settings = Config::load(None, std::env::vars())?;
        baton_telemetry::init(baton_telemetry::Format::Json, &settings.raw.log.filter);
        Self::from_settings(stage, &settings).await
    }

    pub async fn from_settings(
        stage: Stage,
        settings: &Settings,
    ) -> Result<Function, FunctionError> {
        let aws = AwsBackend::connect(&settings.raw.aws).await;
        let (ports, dead) = aws_ports(&aws);
        let stages = baton_pipeline::setup::stages(settings)?;
        Ok(Function::new(stage, ports, &dead, &stages))
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Handles every record of the event. A record that failed transiently is reported as a
    /// batch item failure (SQS makes it visible again after the backoff the driver set);
    /// finished, postponed and dead-lettered records are not, so one bad record never
    /// makes the whole batch run again.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
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
        let (ports, handler) = (&self.ports, &self.handler);
        let settled = process_batch(
            self.queue.as_ref(),
            self.dead_letter.as_ref(),
            messages,
            |m| async move { handler.handle(ports, &m).await },
        )
        .await;
        for (id, outcome) in settled {
            if outcome == Settled::Retry {
                response.batch_item_failures.push(failure(id));
            }
        }
        response
    }
}

fn failure(id: String) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id;
    f
}
