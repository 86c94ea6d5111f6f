//! Authentication of every request, as a layer in front of the handlers. What can be checked
//! from the headers is checked before a byte of the body is read: the Authorization header's
//! form, the request's time, and that the key exists and is in force. Only then is the body
//! read (SigV4 covers it), within a shared memory budget and a deadline, and the signature
//! checked. So an unauthenticated client can make us read a body only by naming a real key
//! id, and then only as much as the budget allows at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use baton_domain::TenantId;
use std::sync::Arc;

use crate::error::ApiError;
use crate::router::ApiState;
use crate::{keys, sigv4};

/// Who signed the request; handlers take it as an extension.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    pub key_id: String,
    /// The client's address when the transport knows it (a socket, a Lambda function URL).
    pub peer: IpAddr,
}

/// The largest body: 40 MB of raw message, base64-encoded in JSON, and a little room.
pub const BODY_LIMIT: usize = crate::send::MAX_RAW / 3 * 4 + 1024 * 1024;

/// A body sent without Content-Length (HTTP/2 allows it) may be at most this large: the
/// budget is taken before reading, so a large body must say how large it is.
const UNDECLARED_LIMIT: usize = 1024 * 1024;

/// The budget is counted in units of this many bytes.
pub const BUDGET_UNIT: usize = 1024 * 1024;

/// How long a body may take to arrive (40 MB at about 1 Mbit/s).
const BODY_DEADLINE: Duration = Duration::from_secs(300);

pub async fn authenticated(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let checked = match before_body(&state, &parts.headers).await {
        Ok(checked) => checked,
        Err(e) => return e.into_response(),
    };
    let declared = match declared_length(&parts.headers) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let units = u32::try_from(declared.unwrap_or(UNDECLARED_LIMIT).div_ceil(BUDGET_UNIT))
        .unwrap_or(u32::MAX)
        .max(1);
    // Held until the answer is built: the handler keeps the body (and builds from it).
    let Ok(_permit) = state.body_budget.try_acquire_many(units) else {
        return ApiError::throttled("too many request bodies at once; retry later").into_response();
    };
    let limit = declared.unwrap_or(UNDECLARED_LIMIT);
    let bytes = match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, limit)).await {
        Err(_) => return ApiError::body_timeout().into_response(),
        Ok(Err(_)) => {
            return ApiError::bad_request(format!(
                "the request body is longer than its Content-Length or {limit} bytes"
            ))
            .into_response();
        }
        Ok(Ok(bytes)) => bytes,
    };
    if declared.is_some_and(|n| n != bytes.len()) {
        return ApiError::bad_request("the request body is shorter than its Content-Length")
            .into_response();
    }
    if let Err(e) = after_body(&checked, &parts, &bytes) {
        return e.into_response();
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    parts.extensions.insert(Caller {
        tenant: checked.tenant,
        key_id: checked.auth.access_key_id,
        peer,
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// What the headers alone allowed.
struct Checked {
    auth: sigv4::Authorization,
    tenant: TenantId,
    secret: String,
}

async fn before_body(state: &ApiState, headers: &HeaderMap) -> Result<Checked, ApiError> {
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
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok());
    sigv4::check_time(&auth, amz_date, SystemTime::now())?;
    let Some((tenant, secret)) = keys::lookup(state.ledger.as_ref(), &auth.access_key_id).await?
    else {
        return Err(ApiError::signature(
            "UnrecognizedClientException",
            "The security token included in the request is invalid",
        ));
    };
    Ok(Checked {
        auth,
        tenant,
        secret,
    })
}

fn declared_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get("content-length") else {
        return Ok(None);
    };
    let n: usize = value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))?;
    if n > BODY_LIMIT {
        return Err(ApiError::bad_request(format!(
            "the request body is {n} bytes; at most {BODY_LIMIT} are accepted"
        )));
    }
    Ok(Some(n))
}

fn after_body(
    checked: &Checked,
    parts: &axum::http::request::Parts,
    body: &Bytes,
) -> Result<(), ApiError> {
    let mut pairs = Vec::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let value = value
            .to_str()
            .map_err(|_| ApiError::bad_request(format!("header {name} is not ASCII")))?;
        pairs.push((name.as_str(), value));
    }
    // HTTP/2 carries the host as :authority, which hyper keeps in the URI, not the headers.
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    if let Some(authority) = &authority
        && !parts.headers.contains_key("host")
    {
        pairs.push(("host", authority.as_str()));
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let request = sigv4::Request {
        method: parts.method.as_str(),
        uri: path,
        headers: pairs,
        body,
    };
    sigv4::verify(&request, &checked.auth, &checked.secret, SystemTime::now())
}
