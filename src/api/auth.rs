//! Wallet sign-in routes: `GET /auth/nonce` hands out a single-use server
//! nonce, `POST /auth/login` trades a signed sign-in message (format in
//! `crate::auth::login`) for an HS256 JWT usable as `Authorization: Bearer`.
//! The checks themselves live in `crate::auth`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};
use crate::api::openapi::ErrorBody;
use crate::time::iso8601;

/// `/auth/nonce` and `/auth/login`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(nonce))
        .routes(routes!(login))
}

/// Body of `POST /auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Login {
    address: String,
    message: String,
    signature: String,
}

/// A JSON answer that no cache may keep (nonces and tokens are single-client).
fn no_store(body: Value) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn iso(unix: u64) -> Value {
    i64::try_from(unix)
        .ok()
        .and_then(iso8601)
        .map_or(Value::Null, Value::String)
}

/// A single-use server nonce to sign.
#[utoipa::path(
    get,
    path = "/auth/nonce",
    tag = "auth",
    responses(
        (status = 200, description = "`{nonce, expiresAt}`", body = Value),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn nonce(State(state): State<AppState>) -> Result<Response, ApiError> {
    let issued = state.auth.issue_nonce().await?;
    Ok(no_store(json!({
        "nonce": issued.nonce,
        "expiresAt": iso(issued.expires_at),
    })))
}

/// Trades a signed sign-in message for a JWT.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "`{token, expiresAt}`: an HS256 JWT for `Authorization: Bearer`", body = Value),
        (status = 400, description = "Malformed body or message", body = ErrorBody),
        (status = 401, description = "Bad signature, stale or reused nonce", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn login(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    // Parsed by hand so a malformed body is a 400 in the usual error shape.
    let req: Login = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be JSON {{\"address\", \"message\", \"signature\"}}: {e}"
        ))
    })?;
    let issued = state
        .auth
        .login(&req.address, &req.message, &req.signature)
        .await?;
    Ok(no_store(json!({
        "token": issued.token,
        "expiresAt": iso(issued.expires_at),
    })))
}
