//! `chainfront index`: only the indexers, no API.

use std::path::Path;

use crate::config::Config;
use crate::{Result, cli, node, telemetry};

/// Arguments of `index`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Follows every configured chain until Ctrl-C or SIGTERM.
pub async fn run(file: Option<&Path>, _args: Args) -> Result<()> {
    let config = Config::load(file)?;
    telemetry::init(&config.log);
    let shutdown = cli::shutdown_on_signal();
    let mut redis =
        node::connect_redis_with(&config.redis.url, node::indexer_redis_options(&config)).await?;
    node::check_redis(&mut redis).await?;
    drop(redis);
    let metrics = crate::metrics::NodeMetrics::default();
    node::run_indexers(&config, &metrics, shutdown).await
}
