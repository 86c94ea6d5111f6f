//! The one HTTP client: reqwest (HTTP/1.1, rustls with ring, the platform's roots), the
//! one the webhook deliveries already link. It follows no redirects (a signed request must
//! not go where an answer points) and does not retry (the wire client does). With
//! `credential-chain`, the SDK's credential providers (aws-config) and the examples' SDK
//! clients send through it too.

use std::time::Duration;

/// The wire client's transport. Building fails only if TLS cannot be set up (no usable
/// root store): the caller keeps the error and fails each request with it.
pub(crate) fn transport(connect_timeout: Duration) -> Result<reqwest::Client, String> {
    builder(Some(connect_timeout), None)
        .build()
        .map_err(|e| format!("cannot set up the HTTPS client: {e}"))
}

fn builder(
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only();
    if let Some(t) = connect_timeout {
        builder = builder.connect_timeout(t);
    }
    if let Some(t) = read_timeout {
        builder = builder.read_timeout(t);
    }
    builder
}

#[cfg(feature = "credential-chain")]
pub use sdk::sdk_http_client;

#[cfg(feature = "credential-chain")]
mod sdk {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
        SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;

    /// The transport for SDK clients: aws-config's credential providers and the examples'.
    pub fn sdk_http_client() -> SharedHttpClient {
        SharedHttpClient::new(ReqwestHttpClient::default())
    }

    /// Connect and read timeouts, as the SDK asks for them.
    type Timeouts = (Option<Duration>, Option<Duration>);

    /// One reqwest client (one connection pool) per timeout setting the SDK asks for.
    #[derive(Debug, Default)]
    struct ReqwestHttpClient {
        connectors: Mutex<HashMap<Timeouts, SharedHttpConnector>>,
    }

    impl HttpClient for ReqwestHttpClient {
        fn http_connector(
            &self,
            settings: &HttpConnectorSettings,
            _components: &RuntimeComponents,
        ) -> SharedHttpConnector {
            let key = (settings.connect_timeout(), settings.read_timeout());
            let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
            connectors
                .entry(key)
                .or_insert_with(|| SharedHttpConnector::new(ReqwestConnector::new(key.0, key.1)))
                .clone()
        }
    }

    #[derive(Debug, Clone)]
    struct ReqwestConnector {
        /// reqwest's client is a shared handle already; a build error is kept to report per call.
        client: Result<reqwest::Client, String>,
    }

    impl ReqwestConnector {
        fn new(connect_timeout: Option<Duration>, read_timeout: Option<Duration>) -> Self {
            ReqwestConnector {
                client: super::builder(connect_timeout, read_timeout)
                    .build()
                    .map_err(|e| e.to_string()),
            }
        }
    }

    impl HttpConnector for ReqwestConnector {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let client = self.client.clone();
            HttpConnectorFuture::new(async move {
                // Building fails only if TLS cannot be set up (no usable root store).
                let client = client.map_err(|e| ConnectorError::other(e.into(), None))?;
                let request = request
                    .try_into_http1x()
                    .map_err(|e| ConnectorError::user(e.into()))?
                    .map(reqwest::Body::wrap);
                let request = reqwest::Request::try_from(request)
                    .map_err(|e| ConnectorError::user(e.into()))?;
                let response = client.execute(request).await.map_err(connector_error)?;
                let response =
                    http::Response::<reqwest::Body>::from(response).map(SdkBody::from_body_1_x);
                HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
            })
        }
    }

    /// Timeouts and transport failures are what the SDK's retry classifier retries.
    fn connector_error(e: reqwest::Error) -> ConnectorError {
        if e.is_timeout() {
            ConnectorError::timeout(e.into())
        } else if e.is_builder() {
            ConnectorError::user(e.into())
        } else {
            ConnectorError::io(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A redirect reaches the caller as the answer: following it would send a signed
    /// request, credentials' signature and body included, wherever a hostile endpoint points.
    #[tokio::test]
    async fn a_redirect_is_returned_not_followed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut requests = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                requests += 1;
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 301 Moved\r\nLocation: http://{addr}/elsewhere\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes()).await;
                if requests == 2 {
                    break;
                }
            }
            requests
        });
        let response = transport(Duration::from_secs(2))
            .expect("client")
            .get(format!("http://{addr}/bucket/key"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status().as_u16(), 301);
        // Nothing asked for /elsewhere: the server saw one request.
        server.abort();
        assert!(
            server.await.is_err(),
            "the server stopped after a second request"
        );
    }
}
