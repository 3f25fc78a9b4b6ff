//! Reorg scenarios against a real anvil and redis-server. Each ends with the
//! indexed state equal to a fresh reindex of the final chain (digest) and
//! the deposits equal to what the final chain says (`truth`): none lost,
//! none counted twice, none left from an orphaned block.

use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::TransactionRequest;
use alloy::rpc::types::anvil::{ReorgOptions, TransactionData};
use alloy::sol_types::SolCall;
use chainfront_indexer::chain::ChainSpec;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::contracts::{MockUSDC, VMMarketplace};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::harness::Stack;
use crate::indexer::{digest, follower, follower_with_metrics, spec, workload};
use crate::seed::{self, Action};
use crate::truth::assert_deposits_match_chain;
use std::sync::atomic::Ordering;

/// Digest equal to a fresh reindex (in database `fresh_db`) and deposits
/// equal to the chain's.
async fn assert_final(
    stack: &Stack,
    spec: &ChainSpec,
    c: &mut RedisConn,
    fresh_db: u8,
    what: &str,
) {
    let (mut fresh, mut fc) = follower(stack, fresh_db, spec).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    assert_eq!(fresh.sync().await.expect("fresh"), Some(head), "{what}");
    assert_eq!(
        digest(c, spec).await,
        digest(&mut fc, spec).await,
        "{what}: state differs from a fresh reindex of the final chain"
    );
    assert_deposits_match_chain(stack, c, &spec.watched.keys).await;
}

/// A deposit transaction for `anvil_reorg` (anvil signs for its dev keys).
fn deposit_tx(stack: &Stack, wallet: usize, amount: u64) -> TransactionData {
    let d = &stack.deployment;
    TransactionData::JSON(
        TransactionRequest::default()
            .with_from(stack.signer(wallet).address())
            .with_to(d.usdc)
            .with_input(
                MockUSDC::transferCall {
                    to: d.treasury,
                    value: U256::from(amount),
                }
                .abi_encode(),
            )
            .with_gas_limit(200_000),
    )
}

fn purchase_tx(stack: &Stack, wallet: usize) -> TransactionData {
    TransactionData::JSON(
        TransactionRequest::default()
            .with_from(stack.signer(wallet).address())
            .with_to(stack.deployment.vm_marketplace)
            .with_input(
                VMMarketplace::purchaseVMCall {
                    tier: 0,
                    durationDays: 1,
                }
                .abi_encode(),
            )
            .with_gas_limit(400_000),
    )
}

async fn total(c: &mut RedisConn, spec: &ChainSpec, who: Address) -> Option<String> {
    c.get(spec.watched.keys.wallet_deposit_total(who))
        .await
        .expect("total")
}

/// The tip block is replaced by one of the same height carrying another
/// deposit: the old deposit is undone, the new one counted.
#[tokio::test]
async fn a_one_block_replace_swaps_its_deposit() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    seed::run(&stack, &workload(30), 5).await;
    seed::run(
        &stack,
        &[Action::Deposit {
            wallet: 6,
            amount: 4_242,
        }],
        1,
    )
    .await;
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("sync");
    let six = stack.signer(6).address();
    assert_eq!(total(&mut c, &spec, six).await.as_deref(), Some("4242"));
    let p = &stack.deployer;
    let head = p.get_block_number().await.expect("head");
    p.anvil_reorg(ReorgOptions {
        depth: 1,
        tx_block_pairs: vec![(deposit_tx(&stack, 5, 777), 0)],
    })
    .await
    .expect("reorg");
    assert_eq!(p.get_block_number().await.expect("head"), head);
    assert_eq!(f.sync().await.expect("through the reorg"), Some(head));
    assert_eq!(
        total(&mut c, &spec, six).await,
        None,
        "the orphaned deposit is gone"
    );
    assert_eq!(
        total(&mut c, &spec, stack.signer(5).address())
            .await
            .as_deref(),
        Some("777")
    );
    assert_final(&stack, &spec, &mut c, 2, "1-block replace").await;
}

/// A reorg removes a block with a purchase: the VM, its owner entry and its
/// place in the VM set vanish; nothing else changes.
#[tokio::test]
async fn an_event_removed_by_a_reorg_is_undone() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    seed::run(&stack, &workload(20), 5).await;
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("sync");
    let before = digest(&mut c, &spec).await;
    let token = stack.buy_vm(3, 1, 2).await;
    f.sync().await.expect("sync the purchase");
    let k = spec.watched.keys.clone();
    let exists: bool = c.exists(k.vm(token)).await.expect("exists");
    assert!(exists);
    // Replace the purchase's block (and the approve before it) with empty ones.
    stack
        .deployer
        .anvil_reorg(ReorgOptions {
            depth: 2,
            tx_block_pairs: vec![],
        })
        .await
        .expect("reorg");
    f.sync().await.expect("through the reorg");
    let exists: bool = c.exists(k.vm(token)).await.expect("exists");
    assert!(!exists, "the VM of a removed purchase is gone");
    let member: bool = c
        .sismember(k.owner_vms(stack.signer(3).address()), token.to_string())
        .await
        .expect("sismember");
    assert!(!member);
    assert_eq!(
        before,
        digest(&mut c, &spec).await,
        "back to the state before the purchase"
    );
    assert_final(&stack, &spec, &mut c, 2, "event removed").await;
}

