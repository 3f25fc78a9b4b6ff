//! One chain's indexer: take the leader lock (or stand by), finish an
//! interrupted wipe, check the chain, then follow. Losing the lock sends the
//! process back to standby; it never writes without it.
//!
//! Only what is certain stops it ([`Error::is_fatal`]: a reorg deeper than
//! the window, corrupt state, the wrong chain); a Redis or RPC fault at any
//! step (taking the lock, the chain check, the hand-off to the follower) is
//! retried with backoff, so a Redis failover or an RPC outage never takes the
//! node down.

use std::sync::Arc;
use std::time::Duration;

use crate::conn::RedisConn;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apply::Watched;
use crate::follow::{FollowConfig, Follower};
use crate::metrics::IndexerMetrics;
use crate::retry::RetryPolicy;
use crate::rpc::Rpc;
use crate::store::Store;
use crate::{Error, Result, leader};

/// Everything needed to index one chain.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    /// Config name, for logs.
    pub name: String,
    /// EIP-155 id.
    pub chain_id: u64,
    /// RPC endpoints in failover order.
    pub rpc_urls: Vec<String>,
    /// Per-request RPC timeout.
    pub rpc_timeout: Duration,
    /// Retry tuning.
    pub retry: RetryPolicy,
    /// What to follow.
    pub watched: Watched,
    /// How to follow.
    pub follow: FollowConfig,
    /// Leader lock time-to-live (how long a dead leader blocks its standby).
    pub leader_ttl: Duration,
}

/// Indexes `spec` until `shutdown`. Returns an error only for a fatal
/// condition ([`Error::is_fatal`]); the caller keeps everything else (the
/// API) running and reports it.
pub async fn run(
    conn: RedisConn,
    spec: ChainSpec,
    metrics: Arc<IndexerMetrics>,
    shutdown: CancellationToken,
) -> Result<()> {
    let keys = spec.watched.keys.clone();
    let retry = RetryPolicy {
        max_retries: usize::MAX,
        ..spec.retry
    };
    let mut delays = retry.delays();
    loop {
        let Some(lead) = leader::acquire(
            conn.clone(),
            keys.clone(),
            spec.leader_ttl,
            shutdown.clone(),
        )
        .await?
        else {
            return Ok(());
        };
        let stop = shutdown.child_token();
        let result = tokio::select! {
            r = lead_and_follow(&conn, &spec, &metrics, &lead.token, &stop) => r,
            _ = lead.lost.cancelled() => Err(Error::Fenced),
            // A step that does not watch `stop` (the chain check, a wipe) is
            // dropped: every step is atomic or resumable.
            _ = shutdown.cancelled() => Ok(()),
        };
        stop.cancel();
        match result {
            Ok(()) => {
                // Shut down: hand the lock over now, not after its TTL.
                lead.release(&mut conn.clone(), &keys).await;
                return Ok(());
            }
            Err(e) if e.is_fatal() => {
                lead.release(&mut conn.clone(), &keys).await;
                return Err(e);
            }
            Err(Error::Fenced) => {
                lead.lost.cancel();
                warn!(target: "chainfront::indexer", chain = %spec.name, "lost leadership; back to standby");
                delays = retry.delays();
            }
            Err(e) => {
                lead.release(&mut conn.clone(), &keys).await;
                let wait = delays.next().unwrap_or(retry.max_delay);
                warn!(target: "chainfront::indexer", chain = %spec.name, error = %e, retry_in_ms = wait.as_millis() as u64, "indexer start-up step failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// As leader: finish an interrupted wipe, check the chain, follow until
/// `stop`. Any error ends leadership; [`run`] decides whether to retry.
async fn lead_and_follow(
    conn: &RedisConn,
    spec: &ChainSpec,
    metrics: &Arc<IndexerMetrics>,
    token: &str,
    stop: &CancellationToken,
) -> Result<()> {
    let keys = spec.watched.keys.clone();
    let mut rpc = Rpc::new(&spec.rpc_urls, spec.retry, spec.rpc_timeout)?;
    rpc.stats = metrics.rpc.clone();
    let mut store = Store::new(conn.clone(), keys, spec.follow.window);
    store.set_fencing_token(token.to_owned());
    store.finish_interrupted_wipe().await?;
    let mut follower = Follower::new(
        rpc,
        store,
        spec.watched.clone(),
        spec.follow.clone(),
        metrics.clone(),
    );
    follower.check_chain(spec.chain_id).await?;
    info!(target: "chainfront::indexer", chain = %spec.name, chain_id = spec.chain_id, "following");
    match follower.run(stop.clone()).await {
        // A wipe began under us (`reindex` took the lock meanwhile): go
        // around, which finishes it once we lead again.
        Err(Error::WipePending) => Err(Error::Fenced),
        r => r,
    }
}
