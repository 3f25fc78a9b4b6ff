//! The one atomic commit, checked directly: it names the block it builds on
//! (number *and* hash), it refuses a writer without the fencing token, it
//! refuses to run over a half-wiped state, and it prunes everything that fell
//! out of the window. Real redis-server; the lost-write case restores an
//! older AOF, as a Redis failover or a crash with `appendfsync everysec` can.

use std::collections::BTreeSet;
use std::path::Path;

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use chainfront_indexer::apply::Op;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::store::{Commit, Store, WindowBlock, scan};
use chainfront_indexer::{Error, keys::ChainKeys};
use redis::AsyncCommands;

use crate::harness::Stack;
use crate::indexer::{conn, digest, follower, spec, workload};
use crate::seed::{self, Action};

fn set_op(keys: &ChainKeys, value: &str) -> Vec<Op> {
    vec![Op::Set {
        key: keys.wallet_deposit_total(alloy::primitives::Address::repeat_byte(7)),
        value: value.into(),
    }]
}

/// A backfill commit and a window commit built on `store`'s checkpoint.
async fn both_commits(store: &Store, keys: &ChainKeys, on: u64) -> [Error; 2] {
    let a = store
        .clone()
        .commit(Commit {
            to: on + 1,
            to_hash: B256::repeat_byte(0xa1),
            ops: set_op(keys, "1"),
            undo: false,
        })
        .await
        .expect_err("backfill commit must be refused");
    let b = store
        .clone()
        .commit_window(vec![WindowBlock {
            number: on + 1,
            hash: B256::repeat_byte(0xa2),
            ops: set_op(keys, "2"),
        }])
        .await
        .expect_err("window commit must be refused");
    [a, b]
}

/// A checkpoint moved to another block of the same height (only the hash
/// differs) or to another height: every kind of commit built on the old one
/// is refused and applies nothing.
#[tokio::test]
async fn a_checkpoint_at_the_same_height_on_another_branch_refuses_every_commit() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    seed::run(&stack, &workload(10), 5).await;
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("sync");
    let keys = spec.watched.keys.clone();
    let before = digest(&mut c, &spec).await;
    let mut store = Store::new(c.clone(), keys.clone(), spec.follow.window);
    let cp = store.checkpoint().await.expect("read").expect("checkpoint");
    for (what, number, hash) in [
        (
            "same height, other hash",
            cp.number,
            B256::repeat_byte(0xee),
        ),
        ("other height", cp.number - 1, cp.hash),
    ] {
        // The store still believes in `cp`; Redis now holds another block.
        let _: () = c
            .hset_multiple(
                keys.checkpoint(),
                &[("number", number.to_string()), ("hash", hash.to_string())],
            )
            .await
            .expect("hset");
        for e in both_commits(&store, &keys, cp.number).await {
            assert!(matches!(e, Error::StaleCheckpoint), "{what}: {e}");
        }
        assert_eq!(
            before,
            digest(&mut c, &spec).await,
            "{what}: nothing applied"
        );
    }
    // Put back: the same store now commits.
    let _: () = c
        .hset_multiple(
            keys.checkpoint(),
            &[
                ("number", cp.number.to_string()),
                ("hash", cp.hash.to_string()),
            ],
        )
        .await
        .expect("hset");
    store
        .commit(Commit {
            to: cp.number + 1,
            to_hash: B256::repeat_byte(0xa1),
            ops: set_op(&keys, "1"),
            undo: false,
        })
        .await
        .expect("commit on the right checkpoint");
}

