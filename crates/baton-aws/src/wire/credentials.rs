//! Where request credentials and the region come from. With the `credential-chain` feature
//! (the default: `baton` on ECS or a host) from the SDK's standard chain (aws-config:
//! environment, profile, ECS/IMDS, SSO, STS web identity), cached until shortly before they
//! expire. Without it (the Lambda functions) from the environment only, which is where
//! Lambda puts them; aws-config and STS stay out of the zips.

use aws_credential_types::Credentials;
use baton_config::Aws;

use super::{CallError, env_var as env};

pub(crate) enum CredentialSource {
    Fixed(Credentials),
    /// No keys were found; every request fails saying so.
    Missing(&'static str),
    #[cfg(feature = "credential-chain")]
    Chain(chain::Cached),
}

impl CredentialSource {
    pub(crate) async fn get(&self) -> Result<Credentials, CallError> {
        match self {
            CredentialSource::Fixed(c) => Ok(c.clone()),
            CredentialSource::Missing(why) => Err(CallError::Credentials((*why).into())),
            #[cfg(feature = "credential-chain")]
            CredentialSource::Chain(cached) => cached.get().await,
        }
    }
}

/// Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
#[cfg(not(feature = "credential-chain"))]
fn from_environment() -> CredentialSource {
    from_variables(env)
}

/// Credentials from the variables `get` reads; without both keys, none (and no fallback:
/// a function without keys fails its requests saying why, rather than finding others).
#[cfg_attr(feature = "credential-chain", allow(dead_code))]
fn from_variables(get: impl Fn(&str) -> Option<String>) -> CredentialSource {
    match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => CredentialSource::Fixed(Credentials::new(
            id,
            secret,
            get("AWS_SESSION_TOKEN"),
            None,
            "environment",
        )),
        _ => CredentialSource::Missing(
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set",
        ),
    }
}

/// The region from the config, else `AWS_REGION`, else `AWS_DEFAULT_REGION`.
pub(crate) fn region_from_environment(config: &Aws) -> Option<String> {
    Some(config.region.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
}

/// Credentials and region as the process finds them: fixed ones if given, else the
/// standard chain (with `credential-chain`) or the environment.
pub(crate) async fn load(config: &Aws, fixed: Option<Credentials>) -> (CredentialSource, String) {
    #[cfg(feature = "credential-chain")]
    {
        chain::load(config, fixed).await
    }
    #[cfg(not(feature = "credential-chain"))]
    {
        let source = fixed.map_or_else(from_environment, CredentialSource::Fixed);
        (source, region_from_environment(config).unwrap_or_default())
    }
}

#[cfg(feature = "credential-chain")]
mod chain {
    use std::time::{Duration, SystemTime};

    use aws_credential_types::Credentials;
    use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
    use baton_config::Aws;
    use tokio::sync::Mutex;

    use super::{CallError, CredentialSource, region_from_environment};

    /// Refreshed this long before they expire, so a request never goes out with stale keys.
    const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

    pub(crate) struct Cached {
        provider: SharedCredentialsProvider,
        current: Mutex<Option<Credentials>>,
    }

    impl Cached {
        pub(crate) async fn get(&self) -> Result<Credentials, CallError> {
            let mut current = self.current.lock().await;
            let fresh = current.as_ref().is_some_and(|c| {
                c.expiry()
                    .is_none_or(|t| t > SystemTime::now() + REFRESH_BEFORE)
            });
            if !fresh {
                let got = self
                    .provider
                    .provide_credentials()
                    .await
                    .map_err(|e| CallError::Credentials(crate::error::causes(&e)))?;
                *current = Some(got);
            }
            current
                .clone()
                .ok_or_else(|| CallError::Credentials("none provided".into()))
        }
    }

    pub(super) async fn load(
        config: &Aws,
        fixed: Option<Credentials>,
    ) -> (CredentialSource, String) {
        let region = region_from_environment(config);
        if let Some(creds) = fixed {
            return (CredentialSource::Fixed(creds), region.unwrap_or_default());
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(crate::http::sdk_http_client());
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region));
        }
        let sdk = loader.load().await;
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
        let source = match sdk.credentials_provider() {
            Some(provider) => CredentialSource::Chain(Cached {
                provider,
                current: Mutex::new(None),
            }),
            None => CredentialSource::Missing("the standard credential chain found none"),
        };
        (source, region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[tokio::test]
    async fn keys_and_session_token_come_from_the_variables() {
        let source = from_variables(vars(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ]));
        let creds = source.get().await.expect("credentials");
        assert_eq!(creds.access_key_id(), "AKID");
        assert_eq!(creds.session_token(), Some("token"));
    }

    #[tokio::test]
    async fn missing_keys_fail_every_request_with_the_cause() {
        let source = from_variables(vars(&[("AWS_ACCESS_KEY_ID", "AKID")]));
        let err = source.get().await.expect_err("no credentials");
        assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    }
}
