//! `chainfront run`: the node (indexer + API) from a config.

use std::path::Path;

use crate::config::Config;
use crate::{Result, cli, node, telemetry};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(file: Option<&Path>, _args: Args) -> Result<()> {
    let config = Config::load(file)?;
    telemetry::init(&config.log);
    let shutdown = cli::shutdown_on_signal();
    node::run(config, shutdown).await
}
