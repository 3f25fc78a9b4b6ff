//! Deploying chainfront's contracts to any chain, and seeding a local one with
//! the demo state `chainfront dev` promises (tiers, an open market, funded
//! wallets). Used by `chainfront deploy`, `chainfront dev` and the tests.

use alloy::network::{Ethereum, EthereumWallet};
use alloy::primitives::{Address, FixedBytes, U256};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use chainfront_indexer::contracts::{MockCbBTC, MockUSDC, SubmissionStakes, VMMarketplace};
use chainfront_indexer::deployment::Deployment;
use tracing::info;

use crate::{Error, Result};

/// One VM tier as seeded on chain.
#[derive(Debug, Clone, Copy)]
pub struct TierSpec {
    /// 0..=7.
    pub tier: u8,
    /// Display name (the ClawCloud reference's sizes and GPU models).
    pub name: &'static str,
    /// Price per day in USDC base units (6 decimals).
    pub price_per_day: u64,
}

/// The eight ClawCloud tiers with realistic prices: 0-3 are Vultr-style VMs,
/// 4-7 RunPod-style GPUs (per-hour market rates × 24).
pub const DEFAULT_TIERS: [TierSpec; 8] = [
    TierSpec {
        tier: 0,
        name: "1 vCPU, 1 GB RAM",
        price_per_day: 200_000,
    },
    TierSpec {
        tier: 1,
        name: "1 vCPU, 2 GB RAM",
        price_per_day: 400_000,
    },
    TierSpec {
        tier: 2,
        name: "2 vCPU, 4 GB RAM",
        price_per_day: 800_000,
    },
    TierSpec {
        tier: 3,
        name: "4 vCPU, 8 GB RAM",
        price_per_day: 1_600_000,
    },
    TierSpec {
        tier: 4,
        name: "NVIDIA GeForce RTX 4090",
        price_per_day: 16_560_000,
    },
    TierSpec {
        tier: 5,
        name: "NVIDIA A100 40GB PCIe",
        price_per_day: 28_800_000,
    },
    TierSpec {
        tier: 6,
        name: "NVIDIA A100 80GB PCIe",
        price_per_day: 39_360_000,
    },
    TierSpec {
        tier: 7,
        name: "NVIDIA H100 PCIe",
        price_per_day: 57_360_000,
    },
];

/// The demo market's UUID (the one in the Clockchain reference's examples).
pub const DEMO_MARKET_UUID: &str = "123e4567-e89b-12d3-a456-426614174000";

/// The platform fee, in basis points (7%).
pub const DEFAULT_FEE_BPS: u16 = 700;

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployPlan {
    /// Where payments go.
    pub treasury: Address,
    /// An existing USDC; `None` deploys `MockUSDC` (local chains only).
    pub usdc: Option<Address>,
    /// An existing wrapped-BTC token; `None` deploys `MockCbBTC` when USDC is
    /// mocked too, and leaves BTC stakes off otherwise.
    pub cbbtc: Option<Address>,
    /// Submission fee in basis points.
    pub fee_bps: u16,
}

/// A provider that signs with `key`, over HTTP.
pub fn signing_provider(rpc_url: &str, key: PrivateKeySigner) -> Result<DynProvider> {
    let url = rpc_url
        .parse()
        .map_err(|e| Error::chain(format!("invalid RPC URL `{rpc_url}`: {e}")))?;
    Ok(ProviderBuilder::new()
        .wallet(EthereumWallet::from(key))
        .connect_http(url)
        .erased())
}

/// Parses a hex private key.
pub fn parse_key(hex: &str) -> Result<PrivateKeySigner> {
    hex.trim()
        .parse()
        .map_err(|_| Error::chain("the private key is not 32 bytes of hex"))
}

/// Waits for a sent transaction and fails unless it succeeded.
pub async fn mined(
    pending: PendingTransactionBuilder<Ethereum>,
    what: &str,
) -> Result<TransactionReceipt> {
    let receipt = pending
        .get_receipt()
        .await
        .map_err(|e| Error::chain(format!("{what}: {e}")))?;
    if !receipt.status() {
        return Err(Error::chain(format!(
            "{what}: transaction {} reverted",
            receipt.transaction_hash
        )));
    }
    Ok(receipt)
}

fn created(receipt: &TransactionReceipt, what: &str) -> Result<Address> {
    receipt
        .contract_address
        .ok_or_else(|| Error::chain(format!("{what}: receipt has no contract address")))
}

