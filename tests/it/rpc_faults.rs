//! Provider faults, through the fault proxy ([`crate::fault_proxy`]) between
//! the indexer and anvil. Every fault the proxy knows is applied, for a
//! window, to the only endpoint of its own follower, once while the
//! followers backfill and once while they follow new blocks; every follower
//! must end at the digest of a fresh index of the final chain made directly
//! against anvil, and with exactly the deposits that were sent (count and
//! per-wallet totals from the actions themselves, not from another run).
//!
//! The windows are short here (`FAULT_WINDOW_SECS`, default 3); the long
//! mode (`scripts/fault-soak`, 30 s windows) runs the same tests and writes
//! their tables to `docs/fault-soak.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use chainfront_indexer::Error;
use chainfront_indexer::chain::ChainSpec;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::digest::state_digest;
use chainfront_indexer::follow::Follower;
use chainfront_indexer::metrics::IndexerMetrics;
use chainfront_indexer::retry::RetryPolicy;
use chainfront_indexer::rpc::Rpc;
use chainfront_indexer::store::Store;
use redis::AsyncCommands;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::harness::Stack;
use crate::seed::{self, Action};

/// How long each fault lasts.
fn window() -> Duration {
    Duration::from_secs(
        std::env::var("FAULT_WINDOW_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
    )
}

/// Every fault, on the methods it concerns. The provider caps are scaled to
/// the test chain (tens of blocks, hundreds of logs) with the providers'
/// own texts; while following live, logs are asked by block hash, so the
/// block-range cap cannot apply and the log cap is scaled to one block.
fn cases(live: bool) -> Vec<(&'static str, Option<&'static str>, Fault)> {
    let rpc_error = |code, message: &str| Fault::RpcError {
        code,
        message: message.into(),
    };
    vec![
        ("internal error", None, rpc_error(-32603, "internal error")),
        (
            "-32000 upstream error",
            None,
            rpc_error(-32000, "upstream error"),
        ),
        (
            "-32005 rate limit",
            None,
            rpc_error(-32005, "project ID request rate exceeded"),
        ),
        ("429", None, Fault::RateLimit { retry_after: None }),
        (
            "429 Retry-After",
            None,
            Fault::RateLimit {
                retry_after: Some(2),
            },
        ),
        ("502", None, Fault::BadGateway),
        ("hang", None, Fault::Hang),
        (
            "getLogs capped by logs",
            Some("eth_getLogs"),
            Fault::CapLogs {
                max_blocks: u64::MAX,
                max_logs: if live { 2 } else { 12 },
            },
        ),
        ("head lower than before", None, Fault::HeadBehind(25)),
        ("[] for logs", Some("eth_getLogs"), Fault::EmptyLogs),
        ("half the logs", Some("eth_getLogs"), Fault::HalfLogs),
        ("logs twice", Some("eth_getLogs"), Fault::RepeatLogs),
        ("vanishing header", None, Fault::VanishingHeader),
        (
            "blockHash ignored",
            Some("eth_getLogs"),
            Fault::IgnoreBlockHash,
        ),
    ]
    .into_iter()
    .chain((!live).then_some((
        "getLogs capped by blocks",
        Some("eth_getLogs"),
        Fault::CapLogs {
            max_blocks: 5,
            max_logs: usize::MAX,
        },
    )))
    .collect()
}

/// Deposits from wallets 1..=4 with a purchase now and then (wallets 1..=4
/// must have approved the marketplace).
pub(crate) fn traffic(n: usize, salt: u64) -> Vec<Action> {
    (0..n)
        .map(|i| {
            if i % 7 == 6 {
                Action::Purchase {
                    wallet: 1 + i % 4,
                    tier: 0,
                    days: 1,
                }
            } else {
                Action::Deposit {
                    wallet: 1 + i % 4,
                    amount: salt * 1_000 + i as u64,
                }
            }
        })
        .collect()
}

pub(crate) fn approvals() -> Vec<Action> {
    (1..=4).map(|w| Action::Approve { wallet: w }).collect()
}

/// What the deposits in `actions` must add up to: count and total per wallet.
fn expected_deposits(stack: &Stack, actions: &[Action]) -> (usize, BTreeMap<Address, u64>) {
    let mut totals = BTreeMap::new();
    let mut count = 0;
    for a in actions {
        if let Action::Deposit { wallet, amount } = a {
            count += 1;
            *totals.entry(stack.signer(*wallet).address()).or_default() += *amount;
        }
    }
    (count, totals)
}

/// The follower settings of these tests: small ranges and a small window so
/// backfill spans many ranges, and short timeouts so a hang costs little.
pub(crate) fn spec(stack: &Stack) -> ChainSpec {
    let mut spec = stack.config().chain_specs().expect("specs").remove(0);
    spec.follow.poll_interval = Duration::from_millis(50);
    spec.follow.initial_range = 4;
    spec.follow.max_range = 16;
    spec.follow.window = 12;
    spec.follow.max_logs_per_commit = 40;
    spec.rpc_timeout = Duration::from_millis(500);
    spec.retry = RetryPolicy {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(400),
        max_retries: 6,
    };
    spec
}

pub(crate) async fn conn(stack: &Stack, db: u8) -> RedisConn {
    chainfront_indexer::conn::connect(&format!("{}/{db}", stack.redis.url()))
        .await
        .expect("redis")
}

async fn checkpoint(c: &mut RedisConn, spec: &ChainSpec) -> Option<u64> {
    c.hget(spec.watched.keys.checkpoint(), "number")
        .await
        .expect("checkpoint")
}

/// A follower of `urls` writing to database `db`.
/// What a fault test starts from ([`synced_through_a_proxy`]).
pub(crate) struct Proxied {
    /// What was seeded: the approvals and 40 blocks of deposits.
    pub actions: Vec<Action>,
    /// The one endpoint the follower asks, in front of anvil.
    pub proxy: FaultProxy,
    pub f: Follower,
    pub metrics: Arc<IndexerMetrics>,
    /// Database 1, the follower's.
    pub c: RedisConn,
    /// The block the follower reached.
    pub head: u64,
}

/// Seeds the approvals and 40 blocks of deposits, puts one fault proxy in
/// front of anvil and follows the chain through it (database 1) to its
/// head.
pub(crate) async fn synced_through_a_proxy(stack: &Stack, spec: &ChainSpec) -> Proxied {
    let mut actions = approvals();
    actions.extend(traffic(40, 1));
    seed::run(stack, &actions, 4).await;
    let proxy = FaultProxy::start(&stack.anvil.endpoint()).await;
    let (mut f, metrics) = follower(stack, spec, std::slice::from_ref(&proxy.url), 1).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("sync"), Some(head));
    let c = conn(stack, 1).await;
    Proxied {
        actions,
        proxy,
        f,
        metrics,
        c,
        head,
    }
}

