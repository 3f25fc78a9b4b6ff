//! Crash safety: `chainfront index` runs as a child process and is killed with
//! SIGKILL at random moments during a backfill of more than 20,000 events;
//! every restart resumes from the checkpoint and the end state equals an
//! uninterrupted run's, digest for digest.

use chainfront_indexer::conn::RedisConn;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use chainfront_indexer::digest::state_digest;
use redis::AsyncCommands;

use crate::harness::{Stack, local_toml};
use crate::seed::{self, Action};

fn bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_chainfront"))
}

/// A tiny deterministic PRNG (xorshift64*), seeded from the clock and printed,
/// so a failing schedule can be replayed with CRASH_TEST_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("CRASH_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(7)
                    | 1
            });
        eprintln!("crash schedule seed: CRASH_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves
/// nothing running.
pub struct Indexer(pub Child);

impl Indexer {
    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `chainfront index` for this stack, writing to Redis database `db`.
pub fn spawn_indexer(stack: &Stack, db: u8, extra: &[(&str, &str)]) -> Indexer {
    let mut cmd = Command::new(bin());
    cmd.arg("index")
        .arg("--config")
        .arg(local_toml())
        .envs(stack.env())
        .env(
            "CHAINFRONT_REDIS__URL",
            format!("{}/{db}", stack.redis.url()),
        )
        .env("CHAINFRONT_INDEXER__LEADER_TTL_MS", "300")
        .env("CHAINFRONT_CHAINS__LOCAL__POLL_INTERVAL_MS", "20")
        // Small ranges and a small window: most blocks go through backfill,
        // in many commits, so kills land inside it.
        .env("CHAINFRONT_CHAINS__LOCAL__MAX_LOG_RANGE", "2")
        .env("CHAINFRONT_CHAINS__LOCAL__REORG_WINDOW", "16")
        .env("CHAINFRONT_LOG__FILTER", "warn")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Indexer(cmd.spawn().expect("spawn chainfront index"))
}

pub async fn checkpoint(conn: &mut RedisConn) -> Option<u64> {
    conn.hget(
        chainfront_indexer::keys::ChainKeys::new(31337).checkpoint(),
        "number",
    )
    .await
    .expect("checkpoint")
}

pub async fn db(stack: &Stack, db: u8) -> RedisConn {
    chainfront_indexer::conn::connect(&format!("{}/{db}", stack.redis.url()))
        .await
        .expect("redis")
}

/// Waits until database `db`'s checkpoint reaches `head`.
pub async fn wait_for(conn: &mut RedisConn, head: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while checkpoint(conn).await != Some(head) {
        assert!(
            Instant::now() < deadline,
            "indexer did not reach block {head}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The digest of an uninterrupted `chainfront index` run up to `head`, in
/// database `db`.
pub async fn reference_digest(stack: &Stack, db_index: u8, head: u64) -> String {
    let mut reference = spawn_indexer(stack, db_index, &[]);
    let mut conn = db(stack, db_index).await;
    wait_for(&mut conn, head, Duration::from_secs(600)).await;
    reference.kill();
    let keys = chainfront_indexer::keys::ChainKeys::new(31337);
    state_digest(&mut conn, &keys).await.expect("digest").0
}

/// 20,400 deposits over ~1,000 blocks from six wallets.
pub fn deposits(n: usize) -> Vec<Action> {
    (0..n)
        .map(|i| Action::Deposit {
            wallet: 1 + i % 6,
            amount: 1 + (i as u64 % 997),
        })
        .collect()
}

#[tokio::test]
async fn sigkill_during_backfill_never_loses_or_doubles_an_event() {
    let stack = Stack::start().await;
    seed::run(&stack, &deposits(20_400), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = chainfront_indexer::keys::ChainKeys::new(31337);

    // Reference: one uninterrupted run into database 2.
    let mut reference = spawn_indexer(&stack, 2, &[]);
    let mut ref_conn = db(&stack, 2).await;
    wait_for(&mut ref_conn, head, Duration::from_secs(600)).await;
    reference.kill();
    let (expected, _) = state_digest(&mut ref_conn, &keys).await.expect("digest");
    let credited: usize = redis::AsyncCommands::hlen(&mut ref_conn, keys.deposits())
        .await
        .expect("hlen");
    assert_eq!(credited, 20_400, "every deposit credited once");

    // Killed ten times at random moments into database 1.
    let mut rng = Rng::new();
    let mut conn = db(&stack, 1).await;
    let mut seen = Vec::new();
    // Ten random points of the backfill, in order: each run is killed right
    // after its checkpoint passes the next one (plus up to 5 ms), wherever in
    // a fetch or commit that happens to be.
    let mut targets: Vec<u64> = (0..10).map(|_| 1 + rng.below(head - 32)).collect();
    targets.sort_unstable();
    for target in targets {
        let mut child = spawn_indexer(&stack, 1, &[]);
        let deadline = Instant::now() + Duration::from_secs(120);
        while checkpoint(&mut conn).await.unwrap_or(0) < target {
            assert!(
                Instant::now() < deadline,
                "no progress towards block {target}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(6))).await;
        child.kill();
        seen.push(checkpoint(&mut conn).await.unwrap_or(0));
    }
    let mut last = spawn_indexer(&stack, 1, &[]);
    wait_for(&mut conn, head, Duration::from_secs(600)).await;
    last.kill();
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");
    eprintln!("checkpoints at the kills: {seen:?} (head {head})");
    assert!(
        seen.iter().filter(|&&c| c + 16 < head).count() >= 8,
        "the kills must land mid-backfill: {seen:?} of {head}"
    );
    assert_eq!(digest, expected, "state after 10 SIGKILLs differs");
}

/// Redis (AOF on) is killed and restarted twice during a backfill: the
/// indexer reconnects and ends at the uninterrupted run's digest.
#[tokio::test]
async fn a_redis_restart_mid_run_loses_nothing() {
    let mut stack = Stack::start().await;
    seed::run(&stack, &deposits(6_000), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = chainfront_indexer::keys::ChainKeys::new(31337);

    let mut child = spawn_indexer(&stack, 1, &[]);
    let mut conn = db(&stack, 1).await;
    for target in [head / 4, head / 2] {
        let deadline = Instant::now() + Duration::from_secs(120);
        while checkpoint(&mut conn).await.unwrap_or(0) < target {
            assert!(Instant::now() < deadline, "no progress towards {target}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stack.redis.restart().expect("restart redis");
        // Writes committed before the kill survived (appendfsync always).
        conn = db(&stack, 1).await;
        assert!(checkpoint(&mut conn).await.unwrap_or(0) >= target);
    }
    wait_for(&mut conn, head, Duration::from_secs(300)).await;
    child.kill();
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");

    let expected = reference_digest(&stack, 2, head).await;
    assert_eq!(digest, expected, "state after Redis restarts differs");
}

/// The pid in the leader key (`<fence>:<pid>`), if any.
async fn leader_pid(conn: &mut RedisConn) -> Option<u32> {
    let v: Option<String> = conn
        .get(chainfront_indexer::keys::ChainKeys::new(31337).leader())
        .await
        .expect("leader");
    v.and_then(|v| v.split(':').nth(1).and_then(|p| p.parse().ok()))
}

/// Two `chainfront index` processes on one chain: one leads and writes, the
/// other stands by; SIGKILL the leader mid-backfill and the standby takes over
/// with no gap and no double count, and keeps following live blocks.
#[tokio::test]
async fn a_hot_standby_takes_over_when_the_leader_dies() {
    let stack = Stack::start().await;
    seed::run(&stack, &deposits(6_000), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = chainfront_indexer::keys::ChainKeys::new(31337);
    let mut conn = db(&stack, 1).await;

    let mut a = spawn_indexer(&stack, 1, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader_pid(&mut conn).await != Some(a.0.id()) {
        assert!(Instant::now() < deadline, "A never took the lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b = spawn_indexer(&stack, 1, &[]);
    // While A lives, A alone holds the lock (B's commits would be fenced).
    for _ in 0..20 {
        assert_eq!(leader_pid(&mut conn).await, Some(a.0.id()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while checkpoint(&mut conn).await.unwrap_or(0) < head / 2 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader_pid(&mut conn).await != Some(b.0.id()) {
        assert!(Instant::now() < deadline, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for(&mut conn, head, Duration::from_secs(300)).await;
    // New blocks while B leads.
    seed::run(&stack, &deposits(300), 10).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    wait_for(&mut conn, head, Duration::from_secs(120)).await;
    drop(b);
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");

    let expected = reference_digest(&stack, 2, head).await;
    assert_eq!(digest, expected, "state after a leader change differs");
}
