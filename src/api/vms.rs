//! ClawCloud's VM routes: `/tiers`, `/vms/:address`, `/status/:tokenId`,
//! `/credentials/:tokenId` and `/agents/generate-wallet`, read from the indexed
//! state (`docs/state.md`) and the provisioning records. Thin handlers: the
//! credential rules live in `crate::vms`, the signature checks in `crate::auth`.
//!
//! `/credentials` costs at most two Redis round trips: one pipelined read of
//! the VM, its provisioning record and the indexer checkpoint (one hash slot),
//! and, with one-time delivery, one write that erases the key. Signature
//! recovery and the ECIES open of the stored key are the rest of its cost.

use chainfront_indexer::conn::RedisConn;
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chainfront_indexer::keys::{ChainKeys, NodeKeys, lower};
use redis::AsyncCommands;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};
use crate::api::openapi::ErrorBody;
use crate::crypto::wallet::AgentWallet;
use crate::provision::queue::{Record, Status};
use crate::provision::vm_type;
use crate::vms::{Checked, Delivery};

/// How long public reads serve from memory (the document: "cache tier pricing").
const READ_TTL: Duration = Duration::from_secs(1);

/// The routes, each under its own rate-limit class (applied in `api::router`).
pub(super) fn tiers_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(tiers))
}

pub(super) fn vms_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(vms))
}

pub(super) fn status_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status))
}

pub(super) fn credentials_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(credentials))
}

pub(super) fn wallet_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(generate_wallet))
}

/// Public read answers (`/tiers`, `/vms/:address`) kept for [`READ_TTL`]:
/// the index itself trails the chain by a poll interval, so a second more
/// costs clients nothing and spares Redis under load.
/// Entries hold the serialized body, so a hit is a map lookup and a
/// reference-counted copy: no JSON work per request.
#[derive(Default)]
pub struct ReadCache(RwLock<HashMap<String, (Instant, Bytes)>>);

/// Entries before the cache is cleared (bounds memory under address scans).
const READ_CACHE_MAX: usize = 10_000;

impl ReadCache {
    /// A fresh cached answer for `key`.
    pub(crate) fn get(&self, key: &str) -> Option<Response> {
        let map = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key)
            .filter(|(at, _)| at.elapsed() < READ_TTL)
            .map(|(_, body)| json_response(body.clone()))
    }

    /// Serializes `value`, keeps it and answers it.
    pub(crate) fn put(&self, key: String, value: &Value) -> Response {
        let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= READ_CACHE_MAX {
            map.clear();
        }
        map.insert(key, (Instant::now(), body.clone()));
        json_response(body)
    }
}

fn json_response(body: Bytes) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The members of a set of ids that parse, in ascending order.
async fn sorted_members<T: std::str::FromStr + Ord>(
    c: &mut RedisConn,
    key: String,
) -> Result<Vec<T>, ApiError> {
    let mut ids: Vec<T> = c
        .smembers::<_, Vec<String>>(key)
        .await?
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Runs a pipeline of `HGETALL`s; an empty one is an error in redis-rs, so
/// with nothing to read there is no call.
async fn hashes(
    pipe: redis::Pipeline,
    empty: bool,
    c: &mut RedisConn,
) -> Result<Vec<HashMap<String, String>>, ApiError> {
    if empty {
        return Ok(Vec::new());
    }
    Ok(pipe.query_async(c).await?)
}

fn keys(state: &AppState) -> ChainKeys {
    ChainKeys::new(state.home.deployment.chain_id)
}

/// A token id from the path: decimal, at most 78 digits (`uint256`).
pub(super) fn parse_token_id(raw: &str) -> Result<U256, ApiError> {
    if raw.is_empty() || raw.len() > 78 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest(
            "tokenId must be a decimal NFT token id".into(),
        ));
    }
    raw.parse()
        .map_err(|_| ApiError::BadRequest("tokenId is out of range for uint256".into()))
}

