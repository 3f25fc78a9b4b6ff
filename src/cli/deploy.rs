//! `chainfront deploy`: deploy the contracts to any RPC endpoint with a key
//! from the environment, and write the deployment file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use alloy::providers::Provider;

use crate::config::{Config, Secrets};
use crate::deploy::{self, DEFAULT_FEE_BPS, DEFAULT_TIERS, DeployPlan};
use crate::{Error, Result, telemetry};

/// Chain ids where mock tokens must never be deployed.
const MAINNETS: &[u64] = &[1, 10, 137, 8453, 42161];

/// Arguments of `deploy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON-RPC URL (default: the home chain's first `rpc_urls` entry).
    #[arg(long)]
    pub rpc_url: Option<String>,
    /// Treasury that receives payments (default: the configured one, else the deployer).
    #[arg(long)]
    pub treasury: Option<Address>,
    /// Deploy MockUSDC and MockCbBTC instead of using the chain's real tokens (test chains only).
    #[arg(long)]
    pub mock_tokens: bool,
    /// Configure the eight default VM tiers after deploying.
    #[arg(long)]
    pub seed_tiers: bool,
    /// Submission fee in basis points.
    #[arg(long, default_value_t = DEFAULT_FEE_BPS)]
    pub fee_bps: u16,
    /// Deployment file to write (default: the home chain's `deployment_file`, else `deployment-<chain id>.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Deploys and writes the deployment file; prints its path on stdout.
pub async fn run(file: Option<&Path>, args: Args) -> Result<()> {
    let config = match file {
        Some(f) => Some(Config::load(Some(f))?),
        None => None,
    };
    telemetry::init(&config.as_ref().map(|c| c.log.clone()).unwrap_or_default());
    let home_chain = config
        .as_ref()
        .and_then(|c| c.chains.get(&c.home_chain).cloned());
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    let secrets = match &config {
        Some(c) => c.secrets.clone(),
        None => Secrets::from_env(&vars)?,
    };
    let key = secrets.deployer_key.ok_or_else(|| Error::Config {
        key: "deployer_key".into(),
        message: "is not set: export CHAINFRONT_DEPLOYER_KEY or CHAINFRONT_DEPLOYER_KEY_FILE"
            .into(),
    })?;
    let signer = deploy::parse_key(key.expose())?;
    let owner = signer.address();
    let rpc_url = args
        .rpc_url
        .or_else(|| {
            home_chain
                .as_ref()
                .and_then(|c| c.rpc_urls.first().cloned())
        })
        .ok_or_else(|| Error::Config {
            key: "rpc_url".into(),
            message: "is not set: pass --rpc-url or --config with a home chain".into(),
        })?;
    let provider = deploy::signing_provider(&rpc_url, signer)?;
    let chain_id = provider.get_chain_id().await.map_err(Error::chain)?;
    if let Some(c) = &home_chain
        && c.chain_id != chain_id
    {
        return Err(Error::Config {
            key: "chain_id".into(),
            message: format!(
                "the config says {}, but {rpc_url} serves {chain_id}",
                c.chain_id
            ),
        });
    }
    if args.mock_tokens && MAINNETS.contains(&chain_id) {
        return Err(Error::chain(format!(
            "refusing to deploy mock tokens on mainnet chain {chain_id}"
        )));
    }
    let usdc = if args.mock_tokens {
        None
    } else {
        Some(home_chain.as_ref().and_then(|c| c.usdc).ok_or_else(|| {
            Error::Config {
                key: "usdc".into(),
                message:
                    "no USDC address for this chain: set chains.<name>.usdc or pass --mock-tokens"
                        .into(),
            }
        })?)
    };
    let plan = DeployPlan {
        treasury: args
            .treasury
            .or_else(|| home_chain.as_ref().and_then(|c| c.treasury))
            .unwrap_or(owner),
        usdc,
        cbbtc: if args.mock_tokens {
            None
        } else {
            home_chain.as_ref().and_then(|c| c.cbbtc)
        },
        fee_bps: args.fee_bps,
    };
    let deployment = deploy::deploy(&provider, owner, &plan).await?;
    if args.seed_tiers {
        deploy::seed_tiers(&provider, deployment.vm_marketplace, &DEFAULT_TIERS).await?;
    }
    let out = args
        .out
        .or_else(|| home_chain.as_ref().and_then(|c| c.deployment_file.clone()))
        .unwrap_or_else(|| PathBuf::from(format!("deployment-{chain_id}.json")));
    deployment.write(&out)?;
    println!("{}", out.display());
    Ok(())
}
