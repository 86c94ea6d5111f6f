//! The HTTP side: routes, authentication of every request, and handing accepted messages
//! to the store and intake queue (the body first, then the queue entry, then the answer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::{get, post};
use baton_domain::{BodyType, Envelope, QueueId, Recipient, TenantId};
use baton_store::{BlobStore, Ledger, Queue, get_domain};

use crate::error::ApiError;
use crate::send::{self, SendEmailRequest};
use crate::{identities, keys, sigv4, suppression};

/// What the handlers need.
pub struct ApiState {
    pub ledger: Arc<dyn Ledger>,
    pub blobs: Arc<dyn BlobStore>,
    pub intake: Arc<dyn Queue>,
    /// Names this relay in the Received: field of API mail.
    pub hostname: String,
}

/// Bodies up to 40 MB of raw message, base64-encoded in JSON, and a little room.
const BODY_LIMIT: usize = send::MAX_RAW / 3 * 4 + 1024 * 1024;

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v2/email/outbound-emails", post(send_email))
        .route(
            "/v2/email/identities",
            get(list_identities).post(create_identity),
        )
        .route(
            "/v2/email/identities/{identity}",
            get(one_resource).delete(one_resource),
        )
        .route(
            "/v2/email/suppression/addresses",
            get(list_suppressed).put(put_suppressed),
        )
        .route(
            "/v2/email/suppression/addresses/{address}",
            get(one_resource).delete(one_resource),
        )
        .fallback(unknown_operation)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn unknown_operation(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no operation {method} {}", uri.path()))
}

