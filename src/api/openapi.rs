//! The OpenAPI 3.1 description of every route, served at `/openapi.json`.
//!
//! Routes are only ever added through `utoipa_axum`'s `routes!` (each handler
//! carries its `#[utoipa::path]`), so a route cannot exist without its
//! description; the integration test `openapi::every_route_is_documented`
//! checks both directions (no bare `.route(` in `src/`, and every documented
//! path and method is served).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::AppState;

/// The document's fixed parts; paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "chainfront",
        description = "A Base node for VM NFTs bought with USDC, USDC deposits and prediction-market stakes: chain-derived state served over REST with wallet signatures.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "node", description = "Health, metrics and this document"),
        (name = "vms", description = "ClawCloud VM routes: tiers, VMs, credentials, agent wallets"),
        (name = "auth", description = "Wallet sign-in"),
        (name = "admin", description = "Operator routes (admin key)"),
        (name = "compute", description = "Compute API: USDC deposits, balances, paid jobs"),
        (name = "x402", description = "Paid routes: x402 payments in USDC, verified and settled by the node (docs/x402.md)"),
        (name = "markets", description = "Clockchain prediction markets at /v1, /ai_agent/v1 and /api/chain/v1: markets, submissions, fees"),
    )
)]
pub struct ApiDoc;

/// Every error answer: `{"error": "human-readable message"}`. Where a seed
/// documents the error string (Clockchain's `Missing required field`, …),
/// `error` is exactly that string and `detail` says what was wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human (or the documented string, exactly).
    pub error: String,
    /// With a documented `error` string: the particulars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The document as `/openapi.json` serves it. Serialising a document built
/// from our own types cannot fail; an empty body would still be answered
/// rather than panicking.
pub fn serialize(doc: &utoipa::openapi::OpenApi) -> Bytes {
    doc.to_json().unwrap_or_default().into()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "node",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json"))
)]
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    // Set by `api::router`; built here only for a router assembled otherwise.
    let doc = state
        .openapi
        .get_or_init(|| serialize(&super::openapi_document(&state)))
        .clone();
    let mut response = doc.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
