//! The `chainfront` command line: one module per subcommand, dispatched from
//! `main.rs`. Results go to stdout, logs and messages to stderr.

pub mod config_check;
pub mod deploy;
pub mod dev;
pub mod index;
pub mod keys;
pub mod reindex;
pub mod run;
pub mod state_digest;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// chainfront: indexer + REST API for VM NFTs, USDC deposits and prediction-market stakes on Base.
#[derive(Debug, Parser)]
#[command(name = "chainfront", version, about)]
pub struct Cli {
    /// Config file (TOML). Every key can be overridden by CHAINFRONT_* env vars.
    #[arg(long, short, global = true, env = "CHAINFRONT_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Local stack: start anvil and redis-server, deploy and seed the contracts, run the node.
    Dev(dev::Args),
    /// Run the node (indexer + API) from a config.
    Run(run::Args),
    /// Run only the indexers (no API).
    Index(index::Args),
    /// Drop a chain's derived state and rebuild it up to the head, then print its digest.
    Reindex(reindex::Args),
    /// Print a deterministic hash of each chain's derived state.
    StateDigest(state_digest::Args),
    /// Deploy the contracts to any RPC endpoint and write a deployment file.
    Deploy(deploy::Args),
    /// Encryption-key commands.
    Keys {
        /// What to do with the keys.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Configuration commands.
    Config {
        /// What to do with the configuration.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `chainfront config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration, then print it with secrets redacted.
    Check(config_check::Args),
}

/// `chainfront keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-encrypt every sealed value (agent wallets, VM SSH keys) from the
    /// current master key to a new one.
    Rotate(keys::Args),
}

/// A token cancelled on Ctrl-C or SIGTERM. The signal handlers are
/// installed before this returns (not later in a spawned task), so a signal
/// that arrives right after start-up is a clean shutdown, never the default
/// "terminate now". Call it from inside the runtime.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let signals = Signals::install();
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!(target: "chainfront::cli", "shutdown requested");
        cancel.cancel();
    });
    token
}

/// SIGINT and SIGTERM listeners, registered when created.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            let (Some(mut term), Some(mut int)) = (self.term, self.int) else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
