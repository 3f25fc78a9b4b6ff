//! Clockchain's prediction-market routes, served at `/v1`, `/ai_agent/v1`
//! and `/api/chain/v1` (same handlers, one router nested three times):
//! health, markets, submissions, fees. Handlers only parse, call
//! `crate::markets` and let `api::error` map its errors.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use super::limits::{self, RouteClass};
use super::{ApiError, AppState};
use crate::api::openapi::ErrorBody;
use crate::markets::MarketsError;
use crate::markets::index::{MarketStatus, parse_market_id};
use crate::markets::submit::Outcome;

/// The prefixes the same routes are served under: the document's `/v1`, its
/// examples' `/ai_agent/v1` and its base URL `/api/chain/v1`.
pub const PREFIXES: [&str; 3] = ["/v1", "/ai_agent/v1", "/api/chain/v1"];

/// How long a dependency probe of `/v1/health` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every Clockchain route under every prefix, each group under its rate-limit class.
///
/// Each prefix's routes are registered at their full paths (`/v1/markets`)
/// rather than nested: axum serves a nested route through a `StripPrefix`
/// (a new `Uri` per request) and a `SetNestedPath` layer, which every
/// request paid for nothing (no handler here reads the stripped path;
/// `MatchedPath` is the full path either way). The OpenAPI document is the
/// same as nesting would make it.
pub(super) fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let mut all = OpenApiRouter::new();
    for (i, prefix) in PREFIXES.iter().enumerate() {
        let mut r = one_prefix(state, prefix);
        if i > 0 {
            // OpenAPI wants unique operation ids: the aliases get a suffix.
            let suffix = prefix.trim_matches('/').replace('/', "_");
            for item in r.get_openapi_mut().paths.paths.values_mut() {
                for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                    if let Some(id) = &mut op.operation_id {
                        id.push_str(&format!("_{suffix}"));
                    }
                }
            }
        }
        all = all.merge(r);
    }
    all
}

/// `routes` (one `routes!`) served under `prefix`: its paths prefixed.
fn at(prefix: &str, routes: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, method_router) = routes;
    paths.paths = std::mem::take(&mut paths.paths)
        .into_iter()
        .map(|(path, item)| (format!("{prefix}{path}"), item))
        .collect();
    (schemas, paths, method_router)
}

fn one_prefix(state: &AppState, prefix: &str) -> OpenApiRouter<AppState> {
    let limited = |r: OpenApiRouter<AppState>, class: RouteClass| limits::limit(r, state, class);
    OpenApiRouter::new()
        .routes(at(prefix, routes!(health)))
        .merge(limited(
            OpenApiRouter::new()
                .routes(at(prefix, routes!(list_markets)))
                .routes(at(prefix, routes!(get_market)))
                .routes(at(prefix, routes!(market_resolution))),
            RouteClass::Markets,
        ))
        .merge(limited(
            OpenApiRouter::new().routes(at(prefix, routes!(market_submissions))),
            RouteClass::MarketSubmissions,
        ))
        .merge(limited(
            OpenApiRouter::new().routes(at(prefix, routes!(get_submission))),
            RouteClass::SubmissionStatus,
        ))
        .merge(limited(
            OpenApiRouter::new().routes(at(prefix, routes!(calculate_fees))),
            RouteClass::CalculateFees,
        ))
        .merge(limited(
            OpenApiRouter::new().routes(at(prefix, routes!(create_submission))),
            RouteClass::Submissions,
        ))
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body must be a JSON object: {e}")))
}

fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

fn market_id(raw: &str) -> Result<crate::markets::index::MarketId, ApiError> {
    parse_market_id(raw).ok_or_else(|| MarketsError::MalformedMarketId.into())
}

