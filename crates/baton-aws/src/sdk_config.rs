//! The configuration every SDK client here starts from. With the `credential-chain`
//! feature (the default: `baton` on ECS or a host) credentials and region come from the
//! SDK's standard chain (aws-config: environment, profile, ECS/IMDS, SSO, STS web identity).
//! Without it (the Lambda functions) they come from the environment only, which is where
//! Lambda puts them; aws-config and STS stay out of the zips.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_types::SdkConfig;
use aws_types::region::Region;
use aws_types::sdk_config::TimeoutConfig;
use baton_config::Aws;

use crate::http::sdk_http_client;

pub(crate) async fn load(config: &Aws, credentials: Option<Credentials>) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.request_timeout.min(Duration::from_secs(3)))
        .operation_attempt_timeout(config.request_timeout)
        .build();
    load_with(config, credentials, timeouts).await
}

#[cfg(feature = "credential-chain")]
async fn load_with(
    config: &Aws,
    credentials: Option<Credentials>,
    timeouts: TimeoutConfig,
) -> SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(sdk_http_client())
        .timeout_config(timeouts);
    if !config.region.is_empty() {
        loader = loader.region(Region::new(config.region.clone()));
    }
    if !config.endpoint_url.is_empty() {
        loader = loader.endpoint_url(&config.endpoint_url);
    }
    if let Some(creds) = credentials {
        loader = loader.credentials_provider(creds);
    }
    loader.load().await
}

#[cfg(not(feature = "credential-chain"))]
async fn load_with(
    config: &Aws,
    credentials: Option<Credentials>,
    timeouts: TimeoutConfig,
) -> SdkConfig {
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_types::sdk_config::RetryConfig;

    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let region = Some(config.region.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"));
    // Without keys no provider is set: every request then fails with the SDK's "no
    // credentials" error, which names the cause.
    let credentials = credentials.or_else(|| {
        Some(Credentials::new(
            env("AWS_ACCESS_KEY_ID")?,
            env("AWS_SECRET_ACCESS_KEY")?,
            env("AWS_SESSION_TOKEN"),
            None,
            "environment",
        ))
    });
    let mut builder = SdkConfig::builder()
        .behavior_version(
            aws_smithy_runtime_api::client::behavior_version::BehaviorVersion::latest(),
        )
        .http_client(sdk_http_client())
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard())
        .region(region.map(Region::new));
    if let Some(sleep) = aws_smithy_async::rt::sleep::default_async_sleep() {
        builder = builder.sleep_impl(sleep);
    }
    if !config.endpoint_url.is_empty() {
        builder = builder.endpoint_url(&config.endpoint_url);
    }
    if let Some(creds) = credentials {
        builder = builder.credentials_provider(SharedCredentialsProvider::new(creds));
    }
    builder.build()
}
