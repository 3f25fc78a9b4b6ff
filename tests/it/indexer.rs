//! The indexer against a real anvil and redis-server: backfill equals live,
//! reorgs end where a fresh reindex ends, restarts resume exactly.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use chainfront_indexer::chain::ChainSpec;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::digest::state_digest;
use chainfront_indexer::follow::Follower;
use chainfront_indexer::metrics::IndexerMetrics;
use chainfront_indexer::rpc::Rpc;
use chainfront_indexer::store::Store;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::harness::Stack;
use crate::seed::{self, Action};

pub(crate) fn spec(stack: &Stack) -> ChainSpec {
    let mut specs = stack.config().chain_specs().expect("specs");
    assert_eq!(specs.len(), 1);
    let mut spec = specs.remove(0);
    spec.follow.poll_interval = Duration::from_millis(20);
    spec.follow.initial_range = 4;
    spec.follow.max_range = 64;
    spec.follow.max_logs_per_commit = 100;
    spec
}

pub(crate) async fn conn(stack: &Stack, db: u8) -> RedisConn {
    chainfront_indexer::conn::connect(&format!("{}/{db}", stack.redis.url()))
        .await
        .expect("redis")
}

pub(crate) async fn follower(stack: &Stack, db: u8, spec: &ChainSpec) -> (Follower, RedisConn) {
    let (f, c, _) = follower_with_metrics(stack, db, spec).await;
    (f, c)
}

/// A follower writing to database `db`, with its metrics.
pub(crate) async fn follower_with_metrics(
    stack: &Stack,
    db: u8,
    spec: &ChainSpec,
) -> (Follower, RedisConn, Arc<IndexerMetrics>) {
    let conn = conn(stack, db).await;
    let store = Store::new(conn.clone(), spec.watched.keys.clone(), spec.follow.window);
    let rpc = Rpc::new(&spec.rpc_urls, spec.retry, spec.rpc_timeout).expect("rpc");
    let metrics = Arc::new(IndexerMetrics::default());
    let f = Follower::new(
        rpc,
        store,
        spec.watched.clone(),
        spec.follow.clone(),
        metrics.clone(),
    );
    (f, conn, metrics)
}

pub(crate) async fn digest(conn: &mut RedisConn, spec: &ChainSpec) -> String {
    state_digest(conn, &spec.watched.keys)
        .await
        .expect("digest")
        .0
}

/// Deposits, purchases and VM transfers from wallets 1..=4 (all funded).
pub(crate) fn workload(n: usize) -> Vec<Action> {
    let mut actions: Vec<Action> = (1..=4).map(|w| Action::Approve { wallet: w }).collect();
    let mut token = 0u64;
    for i in 0..n {
        let w = 1 + i % 4;
        actions.push(match i % 5 {
            0..=2 => Action::Deposit {
                wallet: w,
                amount: 1_000 + i as u64,
            },
            3 => {
                token += 1;
                Action::Purchase {
                    wallet: w,
                    // Cheap tiers and short terms keep every purchase
                    // affordable, so token ids follow the purchase order.
                    tier: (i % 4) as u8,
                    days: 1 + (i % 7) as u16,
                }
            }
            _ if token > 0 => Action::TransferVm {
                from: 1 + ((token as usize - 1) * 5 + 3) % 4,
                to: 5,
                token_id: token,
            },
            _ => Action::Deposit {
                wallet: w,
                amount: 7,
            },
        });
    }
    actions
}

fn deposited_by(actions: &[Action], wallet: usize) -> u64 {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deposit { wallet: w, amount } if *w == wallet => Some(*amount),
            _ => None,
        })
        .sum()
}

