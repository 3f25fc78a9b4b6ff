//! What the chain says, read straight from anvil (`eth_getLogs` over the
//! whole final chain), to check the indexer's state against something other
//! than itself: "no deposit lost or counted twice".

use std::collections::{BTreeMap, HashSet};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::contracts::{MockUSDC, VMMarketplace};
use chainfront_indexer::keys::{ChainKeys, lower};
use redis::AsyncCommands;

use crate::harness::Stack;

/// The deposits of the final chain, `tx:logindex` → `from:amount:block`:
/// every USDC transfer to the treasury except those in a transaction that
/// bought a VM (the seeded workloads pay for a purchase in its own
/// transaction, and nothing else happens in it).
pub async fn chain_deposits(stack: &Stack) -> BTreeMap<String, String> {
    let p = &stack.deployer;
    let d = &stack.deployment;
    let head = p.get_block_number().await.expect("head");
    let transfers = p
        .get_logs(
            &Filter::new()
                .address(d.usdc)
                .event_signature(MockUSDC::Transfer::SIGNATURE_HASH)
                .topic2(d.treasury.into_word())
                .from_block(0)
                .to_block(head),
        )
        .await
        .expect("transfers");
    let purchases: HashSet<B256> = p
        .get_logs(
            &Filter::new()
                .address(d.vm_marketplace)
                .event_signature(VMMarketplace::VMPurchased::SIGNATURE_HASH)
                .from_block(0)
                .to_block(head),
        )
        .await
        .expect("purchases")
        .iter()
        .filter_map(|l| l.transaction_hash)
        .collect();
    let mut out = BTreeMap::new();
    for l in transfers {
        let tx = l.transaction_hash.expect("tx");
        if purchases.contains(&tx) {
            continue;
        }
        let ev = MockUSDC::Transfer::decode_log(&l.inner).expect("transfer");
        out.insert(
            ChainKeys::deposit_id(tx, l.log_index.expect("index")),
            format!(
                "{}:{}:{}",
                lower(ev.from),
                ev.value,
                l.block_number.expect("block")
            ),
        );
    }
    out
}

/// Asserts the indexed deposits are exactly the chain's (none lost, none
/// twice, none from an orphaned block) and every wallet's total and deposit
/// list agree with them.
pub async fn assert_deposits_match_chain(stack: &Stack, conn: &mut RedisConn, keys: &ChainKeys) {
    let expected = chain_deposits(stack).await;
    let indexed: BTreeMap<String, String> = conn.hgetall(keys.deposits()).await.expect("deposits");
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !indexed.contains_key(*k))
        .collect();
    let extra: Vec<_> = indexed
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "deposits differ from the chain: {} missing {missing:?}, {} extra {extra:?}",
        missing.len(),
        extra.len()
    );
    assert_eq!(indexed, expected, "deposit records differ from the chain");
    let mut per_wallet: BTreeMap<String, (U256, usize)> = BTreeMap::new();
    for v in expected.values() {
        let mut parts = v.split(':');
        let from = parts.next().expect("from").to_owned();
        let amount: U256 = parts.next().expect("amount").parse().expect("amount");
        let e = per_wallet.entry(from).or_default();
        e.0 += amount;
        e.1 += 1;
    }
    for (wallet, (total, count)) in &per_wallet {
        let a: Address = wallet.parse().expect("address");
        let got: Option<String> = conn.get(keys.wallet_deposit_total(a)).await.expect("total");
        assert_eq!(got, Some(total.to_string()), "total of {wallet}");
        let n: usize = conn.zcard(keys.wallet_deposits(a)).await.expect("zcard");
        assert_eq!(n, *count, "deposit list of {wallet}");
    }
    // No total for a wallet without deposits on the final chain (an orphan's
    // total must be deleted, not left at 0 or at its old value).
    let totals = chainfront_indexer::store::scan(
        conn,
        &format!("{}deptotal:*", keys.state_pattern().trim_end_matches('*')),
    )
    .await
    .expect("scan");
    for key in totals {
        let wallet = key.rsplit(':').next().expect("wallet");
        assert!(
            per_wallet.contains_key(wallet),
            "a deposit total for {wallet}, who has no deposit on the final chain"
        );
    }
}
