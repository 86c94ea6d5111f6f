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
mod sdk_config;
mod sqs;
pub mod sweeper;
mod targets;

use std::time::Duration;

use baton_config::Aws;

pub use dynamo::{DynamoLedger, LEDGER_TABLES, TableSpec, ledger_table_name};
pub use error::AwsError;
pub use http::sdk_http_client;
pub use requests::{OperationCount, RequestCounter, RequestSnapshot};
pub use s3::{S3BlobStore, object_key};
pub use sqs::{NOT_BEFORE, SqsQueue, queue_message_from_event};
pub use targets::EventTargets;

/// Delay SQS can apply to one message; longer backoffs are chained (see [`SqsQueue::send`]).
pub const SQS_MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// Clients for the three services, built once from the typed config. The SDK clients stay
/// inside this crate: callers get ports (`blob_store`, `ledger`, `queue`) and operations.
#[derive(Clone)]
pub struct AwsBackend {
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    eventbridge: aws_sdk_eventbridge::Client,
    /// Every request the clients above send, by service and operation.
    requests: RequestCounter,
    pub config: Aws,
}

impl AwsBackend {
    /// Builds the clients. Makes no request: an unreachable service shows up as errors on use.
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
            aws_sdk_s3::config::Credentials::new(access_key, secret_key, None, None, "static");
        Self::connect_with(config, Some(creds)).await
    }

    async fn connect_with(
        config: &Aws,
        credentials: Option<aws_sdk_s3::config::Credentials>,
    ) -> AwsBackend {
        let shared = sdk_config::load(config, credentials).await;
        let requests = RequestCounter::new(&config.prefix);
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .interceptor(requests.interceptor())
            .force_path_style(config.force_path_style)
            // Checksums only where S3 requires them: TLS and S3's own MD5/ETag checks cover
            // transfer integrity, and a per-part CRC costs CPU on every body.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build();
        let mut dynamodb =
            aws_sdk_dynamodb::config::Builder::from(&shared).interceptor(requests.interceptor());
        if !config.dynamodb_endpoint_url.is_empty() {
            dynamodb = dynamodb.endpoint_url(&config.dynamodb_endpoint_url);
        }
        AwsBackend {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(&shared)
                    .interceptor(requests.interceptor())
                    .build(),
            ),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            eventbridge: aws_sdk_eventbridge::Client::from_conf(
                aws_sdk_eventbridge::config::Builder::from(&shared)
                    .interceptor(requests.interceptor())
                    .build(),
            ),
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
            self.s3.clone(),
            self.config.bucket.clone(),
            self.config.part_size,
        )
    }

    /// Senders to tenants' own queues and buses (event destinations).
    pub fn event_targets(&self) -> EventTargets {
        EventTargets {
            sqs: self.sqs.clone(),
            eventbridge: self.eventbridge.clone(),
        }
    }

    pub fn ledger(&self) -> DynamoLedger {
        DynamoLedger::new(self.dynamodb.clone(), self.config.prefix.clone())
    }

    /// The SQS name of a stage queue, e.g. `baton-intake`.
    pub fn queue_name(&self, queue: &str) -> String {
        format!("{}-{queue}", self.config.prefix)
    }

    /// Opens an existing queue (looks up its URL).
    pub async fn queue(&self, queue: &str) -> Result<SqsQueue, AwsError> {
        SqsQueue::open(self.sqs.clone(), queue, &self.queue_name(queue)).await
    }

    /// A queue whose URL is looked up on first use.
    pub fn lazy_queue(&self, queue: &str) -> SqsQueue {
        SqsQueue::lazy(self.sqs.clone(), queue, &self.queue_name(queue))
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
            &self.s3,
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
        provision::bucket(&self.s3, &self.config).await?;
        for q in queues {
            provision::queue(&self.sqs, &self.queue_name(q.name), q).await?;
        }
        for t in tables {
            provision::table(&self.dynamodb, &self.config.prefix, t).await?;
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