/// A store whose fencing token is no longer the leader's writes nothing:
/// backfill commits, window commits and reverts are all refused inside the
/// script.
#[tokio::test]
async fn a_writer_without_the_fencing_token_commits_and_reverts_nothing() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let keys = spec.watched.keys.clone();
    let mut c = conn(&stack, 1).await;
    let mut store = Store::new(c.clone(), keys.clone(), spec.follow.window);
    let _: () = c.set(keys.leader(), "1:aaaa").await.expect("set");
    store.set_fencing_token("1:aaaa".into());
    store
        .commit_window(
            (1..=3)
                .map(|n| WindowBlock {
                    number: n,
                    hash: B256::repeat_byte(n as u8),
                    ops: set_op(&keys, &n.to_string()),
                })
                .collect(),
        )
        .await
        .expect("the leader commits");
    let before = digest(&mut c, &spec).await;
    // Another process takes over (a new token), this one was paused.
    let _: () = c.set(keys.leader(), "2:bbbb").await.expect("set");
    for e in both_commits(&store, &keys, 3).await {
        assert!(matches!(e, Error::Fenced), "{e}");
    }
    let e = store.revert_to(1).await.expect_err("revert refused");
    assert!(matches!(e, Error::Fenced), "{e}");
    assert_eq!(before, digest(&mut c, &spec).await, "nothing written");
    let cp: u64 = c.hget(keys.checkpoint(), "number").await.expect("cp");
    assert_eq!(cp, 3);
    // The lock expired and nobody holds it: still refused.
    let _: () = c.del(keys.leader()).await.expect("del");
    let e = store.revert_to(1).await.expect_err("revert refused");
    assert!(matches!(e, Error::Fenced), "{e}");
}

/// F19: a fencing token is never handed out twice, even when Redis rolls
/// its counter back (a failover to a replica that missed the increments, a
/// restored dump) and every process runs as the same pid: the token taken
/// after the rollback carries the same counter value but differs, and the
/// paused ex-leader's token is refused.
#[tokio::test]
async fn a_fencing_token_is_unique_even_after_the_counter_rolls_back() {
    use chainfront_indexer::leader;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let keys = spec.watched.keys.clone();
    let mut c = conn(&stack, 1).await;
    let ttl = Duration::from_millis(300);
    let fence_before: Option<u64> = c.get(keys.fence()).await.expect("get");
    let first = leader::acquire(c.clone(), keys.clone(), ttl, CancellationToken::new())
        .await
        .expect("acquire")
        .expect("leader");
    let mut store = Store::new(c.clone(), keys.clone(), spec.follow.window);
    store.set_fencing_token(first.token.clone());
    store
        .commit_window(vec![WindowBlock {
            number: 1,
            hash: B256::repeat_byte(1),
            ops: set_op(&keys, "1"),
        }])
        .await
        .expect("the leader commits");
    // The leader is paused past its lock, Redis loses the counter's
    // increment, and another process takes the lock.
    first.lost.cancel();
    let _: () = c.del(keys.leader()).await.expect("del");
    match fence_before {
        Some(n) => c.set::<_, _, ()>(keys.fence(), n).await.expect("set"),
        None => c.del::<_, ()>(keys.fence()).await.expect("del"),
    }
    let second = leader::acquire(c.clone(), keys.clone(), ttl, CancellationToken::new())
        .await
        .expect("acquire")
        .expect("leader");
    let counter = |t: &str| t.split(':').next().map(str::to_owned);
    assert_eq!(
        counter(&first.token),
        counter(&second.token),
        "the counter was rolled back: {} / {}",
        first.token,
        second.token
    );
    assert_ne!(first.token, second.token, "a token was handed out twice");
    // The random part is 128 bits, not a pid or a time.
    let random = second.token.split(':').nth(1).unwrap_or_default();
    assert_eq!(random.len(), 32, "{}", second.token);
    assert_ne!(random, format!("{:032x}", std::process::id()));
    // The paused ex-leader writes nothing.
    let before = digest(&mut c, &spec).await;
    for e in both_commits(&store, &keys, 1).await {
        assert!(matches!(e, Error::Fenced), "{e}");
    }
    assert_eq!(before, digest(&mut c, &spec).await, "nothing written");
    second.lost.cancel();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Replaces Redis's data with `snapshot` (stop, put back, start): Redis
/// loses every write made since the snapshot, as after a failover to a
/// replica that had not received them.
fn restore(stack: &mut Stack, snapshot: &Path) {
    stack.redis.stop();
    let dir = stack.redis.data_dir().to_path_buf();
    for entry in std::fs::read_dir(&dir).expect("read dir") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).expect("rm");
        } else {
            std::fs::remove_file(&p).expect("rm");
        }
    }
    copy_dir(snapshot, &dir);
    stack.redis.start_again().expect("redis back");
}

async fn reconnect(stack: &Stack) -> RedisConn {
    conn(stack, 1).await
}