pub(crate) async fn follower(
    stack: &Stack,
    spec: &ChainSpec,
    urls: &[String],
    db: u8,
) -> (Follower, Arc<IndexerMetrics>) {
    let metrics = Arc::new(IndexerMetrics::default());
    let mut rpc = Rpc::new(urls, spec.retry, spec.rpc_timeout).expect("rpc");
    rpc.stats = metrics.rpc.clone();
    let store = Store::new(
        conn(stack, db).await,
        spec.watched.keys.clone(),
        spec.follow.window,
    );
    let f = Follower::new(
        rpc,
        store,
        spec.watched.clone(),
        spec.follow.clone(),
        metrics.clone(),
    );
    (f, metrics)
}

/// The digest of a fresh index of the chain as it is now, made directly
/// against anvil in database `db`.
pub(crate) async fn fresh_digest(stack: &Stack, spec: &ChainSpec, db: u8) -> String {
    let (mut f, _) = follower(stack, spec, &[stack.anvil.endpoint()], db).await;
    f.sync().await.expect("fresh index");
    digest_of(&mut conn(stack, db).await, spec).await
}

/// The state digest of `spec`'s chain in `c`.
pub(crate) async fn digest_of(c: &mut RedisConn, spec: &ChainSpec) -> String {
    state_digest(c, &spec.watched.keys).await.expect("digest").0
}

struct Running {
    name: &'static str,
    /// The fault is a wrong answer that must be seen and rejected (at least
    /// one rejected answer), not merely survived.
    must_reject: bool,
    fault: Fault,
    proxy: FaultProxy,
    metrics: Arc<IndexerMetrics>,
    db: u8,
    task: JoinHandle<chainfront_indexer::Result<()>>,
}