/// Three reorgs within 12 seconds while the indexer follows live (a block
/// about every 400 ms, each reorg replacing 1–3 blocks with other deposits
/// and a purchase).
#[tokio::test]
async fn three_reorgs_in_twelve_seconds_while_following() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    seed::run(&stack, &workload(20), 5).await;
    let (mut f, mut c, metrics) = follower_with_metrics(&stack, 1, &spec).await;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { f.run(stop).await })
    };
    let p = stack.deployer.clone();
    let started = Instant::now();
    let mut reorgs = 0;
    for i in 0..30u64 {
        seed::run(
            &stack,
            &[
                Action::Deposit {
                    wallet: 1 + (i as usize % 4),
                    amount: 100 + i,
                },
                Action::Purchase {
                    wallet: 1 + (i as usize % 4),
                    tier: 0,
                    days: 1,
                },
            ],
            2,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if i % 9 == 8 {
            // The blocks about to be orphaned are indexed (so each reorg
            // has something to undo), however loaded the machine is.
            let head = p.get_block_number().await.expect("head");
            crate::crash::wait_for(&mut c, head, Duration::from_secs(30)).await;
            let depth = 1 + reorgs;
            p.anvil_reorg(ReorgOptions {
                depth,
                tx_block_pairs: (0..depth)
                    .map(|b| (deposit_tx(&stack, 5, 1_000 * (reorgs + 1) + b), b))
                    .chain([(purchase_tx(&stack, 6), 0)])
                    .collect(),
            })
            .await
            .expect("reorg");
            reorgs += 1;
        }
    }
    assert_eq!(reorgs, 3);
    eprintln!("three reorgs in {:?}", started.elapsed());
    let head = p.get_block_number().await.expect("head");
    crate::crash::wait_for(&mut c, head, Duration::from_secs(60)).await;
    stop.cancel();
    task.await.expect("join").expect("follower");
    let handled = metrics.reorgs.load(Ordering::Relaxed);
    assert!(
        handled >= 3,
        "the follower undid {handled} reorgs, expected 3"
    );
    assert_final(&stack, &spec, &mut c, 2, "three reorgs").await;
}

/// The chain reorganises while no indexer runs, and grows past the window:
/// on start the checkpoint is found orphaned (the deep path checks it before
/// backfilling), the orphaned blocks are undone and the new branch indexed.
#[tokio::test]
async fn a_reorg_while_the_indexer_is_stopped_is_found_at_start() {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.window = 8;
    seed::run(&stack, &workload(30), 5).await;
    let p = stack.deployer.clone();
    let fork: U256 = p
        .raw_request("evm_snapshot".into(), ())
        .await
        .expect("snapshot");
    let orphan: Vec<Action> = (0..5)
        .map(|i| Action::Deposit {
            wallet: 6,
            amount: 600 + i,
        })
        .collect();
    seed::run(&stack, &orphan, 1).await;
    {
        let (mut f, mut c) = follower(&stack, 1, &spec).await;
        f.sync().await.expect("sync");
        assert!(
            total(&mut c, &spec, stack.signer(6).address())
                .await
                .is_some()
        );
    }
    // Stopped: the last 5 blocks are replaced, then the chain grows by 30.
    let _: bool = p
        .raw_request("evm_revert".into(), (fork,))
        .await
        .expect("revert");
    let branch: Vec<Action> = (0..35)
        .map(|i| Action::Deposit {
            wallet: 1 + i % 4,
            amount: 9_000 + i as u64,
        })
        .collect();
    seed::run(&stack, &branch, 1).await;
    let (mut f, mut c, metrics) = follower_with_metrics(&stack, 1, &spec).await;
    let head = p.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("start after the reorg"), Some(head));
    assert_eq!(
        metrics.reorgs.load(Ordering::Relaxed),
        1,
        "the orphaned checkpoint was found"
    );
    assert_eq!(metrics.max_reorg_depth.load(Ordering::Relaxed), 5);
    assert_eq!(total(&mut c, &spec, stack.signer(6).address()).await, None);
    assert_final(&stack, &spec, &mut c, 2, "reorg while stopped").await;
}