/// The tenant of the key that signed this request.
async fn authenticate(
    state: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(TenantId, String), ApiError> {
    let missing = || {
        ApiError::signature(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    };
    let value = headers
        .get("authorization")
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let auth = sigv4::parse_authorization(value)?;
    let Some((tenant, secret)) = keys::lookup(state.ledger.as_ref(), &auth.access_key_id).await?
    else {
        return Err(ApiError::signature(
            "UnrecognizedClientException",
            "The security token included in the request is invalid",
        ));
    };
    let mut pairs = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let value = value
            .to_str()
            .map_err(|_| ApiError::bad_request(format!("header {name} is not ASCII")))?;
        pairs.push((name.as_str(), value));
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = sigv4::Request {
        method: method.as_str(),
        uri: path,
        headers: pairs,
        body,
    };
    sigv4::verify(&request, &auth, &secret, SystemTime::now())?;
    Ok((tenant, auth.access_key_id))
}

async fn send_email(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (tenant, key_id) = authenticate(&state, &method, &uri, &headers, &body).await?;
    let request: SendEmailRequest = json_body(&body)?;
    let prepared = send::prepare(&request)?;
    let mut domains = prepared.author_domains.clone();
    domains.push(send::sender_domain(&prepared.sender)?);
    for domain in &domains {
        let owner = get_domain(state.ledger.as_ref(), domain)
            .await?
            .map(|d| d.tenant);
        if owner.as_ref() != Some(&tenant) {
            return Err(ApiError::rejected(format!(
                "Email address is not verified. The following identities failed the check: {}",
                prepared.sender
            )));
        }
    }
    let id = accept(&state, &tenant, &key_id, peer, prepared).await?;
    tracing::info!(queue_id = %id, tenant = %tenant.0, "accepted by the API");
    Ok(Json(serde_json::json!({ "MessageId": id.to_string() })))
}

/// The request's JSON body; unknown fields and bad values are a 400 naming them.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

/// The tenant of the key that signed the request.
async fn signed(
    state: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TenantId, ApiError> {
    Ok(authenticate(state, method, uri, headers, body).await?.0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn put_suppressed(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = signed(&state, &method, &uri, &headers, &body).await?;
    let request: suppression::PutRequest = json_body(&body)?;
    let out = suppression::put(state.ledger.as_ref(), &tenant, &request, now_ms()).await?;
    Ok(Json(out))
}

async fn create_identity(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = signed(&state, &method, &uri, &headers, &body).await?;
    let request: identities::CreateRequest = json_body(&body)?;
    let out = identities::create(
        state.ledger.as_ref(),
        &tenant,
        &state.hostname,
        &request,
        now_ms() / 1000,
    )
    .await?;
    Ok(Json(out))
}

async fn list_identities(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = signed(&state, &method, &uri, &headers, &body).await?;
    Ok(Json(
        identities::list(state.ledger.as_ref(), &tenant).await?,
    ))
}

/// One named resource: GetEmailIdentity / DeleteEmailIdentity and
/// GetSuppressedDestination / DeleteSuppressedDestination, by path and method.
async fn one_resource(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = signed(&state, &method, &uri, &headers, &body).await?;
    let ledger = state.ledger.as_ref();
    let delete = method == Method::DELETE;
    Ok(Json(if uri.path().starts_with("/v2/email/identities/") {
        if delete {
            identities::delete(ledger, &tenant, &name).await?
        } else {
            identities::get(ledger, &tenant, &name).await?
        }
    } else if delete {
        suppression::delete(ledger, &tenant, &name).await?
    } else {
        suppression::get(ledger, &tenant, &name).await?
    }))
}

async fn list_suppressed(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = signed(&state, &method, &uri, &headers, &body).await?;
    // Reason=BOUNCE&Reason=COMPLAINT; other parameters (dates, paging) are accepted and
    // ignored: one page holds the whole list.
    let reasons: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("Reason="))
        .map(str::to_string)
        .collect();
    Ok(Json(
        suppression::list(state.ledger.as_ref(), &tenant, &reasons).await?,
    ))
}

/// Stores the message, then queues it: only then is there a MessageId to answer with.
async fn accept(
    state: &ApiState,
    tenant: &TenantId,
    key_id: &str,
    peer: SocketAddr,
    prepared: send::Prepared,
) -> Result<QueueId, ApiError> {
    let id = QueueId::generate();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let received = format!(
        "Received: by {} (Baton SES API) id {id}; {}\r\n",
        state.hostname,
        rfc5322_date(now)
    );
    let mut writer = state.blobs.create(&id.to_string()).await?;
    writer.write(received.as_bytes()).await?;
    writer.write(&prepared.message).await?;
    let size = writer.commit().await?;
    let eight_bit = prepared.message.iter().any(|b| *b >= 0x80);
    let envelope = Envelope {
        queue_id: id,
        smtputf8: !prepared.sender.to_string().is_ascii()
            || prepared
                .recipients
                .iter()
                .any(|r| !r.to_string().is_ascii()),
        mail_from: Some(prepared.sender),
        recipients: prepared
            .recipients
            .into_iter()
            .map(|address| Recipient {
                address,
                notify: None,
                orcpt: None,
            })
            .collect(),
        auth_user: Some(key_id.to_string()),
        tenant: Some(tenant.clone()),
        ret: None,
        envid: None,
        body: if eight_bit {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        },
        client_ip: peer.ip(),
        helo: "api".into(),
        tls: false,
        size,
        received_at: i64::try_from(now.as_secs()).unwrap_or(0),
    };
    let body = serde_json::to_vec(&envelope)
        .map_err(|e| ApiError::unavailable(format!("envelope: {e}")))?;
    let attributes = [
        ("queue_id".to_string(), id.to_string()),
        ("tenant".to_string(), tenant.0.clone()),
    ]
    .into();
    if let Err(e) = state.intake.send(&body, attributes, Duration::ZERO).await {
        let _ = state.blobs.delete(&id.to_string()).await;
        return Err(e.into());
    }
    Ok(id)
}

fn rfc5322_date(since_epoch: Duration) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(since_epoch.as_secs()).unwrap_or(0))
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// Serves the API on `listener` until `shutdown` completes (requests in flight finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