/// Checks every follower against the fresh digest and the deposits sent,
/// after waiting for each to reach `head`; prints a table of what happened.
async fn judge(
    stack: &Stack,
    spec: &ChainSpec,
    runs: Vec<Running>,
    head: u64,
    actions: &[Action],
    phase: &str,
) {
    let reference = fresh_digest(stack, spec, 0).await;
    let (count, totals) = expected_deposits(stack, actions);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut table = format!(
        "\n| fault ({phase}, {} s) | injected | rejected answers | RPC errors | failovers |\n| --- | --- | --- | --- | --- |\n",
        window().as_secs()
    );
    let mut failures = Vec::new();
    for run in runs {
        let mut c = conn(stack, run.db).await;
        while checkpoint(&mut c, spec).await != Some(head) {
            if Instant::now() > deadline || run.task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if run.task.is_finished() {
            match run.task.await {
                Ok(Err(e)) => failures.push(format!("{}: follower stopped: {e}", run.name)),
                other => failures.push(format!("{}: follower ended: {other:?}", run.name)),
            }
            continue;
        }
        run.task.abort();
        let rpc = &run.metrics.rpc;
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            run.name,
            run.proxy.injected(run.fault.name()),
            rpc.rejected.load(Ordering::Relaxed),
            rpc.errors.load(Ordering::Relaxed),
            rpc.failovers.load(Ordering::Relaxed),
        ));
        let reached = checkpoint(&mut c, spec).await;
        if reached != Some(head) {
            failures.push(format!("{}: stopped at {reached:?}, head {head}", run.name));
            continue;
        }
        if run.proxy.injected(run.fault.name()) == 0 {
            failures.push(format!("{}: the fault never applied", run.name));
        }
        if run.must_reject && rpc.rejected.load(Ordering::Relaxed) == 0 {
            failures.push(format!("{}: no answer was rejected", run.name));
        }
        let digest = digest_of(&mut c, spec).await;
        if digest != reference {
            failures.push(format!("{}: state differs from a fresh index", run.name));
        }
        let n: usize = c
            .hlen(spec.watched.keys.deposits())
            .await
            .expect("deposits");
        if n != count {
            failures.push(format!("{}: {n} deposits, {count} sent", run.name));
        }
        for (wallet, total) in &totals {
            let got: Option<String> = c
                .get(spec.watched.keys.wallet_deposit_total(*wallet))
                .await
                .expect("total");
            if got != Some(total.to_string()) {
                failures.push(format!(
                    "{}: wallet {wallet} total {got:?}, sent {total}",
                    run.name
                ));
            }
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Each fault hits its follower's only endpoint from the start, for the
/// window, while the follower backfills a chain whose every block has logs
/// (so every range can be proven complete from one endpoint).
#[tokio::test]
async fn every_fault_during_backfill_changes_nothing() {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    // The deployment's own blocks include some without any log; the
    // seeded ones all have logs.
    spec.follow.start_block = stack.deployer.get_block_number().await.expect("head") + 1;
    let mut actions = approvals();
    actions.extend(traffic(420, 1));
    seed::run(&stack, &actions, 5).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    for n in spec.follow.start_block..=head {
        let block = stack
            .deployer
            .get_block_by_number(n.into())
            .await
            .expect("block")
            .expect("exists");
        assert!(
            !block.header.logs_bloom.is_zero(),
            "block {n} has no logs: its range could not be proven complete from one endpoint"
        );
    }
    let stop = CancellationToken::new();
    let mut runs = Vec::new();
    for (i, (name, method, fault)) in cases(false).into_iter().enumerate() {
        let proxy = FaultProxy::start(&stack.anvil.endpoint()).await;
        proxy.inject(method, fault.clone(), Some(window()));
        let db = i as u8 + 1;
        let (mut f, metrics) = follower(&stack, &spec, std::slice::from_ref(&proxy.url), db).await;
        let stop = stop.clone();
        let task = tokio::spawn(async move { f.run(stop).await });
        runs.push(Running {
            name,
            must_reject: false,
            fault,
            proxy,
            metrics,
            db,
            task,
        });
    }
    judge(&stack, &spec, runs, head, &actions, "backfill").await;
    stop.cancel();
}

/// The followers first reach the head and stop; several blocks are mined;
/// then each fault hits its follower's only endpoint for the window while
/// the follower, started again, catches up those blocks (so the block it
/// asks for is not `latest`: answering for `latest` is then wrong) and
/// blocks keep coming. The faults that are wrong answers must be seen
/// rejected, not merely survived.
#[tokio::test]
async fn every_fault_during_live_following_changes_nothing() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let mut actions = approvals();
    actions.extend(traffic(60, 1));
    seed::run(&stack, &actions, 5).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let catch_up = CancellationToken::new();
    let mut first = Vec::new();
    for (i, (name, _, _)) in cases(true).into_iter().enumerate() {
        let proxy = FaultProxy::start(&stack.anvil.endpoint()).await;
        let db = i as u8 + 1;
        let (mut f, _) = follower(&stack, &spec, std::slice::from_ref(&proxy.url), db).await;
        let stop = catch_up.clone();
        let task = tokio::spawn(async move { f.run(stop).await });
        first.push((name, proxy, db, task));
    }
    for (name, _, db, _) in &first {
        let mut c = conn(&stack, *db).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while checkpoint(&mut c, &spec).await != Some(head) {
            assert!(Instant::now() < deadline, "{name} did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    catch_up.cancel();
    let mut proxies = Vec::new();
    for (name, proxy, db, task) in first {
        task.await.expect("join").expect("follower stops cleanly");
        proxies.push((name, proxy, db));
    }
    // Blocks the stopped followers do not have (fewer than the window, so
    // they are caught up block by block, logs by block hash).
    let behind = traffic(18, 2);
    seed::run(&stack, &behind, 3).await;
    actions.extend(behind);
    let mined = stack.deployer.get_block_number().await.expect("head") - head;
    assert!(
        (4..spec.follow.window).contains(&mined),
        "{mined} blocks to catch up"
    );
    let stop = CancellationToken::new();
    let mut runs = Vec::new();
    for ((name, proxy, db), (_, method, fault)) in proxies.into_iter().zip(cases(true)) {
        proxy.inject(method, fault.clone(), Some(window()));
        let (mut f, metrics) = follower(&stack, &spec, std::slice::from_ref(&proxy.url), db).await;
        let stop = stop.clone();
        let task = tokio::spawn(async move { f.run(stop).await });
        runs.push(Running {
            name,
            must_reject: matches!(
                fault,
                Fault::IgnoreBlockHash | Fault::EmptyLogs | Fault::HalfLogs
            ),
            fault,
            proxy,
            metrics,
            db,
            task,
        });
    }
    // Blocks keep coming through the window and a little after it.
    let until = Instant::now() + window() + Duration::from_secs(1);
    let mut salt = 3;
    while Instant::now() < until {
        let more = traffic(3, salt);
        seed::run(&stack, &more, 3).await;
        actions.extend(more);
        salt += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let head = stack.deployer.get_block_number().await.expect("head");
    judge(&stack, &spec, runs, head, &actions, "live").await;
    stop.cancel();
}

/// A provider whose block objects lack `mixHash` (a field the indexer never
/// reads) is followed to the head, backfill and live.
#[tokio::test]
async fn a_provider_without_mix_hash_is_followed_to_the_head() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let mut actions = approvals();
    actions.extend(traffic(80, 1));
    seed::run(&stack, &actions, 4).await;
    let proxy = FaultProxy::start(&stack.anvil.endpoint()).await;
    proxy.inject(None, Fault::StripMixHash, None);
    let (mut f, _) = follower(&stack, &spec, std::slice::from_ref(&proxy.url), 1).await;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { f.run(stop).await })
    };
    let more = traffic(10, 2);
    seed::run(&stack, &more, 2).await;
    actions.extend(more);
    let head = stack.deployer.get_block_number().await.expect("head");
    let mut c = conn(&stack, 1).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&mut c, &spec).await != Some(head) {
        assert!(
            Instant::now() < deadline && !task.is_finished(),
            "stuck at {:?} of {head}",
            checkpoint(&mut c, &spec).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.expect("join").expect("follower");
    assert!(proxy.injected("strip_mix_hash") > 0, "mixHash was stripped");
    let digest = digest_of(&mut c, &spec).await;
    assert_eq!(digest, fresh_digest(&stack, &spec, 2).await);
}

/// A block with more logs than the provider returns for any query cannot
/// be fetched: the range shrinks to that block and the follower stops there
/// with `Unsplittable` instead of skipping it; once the cap is gone, it goes
/// on and nothing is missing.
#[tokio::test]
async fn a_block_over_the_providers_cap_is_reported_never_skipped() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let mut actions = approvals();
    actions.extend(traffic(60, 1));
    // One block of 30 deposits, more than the cap of 20 below.
    seed::run(&stack, &actions, 6).await;
    let big = traffic(30, 2)
        .into_iter()
        .filter(|a| matches!(a, Action::Deposit { .. }))
        .collect::<Vec<_>>();
    seed::run(&stack, &big, big.len()).await;
    actions.extend(big);
    let more = traffic(60, 3);
    seed::run(&stack, &more, 6).await;
    actions.extend(more);
    let proxy = FaultProxy::start(&stack.anvil.endpoint()).await;
    proxy.inject(
        Some("eth_getLogs"),
        Fault::CapLogs {
            max_blocks: u64::MAX,
            max_logs: 20,
        },
        None,
    );
    let mut spec = spec;
    spec.follow.window = 4;
    let (mut f, _) = follower(&stack, &spec, std::slice::from_ref(&proxy.url), 1).await;
    let err = f.sync().await.expect_err("the big block cannot be fetched");
    assert!(matches!(err, Error::Unsplittable { .. }), "{err}");
    let mut c = conn(&stack, 1).await;
    let stuck = checkpoint(&mut c, &spec).await.expect("blocks before it");
    let Error::Unsplittable { block, .. } = err else {
        unreachable!()
    };
    assert_eq!(stuck + 1, block, "committed up to the block before");
    proxy.clear();
    let head = stack.deployer.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("goes on"), Some(head));
    let (count, _) = expected_deposits(&stack, &actions);
    let n: usize = c
        .hlen(spec.watched.keys.deposits())
        .await
        .expect("deposits");
    assert_eq!(n, count);
    let digest = digest_of(&mut c, &spec).await;
    assert_eq!(digest, fresh_digest(&stack, &spec, 2).await);
}

/// The first endpoint answers every call with 429 and `Retry-After: 600`;
/// the second is healthy and is used at once: the follower reaches the
/// head long before the 600 s are up, and the first endpoint is asked
/// again only after its (capped) rest.
#[tokio::test]
async fn retry_after_rests_one_endpoint_and_never_delays_a_healthy_one() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let mut actions = approvals();
    actions.extend(traffic(100, 1));
    seed::run(&stack, &actions, 5).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let (limited, healthy) = (
        FaultProxy::start(&stack.anvil.endpoint()).await,
        FaultProxy::start(&stack.anvil.endpoint()).await,
    );
    limited.inject(
        None,
        Fault::RateLimit {
            retry_after: Some(600),
        },
        None,
    );
    let (mut f, metrics) = follower(
        &stack,
        &spec,
        &[limited.url.clone(), healthy.url.clone()],
        1,
    )
    .await;
    let reached = tokio::time::timeout(Duration::from_secs(120), f.sync())
        .await
        .expect("not held up by Retry-After: 600")
        .expect("sync");
    assert_eq!(reached, Some(head));
    assert!(healthy.calls("eth_getLogs") > 0);
    // One rest of at most 30 s: the limited endpoint was asked once, not
    // once per call.
    assert!(
        limited.injected("429_retry_after") <= 2,
        "{}",
        limited.injected("429_retry_after")
    );
    assert!(metrics.rpc.rate_limited.load(Ordering::Relaxed) >= 1);
}

