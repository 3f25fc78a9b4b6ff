//! `chainfront reindex`: drop a chain's derived state and rebuild it from a
//! block up to the current head, under the leader lock. The wipe writes a
//! tombstone first and removes it last, so a reindex cut short leaves a
//! state that nothing commits onto and that the next start (`run`, `index`
//! or `reindex`) finishes wiping.

use std::path::Path;
use std::sync::Arc;

use chainfront_indexer::follow::Follower;
use chainfront_indexer::metrics::IndexerMetrics;
use chainfront_indexer::rpc::Rpc;
use chainfront_indexer::store::Store;
use chainfront_indexer::{digest, leader};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::{Error, Result, node, telemetry};

/// Arguments of `reindex`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// First block to index (default: the chain's start block).
    #[arg(long)]
    pub from: Option<u64>,
    /// Chain to rebuild (default: the home chain).
    #[arg(long)]
    pub chain: Option<String>,
}

/// Rebuilds, prints the resulting state digest on stdout and exits.
pub async fn run(file: Option<&Path>, args: Args) -> Result<()> {
    let config = Config::load(file)?;
    telemetry::init(&config.log);
    let name = args.chain.unwrap_or_else(|| config.home_chain.clone());
    let mut spec = config
        .chain_specs()?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::Config {
            key: "chain".into(),
            message: format!("`{name}` is not an indexed chain"),
        })?;
    if let Some(from) = args.from {
        spec.follow.start_block = from;
    }
    let mut conn =
        node::connect_redis_with(&config.redis.url, node::indexer_redis_options(&config)).await?;
    node::check_redis(&mut conn).await?;
    let keys = spec.watched.keys.clone();
    let shutdown = CancellationToken::new();
    let lead = leader::acquire(
        conn.clone(),
        keys.clone(),
        spec.leader_ttl,
        shutdown.clone(),
    )
    .await?
    .ok_or_else(|| Error::chain("could not take the leader lock"))?;
    let mut store = Store::new(conn.clone(), keys.clone(), spec.follow.window);
    store.set_fencing_token(lead.token.clone());
    store.wipe().await?;
    let rpc = Rpc::new(&spec.rpc_urls, spec.retry, spec.rpc_timeout)?;
    let mut follower = Follower::new(
        rpc,
        store,
        spec.watched.clone(),
        spec.follow.clone(),
        Arc::new(IndexerMetrics::default()),
    );
    follower.check_chain(spec.chain_id).await?;
    let reached = follower.sync().await?;
    shutdown.cancel();
    let (digest, count) = digest::state_digest(&mut conn, &keys).await?;
    eprintln!(
        "reindexed chain `{name}` up to block {}: {count} state keys",
        reached.map_or_else(|| "-".into(), |b| b.to_string())
    );
    println!("{digest}");
    Ok(())
}