/// The Clockchain health answer (the Compute API adds its own fields here).
#[utoipa::path(
    get,
    path = "/health",
    tag = "markets",
    responses(
        (status = 200, description = "`{status, api_version, timestamp, rate_limit, treasury, chain_id}` and the Compute API's `{service, version, uptime, activeJobs}`: `treasury` is where stakes are paid (the `SubmissionStakes` escrow: plain ETH or cbBTC transfers)", body = Value,
         example = json!({"status": "healthy", "api_version": "v1", "timestamp": "2025-07-21T12:00:00.000Z", "rate_limit": "10 per minute for submissions", "treasury": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "chain_id": 8453})),
        (status = 503, description = "Redis or the RPC is down: `status` is `degraded`", body = Value),
    )
)]
async fn health(State(state): State<AppState>) -> Response {
    let mut redis = state.redis.clone();
    let ping_cmd = redis::cmd("PING");
    let ping = tokio::time::timeout(PROBE_TIMEOUT, ping_cmd.query_async::<String>(&mut redis));
    // The chain probe `/health` shares: the failover client, at most once
    // a second however many callers ask.
    let head = state.health_cache.head(&state);
    let (ping, head) = tokio::join!(ping, head);
    let healthy = matches!(ping, Ok(Ok(_))) && head.is_some();
    let limit = RouteClass::Submissions.limit(&state.config.rate_limits);
    let rate_limit = if limit.window_secs == 60 {
        format!("{} per minute for submissions", limit.requests)
    } else {
        format!(
            "{} per {} seconds for submissions",
            limit.requests, limit.window_secs
        )
    };
    let mut body = json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "api_version": "v1",
        "timestamp": crate::markets::view::iso_millis_now(),
        "rate_limit": rate_limit,
        "treasury": state.markets.treasury().map(|a| a.to_string()),
        "chain_id": state.home.deployment.chain_id,
    });
    // The Compute API's fields: service, version, uptime, activeJobs.
    if let Value::Object(m) = &mut body {
        m.extend(super::compute::health_fields(&state).await);
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Markets, by status.
#[utoipa::path(
    get,
    path = "/markets",
    tag = "markets",
    params(("status" = Option<String>, Query, description = "`upcoming`, `active` (the default: markets accepting submissions), `closed`, `resolved`, a comma-separated list of them, or `all`")),
    responses(
        (status = 200, description = "`{markets: [{market_id, actor {id, name}, start_time, end_time, oracle_wallets, existing_submissions, has_original, status, created_at}], count}`; status is judged by the head block's timestamp", body = Value,
         example = json!({"markets": [{"market_id": "123e4567-e89b-12d3-a456-426614174000", "actor": {"id": "actor-uuid", "name": "Actor Name"}, "start_time": "2025-07-21T10:00:00.000Z", "end_time": "2025-07-21T14:00:00.000Z", "oracle_wallets": ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"], "existing_submissions": 3, "has_original": true, "status": "active", "created_at": "2025-07-21T09:00:00.000Z"}], "count": 1})),
        (status = 400, description = "Unknown status", body = ErrorBody),
        (status = 429, description = "Over the rate limit (60/min)", body = ErrorBody),
    )
)]
async fn list_markets(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let statuses = parse_statuses(query.get("status").map(String::as_str))?;
    // Keyed by the index version and the head time, so a cached list is
    // never older than the state it shows (a client that just saw its
    // submission recorded sees it counted here too).
    let (version, now) =
        tokio::try_join!(state.markets.index_version(), state.markets.chain_now())?;
    // One allocation: `markets:<status,...>:<version>:<now>`.
    let mut cache_key = String::with_capacity(96);
    cache_key.push_str("markets:");
    for (i, s) in statuses.iter().enumerate() {
        if i > 0 {
            cache_key.push(',');
        }
        cache_key.push_str(s.as_str());
    }
    let _ = write!(cache_key, ":{version}:{now}");
    if let Some(hit) = state.read_cache.get(&cache_key) {
        return Ok(hit);
    }
    let list = state.markets.list(&statuses).await?;
    let value = serde_json::to_value(&list).map_err(ApiError::internal)?;
    Ok(state.read_cache.put(cache_key, &value))
}

fn parse_statuses(raw: Option<&str>) -> Result<Vec<MarketStatus>, ApiError> {
    let raw = raw.map(str::trim).filter(|s| !s.is_empty());
    let Some(raw) = raw else {
        return Ok(vec![MarketStatus::Active]);
    };
    if raw == "all" {
        return Ok(MarketStatus::ALL.to_vec());
    }
    let mut out = Vec::new();
    for part in raw.split(',') {
        let s = MarketStatus::parse(part.trim()).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Invalid status `{part}`: use upcoming, active, closed, resolved (comma-separated) or all"
            ))
        })?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out.sort_by_key(|s| MarketStatus::ALL.iter().position(|x| x == s));
    Ok(out)
}

/// One market with its resolution.
#[utoipa::path(
    get,
    path = "/markets/{market_id}",
    tag = "markets",
    params(("market_id" = String, Path, description = "The market's UUID")),
    responses(
        (status = 200, description = "The market (as listed) plus `resolution`", body = Value),
        (status = 400, description = "Malformed market id", body = ErrorBody),
        (status = 404, description = "`Market not found`", body = ErrorBody),
        (status = 429, description = "Over the rate limit (60/min)", body = ErrorBody),
    )
)]
async fn get_market(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = market_id(&path_param(id)?)?;
    let view = state.markets.market(id).await?;
    Ok(Json(
        serde_json::to_value(view).map_err(ApiError::internal)?,
    ))
}