#[tokio::test]
async fn backfill_and_live_following_reach_the_same_state() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    // Live: follow while the events are being mined.
    let (mut live, mut live_conn) = follower(&stack, 1, &spec).await;
    let stop = CancellationToken::new();
    let live_task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            live.run(stop).await.expect("live follower");
            live
        })
    };
    let actions = workload(1_500);
    seed::run(&stack, &actions, 25).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    // Let the live follower reach the head, then stop it.
    let keys = spec.watched.keys.clone();
    for _ in 0..500 {
        let n: Option<u64> = live_conn
            .hget(keys.checkpoint(), "number")
            .await
            .expect("checkpoint");
        if n == Some(head) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let _ = live_task.await.expect("join");
    let live_digest = digest(&mut live_conn, &spec).await;

    // Backfill: one pass over the finished chain.
    let (mut backfill, mut backfill_conn) = follower(&stack, 2, &spec).await;
    let reached = backfill.sync().await.expect("backfill");
    assert_eq!(reached, Some(head));
    let backfill_digest = digest(&mut backfill_conn, &spec).await;
    assert_eq!(live_digest, backfill_digest, "live and backfill disagree");

    // And the state is the chain's, not merely equal: check what we sent.
    let wallet1 = stack.signer(1).address();
    let total: String = backfill_conn
        .get(keys.wallet_deposit_total(wallet1))
        .await
        .expect("total");
    assert_eq!(total, deposited_by(&actions, 1).to_string());
    let owned_by_5: Vec<String> = backfill_conn
        .smembers(keys.owner_vms(stack.signer(5).address()))
        .await
        .expect("set");
    assert!(!owned_by_5.is_empty(), "transferred VMs belong to wallet 5");
    let vm = chainfront_indexer::contracts::VMMarketplace::new(
        stack.deployment.vm_marketplace,
        &stack.deployer,
    );
    for id in owned_by_5.iter().take(5) {
        let id: U256 = id.parse().expect("token id");
        assert_eq!(
            vm.ownerOf(id).call().await.expect("ownerOf"),
            stack.signer(5).address()
        );
    }
}

/// Forks the chain `depth` blocks back with different transactions (removed,
/// replaced, reordered), and checks the follower ends where a fresh reindex of
/// the final chain ends, with the deposits, totals and VM owners the final
/// chain has (computed from what was sent and read from the chain, not from
/// the indexer). A 24-block window puts the first sync through the backfill
/// and the hand-off to window mode.
async fn reorg_case(depth: u64) {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.window = 24;
    let base = workload(60);
    seed::run(&stack, &base, 10).await;
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("initial sync");

    let provider = &stack.deployer;
    let snapshot: U256 = provider
        .raw_request("evm_snapshot".into(), ())
        .await
        .expect("snapshot");
    // The orphaned branch: `depth` blocks of deposits, purchases and transfers.
    let branch_a: Vec<Action> = (0..depth as usize)
        .flat_map(|i| {
            [
                Action::Deposit {
                    wallet: 1 + i % 4,
                    amount: 500 + i as u64,
                },
                Action::Purchase {
                    wallet: 2,
                    tier: 1,
                    days: 3,
                },
                // Token 4 of `workload` was bought by wallet 3 and
                // passed on to wallet 5 (the first of these transfers
                // moves it; the others revert, as on a real chain).
                Action::TransferVm {
                    from: 5,
                    to: 6,
                    token_id: 4,
                },
            ]
        })
        .collect();
    seed::run(&stack, &branch_a, 3).await;
    f.sync().await.expect("sync onto branch A");
    let keys = spec.watched.keys.clone();
    let six = stack.signer(6).address();
    let owned: Vec<String> = c.smembers(keys.owner_vms(six)).await.expect("set");
    assert_eq!(owned, ["4"], "branch A moved VM 4 to wallet 6");

    let _: bool = provider
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .expect("revert");
    // The canonical branch: other deposits, in another order, one block longer.
    let branch_b: Vec<Action> = (0..=depth as usize)
        .flat_map(|i| {
            [
                Action::Deposit {
                    wallet: 4 - i % 4,
                    amount: 9_000 + i as u64,
                },
                Action::Deposit {
                    wallet: 1,
                    amount: 1,
                },
            ]
        })
        .collect();
    seed::run(&stack, &branch_b, 2).await;
    f.sync().await.expect("sync through the reorg");
    let after = digest(&mut c, &spec).await;

    let (mut fresh, mut fresh_conn) = follower(&stack, 2, &spec).await;
    fresh.sync().await.expect("fresh reindex");
    assert_eq!(
        after,
        digest(&mut fresh_conn, &spec).await,
        "depth {depth}: reorged state differs from a fresh reindex"
    );
    // Independent of the indexer: wallet 1's total is what it sent on the
    // surviving blocks (branch A's deposits of wallet 1 are gone).
    for wallet in 1..=4 {
        let total: String = c
            .get(keys.wallet_deposit_total(stack.signer(wallet).address()))
            .await
            .expect("total");
        let sent = deposited_by(&base, wallet) + deposited_by(&branch_b, wallet);
        assert_eq!(total, sent.to_string(), "depth {depth}: wallet {wallet}");
    }
    crate::truth::assert_deposits_match_chain(&stack, &mut c, &keys).await;
    // Branch A's purchases and its transfer of VM 4 are undone.
    let vm = chainfront_indexer::contracts::VMMarketplace::new(
        stack.deployment.vm_marketplace,
        &stack.deployer,
    );
    let minted: u64 = vm.nextTokenId().call().await.expect("next id").to::<u64>() - 1;
    let indexed: usize = c.scard(keys.vms()).await.expect("scard");
    assert_eq!(
        indexed as u64, minted,
        "depth {depth}: VMs of the final chain"
    );
    let owned: Vec<String> = c.smembers(keys.owner_vms(six)).await.expect("set");
    assert!(owned.is_empty(), "depth {depth}: VM 4 went back: {owned:?}");
    let owner: String = c
        .hget(keys.vm(U256::from(4)), "owner")
        .await
        .expect("owner");
    assert_eq!(
        owner,
        chainfront_indexer::keys::lower(vm.ownerOf(U256::from(4)).call().await.expect("ownerOf"))
    );

    // After the reorg it keeps following.
    seed::run(
        &stack,
        &[Action::Deposit {
            wallet: 3,
            amount: 42,
        }],
        1,
    )
    .await;
    let head = provider.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("keeps following"), Some(head));
}