/// Deploys the contracts as `plan` says, owned by the provider's signer
/// `owner`, and returns where they are.
pub async fn deploy(
    provider: &DynProvider,
    owner: Address,
    plan: &DeployPlan,
) -> Result<Deployment> {
    let chain_id = provider.get_chain_id().await.map_err(Error::chain)?;
    let mut start_block = None;
    let mut note = |r: &TransactionReceipt| {
        if start_block.is_none() {
            start_block = r.block_number;
        }
    };

    let (usdc, cbbtc) = match plan.usdc {
        Some(usdc) => (usdc, plan.cbbtc),
        None => {
            let r = mined(
                MockUSDC::deploy_builder(provider)
                    .send()
                    .await
                    .map_err(Error::chain)?,
                "deploy MockUSDC",
            )
            .await?;
            note(&r);
            let usdc = created(&r, "MockUSDC")?;
            let cbbtc = match plan.cbbtc {
                Some(a) => a,
                None => {
                    let r = mined(
                        MockCbBTC::deploy_builder(provider)
                            .send()
                            .await
                            .map_err(Error::chain)?,
                        "deploy MockCbBTC",
                    )
                    .await?;
                    created(&r, "MockCbBTC")?
                }
            };
            (usdc, Some(cbbtc))
        }
    };

    let r = mined(
        VMMarketplace::deploy_builder(provider, usdc, plan.treasury, owner)
            .send()
            .await
            .map_err(Error::chain)?,
        "deploy VMMarketplace",
    )
    .await?;
    note(&r);
    let vm_marketplace = created(&r, "VMMarketplace")?;

    let r = mined(
        SubmissionStakes::deploy_builder(provider, owner, plan.treasury, plan.fee_bps)
            .send()
            .await
            .map_err(Error::chain)?,
        "deploy SubmissionStakes",
    )
    .await?;
    let submission_stakes = created(&r, "SubmissionStakes")?;
    let stakes = SubmissionStakes::new(submission_stakes, provider);
    for token in std::iter::once(usdc).chain(cbbtc) {
        mined(
            stakes
                .setStakeToken(token, true)
                .send()
                .await
                .map_err(Error::chain)?,
            "allow stake token",
        )
        .await?;
    }
    mined(
        stakes
            .setOperator(owner, true)
            .send()
            .await
            .map_err(Error::chain)?,
        "set operator",
    )
    .await?;

    let deployment = Deployment {
        chain_id,
        start_block: start_block.unwrap_or_default(),
        usdc,
        cbbtc,
        vm_marketplace,
        submission_stakes: Some(submission_stakes),
        treasury: plan.treasury,
        deployer: Some(owner),
    };
    info!(target: "chainfront::deploy", chain_id, %vm_marketplace, %submission_stakes, %usdc, "contracts deployed");
    Ok(deployment)
}

/// A local chain ready to use: contracts deployed by `owner` with mock
/// tokens and `treasury`, the default tiers seeded and `wallets` funded.
/// Returns the owner's signing provider and the deployment.
pub async fn deploy_local(
    rpc_url: &str,
    owner: PrivateKeySigner,
    treasury: Address,
    wallets: &[Address],
) -> Result<(DynProvider, Deployment)> {
    let provider = signing_provider(rpc_url, owner.clone())?;
    let plan = DeployPlan {
        treasury,
        usdc: None,
        cbbtc: None,
        fee_bps: DEFAULT_FEE_BPS,
    };
    let d = deploy(&provider, owner.address(), &plan).await?;
    seed_tiers(&provider, d.vm_marketplace, &DEFAULT_TIERS).await?;
    fund_demo_wallets(&provider, &d, wallets).await?;
    Ok((provider, d))
}

/// Sets each tier on the marketplace (the provider's signer must own it).
pub async fn seed_tiers(
    provider: &DynProvider,
    vm_marketplace: Address,
    tiers: &[TierSpec],
) -> Result<()> {
    let vm = VMMarketplace::new(vm_marketplace, provider);
    for t in tiers {
        mined(
            vm.setTier(t.tier, U256::from(t.price_per_day), true, t.name.to_owned())
                .send()
                .await
                .map_err(Error::chain)?,
            "set tier",
        )
        .await?;
    }
    Ok(())
}

/// A market UUID as the contract's `bytes16` id.
pub fn market_id(uuid: &str) -> Result<FixedBytes<16>> {
    let id = uuid::Uuid::parse_str(uuid)
        .map_err(|e| Error::chain(format!("market id `{uuid}`: {e}")))?;
    Ok(FixedBytes::from(*id.as_bytes()))
}