/// A market's resolution: winner, resolving oracle, payouts claimed per currency.
#[utoipa::path(
    get,
    path = "/markets/{market_id}/resolution",
    tag = "markets",
    params(("market_id" = String, Path, description = "The market's UUID")),
    responses(
        (status = 200, description = "`{resolved, winning_submission_id, winner, resolved_by, resolved_block, resolved_at, payouts_claimed: {ETH: \"0.2\"}}`", body = Value),
        (status = 400, description = "Malformed market id", body = ErrorBody),
        (status = 404, description = "`Market not found`", body = ErrorBody),
        (status = 429, description = "Over the rate limit (60/min)", body = ErrorBody),
    )
)]
async fn market_resolution(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = market_id(&path_param(id)?)?;
    let view = state.markets.resolution(id).await?;
    Ok(Json(
        serde_json::to_value(view).map_err(ApiError::internal)?,
    ))
}

/// Every submission of a market.
#[utoipa::path(
    get,
    path = "/markets/{market_id}/submissions",
    tag = "markets",
    params(("market_id" = String, Path, description = "The market's UUID")),
    responses(
        (status = 200, description = "`{market_id, status, submissions: [{submission_id, market_id, creator_wallet, submission_type, predicted_text, initial_stake_amount, platform_fee_amount, currency, transaction_hash, record_transaction_hash, block, created_at, status}], count}`", body = Value),
        (status = 400, description = "Malformed market id", body = ErrorBody),
        (status = 404, description = "`Market not found`", body = ErrorBody),
        (status = 429, description = "Over the rate limit (60/min)", body = ErrorBody),
    )
)]
async fn market_submissions(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = market_id(&path_param(id)?)?;
    let view = state.markets.market_submissions(id).await?;
    Ok(Json(
        serde_json::to_value(view).map_err(ApiError::internal)?,
    ))
}

fn outcome_response(
    outcome: Outcome,
    created: bool,
    status_url: impl FnOnce(&str) -> String,
) -> Response {
    match outcome {
        Outcome::Recorded(view) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(view)).into_response()
        }
        Outcome::Accepted(accepted) => {
            let url = status_url(&accepted.transaction_hash);
            let mut body = serde_json::to_value(&accepted).unwrap_or_default();
            body["status_url"] = Value::String(url.clone());
            let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&url) {
                response
                    .headers_mut()
                    .insert(axum::http::header::LOCATION, v);
            }
            response
        }
    }
}

/// The prefix a request came in under (`/v1`, `/ai_agent/v1`, ...).
fn prefix_of(path: Option<&MatchedPath>) -> &'static str {
    let path = path.map_or("", MatchedPath::as_str);
    PREFIXES
        .iter()
        .rev()
        .find(|p| path.starts_with(*p))
        .copied()
        .unwrap_or(PREFIXES[0])
}