/// A wallet address from the path: `0x` + 40 hex digits.
pub(super) fn parse_address(raw: &str) -> Result<Address, ApiError> {
    let hex = raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X"));
    match hex {
        Some(h) if h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()) => raw
            .parse()
            .map_err(|_| ApiError::BadRequest("address is not a valid wallet address".into())),
        _ => Err(ApiError::BadRequest(
            "address must be a 0x-prefixed 40-hex-digit wallet address".into(),
        )),
    }
}

/// USDC base units (6 decimals) as a decimal string with at least 2 places.
fn usdc(base_units: u128) -> String {
    let mut d = Decimal::from_i128_with_scale(base_units as i128, 6).normalize();
    if d.scale() < 2 {
        d.rescale(2);
    }
    d.to_string()
}

fn wall_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// "Now" for expiry: the later of the wall clock and the head block's time, so
/// the API agrees with `isTokenValid` (which uses `block.timestamp`).
fn now_secs(state: &AppState) -> u64 {
    wall_secs().max(state.chain_time.load(Ordering::Relaxed))
}

fn iso(unix: u64) -> Value {
    i64::try_from(unix)
        .ok()
        .and_then(crate::time::iso8601)
        .map_or(Value::Null, Value::String)
}

fn num(h: &HashMap<String, String>, k: &str) -> u64 {
    h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A token id as a JSON number when it fits, else a string.
fn token_json(id: U256) -> Value {
    u64::try_from(id).map_or_else(|_| Value::String(id.to_string()), Value::from)
}

/// The public status of a VM: ClawCloud's provisioning | running | terminated | expired.
fn vm_status(vm: &HashMap<String, String>, rec: Option<&Record>, now: u64) -> &'static str {
    let status = rec.map(Record::status);
    if status == Some(Status::Terminated) {
        return "terminated";
    }
    if num(vm, "expires_at") <= now || status == Some(Status::Expired) {
        return "expired";
    }
    if status == Some(Status::Running) {
        "running"
    } else {
        "provisioning"
    }
}

