//! `chainfront` binary: parses arguments and dispatches to `cli::<command>`.

use std::process::ExitCode;

use chainfront::cli::{self, Cli, Command, ConfigCommand, KeysCommand};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Dev(args) => cli::dev::run(config, args).await,
        Command::Run(args) => cli::run::run(config, args).await,
        Command::Index(args) => cli::index::run(config, args).await,
        Command::Reindex(args) => cli::reindex::run(config, args).await,
        Command::StateDigest(args) => cli::state_digest::run(config, args).await,
        Command::Deploy(args) => cli::deploy::run(config, args).await,
        Command::Keys {
            command: KeysCommand::Rotate(args),
        } => cli::keys::run(config, args).await,
        Command::Config {
            command: ConfigCommand::Check(args),
        } => cli::config_check::run(config, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
