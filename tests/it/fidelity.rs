//! Data fidelity at the edges of what the chain can carry: a log index near
//! 2^32 (as on chains with huge blocks), amounts up to 2^256 − 1, long runs
//! of empty blocks, and a token whose `symbol()` is empty. Each is kept
//! exactly, committed through both write paths (backfill and window) and
//! undone exactly.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::Log;
use alloy::sol_types::SolEvent;
use chainfront::deploy::mined;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::contracts::{MockToken, MockUSDC, SubmissionStakes};
use chainfront_indexer::keys::{ChainKeys, lower};
use chainfront_indexer::logs::WireLog;
use chainfront_indexer::store::{Commit, Store, WindowBlock, scan};
use redis::AsyncCommands;

use crate::harness::Stack;
use crate::indexer::{conn, digest, follower, spec, workload};
use crate::seed::{self, Action};

/// A USDC transfer to the treasury as a provider sends it in `eth_getLogs`.
fn wire_transfer(
    stack: &Stack,
    from: Address,
    value: U256,
    block: u64,
    tx: B256,
    log_index: &str,
) -> Log {
    let d = &stack.deployment;
    let data = MockUSDC::Transfer {
        from,
        to: d.treasury,
        value,
    }
    .encode_log_data();
    let json = serde_json::json!({
        "address": d.usdc,
        "topics": data.topics(),
        "data": data.data,
        "blockHash": B256::repeat_byte(block as u8),
        "blockNumber": format!("{block:#x}"),
        "transactionHash": tx,
        "transactionIndex": "0x0",
        "logIndex": log_index,
        "removed": false,
    });
    serde_json::from_value::<WireLog>(json)
        .expect("a provider's log decodes")
        .into()
}

/// Commits `blocks` (number → logs) through the backfill path into `c1` and
/// the window path into `c2`; both must reach the same state.
async fn commit_both(
    stack: &Stack,
    keys: &ChainKeys,
    blocks: &[(u64, Vec<Log>)],
) -> (Store, RedisConn, RedisConn) {
    let spec = spec(stack);
    let (c1, c2) = (conn(stack, 1).await, conn(stack, 2).await);
    let mut backfill = Store::new(c1.clone(), keys.clone(), 128);
    let mut window = Store::new(c2.clone(), keys.clone(), 128);
    for (n, logs) in blocks {
        backfill
            .commit(Commit {
                to: *n,
                to_hash: B256::repeat_byte(*n as u8),
                ops: spec.watched.ops_for_logs(logs),
                undo: false,
            })
            .await
            .expect("backfill commit");
    }
    window
        .commit_window(
            blocks
                .iter()
                .map(|(n, logs)| WindowBlock {
                    number: *n,
                    hash: B256::repeat_byte(*n as u8),
                    ops: spec.watched.ops_for_logs(logs),
                })
                .collect(),
        )
        .await
        .expect("window commit");
    (window, c1, c2)
}

#[tokio::test]
async fn a_log_index_of_0xffffffe2_keys_its_deposit_exactly() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let keys = spec.watched.keys.clone();
    let who = stack.signer(3).address();
    let tx = B256::repeat_byte(0x5a);
    let logs = vec![
        wire_transfer(&stack, who, U256::from(5u64), 7, tx, "0xffffffe1"),
        wire_transfer(&stack, who, U256::from(6u64), 7, tx, "0xffffffe2"),
    ];
    assert_eq!(logs[1].log_index, Some(0xffff_ffe2));
    let (mut window, mut c1, mut c2) = commit_both(&stack, &keys, &[(7, logs)]).await;
    for c in [&mut c1, &mut c2] {
        let id = ChainKeys::deposit_id(tx, 0xffff_ffe2);
        assert_eq!(id, format!("{tx}:4294967266"));
        let v: Option<String> = c.hget(keys.deposits(), &id).await.expect("hget");
        assert_eq!(v, Some(format!("{}:6:7", lower(who))));
        let score: Option<u64> = c
            .zscore(keys.wallet_deposits(who), &id)
            .await
            .expect("zscore");
        assert_eq!(score, Some(7));
        let n: usize = c.hlen(keys.deposits()).await.expect("hlen");
        assert_eq!(n, 2, "two deposits, not one overwriting the other");
        let total: String = c.get(keys.wallet_deposit_total(who)).await.expect("total");
        assert_eq!(total, "11");
    }
    assert_eq!(digest(&mut c1, &spec).await, digest(&mut c2, &spec).await);
    window.revert_to(0).await.expect("revert");
    assert!(
        scan(&mut c2, &keys.state_pattern())
            .await
            .expect("scan")
            .is_empty()
    );
}