/// The VM tiers and their prices.
#[utoipa::path(
    get,
    path = "/tiers",
    tag = "vms",
    responses(
        (status = 200, description = "`[{tier, name, pricePerDay, pricePerMonth, active}]` from the indexed `TierUpdated` events (USDC decimal strings; a month is 30 days)", body = Value,
         example = json!([{"tier": 0, "name": "Nano", "pricePerDay": "0.50", "pricePerMonth": "15.00", "active": true}])),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn tiers(State(state): State<AppState>) -> Result<Response, ApiError> {
    if let Some(hit) = state.read_cache.get("tiers") {
        return Ok(hit);
    }
    let k = keys(&state);
    let mut c = state.redis.clone();
    let ids: Vec<u8> = sorted_members(&mut c, k.tiers()).await?;
    let mut pipe = redis::pipe();
    for t in &ids {
        pipe.hgetall(k.tier(*t));
    }
    let rows = hashes(pipe, ids.is_empty(), &mut c).await?;
    let tiers: Vec<Value> = ids
        .iter()
        .zip(rows)
        .map(|(t, h)| {
            let per_day: u128 = h
                .get("price_per_day")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            json!({
                "tier": t,
                "name": h.get("name").cloned().unwrap_or_default(),
                "pricePerDay": usdc(per_day),
                "pricePerMonth": usdc(per_day.saturating_mul(30)),
                "active": h.get("active").is_some_and(|a| a == "1"),
            })
        })
        .collect();
    Ok(state.read_cache.put("tiers".into(), &Value::Array(tiers)))
}

/// The VMs an address owns.
#[utoipa::path(
    get,
    path = "/vms/{address}",
    tag = "vms",
    params(("address" = String, Path, description = "Owner wallet, `0x` + 40 hex digits")),
    responses(
        (status = 200, description = "`{address, count, vms: [{token_id, tier, vm_type, ssh_host, status, created_at, expires_at}]}`", body = Value),
        (status = 400, description = "Not an address", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn vms(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let owner = parse_address(&raw)?;
    let cache_key = format!("vms:{}", lower(owner));
    if let Some(hit) = state.read_cache.get(&cache_key) {
        return Ok(hit);
    }
    let k = keys(&state);
    let mut c = state.redis.clone();
    let ids: Vec<U256> = sorted_members(&mut c, k.owner_vms(owner)).await?;
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hgetall(k.vm(*id)).hgetall(k.provision(*id));
    }
    let rows = hashes(pipe, ids.is_empty(), &mut c).await?;
    let now = now_secs(&state);
    let vms: Vec<Value> = ids
        .iter()
        .zip(rows.chunks(2))
        .filter_map(|(id, pair)| {
            let [vm, rec] = pair else { return None };
            if vm.is_empty() {
                return None;
            }
            let rec = Record::from_hash(rec);
            let tier = num(vm, "tier");
            Some(json!({
                "token_id": token_json(*id),
                "tier": tier,
                "vm_type": vm_type(tier as u8),
                "ssh_host": rec.as_ref().and_then(|r| r.host.clone()),
                "status": vm_status(vm, rec.as_ref(), now),
                "created_at": iso(num(vm, "purchase_date")),
                "expires_at": iso(num(vm, "expires_at")),
            }))
        })
        .collect();
    let body = json!({
        "address": owner.to_string(),
        "count": vms.len(),
        "vms": vms,
    });
    Ok(state.read_cache.put(cache_key, &body))
}

/// Public status of one VM (no secrets).
#[utoipa::path(
    get,
    path = "/status/{token_id}",
    tag = "vms",
    params(("token_id" = String, Path, description = "The VM NFT's token id (decimal)")),
    responses(
        (status = 200, description = "`{token_id, tier, vm_type, status, owner, valid, created_at, expires_at}`", body = Value),
        (status = 400, description = "Not a token id", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
    )
)]
async fn status(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_token_id(&raw)?;
    let k = keys(&state);
    let mut c = state.redis.clone();
    let (vm, rec): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
        .hgetall(k.vm(id))
        .hgetall(k.provision(id))
        .query_async(&mut c)
        .await?;
    if vm.is_empty() {
        return Err(ApiError::NotFound(format!("VM #{id} not found")));
    }
    let rec = Record::from_hash(&rec);
    let now = now_secs(&state);
    let tier = num(&vm, "tier");
    let status = vm_status(&vm, rec.as_ref(), now);
    Ok(Json(json!({
        "token_id": token_json(id),
        "tier": tier,
        "vm_type": vm_type(tier as u8),
        "status": status,
        "owner": vm.get("owner").and_then(|o| o.parse::<Address>().ok()).map(|a| a.to_string()),
        "valid": num(&vm, "expires_at") > now,
        "created_at": iso(num(&vm, "purchase_date")),
        "expires_at": iso(num(&vm, "expires_at")),
    })))
}

/// `?encrypt=owner`: return the key ECIES-encrypted to the caller's public key.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CredentialsQuery {
    #[serde(default)]
    encrypt: Option<String>,
}

/// The credential desk of this node (cheap: shared handles).
fn desk(state: &AppState) -> crate::vms::Desk {
    crate::vms::Desk {
        redis: state.redis.clone(),
        keys: keys(state),
        rpc: state.rpc.clone(),
        auth: state.auth.clone(),
        keyring: state.master.clone(),
        marketplace: state.home.deployment.vm_marketplace,
        confirmations: state.home.chain.confirmations,
        one_time_delivery: state.config.provisioning.one_time_delivery,
        head: state.chain_head.clone(),
        head_time: state.chain_time.clone(),
    }
}

