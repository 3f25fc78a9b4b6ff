//! Seeding many real transactions quickly: automine off, explicit nonces and
//! gas, then `evm_mine` (anvil stalls under rapid sends with automine on).

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use chainfront_indexer::contracts::{MockUSDC, VMMarketplace};

use crate::harness::Stack;

/// One thing to do on chain.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// `wallet` sends `amount` USDC base units to the treasury.
    Deposit { wallet: usize, amount: u64 },
    /// `wallet` buys a VM of `tier` for `days` (it must have approved enough).
    Purchase { wallet: usize, tier: u8, days: u16 },
    /// `from` transfers VM `token_id` to `to`.
    TransferVm {
        from: usize,
        to: usize,
        token_id: u64,
    },
    /// `wallet` approves the marketplace for a large USDC amount.
    Approve { wallet: usize },
}

/// Sends every action in order, `per_block` transactions per mined block.
/// Returns the number of blocks mined.
pub async fn run(stack: &Stack, actions: &[Action], per_block: usize) -> u64 {
    let provider = &stack.deployer;
    let _: bool = provider
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .map(|_: serde_json::Value| true)
        .expect("automine off");
    let wallets: Vec<(Address, DynProvider)> = (0..10)
        .map(|i| (stack.signer(i).address(), stack.wallet(i)))
        .collect();
    let mut nonces = Vec::new();
    for (addr, _) in &wallets {
        nonces.push(
            provider
                .get_transaction_count(*addr)
                .pending()
                .await
                .expect("nonce"),
        );
    }
    let d = &stack.deployment;
    let mut mined = 0u64;
    for (i, action) in actions.iter().enumerate() {
        let (who, to, input) = match *action {
            Action::Deposit { wallet, amount } => (
                wallet,
                d.usdc,
                MockUSDC::transferCall {
                    to: d.treasury,
                    value: U256::from(amount),
                }
                .abi_encode(),
            ),
            Action::Purchase { wallet, tier, days } => (
                wallet,
                d.vm_marketplace,
                VMMarketplace::purchaseVMCall {
                    tier,
                    durationDays: days,
                }
                .abi_encode(),
            ),
            Action::TransferVm { from, to, token_id } => (
                from,
                d.vm_marketplace,
                VMMarketplace::transferFromCall {
                    from: wallets[from].0,
                    to: wallets[to].0,
                    tokenId: U256::from(token_id),
                }
                .abi_encode(),
            ),
            Action::Approve { wallet } => (
                wallet,
                d.usdc,
                MockUSDC::approveCall {
                    spender: d.vm_marketplace,
                    value: U256::MAX,
                }
                .abi_encode(),
            ),
        };
        let tx = TransactionRequest::default()
            .with_to(to)
            .with_input(input)
            .with_nonce(nonces[who])
            .with_gas_limit(400_000)
            .with_max_fee_per_gas(20_000_000_000)
            .with_max_priority_fee_per_gas(1_000_000_000)
            .with_chain_id(31337);
        nonces[who] += 1;
        let _ = wallets[who].1.send_transaction(tx).await.expect("send");
        if (i + 1).is_multiple_of(per_block) {
            mine(provider).await;
            mined += 1;
        }
    }
    if !actions.len().is_multiple_of(per_block) {
        mine(provider).await;
        mined += 1;
    }
    let _: serde_json::Value = provider
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .expect("automine on");
    mined
}

/// Mines one block.
pub async fn mine(provider: &DynProvider) {
    let _: serde_json::Value = provider
        .raw_request("evm_mine".into(), ())
        .await
        .expect("evm_mine");
}
