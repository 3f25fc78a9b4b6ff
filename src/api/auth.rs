//! Wallet sign-in routes: `GET /auth/nonce` hands out a single-use server
//! nonce, `POST /auth/login` trades a signed EIP-4361 (Sign-In with Ethereum)
//! message for an HS256 JWT usable as `Authorization: Bearer` on every route
//! that acts for a wallet. The same routes are served under `/v1/auth/*`. The
//! checks themselves live in `crate::auth`.

use axum::Json;
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

/// `/auth/nonce`, `/auth/login` and their `/v1/auth/*` twins.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(nonce))
        .routes(routes!(login))
        .routes(routes!(nonce_v1))
        .routes(routes!(login_v1))
}

/// Body of `POST /auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The EIP-4361 message, exactly as signed.
    message: String,
    /// Its EIP-191 signature, hex (with or without `0x`).
    signature: String,
}

/// A JSON answer that no cache may keep (nonces, tokens and keys are
/// single-client secrets).
pub fn no_store(body: Value) -> Response {
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

async fn issue_nonce(state: &AppState) -> Result<Response, ApiError> {
    let issued = state.auth.issue_nonce().await?;
    Ok(no_store(json!({
        "nonce": issued.nonce,
        "expiresAt": iso(issued.expires_at),
        "domain": state.auth.domain(),
        "chainId": state.auth.chain_id(),
    })))
}

async fn sign_in(state: &AppState, req: Login) -> Result<Response, ApiError> {
    let issued = state.auth.login(&req.message, &req.signature).await?;
    Ok(no_store(json!({
        "token": issued.token,
        "expiresAt": iso(issued.expires_at),
    })))
}

/// A single-use server nonce for a sign-in message (and the domain and chain
/// id the message must name).
#[utoipa::path(
    get,
    path = "/auth/nonce",
    tag = "auth",
    responses(
        (status = 200, description = "`{nonce, expiresAt, domain, chainId}`", body = Value),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn nonce(State(state): State<AppState>) -> Result<Response, ApiError> {
    issue_nonce(&state).await
}

/// Trades a signed EIP-4361 sign-in message for a JWT.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "`{token, expiresAt}`: an HS256 JWT for `Authorization: Bearer`", body = Value),
        (status = 400, description = "Malformed JSON or not an EIP-4361 message", body = ErrorBody),
        (status = 401, description = "Wrong domain, URI or chain; expired or not yet valid; unknown or reused nonce; bad signature", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, unknown or mistyped fields", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn login(
    State(state): State<AppState>,
    Json(req): Json<Login>,
) -> Result<Response, ApiError> {
    sign_in(&state, req).await
}

/// `/auth/nonce` under `/v1`.
#[utoipa::path(
    get,
    path = "/v1/auth/nonce",
    tag = "auth",
    responses(
        (status = 200, description = "`{nonce, expiresAt, domain, chainId}`", body = Value),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn nonce_v1(State(state): State<AppState>) -> Result<Response, ApiError> {
    issue_nonce(&state).await
}

/// `/auth/login` under `/v1`.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "`{token, expiresAt}`", body = Value),
        (status = 400, description = "Malformed JSON or not an EIP-4361 message", body = ErrorBody),
        (status = 401, description = "Refused sign-in", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, unknown or mistyped fields", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn login_v1(
    State(state): State<AppState>,
    Json(req): Json<Login>,
) -> Result<Response, ApiError> {
    sign_in(&state, req).await
}
