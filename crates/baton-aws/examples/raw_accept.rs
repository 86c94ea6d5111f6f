//! The reference rate for `bench/aws-accept.sh`: the same S3 PutObject + SQS SendMessage
//! the gateway makes per message (through the same `S3BlobStore` and `SqsQueue`), without
//! SMTP, from N concurrent tasks.
//!
//!     raw_accept ENDPOINT DYNAMODB_ENDPOINT PREFIX SESSIONS MESSAGES SIZE

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baton_aws::AwsBackend;
use baton_config::Aws;
use baton_store::{BlobStore, Queue};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, dynamodb, prefix, sessions, messages, size] = args.as_slice() else {
        anyhow::bail!("usage: raw_accept ENDPOINT DYNAMODB_ENDPOINT PREFIX SESSIONS MESSAGES SIZE");
    };
    let (sessions, messages, size): (usize, usize, usize) =
        (sessions.parse()?, messages.parse()?, size.parse()?);
    let config = Aws {
        region: "us-east-1".into(),
        endpoint_url: endpoint.clone(),
        dynamodb_endpoint_url: dynamodb.clone(),
        force_path_style: true,
        bucket: prefix.clone(),
        prefix: prefix.clone(),
        ..Aws::default()
    };
    let aws = AwsBackend::connect_with_static_credentials(&config, "test", "test").await;
    let blobs = Arc::new(aws.blob_store());
    let queue = Arc::new(aws.queue("intake").await?);
    // A body like smtp-source's (plus our Received: header) and an envelope-sized record.
    let body = Arc::new(vec![b'x'; size + 300]);
    let envelope = Arc::new(vec![b'e'; 420]);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let (blobs, queue, body, envelope, next) = (
            blobs.clone(),
            queue.clone(),
            body.clone(),
            envelope.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= messages {
                    return anyhow::Ok(());
                }
                let key = format!("raw{n:08}");
                let mut w = blobs.create(&key).await?;
                w.write(&body).await?;
                w.commit().await?;
                let attrs = BTreeMap::from([
                    ("queue_id".to_string(), key),
                    ("tenant".to_string(), "bench".to_string()),
                ]);
                queue.send(&envelope, attrs, Duration::ZERO).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "raw {messages} x (PutObject {} B + SendMessage) from {sessions} tasks in {secs:.3} s = {:.0} msgs/s",
        size + 300,
        messages as f64 / secs
    );
    Ok(())
}