/// A second anvil on another chain id is listed first: its chain id is
/// checked, it is never asked anything else, and the follower indexes the
/// right chain from the second endpoint. With only the wrong endpoint, the
/// chain check fails with `WrongChain`.
#[tokio::test]
async fn a_wrong_chain_endpoint_is_never_used() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let mut actions = approvals();
    actions.extend(traffic(40, 1));
    seed::run(&stack, &actions, 4).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let other = chainfront::devnet::start_anvil(1, None).expect("second anvil");
    let wrong = FaultProxy::start(&other.endpoint()).await;
    let right = FaultProxy::start(&stack.anvil.endpoint()).await;
    let (mut f, _) = follower(&stack, &spec, &[wrong.url.clone(), right.url.clone()], 1).await;
    f.check_chain(31337)
        .await
        .expect("one endpoint serves 31337");
    assert_eq!(f.sync().await.expect("sync"), Some(head));
    assert_eq!(
        wrong.methods().keys().collect::<Vec<_>>(),
        vec!["eth_chainId"],
        "the wrong-chain endpoint was asked only its chain id"
    );
    let mut c = conn(&stack, 1).await;
    let digest = digest_of(&mut c, &spec).await;
    assert_eq!(digest, fresh_digest(&stack, &spec, 2).await);

    let (only_wrong, _) = follower(&stack, &spec, std::slice::from_ref(&wrong.url), 3).await;
    let err = only_wrong
        .check_chain(31337)
        .await
        .expect_err("wrong chain");
    assert!(
        matches!(
            err,
            Error::WrongChain {
                expected: 31337,
                actual: 1
            }
        ),
        "{err}"
    );
}