#[tokio::test]
async fn amounts_up_to_2_pow_256_minus_1_are_kept_exactly() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let keys = spec.watched.keys.clone();
    let (a, b) = (stack.signer(3).address(), stack.signer(4).address());
    let t = |n: u8| B256::repeat_byte(n);
    // One transfer of 2^256 − 1; and 2^256 − 2 plus 1 adding up to it, in
    // two blocks (the window batch adds them in memory, the backfill reads
    // the first back from Redis).
    let blocks = vec![
        (
            5,
            vec![
                wire_transfer(&stack, a, U256::MAX, 5, t(1), "0x0"),
                wire_transfer(&stack, b, U256::MAX - U256::from(1u8), 5, t(2), "0x1"),
            ],
        ),
        (
            6,
            vec![wire_transfer(&stack, b, U256::from(1u8), 6, t(3), "0x0")],
        ),
    ];
    let (mut window, mut c1, mut c2) = commit_both(&stack, &keys, &blocks).await;
    let max = U256::MAX.to_string();
    assert_eq!(
        max,
        "115792089237316195423570985008687907853269984665640564039457584007913129639935"
    );
    for c in [&mut c1, &mut c2] {
        for who in [a, b] {
            let total: String = c.get(keys.wallet_deposit_total(who)).await.expect("total");
            assert_eq!(total, max);
        }
        let v: String = c
            .hget(keys.deposits(), ChainKeys::deposit_id(t(1), 0))
            .await
            .expect("hget");
        assert_eq!(v, format!("{}:{max}:5", lower(a)));
    }
    assert_eq!(digest(&mut c1, &spec).await, digest(&mut c2, &spec).await);
    window.revert_to(5).await.expect("revert one block");
    let total: String = c2.get(keys.wallet_deposit_total(b)).await.expect("total");
    assert_eq!(total, (U256::MAX - U256::from(1u8)).to_string());

    // On chain: wallet 7 deposits almost all of the supply, gets part of it
    // back from the treasury and deposits that too: its total is 2^256 − 1.
    let d = stack.deployment.clone();
    let usdc = MockUSDC::new(d.usdc, &stack.deployer);
    let supply = usdc.totalSupply().call().await.expect("supply");
    let seven = stack.wallet(7);
    let minted = U256::MAX - supply;
    mined(
        usdc.mint(stack.signer(7).address(), minted)
            .send()
            .await
            .expect("mint"),
        "mint",
    )
    .await
    .expect("mined");
    let usdc7 = MockUSDC::new(d.usdc, &seven);
    mined(
        usdc7
            .transfer(d.treasury, minted)
            .send()
            .await
            .expect("send"),
        "deposit",
    )
    .await
    .expect("mined");
    let usdc9 = MockUSDC::new(d.usdc, stack.wallet(9));
    mined(
        usdc9
            .transfer(stack.signer(7).address(), supply)
            .send()
            .await
            .expect("send"),
        "refund",
    )
    .await
    .expect("mined");
    mined(
        usdc7
            .transfer(d.treasury, supply)
            .send()
            .await
            .expect("send"),
        "deposit",
    )
    .await
    .expect("mined");
    let (mut f, mut c) = follower(&stack, 3, &spec).await;
    f.sync().await.expect("sync");
    let total: String = c
        .get(keys.wallet_deposit_total(stack.signer(7).address()))
        .await
        .expect("total");
    assert_eq!(total, max, "indexed from the chain");
    crate::truth::assert_deposits_match_chain(&stack, &mut c, &keys).await;
}

