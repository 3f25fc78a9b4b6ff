//! The only place an error becomes a status code and an `{"error": ...}` body.
//! 5xx answers carry a generic message; the cause is logged, not sent. Two
//! middlewares live here too: [`json_error_bodies`] gives axum's own
//! rejections (malformed JSON 400, wrong content type 415, unknown or
//! mistyped fields 422, body too large 413, bad path or query 400) the same
//! `{"error"}` shape, and [`bounded`] applies the request timeout and the
//! concurrency limit.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// Largest error body of axum's that is re-wrapped as `{"error"}`.
const MAX_REWRAPPED_BODY: usize = 4 * 1024;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or invalid credentials (signature, token, key).
    #[error("{0}")]
    Unauthorized(String),
    /// 402: payment required or balance too low.
    #[error("{0}")]
    PaymentRequired(String),
    /// 403: authenticated, but not allowed (not the owner, expired, banned).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 413: body too large.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429: over a rate limit; retry after this many seconds.
    #[error("{message}")]
    TooManyRequests {
        /// What was exceeded.
        message: String,
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// 501: the node does not offer this (a service, a language, a data type).
    #[error("{0}")]
    NotImplemented(String),
    /// 402 with a body beyond `error` (the Compute API's failed job).
    #[error("{message}")]
    PaymentRequiredWith {
        /// The `error` text.
        message: String,
        /// The JSON body (it carries `error` itself).
        body: Vec<u8>,
    },
    /// 503: a dependency (Redis, RPC) is down.
    #[error("{0}")]
    Unavailable(String),
    /// 402 of an x402 route: the requirements travel as headers and body.
    #[error("{}", .0.message)]
    X402(Box<crate::x402::Challenge>),
    /// A refusal whose `error` string is documented by a seed (clients
    /// compare it exactly): `{"error": error, "detail": detail}`.
    #[error("{error}: {detail}")]
    Documented {
        /// Its status code.
        status: StatusCode,
        /// The documented string, exactly.
        error: &'static str,
        /// What exactly was wrong, for a human.
        detail: String,
    },
    /// 500: our own fault.
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl ApiError {
    /// A 500 from any displayable cause (logged, never sent).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(crate::Error::Internal(cause.to_string()))
    }

    /// A 503 for a failed chain read: the client hears only
    /// [`crate::auth::CHAIN_UNAVAILABLE`]; the cause is logged with every URL
    /// in it redacted (provider API keys live in URLs).
    pub fn chain(cause: impl std::fmt::Display) -> Self {
        tracing::error!(
            target: "chainfront::api",
            error = %chainfront_indexer::rpc::redact_urls(&cause.to_string()),
            "chain read failed"
        );
        ApiError::Unavailable(crate::auth::CHAIN_UNAVAILABLE.into())
    }
}

