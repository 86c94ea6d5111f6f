//! The SES v2-compatible API as a Lambda function behind a function URL: every invocation's
//! HTTP request goes to the same router `baton serve` runs on `listen.api` (SigV4 by
//! per-tenant keys, SES's paths, shapes and error types). This crate only adapts the
//! request lambda_http builds from the event so that it looks as it would on a socket:
//!
//! - the path is the event's `rawPath`, exactly as the client sent (and signed) it, never a
//!   path lambda_http rebuilt, which may re-encode it or put a stage name in front;
//! - the Host header is the event's own (the function URL's domain, as signed);
//! - the client's address (`requestContext.http.sourceIp`) is the `ConnectInfo` the router
//!   reads, as the listener sets it from the socket;
//! - the body arrives whole (function URLs cap it at 6 MB, so large Raw messages need
//!   `baton serve`), so a missing Content-Length is set to its length rather than held to
//!   the smaller limit of bodies of unknown size.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderValue, Request, Uri, header};
use axum::response::{IntoResponse, Response};
use baton_api::{ApiError, ApiState};
use baton_config::Config;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FunctionError {
    #[error("configuration: {0}")]
    Config(#[from] baton_config::ConfigError),
}

/// The API's router, built once per cold start.
#[derive(Clone)]
pub struct ApiFunction {
    router: Router,
}

impl ApiFunction {
    pub fn new(state: Arc<ApiState>) -> ApiFunction {
        ApiFunction {
            router: baton_api::router(state),
        }
    }

    /// What the function does at cold start: settings from `BATON_*` variables, JSON logs,
    /// the store, ledger and intake queue on AWS as `baton serve` builds them. Makes no
    /// network request.
    pub async fn from_env() -> Result<ApiFunction, FunctionError> {
        let settings = Config::load(None, std::env::vars())?;
        baton_telemetry::init(baton_telemetry::Format::Json, &settings.raw.log.filter);
        let aws = baton_aws::AwsBackend::connect(&settings.raw.aws).await;
        let (ports, _) = baton_functions::aws_ports(&aws);
        let state = ApiState::new(
            ports.ledger,
            ports.blobs,
            ports.intake,
            settings.raw.hostname.clone(),
            usize::try_from(settings.raw.api.max_body_memory).unwrap_or(usize::MAX),
        )
        // As `baton serve` does: no tenant may claim the HELO name or a bounce domain.
        .with_relay_names(&[settings.helo_name()], &settings.raw.bounces.subdomain);
        Ok(ApiFunction::new(Arc::new(state)))
    }

    /// One invocation. Never an error: a refused request is an HTTP answer, as on a socket.
    pub async fn handle(&self, request: lambda_http::Request) -> Result<Response, Infallible> {
        let request = match router_request(request) {
            Ok(request) => request,
            Err(e) => return Ok(e.into_response()),
        };
        tower_service::Service::call(&mut self.router.clone(), request).await
    }
}

/// The request as the router expects it from a socket (see the crate's documentation).
pub fn router_request(request: lambda_http::Request) -> Result<Request<Body>, ApiError> {
    let raw_path = match request.raw_http_path() {
        "" => "/",
        path => path,
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{raw_path}?{query}"),
        None => raw_path.to_string(),
    };
    let path_and_query = PathAndQuery::try_from(path_and_query)
        .map_err(|_| ApiError::bad_request("the request path is not a valid URI path"))?;
    let peer = source_ip(&request);
    let (mut parts, body) = request.into_parts();
    parts.uri = Uri::from(path_and_query);
    let body = body.to_vec();
    if !parts.headers.contains_key(header::CONTENT_LENGTH) {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    if let Some(ip) = peer {
        parts.extensions.insert(ConnectInfo(SocketAddr::new(ip, 0)));
    }
    Ok(Request::from_parts(parts, Body::from(body)))
}

/// The client's address as the function URL (or HTTP API) saw it.
fn source_ip(request: &lambda_http::Request) -> Option<IpAddr> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_store::memory::{MemoryBlobStore, MemoryLedger, MemoryQueue};

    /// A function URL event (payload format 2.0) as Lambda sends it.
    fn event(stage: &str, raw_path: &str, raw_query: &str, headers: serde_json::Value) -> String {
        serde_json::json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": raw_path,
            "rawQueryString": raw_query,
            "headers": headers,
            "requestContext": {
                "accountId": "anonymous",
                "apiId": "abcdefghijklmnop",
                "domainName": "abcdefghijklmnop.lambda-url.us-east-1.on.aws",
                "domainPrefix": "abcdefghijklmnop",
                "http": {
                    "method": "GET",
                    "path": raw_path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "203.0.113.9",
                    "userAgent": "test"
                },
                "requestId": "id",
                "routeKey": "$default",
                "stage": stage,
                "time": "02/Dec/2026:14:00:00 +0000",
                "timeEpoch": 1_796_000_000_000_i64
            },
            "body": "{\"a\":1}",
            "isBase64Encoded": false
        })
        .to_string()
    }

    fn lambda_request(stage: &str, raw_path: &str, raw_query: &str) -> lambda_http::Request {
        let headers = serde_json::json!({
            "host": "abcdefghijklmnop.lambda-url.us-east-1.on.aws",
            "x-amz-date": "20261202T140000Z"
        });
        lambda_http::request::from_str(&event(stage, raw_path, raw_query, headers))
            .expect("a function URL event")
    }

    fn converted(stage: &str, raw_path: &str, raw_query: &str) -> Request<Body> {
        router_request(lambda_request(stage, raw_path, raw_query)).expect("a valid request")
    }

    #[test]
    fn the_router_sees_the_path_query_and_host_as_the_client_sent_them() {
        let request = converted(
            "$default",
            "/v2/email/suppression/addresses/gone%40example.org",
            "Reason=BOUNCE&NextToken=a%2Fb",
        );
        assert_eq!(
            request.uri().path(),
            "/v2/email/suppression/addresses/gone%40example.org"
        );
        assert_eq!(request.uri().query(), Some("Reason=BOUNCE&NextToken=a%2Fb"));
        assert_eq!(
            request.headers()["host"],
            "abcdefghijklmnop.lambda-url.us-east-1.on.aws"
        );
        let ConnectInfo(peer) = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .expect("the source address");
        assert_eq!(peer.ip().to_string(), "203.0.113.9");
        // The body is whole, so its length is known even when the event carries none.
        assert_eq!(request.headers()["content-length"], "7");
    }

    #[test]
    fn a_stage_name_never_enters_the_path() {
        // lambda_http puts a named stage in front of the path it rebuilds; the client signed
        // the raw path, and the routes have no stage.
        let theirs = lambda_request("prod", "/v2/email/account", "");
        assert_eq!(theirs.uri().path(), "/prod/v2/email/account");
        let request = router_request(theirs).expect("a valid request");
        assert_eq!(request.uri().path(), "/v2/email/account");
        assert_eq!(request.uri().query(), None);
    }

    #[tokio::test]
    async fn an_unsigned_request_is_refused_with_the_error_type_the_sdks_read() {
        let state = ApiState::new(
            Arc::new(MemoryLedger::default()),
            Arc::new(MemoryBlobStore::default()),
            Arc::new(MemoryQueue::new("intake", 10, None)),
            "relay.test".into(),
            0,
        );
        let function = ApiFunction::new(Arc::new(state));
        let headers = serde_json::json!({ "host": "abcdefghijklmnop.lambda-url.us-east-1.on.aws" });
        let request =
            lambda_http::request::from_str(&event("$default", "/v2/email/account", "", headers))
                .expect("a function URL event");
        let response = function.handle(request).await.expect("an answer");
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()["x-amzn-errortype"],
            "MissingAuthenticationTokenException"
        );
    }
}