#[tokio::test]
async fn reorg_depth_1() {
    reorg_case(1).await;
}

#[tokio::test]
async fn reorg_depth_5() {
    reorg_case(5).await;
}

#[tokio::test]
async fn reorg_depth_20() {
    reorg_case(20).await;
}

#[tokio::test]
async fn a_reorg_deeper_than_the_window_stops_with_a_clear_error() {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.window = 3;
    let provider = &stack.deployer;
    let snapshot: U256 = provider
        .raw_request("evm_snapshot".into(), ())
        .await
        .expect("snapshot");
    seed::run(&stack, &workload(40), 4).await;
    let (mut f, _c) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("sync");
    let _: bool = provider
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .expect("revert");
    seed::run(
        &stack,
        &[Action::Deposit {
            wallet: 2,
            amount: 1,
        }; 60],
        3,
    )
    .await;
    let err = f.sync().await.expect_err("must refuse to guess");
    assert!(
        matches!(err, chainfront_indexer::Error::ReorgTooDeep { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("reindex"), "{err}");
}

/// One deposit in every block, ranges of 7 blocks and a window of 10: events
/// sit in the last block of every fetched range and at the backfill → window
/// hand-off; each is applied exactly once (the running total is exact).
#[tokio::test]
async fn events_at_range_ends_and_at_the_handoff_are_applied_once() {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.initial_range = 7;
    spec.follow.max_range = 7;
    spec.follow.window = 10;
    let actions: Vec<Action> = (0..200)
        .map(|i| Action::Deposit {
            wallet: 2,
            amount: 1_000 + i,
        })
        .collect();
    seed::run(&stack, &actions, 1).await;
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("backfill + window");
    let wallet = stack.signer(2).address();
    let keys = spec.watched.keys.clone();
    let check = |n: usize| {
        let expected: u64 = actions[..n]
            .iter()
            .map(|a| match a {
                Action::Deposit { amount, .. } => *amount,
                _ => 0,
            })
            .sum();
        (n, expected)
    };
    let (n, expected) = check(200);
    let count: usize = c.zcard(keys.wallet_deposits(wallet)).await.expect("zcard");
    let total: String = c
        .get(keys.wallet_deposit_total(wallet))
        .await
        .expect("total");
    assert_eq!((count, total), (n, expected.to_string()));

    // More blocks, now followed one by one inside the window.
    let more: Vec<Action> = (0..15)
        .map(|i| Action::Deposit {
            wallet: 2,
            amount: 5 + i,
        })
        .collect();
    seed::run(&stack, &more, 1).await;
    f.sync().await.expect("live");
    let count: usize = c.zcard(keys.wallet_deposits(wallet)).await.expect("zcard");
    let total: u64 = c
        .get::<_, String>(keys.wallet_deposit_total(wallet))
        .await
        .expect("total")
        .parse()
        .expect("number");
    let extra: u64 = (0..15).map(|i| 5 + i).sum();
    assert_eq!((count, total), (215, expected + extra));
    // A fresh backfill-only pass agrees.
    let (mut fresh, mut fresh_conn) = follower(&stack, 2, &spec).await;
    fresh.sync().await.expect("fresh");
    assert_eq!(
        digest(&mut c, &spec).await,
        digest(&mut fresh_conn, &spec).await
    );
}

/// With a WebSocket URL, a new head wakes the follower at once: a purchase
/// shows up long before the (30 s) poll interval would have found it.
#[tokio::test]
async fn new_heads_over_websocket_wake_the_follower() {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.poll_interval = Duration::from_secs(30);
    spec.follow.ws_url = Some(stack.anvil.ws_endpoint());
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { f.run(stop).await })
    };
    // The first pass catches up; give the subscription a moment to start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let token = stack.buy_vm(1, 0, 1).await;
    let keys = spec.watched.keys.clone();
    let mut found = false;
    for _ in 0..200 {
        if c.exists(keys.vm(token)).await.expect("exists") {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.cancel();
    task.await.expect("join").expect("follower");
    assert!(
        found,
        "the VM was not indexed within 5 s of a 30 s poll interval"
    );
}

/// Blocks committed together inside the window (one script, an undo record
/// each, pre-block values replayed in memory) leave the same state and the
/// same undo records as committing them one by one (each block's pre-block
/// values read from Redis), and revert block by block to the same states.
/// The oracle for every intermediate state is a third database written
/// through the backfill path (no undo records, no capture or replay: plain
/// writes and totals), so neither window path is compared only with itself. The blocks overwrite each other's values: a
/// total added to in every block, a set member added, removed and added
/// again, a counter, a re-scored member, a string set twice.
#[tokio::test]
async fn a_window_batch_equals_block_by_block_commits_and_reverts_alike() {
    use alloy::primitives::B256;
    use chainfront_indexer::apply::Op;
    use chainfront_indexer::store::{Commit, WindowBlock};
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let keys = spec.watched.keys.clone();
    let s = |v: &str| v.to_owned();
    let block = |n: u64| -> Vec<Op> {
        let member = s("m");
        let mut ops = vec![
            Op::AddU256 {
                key: s("cf:{c31337}:s:t"),
                field: None,
                amount: U256::from(n * 1_000),
            },
            Op::HIncr {
                key: s("cf:{c31337}:s:h"),
                field: s("count"),
                by: 1,
            },
            Op::HSet {
                key: s("cf:{c31337}:s:h"),
                fields: vec![(s("last"), n.to_string()), (format!("b{n}"), s("x"))],
            },
            Op::ZAdd {
                key: s("cf:{c31337}:s:z"),
                score: n,
                member: s("same"),
            },
            Op::Set {
                key: s("cf:{c31337}:s:str"),
                value: format!("v{n}"),
            },
        ];
        ops.push(if n.is_multiple_of(2) {
            Op::SRem {
                key: s("cf:{c31337}:s:set"),
                member,
            }
        } else {
            Op::SAdd {
                key: s("cf:{c31337}:s:set"),
                member,
            }
        });
        ops
    };
    let hash = |n: u64| B256::repeat_byte(n as u8);
    let base = Commit {
        to: 10,
        to_hash: hash(10),
        ops: block(10),
        undo: false,
    };
    // Database 1: one window block at a time; database 2: one window batch;
    // database 3: backfill commits, one per block (the oracle).
    let (mut c1, mut c2, mut c3) = (
        conn(&stack, 1).await,
        conn(&stack, 2).await,
        conn(&stack, 3).await,
    );
    let mut one = Store::new(c1.clone(), keys.clone(), 128);
    let mut many = Store::new(c2.clone(), keys.clone(), 128);
    let mut plain = Store::new(c3.clone(), keys.clone(), 128);
    one.commit(base.clone()).await.expect("base");
    many.commit(base.clone()).await.expect("base");
    plain.commit(base).await.expect("base");
    let mut after = std::collections::BTreeMap::new();
    after.insert(10, digest(&mut c3, &spec).await);
    for n in 11..=14 {
        plain
            .commit(Commit {
                to: n,
                to_hash: hash(n),
                ops: block(n),
                undo: false,
            })
            .await
            .expect("backfill commit");
        after.insert(n, digest(&mut c3, &spec).await);
        one.commit_window(vec![WindowBlock {
            number: n,
            hash: hash(n),
            ops: block(n),
        }])
        .await
        .expect("commit");
        assert_eq!(digest(&mut c1, &spec).await, after[&n], "block {n} alone");
    }
    assert_ne!(after[&10], after[&14], "the blocks change the state");
    many.commit_window(
        (11..=14)
            .map(|n| WindowBlock {
                number: n,
                hash: hash(n),
                ops: block(n),
            })
            .collect(),
    )
    .await
    .expect("window batch");
    assert_eq!(digest(&mut c2, &spec).await, after[&14]);
    let total: String = c2.get("cf:{c31337}:s:t").await.expect("total");
    assert_eq!(
        total,
        (10_000 + 11_000 + 12_000 + 13_000 + 14_000).to_string()
    );
    for n in 11..=14 {
        let (u1, u2): (String, String) = (
            c1.get(keys.undo(n)).await.expect("undo"),
            c2.get(keys.undo(n)).await.expect("undo"),
        );
        assert_eq!(u1, u2, "undo record of block {n}");
    }
    for n in (10..=13).rev() {
        many.revert_to(n).await.expect("revert");
        assert_eq!(
            digest(&mut c2, &spec).await,
            after[&n],
            "batch reverted to {n}"
        );
        one.revert_to(n).await.expect("revert");
        assert_eq!(
            digest(&mut c1, &spec).await,
            after[&n],
            "single reverted to {n}"
        );
    }
}

/// anvil's own reorg tools: `anvil_reorg` replaces the last blocks with empty
/// ones (their deposits, purchases and transfers vanish), `anvil_rollback`
/// drops blocks so the chain is shorter until new ones are mined on the new
/// branch. The follower ends where a fresh reindex of the final chain ends.
#[tokio::test]
async fn anvil_reorg_and_rollback_end_at_a_fresh_reindex() {
    use alloy::providers::ext::AnvilApi;
    use alloy::rpc::types::anvil::ReorgOptions;
    let stack = Stack::start().await;
    let spec = spec(&stack);
    seed::run(&stack, &workload(60), 10).await;
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("sync");
    let before = digest(&mut c, &spec).await;
    let provider = &stack.deployer;
    let head = provider.get_block_number().await.expect("head");

    provider
        .anvil_reorg(ReorgOptions {
            depth: 4,
            tx_block_pairs: vec![],
        })
        .await
        .expect("anvil_reorg");
    assert_eq!(provider.get_block_number().await.expect("head"), head);
    assert_eq!(f.sync().await.expect("through the reorg"), Some(head));
    let after_reorg = digest(&mut c, &spec).await;
    assert_ne!(before, after_reorg, "the replaced blocks' events are gone");
    let (mut fresh, mut fc) = follower(&stack, 2, &spec).await;
    fresh.sync().await.expect("fresh");
    assert_eq!(after_reorg, digest(&mut fc, &spec).await, "anvil_reorg");

    provider.anvil_rollback(Some(3)).await.expect("rollback");
    // A shorter chain alone is no reorg to act on: nothing changes yet.
    f.sync().await.expect("behind the checkpoint");
    assert_eq!(after_reorg, digest(&mut c, &spec).await);
    seed::run(
        &stack,
        &[
            Action::Deposit {
                wallet: 2,
                amount: 77,
            },
            Action::Purchase {
                wallet: 4,
                tier: 2,
                days: 1,
            },
        ],
        1,
    )
    .await;
    let head = provider.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("onto the new branch"), Some(head));
    let (mut fresh, mut fc) = follower(&stack, 3, &spec).await;
    fresh.sync().await.expect("fresh");
    assert_eq!(
        digest(&mut c, &spec).await,
        digest(&mut fc, &spec).await,
        "anvil_rollback then new blocks"
    );
}
