//! Creates what the backend needs. Every step tolerates "already exists", so provisioning
//! twice is harmless. (On AWS proper, `infra/` creates the same resources with IAM and KMS.)

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use baton_config::Aws;
use bytes::Bytes;
use http::Method;
use md5::{Digest, Md5};
use serde_json::json;

use crate::dynamo::{TTL_ATTRIBUTE, ledger_table_name};
use crate::wire::s3::S3Request;
use crate::wire::{AwsClient, Service, xml};
use crate::{AwsError, QueueSpec, TableSpec};

/// The bucket, with a lifecycle rule that expires message bodies after the retention and
/// aborts multipart uploads left incomplete for a day.
pub(crate) async fn bucket(client: &AwsClient, config: &Aws) -> Result<(), AwsError> {
    let mut create = S3Request::new("CreateBucket", Method::PUT, "");
    // Outside us-east-1 S3 wants the region named in the request.
    let region = client.region();
    if !region.is_empty() && region != "us-east-1" {
        create.body = Bytes::from(format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            xml::escape(region)
        ));
    }
    if let Err(e) = client.s3(&config.bucket, create).await {
        let exists = matches!(
            e.code(),
            Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
        );
        if !exists {
            return Err(AwsError::service(
                format!("S3 CreateBucket {}", config.bucket),
                e,
            ));
        }
    }
    let lifecycle = format!(
        "<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Rule>\
         <ID>baton-message-retention</ID><Filter><Prefix>messages/</Prefix></Filter>\
         <Status>Enabled</Status><Expiration><Days>{}</Days></Expiration>\
         <AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>\
         </AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>",
        config.retention_days
    );
    let mut put = S3Request::new("PutBucketLifecycleConfiguration", Method::PUT, "");
    put.query.push(("lifecycle", String::new()));
    // S3 requires an integrity check on this body.
    put.headers
        .push(("content-md5", B64.encode(Md5::digest(lifecycle.as_bytes()))));
    put.body = Bytes::from(lifecycle);
    client
        .s3(&config.bucket, put)
        .await
        .map_err(|e| AwsError::service("S3 PutBucketLifecycleConfiguration", e))?;
    Ok(())
}

/// The ARN of the queue at `url`.
pub(crate) async fn queue_arn(client: &AwsClient, url: &str) -> Result<String, AwsError> {
    let out = client
        .json(
            Service::Sqs,
            "GetQueueAttributes",
            &json!({ "QueueUrl": url, "AttributeNames": ["QueueArn"] }),
        )
        .await
        .map_err(|e| AwsError::service(format!("SQS GetQueueAttributes {url}"), e))?;
    Ok(out["Attributes"]["QueueArn"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Creates `name` (SQS returns the existing queue's URL when the attributes match).
async fn create_queue(
    client: &AwsClient,
    name: &str,
    attributes: serde_json::Value,
) -> Result<String, AwsError> {
    let out = client
        .json(
            Service::Sqs,
            "CreateQueue",
            &json!({ "QueueName": name, "Attributes": attributes }),
        )
        .await
        .map_err(|e| AwsError::service(format!("SQS CreateQueue {name}"), e))?;
    Ok(out["QueueUrl"].as_str().unwrap_or_default().to_string())
}

/// A stage queue and its dead-letter queue, which takes a message after
/// `spec.max_receives` receptions.
pub(crate) async fn queue(
    client: &AwsClient,
    name: &str,
    spec: &QueueSpec,
) -> Result<(), AwsError> {
    const FOURTEEN_DAYS: &str = "1209600";
    let dlq_url = create_queue(
        client,
        &format!("{name}-dlq"),
        json!({ "MessageRetentionPeriod": FOURTEEN_DAYS }),
    )
    .await?;
    let dlq_arn = queue_arn(client, &dlq_url).await?;
    let redrive = json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": spec.max_receives.to_string(),
    })
    .to_string();
    let visibility = (spec.function_timeout.as_secs() * 6).clamp(30, 12 * 3600);
    create_queue(
        client,
        name,
        json!({
            "MessageRetentionPeriod": FOURTEEN_DAYS,
            "VisibilityTimeout": visibility.to_string(),
            "RedrivePolicy": redrive,
        }),
    )
    .await?;
    Ok(())
}

/// A ledger table (string `pk` and `sk`, on demand), with TTL on `expires_at` if the table
/// has a retention.
pub(crate) async fn table(
    client: &AwsClient,
    prefix: &str,
    spec: &TableSpec,
) -> Result<(), AwsError> {
    let name = ledger_table_name(prefix, spec.name);
    let input = json!({
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            { "AttributeName": "pk", "AttributeType": "S" },
            { "AttributeName": "sk", "AttributeType": "S" },
        ],
        "KeySchema": [
            { "AttributeName": "pk", "KeyType": "HASH" },
            { "AttributeName": "sk", "KeyType": "RANGE" },
        ],
    });
    match client.json(Service::DynamoDb, "CreateTable", &input).await {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceInUseException") => return Ok(()),
        Err(e) => return Err(AwsError::service(format!("DynamoDB CreateTable {name}"), e)),
    }
    if spec.retention.is_some() {
        let ttl = json!({
            "TableName": name,
            "TimeToLiveSpecification": { "Enabled": true, "AttributeName": TTL_ATTRIBUTE },
        });
        client
            .json(Service::DynamoDb, "UpdateTimeToLive", &ttl)
            .await
            .map_err(|e| AwsError::service(format!("DynamoDB UpdateTimeToLive {name}"), e))?;
    }
    Ok(())
}
