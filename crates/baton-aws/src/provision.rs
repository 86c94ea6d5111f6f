//! Creates what the backend needs. Every step tolerates "already exists", so provisioning
//! twice is harmless. (On AWS proper, `infra/` creates the same resources with IAM and KMS.)

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use baton_config::Aws;

use crate::dynamo::{TTL_ATTRIBUTE, ledger_table_name};
use crate::{AwsError, QueueSpec, TableSpec};

fn build<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, AwsError> {
    r.map_err(|e| AwsError::Build(e.to_string()))
}

pub(crate) async fn bucket(s3: &aws_sdk_s3::Client, config: &Aws) -> Result<(), AwsError> {
    let created = s3.create_bucket().bucket(&config.bucket).send().await;
    if let Err(e) = created {
        let exists = e
            .as_service_error()
            .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists());
        if !exists {
            return Err(AwsError::service(
                format!("S3 CreateBucket {}", config.bucket),
                e,
            ));
        }
    }
    // Bodies outlive every delivery attempt (retention > delivery.max_age); multipart uploads
    // a crashed gateway left behind go after a day.
    let rule = build(
        LifecycleRule::builder()
            .id("baton-message-retention")
            .filter(LifecycleRuleFilter::builder().prefix("messages/").build())
            .status(ExpirationStatus::Enabled)
            .expiration(
                LifecycleExpiration::builder()
                    .days(config.retention_days as i32)
                    .build(),
            )
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(1)
                    .build(),
            )
            .build(),
    )?;
    let lifecycle = build(BucketLifecycleConfiguration::builder().rules(rule).build())?;
    s3.put_bucket_lifecycle_configuration()
        .bucket(&config.bucket)
        .lifecycle_configuration(lifecycle)
        .send()
        .await
        .map_err(|e| AwsError::service("S3 PutBucketLifecycleConfiguration", e))?;
    Ok(())
}

pub(crate) async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, AwsError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| AwsError::service(format!("SQS GetQueueAttributes {url}"), e))?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default())
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<String, AwsError> {
    let mut req = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        req = req.attributes(k, v);
    }
    let out = req
        .send()
        .await
        .map_err(|e| AwsError::service(format!("SQS CreateQueue {name}"), e))?;
    Ok(out.queue_url().unwrap_or_default().to_string())
}

pub(crate) async fn queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    spec: &QueueSpec,
) -> Result<(), AwsError> {
    const FOURTEEN_DAYS: &str = "1209600";
    let dlq_url = create_queue(
        sqs,
        &format!("{name}-dlq"),
        vec![(
            QueueAttributeName::MessageRetentionPeriod,
            FOURTEEN_DAYS.into(),
        )],
    )
    .await?;
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;
    let redrive = format!(
        r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{}"}}"#,
        spec.max_receives
    );
    let visibility = (spec.function_timeout.as_secs() * 6).clamp(30, 12 * 3600);
    create_queue(
        sqs,
        name,
        vec![
            (
                QueueAttributeName::MessageRetentionPeriod,
                FOURTEEN_DAYS.into(),
            ),
            (
                QueueAttributeName::VisibilityTimeout,
                visibility.to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn table(
    dynamodb: &aws_sdk_dynamodb::Client,
    prefix: &str,
    spec: &TableSpec,
) -> Result<(), AwsError> {
    let name = ledger_table_name(prefix, spec.name);
    let attr = |n: &str| {
        build(
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build(),
        )
    };
    let key = |n: &str, t: KeyType| {
        build(
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build(),
        )
    };
    let created = dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            return Ok(());
        }
        Err(e) => return Err(AwsError::service(format!("DynamoDB CreateTable {name}"), e)),
    }
    if spec.retention.is_some() {
        let ttl = build(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build(),
        )?;
        dynamodb
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| AwsError::service(format!("DynamoDB UpdateTimeToLive {name}"), e))?;
    }
    Ok(())
}
