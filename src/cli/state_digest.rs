//! `chainfront state-digest`: a deterministic hash of each chain's derived state.

use std::path::Path;

use chainfront_indexer::digest;
use chainfront_indexer::keys::ChainKeys;

use crate::config::Config;
use crate::{Result, node};

/// Arguments of `state-digest`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints `<chain name> <chain id> <digest> <keys>` per chain on stdout.
pub async fn run(file: Option<&Path>, _args: Args) -> Result<()> {
    let config = Config::load(file)?;
    let mut conn = node::connect_redis(&config.redis.url).await?;
    for (name, chain) in &config.chains {
        let (d, count) = digest::state_digest(&mut conn, &ChainKeys::new(chain.chain_id)).await?;
        println!("{name} {} {d} {count}", chain.chain_id);
    }
    Ok(())
}
