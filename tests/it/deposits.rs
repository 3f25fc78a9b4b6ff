//! Deposits are never dropped by a heuristic: one transaction (a bundle or a
//! smart-wallet batch through the `Multicall` contract) carries a VM
//! purchase, a submission and plain deposits from several payers, some of
//! exactly the price or the fee; every deposit is credited once and only the
//! two payments are not, whether the block is backfilled or followed inside
//! the window.

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use chainfront::deploy::mined;
use chainfront_indexer::contracts::{
    MockSmartWallet, MockUSDC, Multicall, SubmissionStakes, VMMarketplace,
};
use redis::AsyncCommands;

use crate::fault_proxy::FaultProxy;
use crate::harness::Stack;
use crate::indexer::{digest, follower, spec};

fn exec(wallet: Address, target: Address, data: Vec<u8>) -> Multicall::Call {
    Multicall::Call {
        target: wallet,
        value: U256::ZERO,
        data: MockSmartWallet::executeCall {
            target,
            value: U256::ZERO,
            data: data.into(),
        }
        .abi_encode()
        .into(),
    }
}

#[tokio::test]
async fn deposits_batched_with_a_purchase_and_a_submission_in_one_transaction_are_all_credited() {
    let stack = Stack::start().await;
    let d = stack.deployment.clone();
    let p = &stack.deployer;
    let stakes_addr = d.submission_stakes.expect("stakes");
    let multi = Multicall::deploy(p).await.expect("deploy multicall");
    // Two smart accounts the bundle acts for, and the bundler itself pays too.
    let a = *MockSmartWallet::deploy(p, *multi.address())
        .await
        .expect("wallet a")
        .address();
    let b = *MockSmartWallet::deploy(p, *multi.address())
        .await
        .expect("wallet b")
        .address();
    let usdc = MockUSDC::new(d.usdc, p);
    for who in [a, b, *multi.address()] {
        mined(
            usdc.mint(who, U256::from(1_000_000_000u64))
                .send()
                .await
                .expect("mint"),
            "mint",
        )
        .await
        .expect("mined");
    }
    let price = VMMarketplace::new(d.vm_marketplace, p)
        .getTierConfig(0)
        .call()
        .await
        .expect("tier")
        .price;
    let cost = price * U256::from(3);
    let stake = U256::from(2_000_000u64);
    let fee = SubmissionStakes::new(stakes_addr, p)
        .feeFor(stake)
        .call()
        .await
        .expect("fee");
    assert!(fee > U256::ZERO);
    let transfer = |amount: U256| {
        MockUSDC::transferCall {
            to: d.treasury,
            value: amount,
        }
        .abi_encode()
    };
    let approve = |spender: Address, amount: U256| {
        MockUSDC::approveCall {
            spender,
            value: amount,
        }
        .abi_encode()
    };
    let demo = chainfront::deploy::market_id(chainfront::deploy::DEMO_MARKET_UUID).expect("id");
    let calls = vec![
        // A deposits 7 USDC.
        exec(a, d.usdc, transfer(U256::from(7_000_000u64))),
        // B buys a VM (the marketplace pulls exactly `cost` from B)...
        exec(b, d.usdc, approve(d.vm_marketplace, cost)),
        exec(
            b,
            d.vm_marketplace,
            VMMarketplace::purchaseVMCall {
                tier: 0,
                durationDays: 3,
            }
            .abi_encode(),
        ),
        // ...and tops up its balance by exactly the same amount.
        exec(b, d.usdc, transfer(cost)),
        // A submits (the stakes contract pulls the fee from A after the event)...
        exec(a, d.usdc, approve(stakes_addr, stake + fee)),
        exec(
            a,
            stakes_addr,
            SubmissionStakes::submitCall {
                marketId: demo,
                submissionType: 0,
                predictedText: "the actor says hello".into(),
                stakeToken: d.usdc,
                stake,
            }
            .abi_encode(),
        ),
        // ...and deposits exactly the fee as well.
        exec(a, d.usdc, transfer(fee)),
        // The bundler's own deposit.
        Multicall::Call {
            target: d.usdc,
            value: U256::ZERO,
            data: transfer(U256::from(5u64)).into(),
        },
    ];
    let receipt = mined(
        multi.aggregate(calls).send().await.expect("send bundle"),
        "bundle",
    )
    .await
    .expect("bundle mined");
    let treasury_transfers = receipt
        .inner
        .logs()
        .iter()
        .filter_map(|l| l.log_decode::<MockUSDC::Transfer>().ok())
        .filter(|t| t.inner.data.to == d.treasury)
        .count();
    assert_eq!(
        treasury_transfers, 6,
        "one transaction: 4 deposits and 2 payments to the treasury"
    );

    // The chain's truth, from the receipt: every transfer to the treasury is
    // a deposit except one (B, cost) for the purchase and one (A, fee) for
    // the submission.
    let bundle_block = receipt.block_number.expect("block");
    let bundle_hash = receipt.block_hash.expect("hash").to_string();
    let mut expected: Vec<String> = receipt
        .inner
        .logs()
        .iter()
        .filter_map(|l| l.log_decode::<MockUSDC::Transfer>().ok())
        .filter(|t| t.inner.data.to == d.treasury)
        .map(|t| {
            format!(
                "{}:{}:{bundle_block}",
                chainfront_indexer::keys::lower(t.inner.data.from),
                t.inner.data.value
            )
        })
        .collect();
    for payment in [(b, cost), (a, fee)] {
        let paid = format!(
            "{}:{}:{bundle_block}",
            chainfront_indexer::keys::lower(payment.0),
            payment.1
        );
        let at = expected.iter().position(|e| *e == paid).expect("payment");
        expected.remove(at);
    }
    expected.sort();
    // Two more blocks: with a window of 1 the bundle's block is then below
    // `head - window` and is backfilled (fetched by range); with a window of
    // 128 it is committed through the window path (logs by block hash).
    for _ in 0..2 {
        let _: serde_json::Value = p.raw_request("evm_mine".into(), ()).await.expect("mine");
    }

    let mut digests = Vec::new();
    let mut all_deposits = Vec::new();
    for (db, window) in [(1u8, 1u64), (2, 128)] {
        let mut spec = spec(&stack);
        spec.follow.window = window;
        let proxy = FaultProxy::start(&stack.anvil.endpoint()).await;
        spec.rpc_urls = vec![proxy.url.clone()];
        let (mut f, mut c) = follower(&stack, db, &spec).await;
        let head = p.get_block_number().await.expect("head");
        assert_eq!(head, bundle_block + 2);
        assert_eq!(f.sync().await.expect("sync"), Some(head));
        // Which path committed the bundle's block: the window path asks for
        // its logs by block hash and keeps its undo record (window 128: not
        // pruned); backfill never asks by hash. (With window 1 an undo record
        // would be pruned by now either way, so only the request proves it.)
        let undo: bool = c
            .exists(spec.watched.keys.undo(bundle_block))
            .await
            .expect("exists");
        if window == 1 {
            assert!(
                !proxy.asked_logs_by_hash(&bundle_hash),
                "window 1: the bundle's block must be backfilled, not fetched by hash"
            );
            assert!(!undo, "window 1: no undo record for a backfilled block");
        } else {
            assert!(
                proxy.asked_logs_by_hash(&bundle_hash),
                "window 128: the bundle's block must go through the window path"
            );
            assert!(undo, "window 128: the bundle's block has its undo record");
        }
        let k = &spec.watched.keys;
        let total = |c: &mut chainfront_indexer::conn::RedisConn, who: Address| {
            let key = k.wallet_deposit_total(who);
            let mut c = c.clone();
            async move {
                let v: Option<String> = c.get(key).await.expect("total");
                v.map(|v| v.parse::<U256>().expect("number"))
                    .unwrap_or_default()
            }
        };
        assert_eq!(
            total(&mut c, a).await,
            U256::from(7_000_000u64) + fee,
            "window {window}: A's deposit and its fee-sized deposit"
        );
        assert_eq!(
            total(&mut c, b).await,
            cost,
            "window {window}: B's top-up, not its payment"
        );
        assert_eq!(total(&mut c, *multi.address()).await, U256::from(5u64));
        let deposits: usize = c.hlen(k.deposits()).await.expect("hlen");
        assert_eq!(deposits, 4, "window {window}: four deposits, each once");
        for (who, n) in [(a, 2usize), (b, 1)] {
            let count: usize = c.zcard(k.wallet_deposits(who)).await.expect("zcard");
            assert_eq!(count, n, "window {window}");
        }
        let vm: std::collections::HashMap<String, String> =
            c.hgetall(k.vm(U256::from(1))).await.expect("vm");
        assert_eq!(vm.get("buyer"), Some(&chainfront_indexer::keys::lower(b)));
        assert_eq!(vm.get("total_cost"), Some(&cost.to_string()));
        let indexed: std::collections::BTreeMap<String, String> =
            c.hgetall(k.deposits()).await.expect("deposits");
        let mut got: Vec<String> = indexed.values().cloned().collect();
        got.sort();
        assert_eq!(got, expected, "window {window}: deposits are the chain's");
        all_deposits.push(indexed);
        digests.push(digest(&mut c, &spec).await);
    }
    assert_eq!(all_deposits[0], all_deposits[1], "same deposit records");
    assert_eq!(digests[0], digests[1], "backfill and window agree");
}