/// T2: a provider that really lags (its head 8 blocks back, below our
/// checkpoint but inside the window, so its head block is compared with the
/// hash we remember; `null` for newer blocks, ranges clamped to its head, "unknown
/// block" for newer blocks' logs): the follower waits — no reorg, no revert,
/// nothing lost — and lag is reported against the highest head seen. With a
/// fresh second endpoint, the probe shows the first is stale: it is left
/// and the follower reaches the head.
#[tokio::test]
async fn a_lagging_provider_causes_no_reorg_and_is_left_for_a_fresh_one() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let mut actions = approvals();
    actions.extend(traffic(100, 1));
    seed::run(&stack, &actions, 5).await;
    let (lagging, fresh) = (
        FaultProxy::start(&stack.anvil.endpoint()).await,
        FaultProxy::start(&stack.anvil.endpoint()).await,
    );
    let (mut f, metrics) = follower(&stack, &spec, std::slice::from_ref(&lagging.url), 1).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("sync"), Some(head));
    let mut c = conn(&stack, 1).await;
    let before = digest_of(&mut c, &spec).await;
    // A lag smaller than the window: the endpoint's head is a block we still
    // remember the hash of, so "is its head our block?" is really compared
    // (with a lag beyond the window that hash would be pruned and nothing
    // compared).
    let lag = 8;
    assert!(lag < spec.follow.window);
    lagging.inject(None, Fault::Lagging(lag), None);
    // New blocks the lagging endpoint does not have, fewer than its lag: its
    // head is below our checkpoint (the chain looks shorter there).
    let more = traffic(8, 2);
    seed::run(&stack, &more, 2).await;
    actions.extend(more);
    let new_head = stack.deployer.get_block_number().await.expect("head");
    let their_head = new_head - lag;
    assert!(their_head < head && head - their_head < spec.follow.window);
    let remembered: Option<String> = c
        .hget(spec.watched.keys.block_hashes(), their_head)
        .await
        .expect("hash");
    assert!(
        remembered.is_some(),
        "the hash of the lagging endpoint's head is remembered, so it is compared"
    );
    for _ in 0..3 {
        assert_eq!(f.sync().await.expect("waits"), Some(head));
    }
    assert!(lagging.injected("lagging") > 0);
    assert_eq!(metrics.reorgs.load(Ordering::Relaxed), 0);
    assert_eq!(before, digest_of(&mut c, &spec).await, "nothing reverted");
    assert_eq!(
        metrics.head_block.load(Ordering::Relaxed),
        head,
        "lag is measured against the highest head seen, not the lagging one"
    );

    // The same chain through the lagging endpoint first and a fresh one
    // second: the probe of the second shows the first is stale.
    let (mut g, gm) = follower(&stack, &spec, &[lagging.url.clone(), fresh.url.clone()], 2).await;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { g.run(stop).await })
    };
    let mut c2 = conn(&stack, 2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&mut c2, &spec).await != Some(new_head) {
        assert!(Instant::now() < deadline, "the stale endpoint was not left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gm.head_block.load(Ordering::Relaxed), new_head);
    assert_eq!(gm.lag(), 0);
    assert!(
        fresh.calls("eth_getLogs") > 0,
        "the fresh endpoint served logs"
    );
    stop.cancel();
    task.await.expect("join").expect("follower");
    expect_deposits(&stack, &spec, &mut c2, &actions).await;
    let digest = digest_of(&mut c2, &spec).await;
    assert_eq!(digest, fresh_digest(&stack, &spec, 3).await);
}

/// F1, the review's sequence: the target comes from the first endpoint, but
/// its `eth_getLogs` fails for a while, so ranges go to the second, which
/// lags 40 blocks and answers ranges beyond its head clamped or empty. No
/// such range is committed: its end block is not there (`null`), so the
/// answer is not shown complete, and the range is fetched again.
#[tokio::test]
async fn a_range_answered_by_a_lagging_backend_is_never_committed_incomplete() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let mut actions = approvals();
    actions.extend(traffic(400, 1));
    seed::run(&stack, &actions, 5).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let (first, lagging) = (
        FaultProxy::start(&stack.anvil.endpoint()).await,
        FaultProxy::start(&stack.anvil.endpoint()).await,
    );
    first.inject(Some("eth_getLogs"), Fault::BadGateway, Some(window()));
    lagging.inject(None, Fault::Lagging(40), None);
    let (mut f, _) = follower(&stack, &spec, &[first.url.clone(), lagging.url.clone()], 1).await;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { f.run(stop).await })
    };
    let mut c = conn(&stack, 1).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while checkpoint(&mut c, &spec).await != Some(head) {
        assert!(
            Instant::now() < deadline && !task.is_finished(),
            "did not reach the head"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.expect("join").expect("follower");
    assert!(first.injected("502") > 0, "the first endpoint failed");
    assert!(
        first.calls("eth_getLogs") > first.injected("502"),
        "once healthy, the first endpoint is preferred again (fail-back)"
    );
    assert!(
        lagging.calls("eth_getLogs") > 0 && lagging.injected("lagging") > 0,
        "the lagging endpoint was asked for ranges beyond its head"
    );
    expect_deposits(&stack, &spec, &mut c, &actions).await;
    let digest = digest_of(&mut c, &spec).await;
    assert_eq!(digest, fresh_digest(&stack, &spec, 2).await);
}

/// F7: after the chain moved more than a window past the checkpoint, the
/// checkpoint's header is re-checked; a backend that answers `null` for it
/// says nothing about the block: the pass fails and is retried, nothing is
/// reverted and it is no fatal "reorg too deep". Once headers are served,
/// the follower goes on.
#[tokio::test]
async fn an_unavailable_checkpoint_header_is_retried_never_taken_for_a_reorg() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let Proxied {
        mut actions,
        proxy,
        mut f,
        metrics,
        mut c,
        head,
    } = synced_through_a_proxy(&stack, &spec).await;
    let before = digest_of(&mut c, &spec).await;
    let more = traffic(60, 2);
    seed::run(&stack, &more, 3).await;
    actions.extend(more);
    proxy.inject(Some("eth_getBlockByNumber"), Fault::NullHeaders, None);
    let err = f
        .sync()
        .await
        .expect_err("the checkpoint cannot be checked");
    assert!(matches!(err, Error::Rpc(_)), "retryable, not fatal: {err}");
    assert_eq!(
        checkpoint(&mut c, &spec).await,
        Some(head),
        "nothing reverted"
    );
    assert_eq!(metrics.reorgs.load(Ordering::Relaxed), 0);
    assert_eq!(before, digest_of(&mut c, &spec).await);
    assert!(proxy.injected("null_headers") > 0);
    proxy.clear();
    let new_head = stack.deployer.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("goes on"), Some(new_head));
    expect_deposits(&stack, &spec, &mut c, &actions).await;
}

