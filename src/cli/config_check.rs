//! `chainfront config check`: load, validate and print the configuration.

use std::path::Path;

use crate::Result;
use crate::config::Config;

/// Arguments of `config check`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Loads the config (file + env), resolves the home chain's contracts and
/// prints the result with secrets redacted. Any problem is one error naming the key.
pub fn run(file: Option<&Path>, _args: Args) -> Result<()> {
    let config = Config::load(file)?;
    let home = config.home()?;
    print!("{}", config.to_redacted_toml());
    println!(
        "\n# resolved home chain `{}` (chain id {}): vm_marketplace {}, usdc {}, treasury {}, start block {}",
        home.name,
        home.deployment.chain_id,
        home.deployment.vm_marketplace,
        home.deployment.usdc,
        home.deployment.treasury,
        home.deployment.start_block
    );
    eprintln!("config OK");
    Ok(())
}
