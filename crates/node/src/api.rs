//! The local HTTP API (JSON), served by axum over a [`Client`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use tokio::sync::broadcast::error::RecvError;

use crate::client::{Announce, ChangeKind, Client, NodeError};
use crate::error::StartError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest TTL a specialist may ask for, in seconds (the directory's maximum).
pub const MAX_TTL_SECS: u64 = 3600;

/// An API error: a status and `{"error": message, "field": field}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    field: Option<&'static str>,
    message: String,
}

impl ApiError {
    fn bad(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            field: Some(field),
            message: message.into(),
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Invalid { field, message } => ApiError::bad(field, message),
            NodeError::Full(message) => ApiError {
                status: StatusCode::CONFLICT,
                field: None,
                message,
            },
            NodeError::Stopped => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                field: None,
                message: e.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(field) => json!({ "error": self.message, "field": field }),
            None => json!({ "error": self.message }),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// The API routes. With a `token`, every request must carry `Authorization: Bearer <token>`.
pub fn router(client: Client, token: Option<String>) -> Router {
    let router = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/records", get(records))
        .route("/v1/peers", get(peers))
        .route("/v1/watch", get(watch))
        .route("/v1/specialists", post(announce))
        .route("/v1/specialists/{name}", delete(withdraw))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                field: None,
                message: "no such endpoint".to_owned(),
            }
        })
        .with_state(client);
    match token {
        Some(token) => router.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let authorised = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()));
                async move {
                    if authorised {
                        next.run(request).await
                    } else {
                        ApiError {
                            status: StatusCode::UNAUTHORIZED,
                            field: Some("authorization"),
                            message: "a valid `Authorization: Bearer <token>` header is required"
                                .to_owned(),
                        }
                        .into_response()
                    }
                }
            },
        )),
        None => router,
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the API on `listener` until the client's node stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Client,
    token: Option<String>,
) -> std::io::Result<()> {
    axum::serve(listener, router(client, token)).await
}

/// Binds the API address.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::ApiBind { addr, source })
}

async fn status(State(client): State<Client>) -> ApiResult {
    Ok(axum::Json(client.status().await?).into_response())
}

async fn peers(State(client): State<Client>) -> ApiResult {
    Ok(axum::Json(client.peers().await?).into_response())
}

async fn metrics(State(client): State<Client>) -> ApiResult {
    let text = client.metrics().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn records(State(client): State<Client>, RawQuery(query): RawQuery) -> ApiResult {
    let capabilities = parse_capabilities(query)?;
    Ok(axum::Json(client.query(capabilities).await?).into_response())
}

/// `capability=…` parameters (a record must have all of them), and nothing else.
fn parse_capabilities(query: Option<String>) -> Result<Vec<String>, ApiError> {
    let mut capabilities = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "capability" => {
                if v.is_empty() || v.len() > 64 {
                    return Err(ApiError::bad("capability", "must be 1 to 64 bytes"));
                }
                if capabilities.len() >= 32 {
                    return Err(ApiError::bad("capability", "at most 32"));
                }
                capabilities.push(v.into_owned());
            }
            other => {
                return Err(ApiError::bad(
                    "query",
                    format!("unknown parameter {other:?} (expected capability)"),
                ));
            }
        }
    }
    Ok(capabilities)
}