/// F4: Redis loses a revert and a re-apply (an older AOF comes back: the
/// checkpoint is block n of the orphaned branch A again, while the indexer
/// last wrote block n of branch B). A commit of B's next block built on
/// "n/B" is refused — its number matches, its hash does not — and the
/// follower then repairs the state by itself: it ends at a fresh reindex's
/// digest, with A's deposit gone and B's deposits counted once.
#[tokio::test]
async fn a_lost_revert_and_reapply_is_refused_and_the_indexer_repairs_itself() {
    let mut stack = Stack::start().await;
    let spec = spec(&stack);
    let keys = spec.watched.keys.clone();
    seed::run(&stack, &workload(20), 5).await;
    let (mut f, _) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("sync");
    let p = stack.deployer.clone();
    let fork: U256 = p
        .raw_request("evm_snapshot".into(), ())
        .await
        .expect("snapshot");
    // Branch A: block n with a deposit of 111 by wallet 1.
    let dep = |wallet, amount| Action::Deposit { wallet, amount };
    seed::run(&stack, &[dep(1, 111)], 1).await;
    let n = p.get_block_number().await.expect("head");
    assert_eq!(f.sync().await.expect("onto A"), Some(n));
    // Redis's state now: checkpoint n/A. Keep a copy of its files.
    stack.redis.stop();
    let saved = tempfile::tempdir().expect("tmp");
    copy_dir(stack.redis.data_dir(), saved.path());
    stack.redis.start_again().expect("redis back");
    // Branch B replaces block n (a deposit of 222), then grows to n + 1.
    let _: bool = p
        .raw_request("evm_revert".into(), (fork,))
        .await
        .expect("revert");
    seed::run(&stack, &[dep(2, 222)], 1).await;
    assert_eq!(p.get_block_number().await.expect("head"), n);
    let (mut f, _) = follower(&stack, 1, &spec).await;
    assert_eq!(f.sync().await.expect("onto B"), Some(n));
    let mut c = reconnect(&stack).await;
    let mut writer = Store::new(c.clone(), keys.clone(), spec.follow.window);
    let on_b = writer.checkpoint().await.expect("read").expect("cp");
    assert_eq!(on_b.number, n);
    seed::run(&stack, &[dep(3, 333)], 1).await;
    let next = p
        .get_block_by_number((n + 1).into())
        .await
        .expect("block")
        .expect("exists");
    let logs = p
        .get_logs(&Filter::new().at_block_hash(next.header.hash))
        .await
        .expect("logs");
    let ops = spec.watched.ops_for_logs(&logs);
    assert!(!ops.is_empty(), "block n + 1 carries a deposit");

    // Redis loses the revert of n/A and the commit of n/B.
    restore(&mut stack, saved.path());
    let mut c2 = reconnect(&stack).await;
    let restored: (u64, String) = redis::cmd("HMGET")
        .arg(keys.checkpoint())
        .arg("number")
        .arg("hash")
        .query_async(&mut c2)
        .await
        .expect("cp");
    assert_eq!(restored.0, n, "same height");
    assert_ne!(restored.1, on_b.hash.to_string(), "other branch");
    let before = digest(&mut c2, &spec).await;
    // The writer's connection reconnects to the restarted server (a read).
    let mut up = false;
    for _ in 0..100 {
        if writer.block_hash(0).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "the writer's connection came back");
    // The writer still believes in n/B: its next commit must not land.
    let e = writer
        .commit_window(vec![WindowBlock {
            number: n + 1,
            hash: next.header.hash,
            ops,
        }])
        .await
        .expect_err("a commit on a lost checkpoint must be refused");
    assert!(matches!(e, Error::StaleCheckpoint), "{e}");
    assert_eq!(before, digest(&mut c2, &spec).await, "nothing applied");

    // The follower repairs: undoes A's block n (its undo record came back
    // with the AOF) and applies B.
    let (mut f, _) = follower(&stack, 1, &spec).await;
    assert_eq!(f.sync().await.expect("repair"), Some(n + 1));
    c = reconnect(&stack).await;
    let (mut fresh, mut fc) = follower(&stack, 2, &spec).await;
    fresh.sync().await.expect("fresh");
    assert_eq!(
        digest(&mut c, &spec).await,
        digest(&mut fc, &spec).await,
        "repaired state equals a fresh reindex"
    );
    let all: std::collections::HashMap<String, String> =
        c.hgetall(keys.deposits()).await.expect("deposits");
    for (wallet, amount, credited) in [(1, 111u64, false), (2, 222, true), (3, 333, true)] {
        let from = chainfront_indexer::keys::lower(stack.signer(wallet).address());
        let found = all
            .values()
            .filter(|v| v.starts_with(&format!("{from}:{amount}:")))
            .count();
        assert_eq!(found, usize::from(credited), "wallet {wallet}'s {amount}");
    }
}