/// The deposits in Redis are exactly those in `actions`.
async fn expect_deposits(stack: &Stack, spec: &ChainSpec, c: &mut RedisConn, actions: &[Action]) {
    let (count, totals) = expected_deposits(stack, actions);
    let n: usize = c
        .hlen(spec.watched.keys.deposits())
        .await
        .expect("deposits");
    assert_eq!(n, count, "deposits");
    for (wallet, total) in totals {
        let got: String = c
            .get(spec.watched.keys.wallet_deposit_total(wallet))
            .await
            .expect("total");
        assert_eq!(got, total.to_string(), "total of {wallet}");
    }
}

/// `head = "safe"`: the follower indexes up to anvil's safe block, and a
/// node answering `null` for it (still syncing) is "not yet": nothing is
/// reverted and the head is not taken to be block 0.
#[tokio::test]
async fn a_safe_head_is_followed_and_a_null_safe_block_is_not_yet() {
    tagged_head_is_followed_and_null_is_not_yet(
        chainfront_indexer::follow::HeadTag::Safe,
        alloy::eips::BlockNumberOrTag::Safe,
    )
    .await;
}

/// The same with `head = "finalized"` (anvil's finalized block trails its
/// safe block).
#[tokio::test]
async fn a_finalized_head_is_followed_and_a_null_finalized_block_is_not_yet() {
    tagged_head_is_followed_and_null_is_not_yet(
        chainfront_indexer::follow::HeadTag::Finalized,
        alloy::eips::BlockNumberOrTag::Finalized,
    )
    .await;
}