/// The change feed as NDJSON, one [`crate::Change`] per line as records are merged, until the
/// client goes away or the node stops. With `capability=…` only specialists having all of
/// them, and every withdrawal (a withdrawal carries no capabilities: match it by owner and
/// name). A watcher too slow to keep up gets `{"lagged": n}`: n changes it will not see.
async fn watch(State(client): State<Client>, RawQuery(query): RawQuery) -> ApiResult {
    let capabilities = parse_capabilities(query)?;
    let feed = client.watch()?;
    let lines = futures::stream::unfold(feed, move |mut feed| {
        let capabilities = capabilities.clone();
        async move {
            loop {
                let value = match feed.recv().await {
                    Ok(change) => {
                        let wanted = match change.kind {
                            ChangeKind::Withdrawn => true,
                            ChangeKind::Node => capabilities.is_empty(),
                            ChangeKind::Specialist => capabilities
                                .iter()
                                .all(|c| change.record.capabilities.contains(c)),
                        };
                        if !wanted {
                            continue;
                        }
                        serde_json::to_value(&change).unwrap_or(Value::Null)
                    }
                    Err(RecvError::Lagged(n)) => json!({ "lagged": n }),
                    Err(RecvError::Closed) => return None,
                };
                let mut line = value.to_string().into_bytes();
                line.push(b'\n');
                return Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), feed));
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

async fn withdraw(State(client): State<Client>, Path(name): Path<String>) -> ApiResult {
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::bad("name", "must be 1 to 128 bytes"));
    }
    if client.withdraw(&name).await? {
        Ok(axum::Json(json!({ "withdrawn": name })).into_response())
    } else {
        Err(ApiError {
            status: StatusCode::NOT_FOUND,
            field: Some("name"),
            message: format!("this node announces no specialist named {name:?}"),
        })
    }
}

async fn announce(State(client): State<Client>, headers: HeaderMap, body: Body) -> ApiResult {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            field: Some("content-type"),
            message: "expected Content-Type: application/json".to_owned(),
        });
    }
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            field: Some("body"),
            message: format!("body over {MAX_BODY_BYTES} bytes"),
        })?;
    let announce = parse_announce(&bytes)?;
    let record = client.announce(announce).await?;
    Ok((StatusCode::CREATED, axum::Json(record)).into_response())
}

/// Checks an announcement field by field, naming the first bad one.
pub fn parse_announce(bytes: &[u8]) -> Result<Announce, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad("body", format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad("body", "expected a JSON object"));
    };
    for key in map.keys() {
        if !["name", "capabilities", "endpoint", "meta", "ttl_secs"].contains(&key.as_str()) {
            return Err(ApiError::bad("body", format!("unknown field {key:?}")));
        }
    }
    let name = match map.get("name") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => s.clone(),
        Some(Value::String(_)) => return Err(ApiError::bad("name", "must be 1 to 128 bytes")),
        Some(_) => return Err(ApiError::bad("name", "must be a string")),
        None => return Err(ApiError::bad("name", "is required")),
    };
    let capabilities = match map.get("capabilities") {
        Some(Value::Array(items)) => {
            if items.is_empty() || items.len() > 32 {
                return Err(ApiError::bad("capabilities", "must hold 1 to 32 strings"));
            }
            let mut caps = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) if !s.is_empty() && s.len() <= 64 => {
                        if !caps.contains(s) {
                            caps.push(s.clone());
                        }
                    }
                    _ => {
                        return Err(ApiError::bad(
                            "capabilities",
                            "each must be a string of 1 to 64 bytes",
                        ));
                    }
                }
            }
            caps
        }
        Some(_) => return Err(ApiError::bad("capabilities", "must be an array of strings")),
        None => return Err(ApiError::bad("capabilities", "is required")),
    };
    let endpoint = match map.get("endpoint") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::bad(
                "endpoint",
                "must be a string of 1 to 512 bytes",
            ));
        }
    };
    let meta = match map.get("meta") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => {
            let mut meta = BTreeMap::new();
            let mut total = 0;
            for (k, v) in m {
                let Value::String(v) = v else {
                    return Err(ApiError::bad("meta", "values must be strings"));
                };
                total += k.len() + v.len();
                meta.insert(k.clone(), v.clone());
            }
            if total > 1024 {
                return Err(ApiError::bad(
                    "meta",
                    "keys and values over 1024 bytes in all",
                ));
            }
            meta
        }
        Some(_) => return Err(ApiError::bad("meta", "must be an object of strings")),
    };
    let ttl = match map.get("ttl_secs") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(s) if (1..=MAX_TTL_SECS).contains(&s) => Some(Duration::from_secs(s)),
            _ => {
                return Err(ApiError::bad(
                    "ttl_secs",
                    format!("must be an integer from 1 to {MAX_TTL_SECS}"),
                ));
            }
        },
    };
    Ok(Announce {
        name,
        capabilities,
        endpoint,
        meta,
        ttl,
    })
}