/// SSH credentials of a VM, for its owner.
#[utoipa::path(
    get,
    path = "/credentials/{token_id}",
    tag = "vms",
    params(
        ("token_id" = String, Path, description = "The VM NFT's token id (decimal)"),
        ("encrypt" = Option<String>, Query, description = "`owner`: `privateKey` ECIES-encrypted to the public key of the owner's signature"),
        ("Authorization" = String, Header, description = "`Bearer <wallet signature>` (legacy, timestamped or nonce form) or `Bearer <sign-in JWT>`"),
        ("X-ClawCloud-Timestamp" = Option<String>, Header, description = "Unix seconds signed in the timestamped form"),
        ("X-ClawCloud-Nonce" = Option<String>, Header, description = "Server nonce signed in the nonce form"),
    ),
    responses(
        (status = 200, description = "`{tokenId, host, username, privateKey, tier, type, expiresAt, instructions}` (`Cache-Control: no-store`)", body = Value),
        (status = 202, description = "Still provisioning, re-keying after a transfer, or the purchase is not indexed yet", body = Value),
        (status = 400, description = "Malformed token id or query", body = ErrorBody),
        (status = 401, description = "Missing, invalid or replayed signature", body = ErrorBody),
        (status = 403, description = "Not the owner, or the NFT expired", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
        (status = 503, description = "Chain or state store unavailable", body = ErrorBody),
    )
)]
async fn credentials(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<CredentialsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    credentials_answer(&state, &raw, q, &headers, async || Ok(())).await
}

/// The `/credentials` answer. `before_key` runs once the desk has decided
/// the key may be served (owner proven, VM valid and running, encoding
/// chosen) and right before the key is read: `/x402/vm-credentials` settles
/// its payment there, so a 401, 403, 404 or 202 never costs anything.
pub(crate) async fn credentials_answer(
    state: &AppState,
    raw: &str,
    q: CredentialsQuery,
    headers: &HeaderMap,
    before_key: impl AsyncFnOnce() -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    let id = parse_token_id(raw)?;
    let encrypt = match q.encrypt.as_deref() {
        None => false,
        Some("owner") => true,
        Some(_) => return Err(ApiError::BadRequest("encrypt must be `owner`".into())),
    };
    // Shape, signature recovery and a token's signature are checked before
    // any Redis or chain access.
    let credential = state.auth.precheck_vm_access(headers, id)?;
    let desk = desk(state);
    let delivery = match desk.check(id, credential, encrypt).await? {
        Checked::Pending(message) => Delivery::Pending { message },
        Checked::Servable(servable) => {
            before_key().await?;
            desk.serve(servable).await?
        }
    };
    let body = match delivery {
        Delivery::Pending { message } => {
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({
                    "tokenId": id.to_string(),
                    "status": "provisioning",
                    "message": message,
                })),
            )
                .into_response());
        }
        Delivery::Ready(c) => {
            let file = format!("~/.ssh/clawcloud-{id}");
            let mut body = json!({
                "tokenId": id.to_string(),
                "host": c.host,
                "username": c.username,
                "privateKey": c.private_key.as_deref().map(String::as_str),
                "privateKeyEncoding": c.encoding,
                "tier": c.tier,
                "type": vm_type(c.tier as u8),
                "expiresAt": iso(c.expires_at),
                "instructions": format!(
                    "Save privateKey to {file} (chmod 600), then: ssh -i {file} {}@{}",
                    c.username, c.host
                ),
            });
            if let Some(n) = c.note {
                body["note"] = Value::String(n.into());
            }
            body
        }
    };
    Ok(super::auth::no_store(body))
}

/// Optional body of `POST /agents/generate-wallet`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GenerateWallet {
    #[serde(default, rename = "agentId")]
    agent_id: Option<String>,
}