impl From<crate::x402::X402Error> for ApiError {
    fn from(e: crate::x402::X402Error) -> Self {
        use crate::x402::X402Error as E;
        match e {
            E::Required(c) => ApiError::X402(c),
            E::BadRequest(m) => ApiError::BadRequest(m),
            E::Conflict(m) => ApiError::Conflict(m),
            E::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        tracing::error!(target: "chainfront::api", error = %e, "redis error");
        ApiError::Unavailable("state store unavailable; retry shortly".into())
    }
}

impl From<crate::vms::CredentialsError> for ApiError {
    fn from(e: crate::vms::CredentialsError) -> Self {
        use crate::vms::CredentialsError as E;
        match e {
            E::NotFound(_) => ApiError::NotFound(e.to_string()),
            E::Expired { .. } | E::Terminated(_) => ApiError::Forbidden(e.to_string()),
            E::BadRequest(m) => ApiError::BadRequest(m.into()),
            E::Auth(a) => a.into(),
            E::Chain(cause) => ApiError::chain(cause),
            E::Store(r) => r.into(),
            E::Internal(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::X402(c) = self {
            return x402_response(*c);
        }
        let (status, message) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.clone()),
            ApiError::PaymentRequired(m) => (StatusCode::PAYMENT_REQUIRED, m.clone()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            ApiError::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, m.clone()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            ApiError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m.clone()),
            ApiError::TooManyRequests { message, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, message.clone())
            }
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
            ApiError::X402(c) => (StatusCode::PAYMENT_REQUIRED, c.message.clone()),
            ApiError::NotImplemented(m) => (StatusCode::NOT_IMPLEMENTED, m.clone()),
            ApiError::PaymentRequiredWith { body, .. } => {
                return (
                    StatusCode::PAYMENT_REQUIRED,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.clone(),
                )
                    .into_response();
            }
            ApiError::Documented {
                status,
                error,
                detail,
            } => {
                return (*status, Json(json!({ "error": error, "detail": detail })))
                    .into_response();
            }
            ApiError::Internal(cause) => {
                tracing::error!(target: "chainfront::api", error = %cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = &self
            && let Ok(v) = HeaderValue::from_str(&retry_after.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// 402 with `PAYMENT-REQUIRED` (x402 v2), the v1 requirements as the JSON
/// body (its `error` is the usual `{"error"}`), and after a failed settlement
/// the failure as `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`.
fn x402_response(c: crate::x402::Challenge) -> Response {
    let mut response = (StatusCode::PAYMENT_REQUIRED, Json(c.body)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&c.payment_required) {
        headers.insert(crate::x402::proto::PAYMENT_REQUIRED, v);
    }
    if let Some((name, value)) = c.payment_response
        && let Ok(v) = HeaderValue::from_str(&value)
    {
        headers.insert(name, v);
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(crate::x402::EXPOSED_HEADERS),
    );
    response
}

/// Middleware: every error answer that is not already JSON (axum's own
/// extractor rejections, the body limit) becomes `{"error": "<its text>"}`
/// with the same status.
pub async fn json_error_bodies(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REWRAPPED_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// Middleware: at most `api.max_concurrent_requests` requests at once (more
/// wait for a slot), each answered within `api.request_timeout_ms` or with a
/// 503.
pub async fn bounded(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = Duration::from_millis(state.config.api.request_timeout_ms.max(1));
    let work = async {
        let Ok(_slot) = state.inflight.clone().acquire_owned().await else {
            return ApiError::Unavailable("server is shutting down".into()).into_response();
        };
        next.run(req).await
    };
    match tokio::time::timeout(limit, work).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(target: "chainfront::api", timeout_ms = limit.as_millis() as u64, "request timed out");
            ApiError::Unavailable("request timed out; retry shortly".into()).into_response()
        }
    }
}

// ---- Clockchain markets (owned by the markets surface) ----

impl From<crate::markets::MarketsError> for ApiError {
    fn from(e: crate::markets::MarketsError) -> Self {
        use crate::markets::MarketsError as E;
        let documented = |error: &'static str, detail: String| ApiError::Documented {
            status: StatusCode::BAD_REQUEST,
            error,
            detail,
        };
        let message = e.to_string();
        match e {
            E::MissingField(field) => {
                documented("Missing required field", format!("`{field}` is required"))
            }
            E::InvalidSubmissionType => documented(
                "Invalid submission type",
                "submission_type must be \"original\", \"competitor\" or \"null\"".into(),
            ),
            E::InvalidSignature(why) => documented("Invalid signature", why),
            E::InsufficientAmount(why) => documented("Transaction amount insufficient", why),
            E::MarketNotFound | E::SubmissionNotFound => ApiError::NotFound(message),
            E::HashUsed | E::RecordFailed(_) => ApiError::Conflict(message),
            E::NotDeployed | E::Unavailable(_) => ApiError::Unavailable(message),
            E::InvalidField(_)
            | E::MalformedMarketId
            | E::MalformedSubmissionId
            | E::MarketNotOpen(_)
            | E::OriginalExists
            | E::OriginalRequired
            | E::Transaction(_) => ApiError::BadRequest(message),
        }
    }
}