/// Hashes and undo records of blocks older than the window are deleted, all
/// of them: after a backfill in many small commits, after falling more than a
/// window behind, and after the window is lowered.
#[tokio::test]
async fn pruning_keeps_exactly_the_window_after_backfill_falling_behind_and_a_smaller_window() {
    let stack = Stack::start().await;
    let mut spec = spec(&stack);
    spec.follow.window = 10;
    spec.follow.initial_range = 3;
    spec.follow.max_range = 3;
    let keys = spec.watched.keys.clone();
    let p = stack.deployer.clone();
    let dep = |i: u64| Action::Deposit {
        wallet: 1 + (i as usize % 4),
        amount: 10 + i,
    };

    async fn check(c: &mut RedisConn, keys: &ChainKeys, window: u64, what: &str) {
        let cp: u64 = c.hget(keys.checkpoint(), "number").await.expect("cp");
        let hashes: Vec<u64> = c.hkeys(keys.block_hashes()).await.expect("hkeys");
        let undo: BTreeSet<u64> = scan(c, &keys.undo_pattern())
            .await
            .expect("scan")
            .iter()
            .map(|k| k.rsplit(':').next().expect("n").parse().expect("number"))
            .collect();
        let lowest = cp.saturating_sub(window);
        assert!(
            hashes.iter().all(|&n| n > lowest && n <= cp),
            "{what}: hashes outside ({lowest}, {cp}]: {hashes:?}"
        );
        assert!(
            undo.iter().all(|&n| n > lowest && n <= cp),
            "{what}: undo records outside ({lowest}, {cp}]: {undo:?}"
        );
        assert!(hashes.len() as u64 <= window, "{what}: {hashes:?}");
    }

    // 60 blocks of backfill in 3-block ranges, then window blocks.
    seed::run(&stack, &(0..60).map(dep).collect::<Vec<_>>(), 1).await;
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("backfill");
    check(&mut c, &keys, 10, "after backfill").await;
    seed::run(&stack, &(60..75).map(dep).collect::<Vec<_>>(), 1).await;
    f.sync().await.expect("live");
    check(&mut c, &keys, 10, "after live blocks").await;
    let undo_live = scan(&mut c, &keys.undo_pattern())
        .await
        .expect("scan")
        .len();
    assert_eq!(undo_live, 10, "the window's undo records are kept");

    // Fall 40 blocks behind (more than the window), then catch up.
    seed::run(&stack, &(75..115).map(dep).collect::<Vec<_>>(), 1).await;
    f.sync().await.expect("catch up");
    check(&mut c, &keys, 10, "after falling behind").await;

    // A smaller window: the next commit prunes down to it.
    let mut small = spec.clone();
    small.follow.window = 4;
    let (mut f4, _) = follower(&stack, 1, &small).await;
    seed::run(&stack, &[dep(200)], 1).await;
    let head = p.get_block_number().await.expect("head");
    assert_eq!(f4.sync().await.expect("sync"), Some(head));
    check(&mut c, &keys, 4, "after lowering the window").await;

    // And pruning never changed the state: equal to a fresh run.
    let (mut fresh, mut fc) = follower(&stack, 2, &small).await;
    fresh.sync().await.expect("fresh");
    assert_eq!(digest(&mut c, &spec).await, digest(&mut fc, &spec).await);
}

