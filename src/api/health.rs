//! `GET /health`: liveness plus what a client needs to find the contracts.
//!
//! `status` is `healthy`, or `degraded` with `reasons`: Redis or the RPC
//! unreachable (answered with 503: this node cannot serve correctly), an
//! unfinished reindex wipe, or an indexer stopped on a fatal condition such
//! as a reorg deeper than the window (answered with 200: the API still serves
//! what is indexed, so a load balancer keeps it, and the reason is in
//! `indexer.<chain>`).
//!
//! Unlimited by design (load balancers poll it), so its chain probe is cached
//! for [`PROBE_CACHE`]: a flood of `/health` costs at most one RPC call a
//! second.

use std::time::{Duration, Instant};

use alloy::providers::Provider;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chainfront_indexer::keys::ChainKeys;
use serde_json::{Value, json};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// How long a dependency may take before it counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one chain probe answers every `/health`.
const PROBE_CACHE: Duration = Duration::from_secs(1);

/// The last chain probe: when, and the head block it saw (`None`: unreachable).
#[derive(Default)]
pub struct HealthCache(tokio::sync::Mutex<Option<(Instant, Option<u64>)>>);

impl HealthCache {
    /// The head block, probed at most once per [`PROBE_CACHE`] (concurrent
    /// callers wait for the one probe in flight).
    pub(super) async fn head(&self, state: &AppState) -> Option<u64> {
        let mut last = self.0.lock().await;
        if let Some((at, head)) = *last
            && at.elapsed() < PROBE_CACHE
        {
            return head;
        }
        let probe = state.rpc.call(
            "eth_blockNumber",
            |p| async move { p.get_block_number().await },
        );
        let head = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(n)) => Some(n),
            Ok(Err(e)) => {
                tracing::warn!(target: "chainfront::api", error = %e, "health: chain probe failed");
                None
            }
            Err(_) => None,
        };
        *last = Some((Instant::now(), head));
        head
    }
}

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// Node health, the chain and the deployed contracts.
#[utoipa::path(
    get,
    path = "/health",
    tag = "node",
    responses(
        (status = 200, description = "Redis and the RPC answer: `status` is `healthy`, or `degraded` when an indexer stopped on a fatal condition (a reorg deeper than the window, corrupt state, the wrong chain; `reasons` and `indexer.<chain>.error` say which) or a reindex wipe is unfinished, while the API keeps serving what is indexed; with the chain id, contract addresses, head and indexed block and the lag", body = Value),
        (status = 503, description = "A dependency is down: `status` is `degraded` and `redis` / `rpc` say which", body = Value),
    )
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut redis = state.redis.clone();
    let keys = ChainKeys::new(state.home.deployment.chain_id);
    // One slot (the chain's hash tag): one round trip on a cluster too.
    let mut probe = redis::pipe();
    probe.hget(keys.checkpoint(), "number").exists(keys.wipe());
    let checkpoint = tokio::time::timeout(
        PROBE_TIMEOUT,
        probe.query_async::<(Option<u64>, bool)>(&mut redis),
    );
    let head = state.health_cache.head(&state);
    let (checkpoint, head_block) = tokio::join!(checkpoint, head);
    let (redis_ok, indexed_block, wiping) = match checkpoint {
        Ok(Ok((n, wiping))) => (true, n, wiping),
        _ => (false, None, false),
    };
    let reachable = redis_ok && head_block.is_some();
    let stopped = state.metrics.stopped_indexers();
    let mut reasons: Vec<String> = Vec::new();
    if !redis_ok {
        reasons.push("redis unreachable".into());
    }
    if head_block.is_none() {
        reasons.push("rpc unreachable".into());
    }
    if wiping {
        reasons.push(
            "a reindex is rebuilding the state (its wipe is not finished): answers may be incomplete"
                .into(),
        );
    }
    let mut indexer = serde_json::Map::new();
    for (chain, why) in &stopped {
        reasons.push(format!("indexer for chain `{chain}` stopped: {why}"));
        indexer.insert(chain.clone(), json!({"status": "stopped", "error": why}));
    }
    let healthy = reasons.is_empty();
    let d = &state.home.deployment;
    let body = json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "reasons": reasons,
        "indexer": indexer,
        "version": env!("CARGO_PKG_VERSION"),
        "chain": state.home.name,
        "chain_id": d.chain_id,
        "contracts": {
            "vm_marketplace": d.vm_marketplace.to_string(),
            "submission_stakes": d.submission_stakes.map(|a| a.to_string()),
            "usdc": d.usdc.to_string(),
            "cbbtc": d.cbbtc.map(|a| a.to_string()),
            "treasury": d.treasury.to_string(),
        },
        // Where Clockchain stakes are paid (the SubmissionStakes escrow; see
        // /v1/health). USDC deposits and VM payments use contracts.treasury.
        "treasury": state.markets.treasury().map(|a| a.to_string()),
        "start_block": d.start_block,
        "head_block": head_block,
        "indexed_block": indexed_block,
        "lag": head_block.zip(indexed_block).map(|(h, i)| h.saturating_sub(i)),
        "rpc": if head_block.is_some() { "ok" } else { "unreachable" },
        "redis": if redis_ok { "ok" } else { "unreachable" },
        "timestamp": crate::time::now_iso8601(),
    });
    let status = if reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