/// A submission by number, or the status of a `POST /v1/submissions` by its
/// payment transaction hash.
#[utoipa::path(
    get,
    path = "/submissions/{id}",
    tag = "markets",
    params(("id" = String, Path, description = "A submission id (decimal), or the `0x` payment transaction hash of a POST (its status URL)")),
    responses(
        (status = 200, description = "The submission: `{submission_id, market_id, creator_wallet, submission_type, predicted_text, initial_stake_amount, platform_fee_amount, currency, transaction_hash, record_transaction_hash, block, created_at, status: \"recorded\", is_winner, resolution}`", body = Value),
        (status = 202, description = "Accepted, not on chain / indexed yet: `{status: pending|sent|recorded|direct, transaction_hash, status_url, ...}`", body = Value),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "`Submission not found`", body = ErrorBody),
        (status = 409, description = "The submission could not be recorded (the reason is given)", body = ErrorBody),
        (status = 429, description = "Over the rate limit (60/min)", body = ErrorBody),
    )
)]
async fn get_submission(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    let outcome = state.markets.submission_or_status(&id).await?;
    let prefix = prefix_of(matched.as_ref());
    Ok(outcome_response(outcome, false, |tx| {
        format!("{prefix}/submissions/{tx}")
    }))
}

/// What a stake costs: stake, fee at the contract's rate, total to pay.
#[utoipa::path(
    post,
    path = "/calculate_fees",
    tag = "markets",
    request_body(content = Value, description = "`{\"initial_stake_amount\": \"0.5\", \"currency\": \"ETH\"}` (amount as a decimal string; ETH 18 and BTC 8 decimal places)"),
    responses(
        (status = 200, description = "Decimal strings, exact", body = Value,
         example = json!({"initial_stake_amount": "0.5", "platform_fee_percentage": "7.0", "platform_fee_amount": "0.035", "total_required": "0.535", "currency": "ETH"})),
        (status = 400, description = "Missing, non-numeric, zero, negative or over-precise amount; unknown currency", body = ErrorBody),
        (status = 429, description = "Over the rate limit (60/min)", body = ErrorBody),
    )
)]
async fn calculate_fees(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let json = state.markets.calculate_fees_json(&body).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response())
}

/// Create a submission paid by a confirmed transaction.
#[utoipa::path(
    post,
    path = "/submissions",
    tag = "markets",
    request_body(content = Value, description = "`{market_id, creator_wallet, predicted_text (null for null submissions), submission_type, initial_stake_amount, currency, transaction_hash, signature}`; the signature is `creator_wallet`'s over `{market_id}:{predicted_text or 'null'}:{initial_stake_amount}:{transaction_hash}`, as EIP-191 personal_sign or a raw signature of its keccak256, hex with or without 0x. The transaction pays stake + fee to `treasury` (/v1/health) or calls SubmissionStakes.submit."),
    responses(
        (status = 201, description = "The transaction called `submit`: the indexed submission", body = Value),
        (status = 202, description = "Accepted: a plain transfer the node now records on chain (or a submit not indexed yet); poll `status_url` (also in `Location`)", body = Value),
        (status = 400, description = "`Missing required field`, `Invalid submission type`, `Market already has original`, `Transaction amount insufficient`, `Invalid signature`, a closed market, an unconfirmed, failed or foreign transaction", body = ErrorBody),
        (status = 404, description = "`Market not found`", body = ErrorBody),
        (status = 409, description = "Transaction hash already used", body = ErrorBody),
        (status = 429, description = "Over the rate limit (10/min per IP and per wallet)", body = ErrorBody),
    )
)]
async fn create_submission(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let prepared = state.markets.prepare(&body).await?;
    let quota =
        match limits::enforce_wallet(&state, RouteClass::Submissions, prepared.wallet()).await {
            Ok(q) => q,
            Err(too_many) => return Ok(too_many),
        };
    let prefix = prefix_of(matched.as_ref());
    let mut response = match state.markets.commit(&prepared).await {
        Ok(outcome) => outcome_response(outcome, true, |tx| format!("{prefix}/submissions/{tx}")),
        Err(e) => ApiError::from(e).into_response(),
    };
    quota.apply(&mut response);
    Ok(response)
}
