//! Routes of the template operations and SendBulkEmail: the HTTP side only (path, query and
//! body in; the tenant from the authenticated caller), the work is in `templates` and `bulk`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::router::{ApiState, json_body, now_ms};
use crate::{bulk, templates};

type Answer = Result<Json<serde_json::Value>, ApiError>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/v2/email/templates",
            get(list_templates).post(create_template),
        )
        .route(
            "/v2/email/templates/{name}",
            get(one_template).put(one_template).delete(one_template),
        )
        .route("/v2/email/templates/{name}/render", post(render_template))
        .route("/v2/email/outbound-bulk-emails", post(send_bulk))
}

async fn create_template(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Answer {
    let request: templates::CreateRequest = json_body(&body)?;
    let out = templates::create(state.ledger.as_ref(), &caller.tenant, &request, now_ms()).await?;
    Ok(Json(out))
}

async fn list_templates(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Answer {
    let mut page_size = None;
    let mut next_token = None;
    for pair in uri.query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("PageSize", v)) => page_size = Some(v),
            Some(("NextToken", v)) => next_token = Some(v),
            _ => {}
        }
    }
    let out = templates::list(state.ledger.as_ref(), &caller.tenant, page_size, next_token).await?;
    Ok(Json(out))
}

/// GetEmailTemplate, UpdateEmailTemplate and DeleteEmailTemplate, by method.
async fn one_template(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    method: Method,
    body: Bytes,
) -> Answer {
    let (ledger, tenant) = (state.ledger.as_ref(), &caller.tenant);
    Ok(Json(match method {
        Method::PUT => {
            let request: templates::UpdateRequest = json_body(&body)?;
            templates::update(ledger, tenant, &name, &request).await?
        }
        Method::DELETE => templates::delete(ledger, tenant, &name).await?,
        _ => templates::get(ledger, tenant, &name).await?,
    }))
}

async fn render_template(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer {
    let request: templates::RenderRequest = json_body(&body)?;
    let out = templates::test_render(
        state.ledger.as_ref(),
        &caller.tenant,
        &name,
        &request,
        &state.hostname,
    )
    .await?;
    Ok(Json(out))
}

async fn send_bulk(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Answer {
    let request: bulk::BulkRequest = json_body(&body)?;
    Ok(Json(bulk::send_bulk(&state, &caller, request).await?))
}
