//! The only place an error becomes a status code and an `{"error": ...}` body.
//! 5xx answers carry a generic message; the cause is logged, not sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
    /// 503: a dependency (Redis, RPC) is down.
    #[error("{0}")]
    Unavailable(String),
    /// 402 of an x402 route: the requirements travel as headers and body.
    #[error("{}", .0.message)]
    X402(Box<crate::x402::Challenge>),
    /// 500: our own fault.
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl ApiError {
    /// A 500 from any displayable cause (logged, never sent).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(crate::Error::Internal(cause.to_string()))
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

// ---- Clockchain markets (owned by the markets surface) ----

impl From<crate::markets::MarketsError> for ApiError {
    fn from(e: crate::markets::MarketsError) -> Self {
        use crate::markets::MarketsError as E;
        let message = e.to_string();
        match e {
            E::MarketNotFound | E::SubmissionNotFound => ApiError::NotFound(message),
            E::HashUsed | E::RecordFailed(_) => ApiError::Conflict(message),
            E::NotDeployed | E::Unavailable(_) => ApiError::Unavailable(message),
            E::MissingField(_)
            | E::InvalidField(_)
            | E::InvalidSubmissionType
            | E::MalformedMarketId
            | E::MalformedSubmissionId
            | E::MarketNotOpen(_)
            | E::OriginalExists
            | E::OriginalRequired
            | E::InvalidSignature(_)
            | E::Transaction(_)
            | E::InsufficientAmount(_) => ApiError::BadRequest(message),
        }
    }
}
