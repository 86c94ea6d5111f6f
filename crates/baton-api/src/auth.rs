//! Authentication of every request, as a layer in front of the handlers. What can be checked
//! from the headers is checked before a byte of the body is read: the Authorization header's
//! form, the request's time, and that the key exists and is in force. Only then is the body
//! read (SigV4 covers it), within a shared memory budget, a share of it per key and a
//! deadline that grows with the body, and the signature checked. So an unauthenticated
//! client can make us read a body only by naming a real key id (they are not secret: they
//! travel in every request), and then hold at most that key's share of the budget.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use baton_domain::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
const BUDGET_UNIT: usize = 1024 * 1024;

/// A body is held about this many times over while it is handled (the bytes, the parsed
/// JSON, decoded attachments, the built message): the budget counts all of them.
const HELD_COPIES: usize = 3;

/// A body must arrive at this rate at least (after a first few seconds).
const MIN_BODY_RATE: usize = 256 * 1024;
const BODY_GRACE: Duration = Duration::from_secs(10);

/// Keys looked up are remembered: unknown ids this long, so that guessing costs no ledger
/// read, and keys in force this long, so that a sending application costs none per request
/// (a revoked key is refused within this time, as AWS's own revocation takes a few seconds).
const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(60);
const KNOWN_KEY_TTL: Duration = Duration::from_secs(5);
const MAX_REMEMBERED_KEYS: usize = 10_000;

/// A key's tenant and secret, or None for an unknown or revoked id.
type Lookup = Option<(TenantId, String)>;

/// Bodies held at once (in all, and per key), and key ids recently found unknown.
pub struct RequestLimits {
    total: Arc<Semaphore>,
    per_key_units: usize,
    per_key: Mutex<HashMap<String, Arc<Semaphore>>>,
    looked_up: Mutex<HashMap<String, (Instant, Lookup)>>,
}

impl RequestLimits {
    /// `body_memory` bytes in all (at least what one largest body needs); each key may hold a
    /// quarter of it (at least one largest body).
    pub fn new(body_memory: usize) -> Self {
        let largest = units(BODY_LIMIT);
        let total = body_memory.div_ceil(BUDGET_UNIT).max(largest);
        RequestLimits {
            total: Arc::new(Semaphore::new(total)),
            per_key_units: (total / 4).max(largest),
            per_key: Mutex::new(HashMap::new()),
            looked_up: Mutex::new(HashMap::new()),
        }
    }

    /// Permits for a body of `len` bytes sent with `key`, or None when either is spent.
    fn take(&self, key: &str, len: usize) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let n = u32::try_from(units(len)).unwrap_or(u32::MAX);
        let mine = {
            let mut per_key = self.per_key.lock().unwrap_or_else(|e| e.into_inner());
            // Keys with nothing in flight are forgotten, so the map stays as small as the
            // number of keys sending at the moment.
            per_key.retain(|_, s| s.available_permits() < self.per_key_units);
            per_key
                .entry(key.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_key_units)))
                .clone()
        };
        let mine = mine.try_acquire_many_owned(n).ok()?;
        let all = self.total.clone().try_acquire_many_owned(n).ok()?;
        Some((mine, all))
    }

    /// What an earlier lookup of `id` found, while it may still be trusted.
    fn remembered(&self, id: &str) -> Option<Lookup> {
        let looked_up = self.looked_up.lock().unwrap_or_else(|e| e.into_inner());
        let (at, found) = looked_up.get(id)?;
        let ttl = if found.is_some() {
            KNOWN_KEY_TTL
        } else {
            UNKNOWN_KEY_TTL
        };
        (at.elapsed() < ttl).then(|| found.clone())
    }

    fn remember(&self, id: &str, found: Lookup) {
        let mut looked_up = self.looked_up.lock().unwrap_or_else(|e| e.into_inner());
        if looked_up.len() >= MAX_REMEMBERED_KEYS {
            looked_up.retain(|_, (at, _)| at.elapsed() < UNKNOWN_KEY_TTL);
            if looked_up.len() >= MAX_REMEMBERED_KEYS {
                looked_up.clear();
            }
        }
        looked_up.insert(id.to_string(), (Instant::now(), found));
    }
}

/// Budget units for a body of `len` bytes and its copies.
fn units(len: usize) -> usize {
    len.saturating_mul(HELD_COPIES).div_ceil(BUDGET_UNIT).max(1)
}

pub async fn authenticated(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    // The signer normalises `.` and empty segments away, the router does not: refuse them,
    // so that what is verified is what is routed.
    if parts
        .uri
        .path()
        .split('/')
        .skip(1)
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return ApiError::not_found("no such path").into_response();
    }
    let checked = match before_body(&state, &parts.headers).await {
        Ok(checked) => checked,
        Err(e) => return e.into_response(),
    };
    let declared = match declared_length(&parts.headers) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let limit = declared.unwrap_or(UNDECLARED_LIMIT);
    // A request without a body (GET, DELETE) holds no budget.
    let empty = declared == Some(0) || (declared.is_none() && body.is_end_stream());
    // Held until the answer is built: the handler keeps the body (and builds from it).
    let _permits = if empty {
        None
    } else {
        let Some(permits) = state.limits.take(&checked.auth.access_key_id, limit) else {
            return ApiError::throttled("too many request bodies at once; retry later")
                .into_response();
        };
        Some(permits)
    };
    let deadline = BODY_GRACE + Duration::from_secs((limit / MIN_BODY_RATE) as u64);
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
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
    let unknown = || {
        ApiError::signature(
            "UnrecognizedClientException",
            "The security token included in the request is invalid",
        )
    };
    let id = &auth.access_key_id;
    if !keys::is_well_formed(id) {
        return Err(unknown());
    }
    let found = match state.limits.remembered(id) {
        Some(found) => found,
        None => {
            let found = keys::lookup(state.ledger.as_ref(), id).await?;
            state.limits.remember(id, found.clone());
            found
        }
    };
    let Some((tenant, secret)) = found else {
        return Err(unknown());
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