/// Opens the demo market for a week, with `oracle` as its oracle.
pub async fn seed_demo_market(
    provider: &DynProvider,
    submission_stakes: Address,
    oracle: Address,
) -> Result<()> {
    let stakes = SubmissionStakes::new(submission_stakes, provider);
    let now = provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .map_err(Error::chain)?
        .map(|b| b.header.timestamp)
        .ok_or_else(|| Error::chain("no latest block"))?;
    let metadata = serde_json::json!({
        "actor": {"id": "8b0f3c52-3c5e-4c55-9c1e-6b7a1f2d9e01", "name": "Demo Actor"},
        "title": "What will the actor say next?"
    })
    .to_string();
    mined(
        stakes
            .createMarket(
                market_id(DEMO_MARKET_UUID)?,
                now.saturating_sub(60),
                now + 7 * 86_400,
                vec![oracle],
                metadata,
            )
            .send()
            .await
            .map_err(Error::chain)?,
        "create demo market",
    )
    .await?;
    Ok(())
}

/// Mints demo balances (mock tokens only): 10,000 USDC and 1 cbBTC each.
pub async fn fund_demo_wallets(
    provider: &DynProvider,
    deployment: &Deployment,
    wallets: &[Address],
) -> Result<()> {
    let usdc = MockUSDC::new(deployment.usdc, provider);
    for w in wallets {
        mined(
            usdc.mint(*w, U256::from(10_000_000_000u64))
                .send()
                .await
                .map_err(Error::chain)?,
            "mint demo USDC",
        )
        .await?;
        if let Some(cbbtc) = deployment.cbbtc {
            mined(
                MockCbBTC::new(cbbtc, provider)
                    .mint(*w, U256::from(100_000_000u64))
                    .send()
                    .await
                    .map_err(Error::chain)?,
                "mint demo cbBTC",
            )
            .await?;
        }
    }
    Ok(())
}

/// Sends `n` USDC deposits to the treasury from `wallets` (round robin),
/// `per_block` per mined block, on a local chain: automine off, explicit nonces
/// and gas, then `evm_mine` (anvil stalls under rapid sends with automine on).
/// For benchmarks and demo data; the wallets must hold USDC.
pub async fn seed_deposits(
    rpc_url: &str,
    deployment: &Deployment,
    wallets: &[PrivateKeySigner],
    n: usize,
    per_block: usize,
) -> Result<()> {
    use alloy::network::TransactionBuilder;
    use alloy::rpc::types::TransactionRequest;
    use alloy::sol_types::SolCall;

    if wallets.is_empty() || per_block == 0 {
        return Err(Error::chain(
            "seed_deposits needs wallets and per_block > 0",
        ));
    }
    let senders = wallets
        .iter()
        .map(|w| signing_provider(rpc_url, w.clone()))
        .collect::<Result<Vec<_>>>()?;
    let chain_id = senders[0].get_chain_id().await.map_err(Error::chain)?;
    let mut nonces = Vec::with_capacity(wallets.len());
    for w in wallets {
        nonces.push(
            senders[0]
                .get_transaction_count(w.address())
                .pending()
                .await
                .map_err(Error::chain)?,
        );
    }
    let raw = |method: &'static str, on: bool| {
        let p = senders[0].clone();
        async move {
            let r: std::result::Result<serde_json::Value, _> = if method == "evm_setAutomine" {
                p.raw_request(method.into(), (on,)).await
            } else {
                p.raw_request(method.into(), ()).await
            };
            r.map(|_| ()).map_err(Error::chain)
        }
    };
    raw("evm_setAutomine", false).await?;
    for i in 0..n {
        let w = i % wallets.len();
        let input = MockUSDC::transferCall {
            to: deployment.treasury,
            value: U256::from(1 + (i as u64 % 997)),
        }
        .abi_encode();
        let tx = TransactionRequest::default()
            .with_to(deployment.usdc)
            .with_input(input)
            .with_nonce(nonces[w])
            .with_gas_limit(100_000)
            .with_max_fee_per_gas(20_000_000_000)
            .with_max_priority_fee_per_gas(1_000_000_000)
            .with_chain_id(chain_id);
        nonces[w] += 1;
        let _ = senders[w]
            .send_transaction(tx)
            .await
            .map_err(Error::chain)?;
        if (i + 1).is_multiple_of(per_block) {
            raw("evm_mine", false).await?;
        }
    }
    if !n.is_multiple_of(per_block) {
        raw("evm_mine", false).await?;
    }
    raw("evm_setAutomine", true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_ids_are_the_uuid_bytes() {
        let id = market_id(DEMO_MARKET_UUID).expect("valid");
        assert_eq!(id.to_string(), "0x123e4567e89b12d3a456426614174000");
        assert!(market_id("not-a-uuid").is_err());
    }

    #[test]
    fn default_tiers_cover_0_to_7_once() {
        let tiers: Vec<u8> = DEFAULT_TIERS.iter().map(|t| t.tier).collect();
        assert_eq!(tiers, (0..8).collect::<Vec<u8>>());
        assert!(DEFAULT_TIERS.iter().all(|t| t.price_per_day > 0));
    }
}
