//! `/admin/*`: bans, failed provisionings, node stats. Every route needs the
//! admin key (`auth::admin`) and is rate limited as `admin`; every action and
//! every refused key is a security event.

use std::collections::HashMap;

use alloy::primitives::Address;
use alloy::primitives::U256;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chainfront_indexer::keys::{ChainKeys, NodeKeys};
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::{Value, json};

use super::vms::parse_token_id;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::limits::{self, ClientIp};
use super::{ApiError, AppState};
use crate::api::openapi::ErrorBody;
use crate::auth::admin::AdminAuthError;
use crate::provision::queue::Queue;

/// The admin routes.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_bans, ban))
        .routes(routes!(unban))
        .routes(routes!(failed))
        .routes(routes!(retry))
        .routes(routes!(stats))
        .routes(routes!(revoke))
}

/// The client IP the rate limiter counts this request under.
type Client = ClientIp;

/// Checks the admin key; a wrong key counts towards the client's ban like a
/// 429 does, so keys cannot be guessed at the route's rate forever.
async fn authorize(
    state: &AppState,
    client: &Client,
    headers: &HeaderMap,
    action: &str,
) -> Result<(), ApiError> {
    if let Err(e) = state.admin_keys.check(headers) {
        tracing::warn!(target: "chainfront::security", event = "admin_auth_failure", action, reason = %e, "admin request refused");
        if matches!(e, AdminAuthError::Invalid) {
            limits::record_violation(state, client.0, "admin_key").await;
        }
        return Err(ApiError::Unauthorized(e.to_string()));
    }
    tracing::info!(target: "chainfront::security", event = "admin_action", action, "admin request");
    Ok(())
}

/// An IP from a request, as the limiter's bucket (IPv6 by /64).
fn parse_ip(raw: &str) -> Result<String, ApiError> {
    let ip: std::net::IpAddr = raw
        .trim_end_matches("/64")
        .parse()
        .map_err(|_| ApiError::BadRequest("not an IP address".into()))?;
    Ok(limits::bucket(ip))
}

