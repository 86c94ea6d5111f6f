//! The HTTP side: routes, authentication of every request, and handing accepted messages
//! to the store and intake queue (the body first, then the queue entry, then the answer).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use baton_domain::{BodyType, Domain, Envelope, QueueId, Recipient, TenantId};
use baton_store::{BlobStore, Ledger, Queue, get_domain};

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::send::{self, SendEmailRequest};
use crate::{account, identities, render, suppression, template_routes, templates};

/// What the handlers need.
pub struct ApiState {
    pub ledger: Arc<dyn Ledger>,
    pub blobs: Arc<dyn BlobStore>,
    pub intake: Arc<dyn Queue>,
    /// Names this relay in the Received: field of API mail.
    pub hostname: String,
    /// What unauthenticated requests may cost: bodies held at once, in all and per key, and
    /// key ids recently found unknown.
    pub limits: auth::RequestLimits,
    /// How identities are checked: DNS for their DKIM records, the relay's own names.
    pub identities: identities::IdentityPolicy,
}

impl ApiState {
    /// `body_memory` bytes of request bodies may be held at once (at least one largest body).
    pub fn new(
        ledger: Arc<dyn Ledger>,
        blobs: Arc<dyn BlobStore>,
        intake: Arc<dyn Queue>,
        hostname: String,
        body_memory: usize,
    ) -> Self {
        ApiState {
            ledger,
            blobs,
            intake,
            limits: auth::RequestLimits::new(body_memory),
            identities: identities::IdentityPolicy::new(&hostname),
            hostname,
        }
    }

    /// Looks for identities' DKIM records with `dns` instead of the system's resolvers.
    pub fn with_dns(mut self, dns: Arc<dyn baton_pipeline::outbound::TxtResolver>) -> Self {
        self.identities.dns = dns;
        self
    }

    /// The relay's own names besides its hostname (the HELO name), and the bounce label
    /// (`bounces.subdomain`): no tenant may claim them as identities.
    pub fn with_relay_names(mut self, names: &[&str], bounce_label: &str) -> Self {
        self.identities
            .relay_names
            .extend(names.iter().map(|n| n.to_string()));
        self.identities.bounce_label = bounce_label.to_string();
        self
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v2/email/outbound-emails", post(send_email))
        .route("/v2/email/account", get(get_account))
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
        .merge(template_routes::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticated,
        ))
        .fallback(unknown_operation)
        // The authentication layer reads bodies itself, within its own limits.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn unknown_operation(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no operation {method} {}", uri.path()))
}

async fn send_email(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: SendEmailRequest = json_body(&body)?;
    let prepared = match &request.content.template {
        Some(t) => {
            let compiled = templates::resolve(state.ledger.as_ref(), &caller.tenant, t).await?;
            let data = render::parse_data(t.template_data.as_deref())?;
            // Rendering is tenant-controlled CPU work: never on the runtime serving SMTP.
            let hostname = state.hostname.clone();
            render::off_runtime(move || {
                let work = render::Work::new(render::MAX_WORK);
                let rendered = render::render(&compiled, &data, &work)?;
                send::prepare(&request, Some(&rendered), &hostname)
            })
            .await?
        }
        None => send::prepare(&request, None, &state.hostname)?,
    };
    let mut domains = prepared.author_domains.clone();
    domains.push(send::sender_domain(&prepared.sender)?);
    check_owned(state.ledger.as_ref(), &caller.tenant, &domains).await?;
    let id = accept(&state, &caller, prepared).await?;
    tracing::info!(queue_id = %id, tenant = %caller.tenant.0, "accepted by the API");
    Ok(Json(serde_json::json!({ "MessageId": id.to_string() })))
}

/// Every one of `domains` must be `tenant`'s (From, the envelope sender, a Raw message's
/// From field), else MessageRejected as SES refuses an unverified identity.
pub(crate) async fn check_owned(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    domains: &[Domain],
) -> Result<(), ApiError> {
    // The sender's domain is usually the From domain too: one lookup for it.
    let mut distinct: Vec<&Domain> = domains.iter().collect();
    distinct.sort_by_key(|d| d.to_string());
    distinct.dedup();
    for domain in distinct {
        let owner = get_domain(ledger, domain).await?.map(|d| d.tenant);
        if owner.as_ref() != Some(tenant) {
            return Err(ApiError::rejected(format!(
                "Email address is not verified. The following identities failed the check: {domain}"
            )));
        }
    }
    Ok(())
}

/// The request's JSON body; unknown fields and bad values are a 400 naming them.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn get_account(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(
        account::get(state.ledger.as_ref(), &caller.tenant, now_ms()).await?,
    ))
}

async fn put_suppressed(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: suppression::PutRequest = json_body(&body)?;
    let out = suppression::put(state.ledger.as_ref(), &caller.tenant, &request, now_ms()).await?;
    Ok(Json(out))
}

async fn create_identity(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: identities::CreateRequest = json_body(&body)?;
    let out = identities::create(
        &state.identities,
        state.ledger.as_ref(),
        &caller.tenant,
        &request,
        now_ms() / 1000,
    )
    .await?;
    Ok(Json(out))
}

async fn list_identities(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(
        identities::list(&state.identities, state.ledger.as_ref(), &caller.tenant).await?,
    ))
}

/// One named resource: GetEmailIdentity / DeleteEmailIdentity and
/// GetSuppressedDestination / DeleteSuppressedDestination, by path and method.
async fn one_resource(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = &caller.tenant;
    let ledger = state.ledger.as_ref();
    let delete = method == Method::DELETE;
    Ok(Json(if uri.path().starts_with("/v2/email/identities/") {
        if delete {
            identities::delete(ledger, tenant, &name).await?
        } else {
            identities::get(&state.identities, ledger, tenant, &name).await?
        }
    } else if delete {
        suppression::delete(ledger, tenant, &name).await?
    } else {
        suppression::get(ledger, tenant, &name).await?
    }))
}

async fn list_suppressed(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
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
        suppression::list(state.ledger.as_ref(), &caller.tenant, &reasons).await?,
    ))
}

/// Stores the message, then queues it: only then is there a MessageId to answer with.
pub(crate) async fn accept(
    state: &ApiState,
    caller: &Caller,
    prepared: send::Prepared,
) -> Result<QueueId, ApiError> {
    let tenant = &caller.tenant;
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
        auth_user: Some(caller.key_id.clone()),
        tenant: Some(tenant.clone()),
        ret: None,
        envid: None,
        body: if eight_bit {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        },
        client_ip: caller.peer,
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