async fn tagged_head_is_followed_and_null_is_not_yet(
    head: chainfront_indexer::follow::HeadTag,
    tag: alloy::eips::BlockNumberOrTag,
) {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.head = head;
    let mut actions = approvals();
    actions.extend(traffic(300, 1));
    seed::run(&stack, &actions, 3).await;
    let tagged = stack
        .deployer
        .get_block_by_number(tag)
        .await
        .expect("tagged block")
        .expect("anvil has the tagged block")
        .header
        .number;
    let latest = stack.deployer.get_block_number().await.expect("head");
    assert!(
        tagged < latest && tagged > spec.follow.start_block,
        "{tag}: {tagged}, latest {latest}"
    );
    let proxy = FaultProxy::start(&stack.anvil.endpoint()).await;
    let (mut f, metrics) = follower(&stack, &spec, std::slice::from_ref(&proxy.url), 1).await;
    assert_eq!(f.sync().await.expect("sync"), Some(tagged));
    assert_eq!(metrics.head_block.load(Ordering::Relaxed), tagged);
    let mut c = conn(&stack, 1).await;
    let before = digest_of(&mut c, &spec).await;
    proxy.inject(Some("eth_getBlockByNumber"), Fault::NullHead, None);
    assert_eq!(f.sync().await.expect("not yet"), Some(tagged));
    assert_eq!(metrics.head_block.load(Ordering::Relaxed), tagged, "not 0");
    assert_eq!(metrics.reorgs.load(Ordering::Relaxed), 0);
    assert_eq!(before, digest_of(&mut c, &spec).await);
    assert!(proxy.injected("null_head") > 0);
}

