//! The contracts through the generated bindings: a funded wallet buys a VM with
//! a real signed transaction, and what the API will rely on reads back.

use alloy::primitives::U256;
use alloy::providers::Provider;
use chainfront::deploy::DEFAULT_TIERS;
use chainfront_indexer::contracts::{MockUSDC, VMMarketplace};

use crate::harness::Stack;

#[tokio::test]
async fn buyer_purchases_a_vm_and_reads_it_back() {
    let stack = Stack::start().await;
    let buyer = stack.signer(1);
    let wallet = stack.wallet(1);
    let d = &stack.deployment;
    let usdc = MockUSDC::new(d.usdc, &wallet);
    let vm = VMMarketplace::new(d.vm_marketplace, &wallet);

    let tier = DEFAULT_TIERS[2];
    let config = vm
        .getTierConfig(tier.tier)
        .call()
        .await
        .expect("getTierConfig");
    assert_eq!(config.price, U256::from(tier.price_per_day));
    assert!(config.active);
    assert_eq!(config.name, tier.name);

    let days = 30u16;
    let cost = config.price * U256::from(days);
    let treasury_before = usdc.balanceOf(d.treasury).call().await.expect("balance");
    let buyer_before = usdc
        .balanceOf(buyer.address())
        .call()
        .await
        .expect("balance");
    let event = stack.purchase_vm(1, tier.tier, days).await;
    assert_eq!(event.buyer, buyer.address());
    assert_eq!(event.tier, tier.tier);
    assert_eq!(event.durationDays, days);
    assert_eq!(event.totalCost, cost);
    let token_id = event.tokenId;

    assert_eq!(
        vm.ownerOf(token_id).call().await.expect("ownerOf"),
        buyer.address()
    );
    assert!(
        vm.isTokenValid(token_id)
            .call()
            .await
            .expect("isTokenValid")
    );
    assert!(
        !vm.isTokenValid(token_id + U256::from(1))
            .call()
            .await
            .expect("isTokenValid"),
        "a token that was never minted is not valid"
    );
    assert_eq!(
        usdc.balanceOf(d.treasury).call().await.expect("balance"),
        treasury_before + cost,
        "the treasury received the whole price"
    );
    assert_eq!(
        usdc.balanceOf(buyer.address())
            .call()
            .await
            .expect("balance"),
        buyer_before - cost
    );

    // Time passes beyond the paid period: the NFT stays owned but is no longer valid.
    let provider = &stack.deployer;
    let _: serde_json::Value = provider
        .raw_request("evm_increaseTime".into(), (u64::from(days) * 86_400 + 1,))
        .await
        .expect("increase time");
    let _: serde_json::Value = provider
        .raw_request("evm_mine".into(), ())
        .await
        .expect("mine");
    assert_eq!(
        vm.ownerOf(token_id).call().await.expect("ownerOf"),
        buyer.address()
    );
    assert!(
        !vm.isTokenValid(token_id)
            .call()
            .await
            .expect("isTokenValid")
    );
}

#[tokio::test]
async fn a_transferred_vm_belongs_to_its_new_owner() {
    let stack = Stack::start().await;
    let buyer = stack.signer(2);
    let wallet = stack.wallet(1);
    let vm = VMMarketplace::new(stack.deployment.vm_marketplace, &wallet);
    let token_id = stack.buy_vm(1, 0, 1).await;
    stack.transfer_vm(1, buyer.address(), token_id).await;
    assert_eq!(
        vm.ownerOf(token_id).call().await.expect("ownerOf"),
        buyer.address()
    );
    // Unknown tiers revert with the contract's custom error, decoded by the bindings.
    let err = vm
        .getTierConfig(8)
        .call()
        .await
        .expect_err("tier 8 does not exist");
    let decoded = err.as_decoded_error::<VMMarketplace::UnknownTier>();
    assert!(decoded.is_some(), "expected UnknownTier, got {err}");
    let _ = stack
        .deployer
        .get_block_number()
        .await
        .expect("chain alive");
}