/// Current IP bans.
#[utoipa::path(
    get,
    path = "/admin/bans",
    tag = "admin",
    params(("X-Admin-Key" = String, Header, description = "An admin key (or `Authorization: Bearer <key>`)")),
    responses(
        (status = 200, description = "`{bans: [{ip, until, automatic, reason}], asOf}`", body = Value),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn list_bans(
    State(s): State<AppState>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &client, &headers, "list_bans").await?;
    let mut c = s.redis.clone();
    let keys = chainfront_indexer::store::scan(&mut c, &NodeKeys.ip_ban_pattern())
        .await
        .map_err(ApiError::internal)?;
    let now = crate::time::now_iso8601();
    let mut bans = Vec::new();
    for key in keys {
        let (kind, ttl): (Option<String>, i64) = redis::pipe()
            .get(&key)
            .ttl(&key)
            .query_async(&mut c)
            .await?;
        let ip = key
            .strip_prefix("cf:{ip:")
            .and_then(|r| r.strip_suffix("}:ban"))
            .unwrap_or_default()
            .to_owned();
        let until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64 + ttl.max(0))
            .ok()
            .and_then(crate::time::iso8601);
        bans.push(json!({
            "ip": ip,
            "until": until,
            "automatic": kind.as_deref() == Some("auto"),
            "reason": kind,
        }));
    }
    Ok(Json(json!({ "bans": bans, "asOf": now })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BanRequest {
    ip: String,
    #[serde(default)]
    duration_secs: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

/// Bans an IP.
#[utoipa::path(
    post,
    path = "/admin/bans",
    tag = "admin",
    params(("X-Admin-Key" = String, Header, description = "An admin key (or `Authorization: Bearer <key>`)")),
    request_body = BanRequest,
    responses(
        (status = 200, description = "`{ip, bannedForSecs}`", body = Value),
        (status = 400, description = "Malformed body or IP", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn ban(
    State(s): State<AppState>,
    client: Client,
    headers: HeaderMap,
    body: Result<Json<BanRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &client, &headers, "ban").await?;
    let Json(req) = body.map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    let ip = parse_ip(&req.ip)?;
    let secs = req
        .duration_secs
        .unwrap_or(s.config.rate_limits.ban_secs)
        .max(1);
    let reason = req.reason.unwrap_or_else(|| "manual".into());
    if reason.len() > 200 {
        return Err(ApiError::BadRequest(
            "reason is longer than 200 characters".into(),
        ));
    }
    let mut c = s.redis.clone();
    let _: () = c.set_ex(NodeKeys.ip_ban(&ip), &reason, secs).await?;
    tracing::warn!(target: "chainfront::security", event = "ban", ip = %ip, secs, "IP banned by an admin");
    Ok(Json(json!({ "ip": ip, "bannedForSecs": secs })))
}

/// Lifts an IP's ban.
#[utoipa::path(
    delete,
    path = "/admin/bans/{ip}",
    tag = "admin",
    params(("ip" = String, Path, description = "The banned IP"), ("X-Admin-Key" = String, Header, description = "An admin key (or `Authorization: Bearer <key>`)")),
    responses(
        (status = 200, description = "`{ip, wasBanned}`", body = Value),
        (status = 400, description = "Not an IP", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn unban(
    State(s): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &client, &headers, "unban").await?;
    let ip = parse_ip(&raw)?;
    let mut c = s.redis.clone();
    let removed: u32 = c
        .del(&[NodeKeys.ip_ban(&ip), NodeKeys.ip_violations(&ip)])
        .await?;
    tracing::warn!(target: "chainfront::security", event = "unban", ip = %ip, "IP unbanned by an admin");
    Ok(Json(json!({ "ip": ip, "wasBanned": removed > 0 })))
}

fn queue(s: &AppState) -> Queue {
    Queue::new(s.redis.clone(), ChainKeys::new(s.home.deployment.chain_id))
}

/// Provisionings that ran out of retries.
#[utoipa::path(
    get,
    path = "/admin/provisionings/failed",
    tag = "admin",
    params(("X-Admin-Key" = String, Header, description = "An admin key (or `Authorization: Bearer <key>`)")),
    responses(
        (status = 200, description = "`{failed: [{tokenId, attempts, lastError, updatedAt}]}`", body = Value),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn failed(
    State(s): State<AppState>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &client, &headers, "list_failed_provisionings").await?;
    let q = queue(&s);
    let mut out = Vec::new();
    for id in q.failed().await.map_err(ApiError::internal)? {
        let rec = q
            .record(id)
            .await
            .map_err(ApiError::internal)?
            .unwrap_or_default();
        out.push(json!({
            "tokenId": id.to_string(),
            "attempts": rec.attempts,
            "lastError": rec.last_error,
            "updatedAt": rec.updated_at,
        }));
    }
    Ok(Json(json!({ "failed": out })))
}

/// Queues a failed provisioning again.
#[utoipa::path(
    post,
    path = "/admin/provisionings/{token_id}/retry",
    tag = "admin",
    params(("token_id" = String, Path, description = "The VM NFT's token id"), ("X-Admin-Key" = String, Header, description = "An admin key (or `Authorization: Bearer <key>`)")),
    responses(
        (status = 200, description = "`{tokenId, status: \"queued\"}`", body = Value),
        (status = 400, description = "Not a token id", body = ErrorBody),
        (status = 409, description = "No failed provisioning for this token", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn retry(
    State(s): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &client, &headers, "retry_provisioning").await?;
    let id: U256 = parse_token_id(&raw)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if !queue(&s)
        .retry(id, now_ms)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::Conflict(format!(
            "VM #{id} has no failed provisioning to retry"
        )));
    }
    Ok(Json(
        json!({ "tokenId": id.to_string(), "status": "queued" }),
    ))
}

/// Node statistics.
#[utoipa::path(
    get,
    path = "/admin/stats",
    tag = "admin",
    params(("X-Admin-Key" = String, Header, description = "An admin key (or `Authorization: Bearer <key>`)")),
    responses(
        (status = 200, description = "`{vms, failedProvisionings, bans, indexedBlock, headBlock, uptimeSecs}`", body = Value),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn stats(
    State(s): State<AppState>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &client, &headers, "stats").await?;
    let keys = ChainKeys::new(s.home.deployment.chain_id);
    let mut c = s.redis.clone();
    let (vms, failed, checkpoint): (u64, u64, HashMap<String, String>) = redis::pipe()
        .scard(keys.vms())
        .scard(keys.provision_failed())
        .hgetall(keys.checkpoint())
        .query_async(&mut c)
        .await?;
    let bans = chainfront_indexer::store::scan(&mut c, &NodeKeys.ip_ban_pattern())
        .await
        .map_err(ApiError::internal)?
        .len();
    Ok(Json(json!({
        "vms": vms,
        "failedProvisionings": failed,
        "bans": bans,
        "indexedBlock": checkpoint.get("number").and_then(|n| n.parse::<u64>().ok()),
        "headBlock": s.chain_head.load(std::sync::atomic::Ordering::Relaxed),
        "uptimeSecs": s.metrics.uptime_secs(),
    })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    /// The wallet whose sign-in tokens are revoked.
    address: String,
}

/// Revokes every sign-in token a wallet holds (it signs in again for a new one).
#[utoipa::path(
    post,
    path = "/admin/revocations",
    tag = "admin",
    params(("X-Admin-Key" = String, Header, description = "An admin key (or `Authorization: Bearer <key>`)")),
    request_body = RevokeRequest,
    responses(
        (status = 200, description = "`{address, notBefore}`: tokens issued at or before `notBefore` are refused", body = Value),
        (status = 400, description = "Malformed body or address", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn revoke(
    State(s): State<AppState>,
    client: Client,
    headers: HeaderMap,
    body: Result<Json<RevokeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &client, &headers, "revoke_tokens").await?;
    let Json(req) = body.map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    let address: Address = super::vms::parse_address(&req.address)?;
    let not_before = s.auth.revoke(address).await?;
    Ok(Json(json!({
        "address": address.to_checksum(None),
        "notBefore": i64::try_from(not_before).ok().and_then(crate::time::iso8601),
    })))
}