/// On a chain where nothing happens, the head is polled no more often than
/// the configured interval: adaptive polling adds requests only around
/// blocks it has learnt to expect.
#[tokio::test]
async fn an_idle_chain_is_polled_no_more_often_than_the_interval() {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.poll_interval = Duration::from_millis(200);
    let proxy = FaultProxy::start(&stack.anvil.endpoint()).await;
    let (mut f, _) = follower(&stack, &spec, std::slice::from_ref(&proxy.url), 1).await;
    assert!(f.sync().await.expect("catch up").is_some());
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { f.run(stop).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, started) = (proxy.requests(), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (requests, elapsed) = (proxy.requests() - before, started.elapsed());
    stop.cancel();
    task.await.expect("join").expect("follower");
    let allowed = elapsed.as_millis() / spec.follow.poll_interval.as_millis() + 2;
    assert!(
        u128::from(requests) <= allowed,
        "{requests} requests in {elapsed:?} at a 200 ms interval"
    );
    assert!(requests > 0, "the head was polled");
}

/// The `chainfront index` process, configured with two endpoints through
/// the environment: the first answers 502 and then half of every log list,
/// the second hangs and then repeats every log, in overlapping windows (two
/// endpoints cutting the same logs the same way could agree on a range the
/// checks cannot prove; see docs/providers.md). The process checks both
/// chain ids, fails over between them, rejects what cannot be shown
/// complete, and ends with exactly the deposits sent and a fresh index's
/// digest.
#[tokio::test]
async fn the_indexer_process_follows_through_two_faulty_endpoints() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let mut actions = approvals();
    actions.extend(traffic(600, 1));
    seed::run(&stack, &actions, 6).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let (p1, p2) = (
        FaultProxy::start(&stack.anvil.endpoint()).await,
        FaultProxy::start(&stack.anvil.endpoint()).await,
    );
    p1.inject(None, Fault::BadGateway, Some(Duration::from_secs(2)));
    p1.inject(
        Some("eth_getLogs"),
        Fault::HalfLogs,
        Some(Duration::from_secs(6)),
    );
    p2.inject(None, Fault::Hang, Some(Duration::from_secs(1)));
    p2.inject(
        Some("eth_getLogs"),
        Fault::RepeatLogs,
        Some(Duration::from_secs(6)),
    );
    let urls = format!("[\"{}\", \"{}\"]", p1.url, p2.url);
    let mut indexer = crate::crash::spawn_indexer(
        &stack,
        1,
        &[
            ("CHAINFRONT_CHAINS__LOCAL__RPC_URLS", urls.as_str()),
            ("CHAINFRONT_INDEXER__RPC_TIMEOUT_MS", "400"),
        ],
    );
    let mut c = conn(&stack, 1).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    while checkpoint(&mut c, &spec).await != Some(head) {
        assert!(
            Instant::now() < deadline,
            "the indexer did not reach the head"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    indexer.kill();
    for (p, name) in [
        (&p1, "502"),
        (&p1, "half_logs"),
        (&p2, "hang"),
        (&p2, "repeat_logs"),
    ] {
        assert!(p.injected(name) > 0, "{name} was injected");
    }
    assert!(p1.calls("eth_chainId") > 0 && p2.calls("eth_chainId") > 0);
    expect_deposits(&stack, &spec, &mut c, &actions).await;
    let digest = digest_of(&mut c, &spec).await;
    assert_eq!(digest, fresh_digest(&stack, &spec, 2).await);
}

/// F1: a backfill range that ends on a block without logs cannot be proven
/// complete from one answer. With two endpoints it is committed only once
/// the second agrees: while the second cannot answer, the pass fails
/// (retryable) and nothing past the last provable block is committed; once
/// it answers, the follower goes on to the head with a fresh index's digest.
#[tokio::test]
async fn an_unprovable_range_is_committed_only_once_a_second_endpoint_confirms_it() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let mut actions = approvals();
    actions.extend(traffic(40, 1));
    seed::run(&stack, &actions, 4).await;
    let seeded = stack.deployer.get_block_number().await.expect("head");
    // Empty blocks well past the window: every range after `seeded` ends
    // on a block without logs.
    stack
        .deployer
        .anvil_mine(Some(spec.follow.window + 40), None)
        .await
        .expect("mine");
    let head = stack.deployer.get_block_number().await.expect("head");
    let (first, second) = (
        FaultProxy::start(&stack.anvil.endpoint()).await,
        FaultProxy::start(&stack.anvil.endpoint()).await,
    );
    second.inject(Some("eth_getLogs"), Fault::BadGateway, None);
    let (mut f, _) = follower(&stack, &spec, &[first.url.clone(), second.url.clone()], 1).await;
    let err = f
        .sync()
        .await
        .expect_err("no second endpoint can confirm the empty-ended range");
    assert!(matches!(err, Error::Rpc(_)), "retryable, not fatal: {err}");
    assert!(second.injected("502") > 0, "the second endpoint was asked");
    let mut c = conn(&stack, 1).await;
    let cp = checkpoint(&mut c, &spec).await;
    assert!(
        cp.is_none_or(|n| n <= seeded),
        "checkpoint {cp:?}: a range ending on an empty block after {seeded} was committed unconfirmed"
    );
    second.clear();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f.sync().await {
            Ok(Some(n)) if n == head => break,
            other => assert!(
                Instant::now() < deadline,
                "did not reach the head: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        second.calls("eth_getLogs") > second.injected("502"),
        "the second endpoint confirmed"
    );
    expect_deposits(&stack, &spec, &mut c, &actions).await;
    let digest = digest_of(&mut c, &spec).await;
    assert_eq!(digest, fresh_digest(&stack, &spec, 2).await);
}

/// F7, the walk itself: a reorg walk that meets blocks no endpoint has
/// (`null` headers) takes them as unknown, never as replaced. With the tip
/// replaced and every header by number answered `null`, nothing is undone
/// and the indexer does not stop ("reorg too deep" would need a replaced
/// block proven); once headers are served, the replaced block is undone and
/// the state equals a fresh index.
#[tokio::test]
async fn a_reorg_walk_through_unavailable_headers_undoes_nothing_and_is_never_too_deep() {
    use alloy::rpc::types::anvil::ReorgOptions;
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let Proxied {
        proxy,
        mut f,
        metrics,
        mut c,
        head,
        ..
    } = synced_through_a_proxy(&stack, &spec).await;
    let tip: Option<String> = c
        .hget(spec.watched.keys.checkpoint(), "hash")
        .await
        .expect("checkpoint hash");
    stack
        .deployer
        .anvil_reorg(ReorgOptions {
            depth: 1,
            tx_block_pairs: vec![],
        })
        .await
        .expect("anvil_reorg");
    proxy.inject(Some("eth_getBlockByNumber"), Fault::NullHeaders, None);
    for _ in 0..3 {
        match f.sync().await {
            Ok(_) => {}
            Err(Error::Rpc(_)) => {}
            Err(e) => panic!("unknown headers must be retried, not fatal: {e}"),
        }
    }
    assert!(
        proxy.injected("null_headers") > 0,
        "the walk met null headers"
    );
    assert_eq!(
        checkpoint(&mut c, &spec).await,
        Some(head),
        "nothing undone"
    );
    let still: Option<String> = c
        .hget(spec.watched.keys.checkpoint(), "hash")
        .await
        .expect("checkpoint hash");
    assert_eq!(
        still, tip,
        "the old tip stays until a replaced block is proven"
    );
    proxy.clear();
    assert_eq!(f.sync().await.expect("through the reorg"), Some(head));
    assert!(metrics.reorgs.load(Ordering::Relaxed) > 0);
    let digest = digest_of(&mut c, &spec).await;
    assert_eq!(digest, fresh_digest(&stack, &spec, 2).await);
}

/// F13: a stall is visible. While no endpoint reports a newer head,
/// `head_age` (exported as `chainfront_head_age_seconds`) grows; it drops
/// back as soon as the chain moves.
#[tokio::test]
async fn a_stalled_head_shows_as_a_growing_head_age() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    seed::run(&stack, &approvals(), 1).await;
    let (mut f, metrics) = follower(&stack, &spec, &[stack.anvil.endpoint()], 1).await;
    f.sync().await.expect("sync");
    // The test chain mines only when asked: it stands still now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    f.sync().await.expect("sync");
    let stalled = metrics.rpc.head_age();
    assert!(
        stalled >= Duration::from_millis(1_400),
        "the head has not moved for 1.5 s, head_age says {stalled:?}"
    );
    stack
        .deployer
        .anvil_mine(Some(1), None)
        .await
        .expect("mine");
    f.sync().await.expect("sync");
    let moved = metrics.rpc.head_age();
    assert!(
        moved < stalled,
        "a new head resets it: {moved:?} after {stalled:?}"
    );
}
