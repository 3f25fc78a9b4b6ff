//! One chain's indexer: take the leader lock (or stand by), then follow.
//! Losing the lock sends the process back to standby; it never writes
//! without it.

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

/// Indexes `spec` until `shutdown`.
pub async fn run(
    conn: RedisConn,
    spec: ChainSpec,
    metrics: Arc<IndexerMetrics>,
    shutdown: CancellationToken,
) -> Result<()> {
    let keys = spec.watched.keys.clone();
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
        let mut rpc = Rpc::new(&spec.rpc_urls, spec.retry, spec.rpc_timeout)?;
        rpc.stats = metrics.rpc.clone();
        let mut store = Store::new(conn.clone(), keys.clone(), spec.follow.window);
        store.set_fencing_token(lead.token.clone());
        let mut follower = Follower::new(
            rpc,
            store,
            spec.watched.clone(),
            spec.follow.clone(),
            metrics.clone(),
        );
        follower.check_chain(spec.chain_id).await?;
        info!(target: "chainfront::indexer", chain = %spec.name, chain_id = spec.chain_id, "following");
        let stop = shutdown.child_token();
        let result = tokio::select! {
            r = follower.run(stop.clone()) => r,
            _ = lead.lost.cancelled() => Err(Error::Fenced),
        };
        stop.cancel();
        match result {
            Ok(()) => return Ok(()),
            Err(Error::Fenced) => {
                warn!(target: "chainfront::indexer", chain = %spec.name, "lost leadership; back to standby");
                lead.lost.cancel();
            }
            Err(e) => {
                lead.lost.cancel();
                return Err(e);
            }
        }
    }
}
