//! The AWS backend of the storage ports: message bodies in S3 (multipart above
//! `aws.part_size`), one SQS queue per stage with a dead-letter queue each, and the ledger
//! in DynamoDB (one table per ledger table, keys split into partition and sort key so that
//! per-message records are one partition). `provision` creates all of it; `sweeper` deletes
//! bodies that were stored but never queued.

mod dynamo;
mod error;
mod http;
mod provision;
pub mod requests;
mod s3;
mod sqs;
pub mod sweeper;
mod targets;
mod wire;

use std::time::Duration;

use baton_config::Aws;

pub use dynamo::{DynamoLedger, LEDGER_TABLES, TableSpec, ledger_table_name};
pub use error::AwsError;
#[cfg(feature = "credential-chain")]
pub use http::sdk_http_client;
pub use requests::{OperationCount, RequestCounter, RequestSnapshot};
pub use s3::{S3BlobStore, object_key};
pub use sqs::{NOT_BEFORE, SqsQueue, queue_message_from_event};
pub use targets::EventTargets;

/// Delay SQS can apply to one message; longer backoffs are chained (see [`SqsQueue::send`]).
pub const SQS_MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// The backend, built once from the typed config. Its wire client stays inside this crate:
/// callers get ports (`blob_store`, `ledger`, `queue`) and operations.
#[derive(Clone)]
pub struct AwsBackend {
    client: wire::AwsClient,
    /// Every request the client above sends, by service and operation.
    requests: RequestCounter,
    pub config: Aws,
}

impl AwsBackend {
    /// Builds the client. Makes no request: an unreachable service shows up as errors on use.
    pub async fn connect(config: &Aws) -> AwsBackend {
        Self::connect_with(config, None).await
    }

    /// [`connect`](Self::connect) with fixed credentials instead of the standard chain
    /// (tests against LocalStack, which accepts any).
    pub async fn connect_with_static_credentials(
        config: &Aws,
        access_key: &str,
        secret_key: &str,
    ) -> AwsBackend {
        let creds =
            aws_credential_types::Credentials::new(access_key, secret_key, None, None, "static");
        Self::connect_with(config, Some(creds)).await
    }

    async fn connect_with(
        config: &Aws,
        credentials: Option<aws_credential_types::Credentials>,
    ) -> AwsBackend {
        let (credentials, region) = wire::credentials::load(config, credentials).await;
        let requests = RequestCounter::default();
        AwsBackend {
            client: wire::AwsClient::new(config, credentials, region, requests.clone()),
            requests,
            config: config.clone(),
        }
    }

    /// The requests sent so far through this backend's clients (and its clones').
    pub fn requests(&self) -> RequestSnapshot {
        self.requests.snapshot()
    }

    pub fn blob_store(&self) -> S3BlobStore {
        S3BlobStore::new(
            self.client.clone(),
            self.config.bucket.clone(),
            self.config.part_size,
        )
    }

    /// Senders to tenants' own queues and buses (event destinations).
    pub fn event_targets(&self) -> EventTargets {
        EventTargets {
            client: self.client.clone(),
        }
    }

    pub fn ledger(&self) -> DynamoLedger {
        DynamoLedger::new(self.client.clone(), self.config.prefix.clone())
    }

    /// The SQS name of a stage queue, e.g. `baton-intake`.
    pub fn queue_name(&self, queue: &str) -> String {
        format!("{}-{queue}", self.config.prefix)
    }

    /// Opens an existing queue (looks up its URL).
    pub async fn queue(&self, queue: &str) -> Result<SqsQueue, AwsError> {
        SqsQueue::open(self.client.clone(), queue, &self.queue_name(queue)).await
    }

    /// A queue whose URL is looked up on first use.
    pub fn lazy_queue(&self, queue: &str) -> SqsQueue {
        SqsQueue::lazy(self.client.clone(), queue, &self.queue_name(queue))
    }

    /// One round of the orphan sweeper (see [`sweeper`]) over this backend's bucket.
    pub async fn sweep_orphans(
        &self,
        ledger: &dyn baton_store::Ledger,
        events_table: &str,
        intake: &SqsQueue,
        intake_dlq: &SqsQueue,
    ) -> Result<sweeper::SweepReport, baton_store::StoreError> {
        sweeper::sweep(
            &self.client,
            &self.config.bucket,
            ledger,
            events_table,
            intake,
            intake_dlq,
            self.config.orphan_after,
        )
        .await
    }

    /// Creates the bucket (with its lifecycle rules), the stage queues with their
    /// dead-letter queues, and the ledger tables. Idempotent.
    pub async fn provision(
        &self,
        queues: &[QueueSpec],
        tables: &[TableSpec],
    ) -> Result<(), AwsError> {
        provision::bucket(&self.client, &self.config).await?;
        for q in queues {
            provision::queue(&self.client, &self.queue_name(q.name), q).await?;
        }
        for t in tables {
            provision::table(&self.client, &self.config.prefix, t).await?;
        }
        Ok(())
    }
}

/// A stage queue as provisioned.
#[derive(Debug, Clone, Copy)]
pub struct QueueSpec {
    pub name: &'static str,
    /// The consuming function's timeout; the queue's visibility timeout is six times it,
    /// as AWS advises for Lambda event source mappings.
    pub function_timeout: Duration,
    /// Receptions before SQS moves a message to the dead-letter queue.
    pub max_receives: u32,
}
