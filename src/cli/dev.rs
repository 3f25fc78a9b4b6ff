//! `chainfront dev`: the whole local stack in one command. Starts anvil and
//! redis-server (unless URLs are given), deploys and seeds the contracts,
//! writes the deployment file, runs the node and prints what to try next.
//! Ctrl-C stops the node and every child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::deploy::{self, DEFAULT_FEE_BPS, DEFAULT_TIERS, DEMO_MARKET_UUID, DeployPlan};
use crate::devnet::{self, RedisServer};
use crate::toolchain::Foundry;
use crate::{Error, Result, cli, node, telemetry};

/// The config `dev` uses when none is given.
const DEFAULT_CONFIG: &str = "config/local.toml";

/// anvil's default mnemonic's first key: the deployer on a local chain.
const ANVIL_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Arguments of `dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this chain instead of starting anvil.
    #[arg(long)]
    pub rpc_url: Option<String>,
    /// Use this Redis instead of starting redis-server.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// API address (default: `api.listen` from the config).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Deployer key when --rpc-url is given (default: anvil's first dev key).
    #[arg(long, env = "CHAINFRONT_DEPLOYER_KEY", hide_env_values = true)]
    pub deployer_key: Option<String>,
}

/// A demo wallet printed for the user.
struct DemoWallet {
    address: Address,
    key_hex: String,
}

/// Runs the local stack until Ctrl-C or SIGTERM.
pub async fn run(file: Option<&Path>, args: Args) -> Result<()> {
    let path = file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let mut config = Config::load(Some(&path))?;
    telemetry::init(&config.log);
    let shutdown = cli::shutdown_on_signal();
    let home_name = config.home_chain.clone();
    let chain_id = config.chains[&home_name].chain_id;

    // Children live until this function returns; dropping them kills them.
    let (anvil, rpc_url) = match &args.rpc_url {
        Some(url) => (None, url.clone()),
        None => {
            let anvil = devnet::start_anvil(chain_id, None)?;
            let url = anvil.endpoint();
            (Some(anvil), url)
        }
    };
    let (redis_server, redis_url) = match &args.redis_url {
        Some(url) => (None, url.clone()),
        None => {
            let server = RedisServer::start()?;
            let url = server.url();
            (Some(server), url)
        }
    };
    config.redis.url = redis_url.clone();
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    let chain = config
        .chains
        .get_mut(&home_name)
        .ok_or_else(|| Error::Config {
            key: "home_chain".into(),
            message: format!("no [chains.{home_name}] section"),
        })?;
    chain.rpc_urls = vec![rpc_url.clone()];
    // Contract addresses come from the fresh deployment, never from stale config.
    chain.vm_marketplace = None;
    chain.submission_stakes = None;
    chain.usdc = None;
    chain.cbbtc = None;
    chain.treasury = None;
    chain.start_block = None;
    let deployment_file = chain
        .deployment_file
        .get_or_insert_with(|| PathBuf::from(".chainfront/deployment.json"))
        .clone();

    let (deployer, wallets, treasury) = match &anvil {
        Some(a) => {
            let keys = a.keys();
            let signer = |i: usize| keys.get(i).cloned().map(PrivateKeySigner::from);
            let deployer = signer(0).ok_or_else(|| Error::chain("anvil has no dev keys"))?;
            let treasury = signer(9).map(|s| s.address()).unwrap_or(deployer.address());
            let wallets = (1..=3)
                .filter_map(signer)
                .map(|s| DemoWallet {
                    address: s.address(),
                    key_hex: format!("0x{}", alloy::hex::encode(s.to_bytes())),
                })
                .collect::<Vec<_>>();
            (deployer, wallets, treasury)
        }
        None => {
            let deployer = deploy::parse_key(args.deployer_key.as_deref().unwrap_or(ANVIL_KEY_0))?;
            let addr = deployer.address();
            (deployer, Vec::new(), addr)
        }
    };
    let owner = deployer.address();
    // The deployer is the stakes contract's operator: on this local stack it
    // also records plain-transfer Clockchain submissions, unless an operator
    // key is configured.
    let deployer_hex = format!("0x{}", alloy::hex::encode(deployer.to_bytes()));
    let provider = deploy::signing_provider(&rpc_url, deployer)?;
    let plan = DeployPlan {
        treasury,
        usdc: None,
        cbbtc: None,
        fee_bps: DEFAULT_FEE_BPS,
    };
    let deployment = deploy::deploy(&provider, owner, &plan).await?;
    deploy::seed_tiers(&provider, deployment.vm_marketplace, &DEFAULT_TIERS).await?;
    if let Some(stakes) = deployment.submission_stakes {
        deploy::seed_demo_market(&provider, stakes, owner).await?;
    }
    let addresses: Vec<Address> = wallets.iter().map(|w| w.address).chain([owner]).collect();
    deploy::fund_demo_wallets(&provider, &deployment, &addresses).await?;
    deployment.write(&deployment_file)?;

    if config.secrets.relayer_key.is_none()
        && let Some(a) = &anvil
        && let Some(key) = a.keys().get(8)
    {
        // anvil's dev key 8 relays x402 settlements on this local stack only:
        // production keys come from CHAINFRONT_RELAYER_KEY(_FILE).
        let key = PrivateKeySigner::from(key.clone());
        config.secrets.relayer_key = Some(crate::config::Secret::new(format!(
            "0x{}",
            alloy::hex::encode(key.to_bytes())
        )));
    }
    if config.secrets.master_key.is_none() {
        // A throwaway master key for this local stack only (fresh chain, fresh
        // Redis): production keys come from CHAINFRONT_MASTER_KEY(_FILE).
        let key = crate::crypto::ecies::MasterKey::generate();
        config.secrets.master_key = Some(crate::config::Secret::new(key.to_hex().to_string()));
    }
    if config.secrets.jwt_secret.is_none() {
        // Likewise a throwaway sign-in secret; `chainfront run` refuses to
        // start without a configured one.
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut());
        config.secrets.jwt_secret = Some(crate::config::Secret::new(hex::encode(*bytes)));
    }
    if config.secrets.operator_key.is_none() {
        config.secrets.operator_key = Some(crate::config::Secret::new(deployer_hex));
    }
    let listen = config.api.listen;
    node::warn_about_exposure(&config);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io {
            context: format!("binding the API to {listen} (use --listen to pick another address)"),
            source,
        })?;
    let api = listener.local_addr().map_err(|source| Error::Io {
        context: "reading the API address".into(),
        source,
    })?;
    // Signed messages name the address clients really reach (the bound
    // port, when --listen asked for port 0).
    config
        .api
        .public_url
        .get_or_insert_with(|| format!("http://{api}"));
    let state = node::connect(config).await?;
    print_next_steps(
        api,
        &rpc_url,
        &redis_url,
        &deployment_file,
        &deployment,
        &wallets,
    );
    let served = node::run_on(state, listener, shutdown).await;
    drop(redis_server);
    drop(anvil);
    eprintln!("chainfront dev stopped; anvil and redis-server are gone.");
    served
}

fn print_next_steps(
    api: SocketAddr,
    rpc_url: &str,
    redis_url: &str,
    deployment_file: &Path,
    d: &chainfront_indexer::deployment::Deployment,
    wallets: &[DemoWallet],
) {
    let cast = Foundry::Cast
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "cast".into());
    let api = format!("http://{api}");
    println!("\nchainfront dev is up (Ctrl-C stops everything).");
    println!("  API         {api}");
    println!("  chain       {rpc_url} (chain id {})", d.chain_id);
    println!("  redis       {redis_url}");
    println!("  deployment  {}", deployment_file.display());
    println!(
        "  VMMarketplace {}  SubmissionStakes {}",
        d.vm_marketplace,
        d.submission_stakes.unwrap_or_default()
    );
    println!(
        "  USDC {}  cbBTC {}  treasury {}",
        d.usdc,
        d.cbbtc.unwrap_or_default(),
        d.treasury
    );
    println!("  demo market {DEMO_MARKET_UUID} (open for 7 days)");
    for (i, w) in wallets.iter().enumerate() {
        println!(
            "  demo wallet {}: {} key {} (10,000 USDC, 1 cbBTC)",
            i + 1,
            w.address,
            w.key_hex
        );
    }
    println!("\nTry:");
    println!("  curl -s {api}/health");
    println!("  curl -s {api}/ai_agent/v1/markets   # Clockchain markets (docs/markets.md)");
    if let Some(w) = wallets.first() {
        let price = DEFAULT_TIERS[0].price_per_day * 7;
        println!("\nBuy a tier-0 VM for 7 days as demo wallet 1:");
        println!("  export CAST={cast} RPC={rpc_url} KEY={}", w.key_hex);
        println!(
            "  $CAST send --rpc-url $RPC --private-key $KEY {} 'approve(address,uint256)' {} {price}",
            d.usdc, d.vm_marketplace
        );
        println!(
            "  $CAST send --rpc-url $RPC --private-key $KEY {} 'purchaseVM(uint8,uint16)' 0 7",
            d.vm_marketplace
        );
        println!(
            "  $CAST call --rpc-url $RPC {} 'ownerOf(uint256)(address)' 1",
            d.vm_marketplace
        );
        println!(
            "  $CAST call --rpc-url $RPC {} 'isTokenValid(uint256)(bool)' 1",
            d.vm_marketplace
        );
        println!(
            "\nFetch its SSH credentials (signed by the owner; the test chain's legacy form):"
        );
        println!("  SIG=$($CAST wallet sign --private-key $KEY 'ClawCloud Access Request: 1')");
        println!("  curl -s -H \"Authorization: Bearer $SIG\" {api}/credentials/1");
        println!("\nOr the single-use form that names this node (domain and chain id):");
        println!(
            "  TS=$(date +%s); SIG=$($CAST wallet sign --private-key $KEY \"$(printf 'ClawCloud Access Request: 1\\nDomain: {}\\nChain ID: {}\\nTimestamp: %s' $TS)\")",
            api.trim_start_matches("http://"),
            d.chain_id
        );
        println!(
            "  curl -s -H \"Authorization: Bearer $SIG\" -H \"X-ClawCloud-Timestamp: $TS\" {api}/credentials/1"
        );
        println!("\nPay per request with x402 (docs/x402.md walks through the Python client):");
        println!("  curl -s {api}/x402/supported");
        println!("\nList the wallet's VMs and the tiers:");
        println!("  curl -s {api}/vms/{}", w.address);
        println!("  curl -s {api}/tiers");
    }
}