/// The head reorganises while the indexer is still backfilling far below it;
/// the backfill reaches the window on the new branch and hands off cleanly.
#[tokio::test]
async fn a_reorg_at_the_head_during_a_backfill_below_it() {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.window = 8;
    spec.follow.initial_range = 2;
    spec.follow.max_range = 2;
    let actions: Vec<Action> = (0..400)
        .map(|i| Action::Deposit {
            wallet: 1 + i % 4,
            amount: 1 + i as u64,
        })
        .collect();
    seed::run(&stack, &actions, 1).await;
    let p = stack.deployer.clone();
    let head = p.get_block_number().await.expect("head");
    let (mut f, mut c, metrics) = follower_with_metrics(&stack, 1, &spec).await;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { f.run(stop).await })
    };
    let keys = spec.watched.keys.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let at = loop {
        let cp: Option<u64> = c.hget(keys.checkpoint(), "number").await.expect("cp");
        if cp.unwrap_or(0) >= 40 {
            break cp.unwrap_or(0);
        }
        assert!(Instant::now() < deadline, "no backfill progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    p.anvil_reorg(ReorgOptions {
        depth: 6,
        tx_block_pairs: (0..6).map(|b| (deposit_tx(&stack, 5, 50 + b), b)).collect(),
    })
    .await
    .expect("reorg");
    let cp: u64 = c.hget(keys.checkpoint(), "number").await.expect("cp");
    assert!(
        cp + 8 < head - 6,
        "the reorg must happen while the backfill is below the window ({at}..{cp} of {head})"
    );
    crate::crash::wait_for(&mut c, head, Duration::from_secs(120)).await;
    stop.cancel();
    task.await.expect("join").expect("follower");
    // The replaced blocks were never indexed on the old branch: nothing to undo.
    assert_eq!(metrics.reorgs.load(Ordering::Relaxed), 0);
    assert_final(&stack, &spec, &mut c, 2, "reorg during backfill").await;
}

/// A reorg deeper than a small window: the indexer stops with a clear error
/// instead of guessing, the API keeps serving what is indexed, and `/health`
/// says `degraded` and why (with 200: the node still serves).
#[tokio::test]
async fn a_reorg_deeper_than_the_window_stops_the_indexer_and_the_api_stays_up() {
    let stack = Stack::start().await;
    let p = stack.deployer.clone();
    let fork: U256 = p
        .raw_request("evm_snapshot".into(), ())
        .await
        .expect("snapshot");
    seed::run(&stack, &workload(40), 4).await;
    let config =
        crate::vms::node_config(&stack, &[("CHAINFRONT_CHAINS__LOCAL__REORG_WINDOW", "3")]);
    let node = crate::vms::start_node(config).await;
    let mut c = node.state.redis.clone();
    let head = p.get_block_number().await.expect("head");
    crate::crash::wait_for(&mut c, head, Duration::from_secs(60)).await;
    let http = reqwest::Client::new();
    let health = |http: reqwest::Client, url: String| async move {
        let r = http
            .get(format!("{url}/health"))
            .send()
            .await
            .expect("health");
        let status = r.status();
        (status, r.json::<serde_json::Value>().await.expect("json"))
    };
    let (status, body) = health(http.clone(), node.url.clone()).await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("healthy")),
        "{body}"
    );

    let _: bool = p
        .raw_request("evm_revert".into(), (fork,))
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
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = health(http.clone(), node.url.clone()).await;
        if body["status"] == "degraded" {
            assert_eq!(status.as_u16(), 200, "the API still serves: {body}");
            break body;
        }
        assert!(Instant::now() < deadline, "never degraded: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let why = body["indexer"]["local"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("deeper than the 3-block window") && why.contains("reindex"),
        "{body}"
    );
    assert!(
        body["reasons"].as_array().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    // Still serving reads, and the indexed state is left as it was.
    let tiers = http
        .get(format!("{}/tiers", node.url))
        .send()
        .await
        .expect("tiers");
    assert_eq!(tiers.status().as_u16(), 200);
    let cp: u64 = c
        .hget(node_keys(&node), "number")
        .await
        .expect("checkpoint");
    assert_eq!(cp, head, "nothing guessed");
    let metrics = http
        .get(format!("{}/metrics", node.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("chainfront_indexer_stopped{") && l.ends_with(" 1")),
        "{metrics}"
    );

    // The operator's way out, as the error says: `chainfront reindex`
    // (the stopped indexer gave its lock up) rebuilds the final chain's
    // state and prints its digest.
    let mut env: Vec<(String, String)> = stack.env().into_iter().collect();
    env.push(("CHAINFRONT_LOG__FILTER".into(), "warn".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_chainfront"));
    let local = crate::harness::local_toml();
    let (ok, out, err) = crate::harness::run_in_repo(
        &bin,
        &["reindex", "--config", local.to_str().expect("utf8")],
        &env,
    );
    assert!(ok, "reindex failed: {err}");
    let spec = spec(&stack);
    let (mut fresh, mut fc) = follower(&stack, 2, &spec).await;
    fresh.sync().await.expect("fresh");
    let expected = digest(&mut fc, &spec).await;
    assert_eq!(
        out.trim(),
        expected,
        "reindex prints the final chain's digest"
    );
    assert_eq!(digest(&mut c, &spec).await, expected);
    assert_deposits_match_chain(&stack, &mut c, &spec.watched.keys).await;
}

fn node_keys(node: &crate::vms::Node) -> String {
    chainfront_indexer::keys::ChainKeys::new(node.state.home.deployment.chain_id).checkpoint()
}