/// A fresh agent wallet (the private key is shown once).
#[utoipa::path(
    post,
    path = "/agents/generate-wallet",
    tag = "vms",
    request_body(content = Option<GenerateWallet>, description = "Optional `{\"agentId\": \"...\"}`"),
    responses(
        (status = 200, description = "`{address, privateKey, agentId, warning}` (`Cache-Control: no-store`)", body = Value),
        (status = 400, description = "Bad agentId", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
        (status = 503, description = "Escrow is on but no master key is configured", body = ErrorBody),
    )
)]
async fn generate_wallet(
    State(state): State<AppState>,
    body: Option<Json<GenerateWallet>>,
) -> Result<Response, ApiError> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    if let Some(a) = &req.agent_id
        && (a.is_empty()
            || a.len() > 64
            || !a
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(ApiError::BadRequest(
            "agentId must be 1-64 characters of letters, digits, `-` or `_`".into(),
        ));
    }
    let wallet = AgentWallet::generate();
    // No copy is kept unless the operator opted into an expiring escrow.
    let warning = match state.config.api.wallet_escrow_ttl_secs {
        None => {
            "Store this private key now: it is shown once and this node keeps no copy.".to_owned()
        }
        Some(ttl) => {
            let keyring = state.master.clone().ok_or_else(|| {
                ApiError::Unavailable(
                    "wallet escrow is configured but no master key is (CHAINFRONT_MASTER_KEY)"
                        .into(),
                )
            })?;
            let key = NodeKeys.agent_wallet_escrow(wallet.address);
            let stored = json!({
                "agent_id": req.agent_id,
                "private_key": keyring.seal(wallet.private_key.as_bytes(), &key),
                "created_at": crate::time::now_iso8601(),
            });
            let mut c = state.redis.clone();
            let _: () = c.set_ex(&key, stored.to_string(), ttl.max(1)).await?;
            format!(
                "Store this private key now: it is shown once. The node keeps an encrypted copy for {ttl} s."
            )
        }
    };
    Ok(super::auth::no_store(json!({
        "address": wallet.address.to_string(),
        "privateKey": wallet.private_key.as_str(),
        "agentId": req.agent_id,
        "warning": warning,
    })))
}

/// Keeps `chain_head` and `chain_time` fresh (the staleness check of
/// `/credentials`, and expiry judged by chain time as the contract does),
/// and whether the store was migrated to sealed-only values (`keys rotate`),
/// after which plaintext values are refused.
pub async fn track_head(state: AppState, shutdown: tokio_util::sync::CancellationToken) {
    use alloy::providers::Provider;
    let every = state.home.chain.poll_interval();
    loop {
        let latest = state.rpc.call("eth_getBlockByNumber", |p| async move {
            p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
                .await
        });
        if let Ok(Ok(Some(block))) = tokio::time::timeout(Duration::from_secs(5), latest).await {
            state
                .chain_head
                .store(block.header.number, Ordering::Relaxed);
            state
                .chain_time
                .store(block.header.timestamp, Ordering::Relaxed);
        }
        if let Some(keyring) = &state.master {
            let mut c = state.redis.clone();
            let migrated: redis::RedisResult<bool> = c.exists(NodeKeys.crypto_migrated()).await;
            if let Ok(m) = migrated {
                keyring.set_allow_plaintext(!m);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_validated() {
        assert_eq!(parse_token_id("42").expect("ok"), U256::from(42));
        for bad in ["", "-1", "0x10", "1e3", "42 ", &"9".repeat(79)] {
            assert!(parse_token_id(bad).is_err(), "{bad:?}");
        }
        assert!(parse_token_id(&"9".repeat(78)).is_err(), "above 2^256");
        assert!(parse_address("0x00000000000000000000000000000000000000aB").is_ok());
        for bad in ["", "0x", "abc", "0x123", &format!("0x{}", "g".repeat(40))] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usdc_amounts_are_decimal_strings() {
        assert_eq!(usdc(200_000), "0.20");
        assert_eq!(usdc(1_500_000), "1.50");
        assert_eq!(usdc(6_000_000), "6.00");
        assert_eq!(usdc(1), "0.000001");
        assert_eq!(usdc(0), "0.00");
    }

    #[test]
    fn status_follows_provisioning_and_expiry() {
        let vm: HashMap<String, String> = [("expires_at".to_owned(), "100".to_owned())].into();
        let running = Record {
            status: Some("running".into()),
            ..Record::default()
        };
        assert_eq!(vm_status(&vm, Some(&running), 50), "running");
        assert_eq!(vm_status(&vm, Some(&running), 100), "expired");
        assert_eq!(vm_status(&vm, None, 50), "provisioning");
        let gone = Record {
            status: Some("terminated".into()),
            ..Record::default()
        };
        assert_eq!(vm_status(&vm, Some(&gone), 50), "terminated");
    }
}