#[tokio::test]
async fn five_hundred_empty_blocks_are_crossed_in_backfill_and_live() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let keys = spec.watched.keys.clone();
    let p = stack.deployer.clone();
    seed::run(&stack, &workload(20), 5).await;
    p.anvil_mine(Some(500), None).await.expect("mine");
    seed::run(
        &stack,
        &[Action::Deposit {
            wallet: 2,
            amount: 321,
        }],
        1,
    )
    .await;
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    let head = p.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("backfill"), Some(head));
    // Live: at the head, 500 empty blocks arrive, then a deposit.
    p.anvil_mine(Some(500), None).await.expect("mine");
    let head = p.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("live"), Some(head));
    seed::run(
        &stack,
        &[Action::Deposit {
            wallet: 3,
            amount: 654,
        }],
        1,
    )
    .await;
    let head = p.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("live"), Some(head));
    let hashes: usize = c.hlen(keys.block_hashes()).await.expect("hlen");
    assert!(hashes as u64 <= spec.follow.window, "{hashes} hashes kept");
    let (mut fresh, mut fc) = follower(&stack, 2, &spec).await;
    fresh.sync().await.expect("fresh");
    assert_eq!(digest(&mut c, &spec).await, digest(&mut fc, &spec).await);
    crate::truth::assert_deposits_match_chain(&stack, &mut c, &keys).await;
}

#[tokio::test]
async fn a_stake_token_with_an_empty_symbol_is_indexed() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let keys = spec.watched.keys.clone();
    let p = stack.deployer.clone();
    let d = stack.deployment.clone();
    let token = MockToken::deploy(&p, String::new(), String::new(), 8)
        .await
        .expect("deploy");
    assert_eq!(token.symbol().call().await.expect("symbol"), "");
    let stakes_addr = d.submission_stakes.expect("stakes");
    let stakes = SubmissionStakes::new(stakes_addr, &p);
    mined(
        stakes
            .setStakeToken(*token.address(), true)
            .send()
            .await
            .expect("allow"),
        "allow",
    )
    .await
    .expect("mined");
    let who = stack.signer(2).address();
    let amount = U256::from(5_000_000u64);
    mined(token.mint(who, amount).send().await.expect("mint"), "mint")
        .await
        .expect("mined");
    let as_who = MockToken::new(*token.address(), stack.wallet(2));
    mined(
        as_who
            .approve(stakes_addr, amount)
            .send()
            .await
            .expect("approve"),
        "approve",
    )
    .await
    .expect("mined");
    let stake = U256::from(1_000_000u64);
    let submitted = mined(
        SubmissionStakes::new(stakes_addr, stack.wallet(2))
            .submit(
                chainfront::deploy::market_id(chainfront::deploy::DEMO_MARKET_UUID).expect("id"),
                0,
                "nameless token".into(),
                *token.address(),
                stake,
            )
            .send()
            .await
            .expect("submit"),
        "submit",
    )
    .await
    .expect("mined");
    let ev = submitted
        .inner
        .logs()
        .iter()
        .find_map(|l| l.log_decode::<SubmissionStakes::SubmissionCreated>().ok())
        .expect("SubmissionCreated")
        .inner
        .data;
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("sync");
    let sub: std::collections::HashMap<String, String> = c
        .hgetall(keys.submission(ev.submissionId))
        .await
        .expect("sub");
    assert_eq!(sub.get("stake_token"), Some(&lower(*token.address())));
    assert_eq!(sub.get("stake"), Some(&stake.to_string()));
    assert_eq!(sub.get("fee"), Some(&ev.fee.to_string()));
    let allowed: Option<String> = c
        .hget(
            keys.stakes_settings(),
            format!("token:{}", lower(*token.address())),
        )
        .await
        .expect("hget");
    assert_eq!(allowed.as_deref(), Some("1"));
    let (mut fresh, mut fc) = follower(&stack, 2, &spec).await;
    fresh.sync().await.expect("fresh");
    assert_eq!(digest(&mut c, &spec).await, digest(&mut fc, &spec).await);
}
