//! The shared test stack: anvil + redis-server + deployed and seeded contracts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alloy::node_bindings::AnvilInstance;
use alloy::primitives::Address;
use alloy::providers::DynProvider;
use alloy::signers::local::PrivateKeySigner;
use chainfront::config::Config;
use chainfront::deploy::{self, DEFAULT_FEE_BPS, DEFAULT_TIERS, DeployPlan};
use chainfront::devnet::{self, RedisServer};
use chainfront_indexer::deployment::Deployment;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running local chain + Redis with chainfront's contracts deployed.
pub struct Stack {
    pub anvil: AnvilInstance,
    pub redis: RedisServer,
    pub deployment: Deployment,
    /// Signs as the deployer (contract owner, operator, oracle).
    pub deployer: DynProvider,
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Starts everything; tiers seeded, the demo market open, wallets 1..=6 funded.
    pub async fn start() -> Stack {
        Self::start_on(31337).await
    }

    /// [`Stack::start`] on an anvil with another chain id (e.g. Base
    /// Sepolia's 84532, for clients that only know named networks); point
    /// the config at it with `CHAINFRONT_CHAINS__LOCAL__CHAIN_ID`.
    pub async fn start_on(chain_id: u64) -> Stack {
        let anvil = devnet::start_anvil(chain_id, None).expect("anvil starts");
        let redis = RedisServer::start().expect("redis-server starts");
        let owner_key = anvil_signer(&anvil, 0);
        let owner = owner_key.address();
        let deployer = deploy::signing_provider(&anvil.endpoint(), owner_key).expect("provider");
        let plan = DeployPlan {
            treasury: anvil_signer(&anvil, 9).address(),
            usdc: None,
            cbbtc: None,
            fee_bps: DEFAULT_FEE_BPS,
        };
        let deployment = deploy::deploy(&deployer, owner, &plan)
            .await
            .expect("deploy");
        deploy::seed_tiers(&deployer, deployment.vm_marketplace, &DEFAULT_TIERS)
            .await
            .expect("tiers");
        deploy::seed_demo_market(
            &deployer,
            deployment.submission_stakes.expect("stakes"),
            owner,
        )
        .await
        .expect("market");
        let wallets: Vec<Address> = (1..=6).map(|i| anvil_signer(&anvil, i).address()).collect();
        deploy::fund_demo_wallets(&deployer, &deployment, &wallets)
            .await
            .expect("fund");
        let dir = tempfile::tempdir().expect("tempdir");
        deployment
            .write(&dir.path().join("deployment.json"))
            .expect("deployment file");
        Stack {
            anvil,
            redis,
            deployment,
            deployer,

            dir,
        }
    }

    /// anvil dev key `i` as a signer.
    pub fn signer(&self, i: usize) -> PrivateKeySigner {
        anvil_signer(&self.anvil, i)
    }

    /// A provider that signs as anvil dev key `i`.
    pub fn wallet(&self, i: usize) -> DynProvider {
        deploy::signing_provider(&self.anvil.endpoint(), self.signer(i)).expect("provider")
    }

    /// The environment that points `config/local.toml` at this stack.
    pub fn env(&self) -> BTreeMap<String, String> {
        [
            (
                "CHAINFRONT_CHAINS__LOCAL__RPC_URLS",
                format!("[\"{}\"]", self.anvil.endpoint()),
            ),
            ("CHAINFRONT_REDIS__URL", self.redis.url()),
            (
                "CHAINFRONT_CHAINS__LOCAL__DEPLOYMENT_FILE",
                self.deployment_file().display().to_string(),
            ),
            ("CHAINFRONT_API__LISTEN", "127.0.0.1:0".into()),
            // Every node needs a sign-in secret of at least 32 bytes.
            (
                "CHAINFRONT_JWT_SECRET",
                "harness-jwt-secret-harness-jwt-secret".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Where this stack's deployment file is.
    pub fn deployment_file(&self) -> PathBuf {
        self.dir.path().join("deployment.json")
    }

    /// `config/local.toml` pointed at this stack.
    pub fn config(&self) -> Config {
        Config::load_with_env(Some(&local_toml()), &self.env()).expect("config loads")
    }
}

/// The shipped local config.
pub fn local_toml() -> PathBuf {
    repo_root().join("config/local.toml")
}

fn anvil_signer(anvil: &AnvilInstance, i: usize) -> PrivateKeySigner {
    PrivateKeySigner::from(anvil.keys()[i].clone())
}

/// Runs `program` from the repository root and returns (success, stdout, stderr).
pub fn run_in_repo(program: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo_root())
        .output()
        .expect("spawn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Stack {
    /// Wallet `i` approves the price and buys a VM of `tier` for `days` with
    /// real signed transactions; returns the `VMPurchased` event.
    pub async fn purchase_vm(
        &self,
        i: usize,
        tier: u8,
        days: u16,
    ) -> chainfront_indexer::contracts::VMMarketplace::VMPurchased {
        use alloy::primitives::U256;
        use chainfront::deploy::mined;
        use chainfront_indexer::contracts::{MockUSDC, VMMarketplace};
        let wallet = self.wallet(i);
        let d = &self.deployment;
        let vm = VMMarketplace::new(d.vm_marketplace, &wallet);
        let price = vm.getTierConfig(tier).call().await.expect("tier").price;
        let usdc = MockUSDC::new(d.usdc, &wallet);
        mined(
            usdc.approve(d.vm_marketplace, price * U256::from(days))
                .send()
                .await
                .expect("approve"),
            "approve",
        )
        .await
        .expect("approve mined");
        let receipt = mined(
            vm.purchaseVM(tier, days).send().await.expect("purchase"),
            "purchase",
        )
        .await
        .expect("purchase mined");
        receipt
            .inner
            .logs()
            .iter()
            .find_map(|l| l.log_decode::<VMMarketplace::VMPurchased>().ok())
            .expect("VMPurchased emitted")
            .inner
            .data
    }

    /// Wallet `i` buys a VM (see [`Stack::purchase_vm`]); returns its token id.
    pub async fn buy_vm(&self, i: usize, tier: u8, days: u16) -> alloy::primitives::U256 {
        self.purchase_vm(i, tier, days).await.tokenId
    }

    /// Wallet `i`, the VM's owner, transfers it to `to` (ERC-721 `transferFrom`).
    pub async fn transfer_vm(
        &self,
        i: usize,
        to: alloy::primitives::Address,
        token: alloy::primitives::U256,
    ) {
        use chainfront_indexer::contracts::VMMarketplace;
        let vm = VMMarketplace::new(self.deployment.vm_marketplace, self.wallet(i));
        chainfront::deploy::mined(
            vm.transferFrom(self.signer(i).address(), to, token)
                .send()
                .await
                .expect("transfer"),
            "transfer",
        )
        .await
        .expect("transfer mined");
    }
}

/// Polls `f` every 50 ms until it holds; fails the test naming `what` when
/// `within` passes first.
pub async fn wait_until<F, Fut>(what: &str, within: std::time::Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
