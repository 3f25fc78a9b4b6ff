//! Follower edge cases where "unknown" must not be taken for "different"
//! and "not ready" must not become a hot loop: providers that disagree about
//! the tip, logs that are never ready, and a reorg that replaces the start
//! block itself.

use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::anvil::ReorgOptions;
use chainfront_indexer::digest::state_digest;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::harness::Stack;
use crate::rpc_faults::{
    Proxied, approvals, conn, follower, fresh_digest, spec, synced_through_a_proxy, traffic,
};
use crate::seed;

/// Requests a follower sends in `secs` seconds of `run` behind `proxy`.
async fn requests_while_running(
    follower: &mut chainfront_indexer::follow::Follower,
    proxy: &FaultProxy,
    secs: u64,
) -> u64 {
    let stop = CancellationToken::new();
    let before = proxy.requests();
    let run = follower.run(stop.clone());
    let timer = async {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.cancel();
    };
    let (result, ()) = tokio::join!(run, timer);
    result.expect("follower");
    proxy.requests() - before
}

/// F8: the tip's hash differs between the head poll and blocks by number
/// (backends disagreeing), and then every block's logs are "unknown block":
/// in both cases the follower waits for the next poll instead of spinning,
/// and it reverts nothing.
#[tokio::test]
async fn disagreeing_providers_make_the_follower_wait_not_spin() {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.poll_interval = Duration::from_millis(200);
    let Proxied {
        proxy,
        mut f,
        metrics,
        mut c,
        head,
        ..
    } = synced_through_a_proxy(&stack, &spec).await;
    let before = state_digest(&mut c, &spec.watched.keys)
        .await
        .expect("digest")
        .0;

    proxy.inject(None, Fault::PhantomTip, None);
    let requests = requests_while_running(&mut f, &proxy, 2).await;
    // A pass is a head poll plus a header to check the tip: about 2 per
    // 200 ms poll. A spinning follower sends hundreds.
    assert!(requests <= 30, "{requests} requests in 2 s");
    assert!(proxy.injected("phantom_tip") > 0);
    assert_eq!(metrics.reorgs.load(Ordering::Relaxed), 0);
    proxy.clear();

    proxy.inject(
        Some("eth_getLogs"),
        Fault::RpcError {
            code: -32000,
            message: "unknown block".into(),
        },
        None,
    );
    seed::run(&stack, &traffic(8, 2), 2).await;
    let requests = requests_while_running(&mut f, &proxy, 2).await;
    // Each pass (head, headers by number, logs) is 3 requests, retried at
    // most every 200 ms: about 30.
    assert!(requests <= 45, "{requests} requests in 2 s");
    assert_eq!(metrics.reorgs.load(Ordering::Relaxed), 0);
    let cp: Option<u64> = c
        .hget(spec.watched.keys.checkpoint(), "number")
        .await
        .expect("checkpoint");
    assert_eq!(cp, Some(head), "blocks whose logs are unknown wait");
    assert_eq!(
        before,
        state_digest(&mut c, &spec.watched.keys)
            .await
            .expect("digest")
            .0
    );
    proxy.clear();
    let new_head = stack.deployer.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("goes on"), Some(new_head));
}

/// F10: every block from the start block on is replaced (the start block is
/// within the window, as at launch): the follower reverts to "no
/// checkpoint" and indexes the new branch, ending where a fresh index ends.
#[tokio::test]
async fn a_reorg_that_replaces_the_start_block_reverts_to_no_checkpoint() {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.start_block = stack.deployer.get_block_number().await.expect("head") + 1;
    spec.follow.window = 32;
    seed::run(&stack, &approvals(), 4).await;
    let deposits = traffic(12, 1)
        .into_iter()
        .filter(|a| matches!(a, seed::Action::Deposit { .. }))
        .collect::<Vec<_>>();
    seed::run(&stack, &deposits, 3).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let (mut f, metrics) = follower(&stack, &spec, &[stack.anvil.endpoint()], 1).await;
    assert_eq!(f.sync().await.expect("sync"), Some(head));
    let mut c = conn(&stack, 1).await;
    let n: usize = c.hlen(spec.watched.keys.deposits()).await.expect("hlen");
    assert_eq!(n, deposits.len());

    stack
        .deployer
        .anvil_reorg(ReorgOptions {
            depth: head - spec.follow.start_block + 1,
            tx_block_pairs: vec![],
        })
        .await
        .expect("anvil_reorg");
    assert_eq!(f.sync().await.expect("through the reorg"), Some(head));
    assert!(metrics.reorgs.load(Ordering::Relaxed) > 0);
    let n: usize = c.hlen(spec.watched.keys.deposits()).await.expect("hlen");
    assert_eq!(n, 0, "the replaced blocks' deposits are gone");
    let digest = state_digest(&mut c, &spec.watched.keys)
        .await
        .expect("digest")
        .0;
    assert_eq!(digest, fresh_digest(&stack, &spec, 2).await);
}