/// While a `reindex` wipe's tombstone exists, no commit lands; finishing the
/// wipe deletes all state (including keys a partial wipe left) and lets
/// commits through again.
#[tokio::test]
async fn a_wipe_tombstone_blocks_commits_until_the_wipe_is_finished() {
    let stack = Stack::start().await;
    let spec = spec(&stack);
    let keys = spec.watched.keys.clone();
    seed::run(&stack, &workload(20), 5).await;
    let (mut f, mut c) = follower(&stack, 1, &spec).await;
    f.sync().await.expect("sync");
    // An interrupted wipe: tombstone written, checkpoint gone, some state left.
    let _: () = c.set(keys.wipe(), "1").await.expect("set");
    let _: () = c.del(keys.checkpoint()).await.expect("del");
    let left = scan(&mut c, &keys.state_pattern()).await.expect("scan");
    assert!(!left.is_empty());
    let mut store = Store::new(c.clone(), keys.clone(), spec.follow.window);
    let e = store
        .commit(Commit {
            to: 1,
            to_hash: B256::repeat_byte(1),
            ops: set_op(&keys, "1"),
            undo: false,
        })
        .await
        .expect_err("refused while the tombstone exists");
    assert!(matches!(e, Error::WipePending), "{e}");
    assert!(store.finish_interrupted_wipe().await.expect("finish"));
    assert!(
        scan(&mut c, &keys.state_pattern())
            .await
            .expect("scan")
            .is_empty()
    );
    assert!(
        scan(&mut c, &keys.undo_pattern())
            .await
            .expect("scan")
            .is_empty()
    );
    let exists: bool = c.exists(keys.wipe()).await.expect("exists");
    assert!(!exists, "tombstone removed last");
    assert!(!store.finish_interrupted_wipe().await.expect("nothing left"));
    // A follower now rebuilds the same state as a fresh one.
    let (mut again, _) = follower(&stack, 1, &spec).await;
    again.sync().await.expect("rebuild");
    let (mut fresh, mut fc) = follower(&stack, 2, &spec).await;
    fresh.sync().await.expect("fresh");
    assert_eq!(digest(&mut c, &spec).await, digest(&mut fc, &spec).await);
}

/// A backfill commit adds to the running totals the last commit left
/// without reading them back; that is right only while Redis still holds
/// that commit. Another writer moves the checkpoint (and a total) between
/// two commits of `a`: `a`'s next commit, built on the totals it remembers,
/// is refused and writes nothing; after re-reading the checkpoint it adds
/// to the total Redis really holds.
#[tokio::test]
async fn remembered_totals_never_outlive_the_checkpoint_they_belong_to() {
    let stack = Stack::start().await;
    let keys = ChainKeys::new(31337);
    let c = conn(&stack, 5).await;
    let total = keys.wallet_deposit_total(alloy::primitives::Address::repeat_byte(9));
    let add = |amount: u64| Op::AddU256 {
        key: total.clone(),
        field: None,
        amount: U256::from(amount),
    };
    let commit = |to: u64, amount: u64| Commit {
        to,
        to_hash: B256::with_last_byte(to as u8),
        ops: vec![add(amount), add(1)],
        undo: false,
    };
    let read = |mut c: RedisConn| {
        let total = total.clone();
        async move { c.get::<_, Option<String>>(total).await.expect("read") }
    };
    let mut a = Store::new(c.clone(), keys.clone(), 128);
    let mut b = Store::new(c.clone(), keys.clone(), 128);
    a.commit(commit(1, 10)).await.expect("a: first");
    a.commit(commit(2, 20))
        .await
        .expect("a: second (remembered total)");
    assert_eq!(read(c.clone()).await.as_deref(), Some("32"));
    b.checkpoint().await.expect("b reads");
    b.commit(commit(3, 100)).await.expect("b commits");
    assert_eq!(read(c.clone()).await.as_deref(), Some("133"));
    // `a` still remembers 32 at block 2.
    let e = a
        .commit(commit(3, 5))
        .await
        .expect_err("a commit on a checkpoint that moved must be refused");
    assert!(matches!(e, Error::StaleCheckpoint), "{e}");
    assert_eq!(
        read(c.clone()).await.as_deref(),
        Some("133"),
        "nothing written"
    );
    let cp = a.checkpoint().await.expect("re-read").expect("checkpoint");
    assert_eq!(cp.number, 3);
    a.commit(commit(4, 5))
        .await
        .expect("a: on the real checkpoint");
    assert_eq!(
        read(c.clone()).await.as_deref(),
        Some("139"),
        "added to what Redis held, not to what `a` remembered"
    );
}
