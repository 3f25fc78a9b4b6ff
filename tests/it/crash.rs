//! Crash safety: `chainfront index` (and `reindex`) run as child processes
//! and are killed (SIGKILL), stopped (SIGSTOP/SIGCONT) or asked to stop
//! (SIGTERM) at moments chosen to land inside a chunked backfill commit
//! sequence, a window batch, a multi-step revert and a reindex wipe; Redis
//! itself is stopped for 10 s with `appendfsync everysec`. Every run ends at
//! the state of an uninterrupted run (digest) with the chain's deposits, each
//! once.

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
    spawn(stack, "index", db, extra, None)
}

/// `chainfront <command>` for this stack on database `db`; stderr to `log`
/// (a file) or inherited.
pub fn spawn(
    stack: &Stack,
    command: &str,
    db: u8,
    extra: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> Indexer {
    let mut cmd = Command::new(bin());
    cmd.arg(command)
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
        .stdout(Stdio::null());
    match log {
        Some(path) => cmd.stderr(std::fs::File::create(path).expect("log file")),
        None => cmd.stderr(Stdio::inherit()),
    };
    Indexer(cmd.spawn().expect("spawn chainfront"))
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`) to a child.
pub fn signal(child: &Indexer, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.0.id().to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{signal}");
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

/// Waits until the checkpoint is the canonical block `head`, number and
/// hash. A follower undoing a branch passes through the branch's own block at
/// that height: a number alone would stop the wait mid-revert.
pub async fn wait_for_canonical(stack: &Stack, conn: &mut RedisConn, head: u64, within: Duration) {
    let canonical = stack
        .deployer
        .get_block_by_number(head.into())
        .await
        .expect("block")
        .expect("the head block exists")
        .header
        .hash
        .to_string();
    let deadline = Instant::now() + within;
    loop {
        let (number, hash): (Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(chainfront_indexer::keys::ChainKeys::new(31337).checkpoint())
            .arg("number")
            .arg("hash")
            .query_async(conn)
            .await
            .expect("checkpoint");
        if number == Some(head) && hash.as_deref() == Some(canonical.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "indexer did not reach block {head} ({canonical}); at {number:?} {hash:?}"
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

/// Waits until `child` has exited, returning its status.
fn wait_exit(child: &mut Indexer, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn keys() -> chainfront_indexer::keys::ChainKeys {
    chainfront_indexer::keys::ChainKeys::new(31337)
}

/// Small commits everywhere: ranges of up to 20 blocks (~400 logs) are
/// committed in chunks of at most 50 logs, and the last 200 blocks below the
/// head are caught up in window batches (32 blocks, again chunked at 50
/// logs, an undo record per block).
const CHUNKED: [(&str, &str); 3] = [
    ("CHAINFRONT_CHAINS__LOCAL__MAX_LOG_RANGE", "20"),
    ("CHAINFRONT_INDEXER__MAX_LOGS_PER_COMMIT", "50"),
    ("CHAINFRONT_CHAINS__LOCAL__REORG_WINDOW", "200"),
];

#[tokio::test]
async fn sigkill_during_chunked_backfill_and_window_batches_never_loses_or_doubles_an_event() {
    let stack = Stack::start().await;
    seed::run(&stack, &deposits(20_400), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = keys();

    // Reference: one uninterrupted run into database 2.
    let mut reference = spawn_indexer(&stack, 2, &CHUNKED);
    let mut ref_conn = db(&stack, 2).await;
    wait_for(&mut ref_conn, head, Duration::from_secs(600)).await;
    reference.kill();
    let (expected, _) = state_digest(&mut ref_conn, &keys).await.expect("digest");
    let credited: usize = redis::AsyncCommands::hlen(&mut ref_conn, keys.deposits())
        .await
        .expect("hlen");
    assert_eq!(credited, 20_400, "every deposit credited once");

    // Killed at random moments into database 1 (12 times, or
    // CRASH_TEST_KILLS for the long mode in scripts/soak-indexer): two
    // thirds in the backfill (where nearly every commit is one chunk of a
    // longer range, so a kill lands between two chunks of one range), a
    // third among the window batches.
    let kills: u64 = std::env::var("CRASH_TEST_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(12)
        .max(3);
    let (in_backfill_kills, in_window_kills) = (kills - kills / 3, kills / 3);
    let mut rng = Rng::new();
    let mut conn = db(&stack, 1).await;
    let window_from = head - 200;
    let mut targets: Vec<u64> = (0..in_backfill_kills)
        .map(|_| 1 + rng.below(window_from - 21))
        .collect();
    targets.extend((0..in_window_kills).map(|_| window_from + 1 + rng.below(190)));
    targets.sort_unstable();
    let mut seen = Vec::new();
    for target in targets {
        let mut child = spawn_indexer(&stack, 1, &CHUNKED);
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
    let mut last = spawn_indexer(&stack, 1, &CHUNKED);
    wait_for(&mut conn, head, Duration::from_secs(600)).await;
    last.kill();
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");
    eprintln!("checkpoints at the kills: {seen:?} (head {head}, window from {window_from})");
    let in_backfill = seen.iter().filter(|&&c| c < window_from).count();
    let in_window = seen
        .iter()
        .filter(|&&c| c > window_from && c < head)
        .count();
    assert!(
        in_backfill as u64 >= in_backfill_kills * 3 / 4
            && in_window as u64 >= in_window_kills * 3 / 4,
        "the kills must land in the chunked backfill and among window batches: {seen:?}"
    );
    assert_eq!(digest, expected, "state after {kills} SIGKILLs differs");
    crate::truth::assert_deposits_match_chain(&stack, &mut conn, &keys).await;
}

/// A reorg of 40 blocks is undone one block per atomic step; the indexer
/// is killed while the checkpoint walks back (strictly between the old tip
/// and the fork). The next start resumes the revert from the intermediate
/// checkpoint and ends at a fresh reindex of the final chain.
#[tokio::test]
async fn sigkill_during_a_multi_step_revert_resumes_it() {
    use alloy::primitives::U256;
    let stack = Stack::start().await;
    seed::run(&stack, &deposits(300), 20).await;
    let p = stack.deployer.clone();
    let keys = keys();
    let extra = [("CHAINFRONT_CHAINS__LOCAL__REORG_WINDOW", "128")];
    let mut conn = db(&stack, 1).await;
    let mut caught = None;
    for attempt in 0..4u64 {
        let mut child = spawn_indexer(&stack, 1, &extra);
        let fork_block = p.get_block_number().await.expect("head");
        wait_for(&mut conn, fork_block, Duration::from_secs(120)).await;
        let fork: U256 = p
            .raw_request("evm_snapshot".into(), ())
            .await
            .expect("snapshot");
        // Branch A: 40 blocks of 20 deposits each, indexed inside the window.
        seed::run(&stack, &deposits(800), 20).await;
        let tip = p.get_block_number().await.expect("head");
        wait_for(&mut conn, tip, Duration::from_secs(120)).await;
        // Branch B replaces them; the indexer walks back block by block.
        let _: bool = p
            .raw_request("evm_revert".into(), (fork,))
            .await
            .expect("revert");
        seed::run(
            &stack,
            &[Action::Deposit {
                wallet: 6,
                amount: 31 + attempt,
            }],
            1,
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let at = loop {
            let cp = checkpoint(&mut conn).await.unwrap_or(0);
            if cp < tip {
                child.kill();
                break checkpoint(&mut conn).await.unwrap_or(0);
            }
            assert!(Instant::now() < deadline, "the revert never started");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        eprintln!("attempt {attempt}: killed at checkpoint {at} (fork {fork_block}, tip {tip})");
        if at > fork_block && at < tip {
            caught = Some(at);
            break;
        }
    }
    assert!(
        caught.is_some(),
        "no kill landed inside the revert in 4 attempts"
    );
    let mut last = spawn_indexer(&stack, 1, &extra);
    let head = p.get_block_number().await.expect("head");
    // The revert passes through the old branch's block `head` on its way
    // down to the fork: wait for the canonical one.
    wait_for_canonical(&stack, &mut conn, head, Duration::from_secs(120)).await;
    last.kill();
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");
    assert_eq!(digest, reference_digest(&stack, 2, head).await);
    crate::truth::assert_deposits_match_chain(&stack, &mut conn, &keys).await;
}

/// `reindex` is killed in the middle of its wipe (100,000 extra state keys
/// make the wipe long enough to be caught). Its tombstone stays; the next
/// `index` finishes the wipe first — nothing of the old state survives — and
/// rebuilds the state of an uninterrupted run.
#[tokio::test]
async fn sigkill_during_reindex_leaves_a_wipe_the_next_start_finishes() {
    let stack = Stack::start().await;
    seed::run(&stack, &deposits(600), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = keys();
    let mut conn = db(&stack, 1).await;
    let mut first = spawn_indexer(&stack, 1, &[]);
    wait_for(&mut conn, head, Duration::from_secs(120)).await;
    first.kill();
    // Keys the wipe must delete (state namespace, not from the chain).
    let junk = |i: u32| format!("cf:{{c31337}}:s:junk:{i}");
    for chunk in (0..100_000u32).collect::<Vec<_>>().chunks(5_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.set(junk(*i), 1).ignore();
        }
        let () = pipe.query_async(&mut conn).await.expect("junk");
    }
    let junk_left = |c: &mut RedisConn| {
        let mut c = c.clone();
        async move {
            chainfront_indexer::store::scan(&mut c, "cf:{c31337}:s:junk:*")
                .await
                .expect("scan")
                .len()
        }
    };
    let dbsize = |c: &mut RedisConn| {
        let mut c = c.clone();
        async move {
            redis::cmd("DBSIZE")
                .query_async::<u64>(&mut c)
                .await
                .expect("dbsize")
        }
    };
    let full = dbsize(&mut conn).await;
    let mut reindex = spawn(&stack, "reindex", 1, &[], None);
    // Killed once the wipe is deleting (the key count starts to fall).
    let deadline = Instant::now() + Duration::from_secs(60);
    while dbsize(&mut conn).await + 2_000 > full {
        assert!(Instant::now() < deadline, "reindex never started deleting");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    reindex.kill();
    let left = junk_left(&mut conn).await;
    let tombstone: bool = conn.exists(keys.wipe()).await.expect("exists");
    eprintln!("killed mid-wipe: {left} of 100000 extra keys left");
    assert!(
        tombstone && left > 0 && left < 100_000,
        "the kill must land inside the wipe (tombstone {tombstone}, {left} keys left)"
    );
    assert_eq!(
        checkpoint(&mut conn).await,
        None,
        "the checkpoint goes first"
    );
    let mut next = spawn_indexer(&stack, 1, &[]);
    wait_for(&mut conn, head, Duration::from_secs(120)).await;
    next.kill();
    assert_eq!(junk_left(&mut conn).await, 0, "the wipe was finished");
    let tombstone: bool = conn.exists(keys.wipe()).await.expect("exists");
    assert!(!tombstone);
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");
    assert_eq!(digest, reference_digest(&stack, 2, head).await);
    crate::truth::assert_deposits_match_chain(&stack, &mut conn, &keys).await;
}

/// SIGTERM at random moments of a backfill and of window batches: the
/// process exits 0 within seconds, having committed or dropped its step
/// whole, and hands the leader lock over (no TTL to wait out); restarts
/// resume and end at the uninterrupted run's state.
#[tokio::test]
async fn sigterm_finishes_or_abandons_the_step_cleanly() {
    let stack = Stack::start().await;
    seed::run(&stack, &deposits(6_000), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = keys();
    let mut conn = db(&stack, 1).await;
    let mut rng = Rng::new();
    // A long lock TTL: a lock left behind would show.
    let extra = [
        CHUNKED[0],
        CHUNKED[1],
        ("CHAINFRONT_CHAINS__LOCAL__REORG_WINDOW", "100"),
        ("CHAINFRONT_INDEXER__LEADER_TTL_MS", "60000"),
    ];
    let mut targets: Vec<u64> = (0..4).map(|_| 1 + rng.below(head - 2)).collect();
    targets.sort_unstable();
    for target in targets {
        // Each run is signalled once it leads (its handlers are installed
        // by then) and, where there is one left, has committed a step.
        let target = target
            .max(checkpoint(&mut conn).await.unwrap_or(0) + 1)
            .min(head);
        let mut child = spawn_indexer(&stack, 1, &extra);
        wait_token(&mut conn, "the new run leads", |t| t.is_some()).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while checkpoint(&mut conn).await.unwrap_or(0) < target {
            assert!(Instant::now() < deadline, "no progress towards {target}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(6))).await;
        signal(&child, "TERM");
        let status = wait_exit(&mut child, Duration::from_secs(15)).expect("exits after SIGTERM");
        assert!(status.success(), "SIGTERM exit status {status}");
        let leader: Option<String> = conn.get(keys.leader()).await.expect("leader");
        assert_eq!(leader, None, "the lock is released on the way out");
    }
    let mut last = spawn_indexer(&stack, 1, &extra);
    wait_for(&mut conn, head, Duration::from_secs(300)).await;
    last.kill();
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");
    assert_eq!(digest, reference_digest(&stack, 2, head).await);
    crate::truth::assert_deposits_match_chain(&stack, &mut conn, &keys).await;
}

/// Redis (AOF, `appendfsync everysec`: up to a second of acknowledged
/// writes can be lost) is killed mid-backfill and stays down for 10 s. The
/// indexer process waits it out (it does not exit), reconnects, resumes from
/// whatever checkpoint Redis kept (an older one if writes were lost: the
/// commit check refuses to build on the lost one) and ends at the
/// uninterrupted run's state.
#[tokio::test]
async fn redis_down_for_ten_seconds_with_everysec_is_waited_out() {
    let mut stack = Stack::start().await;
    // Nothing is in this stack's Redis yet: swap in one with everysec.
    stack.redis = chainfront::devnet::RedisServer::start_with_fsync("everysec").expect("redis");
    seed::run(&stack, &deposits(6_000), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = keys();
    let mut child = spawn_indexer(&stack, 1, &[]);
    let mut conn = db(&stack, 1).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while checkpoint(&mut conn).await.unwrap_or(0) < head / 3 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stack.redis.stop();
    let before = Instant::now();
    while before.elapsed() < Duration::from_secs(10) {
        assert!(
            child.0.try_wait().expect("try_wait").is_none(),
            "the indexer exited while Redis was down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.redis.start_again().expect("redis back");
    let mut conn = db(&stack, 1).await;
    eprintln!(
        "checkpoint after the outage: {:?} (head {head})",
        checkpoint(&mut conn).await
    );
    wait_for(&mut conn, head, Duration::from_secs(300)).await;
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "still running"
    );
    child.kill();
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");
    assert_eq!(digest, reference_digest(&stack, 2, head).await);
    crate::truth::assert_deposits_match_chain(&stack, &mut conn, &keys).await;
}

/// The leader's fencing token, if any.
async fn leader_token(conn: &mut RedisConn) -> Option<String> {
    conn.get(keys().leader()).await.expect("leader")
}

async fn wait_token(
    conn: &mut RedisConn,
    what: &str,
    ok: impl Fn(&Option<String>) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = leader_token(conn).await;
        if ok(&t)
            && let Some(t) = t
        {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}: leader is {t:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn log_has(path: &std::path::Path, needle: &str) -> bool {
    log_count(path, needle) > 0
}

fn log_count(path: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.matches(needle).count())
}

/// The last lines of each process log, for a failure message.
fn tails(logs: &[(&str, &std::path::Path)]) -> String {
    let mut out = String::new();
    for (name, path) in logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- last lines of {name}'s log ---\n"));
        for l in &lines[lines.len().saturating_sub(40)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Two `chainfront index` processes on one chain. A leads, B stands by (the
/// lock keeps A's token). A is frozen (SIGSTOP), mid-backfill when the test
/// catches it there (on a loaded machine A may already be at the head), and
/// new blocks are mined while it is frozen: its lock expires, B takes over
/// with a new token and writes. A is thawed
/// (SIGCONT): its next commit or renewal finds the token gone, so A writes
/// nothing more and goes back to standby. B is then killed: A takes the
/// lock again (a third token) and follows to the head and on. The end state
/// equals an uninterrupted run's.
#[tokio::test]
async fn a_paused_leader_is_fenced_stands_by_and_leads_again() {
    let stack = Stack::start().await;
    seed::run(&stack, &deposits(6_000), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = keys();
    let mut conn = db(&stack, 1).await;
    let logs = tempfile::tempdir().expect("tmp");
    let (log_a, log_b) = (logs.path().join("a.log"), logs.path().join("b.log"));
    let both = [("A", log_a.as_path()), ("B", log_b.as_path())];
    // A lock TTL long enough that a loaded machine never delays a renewal
    // past it (the leader would flap), short enough to keep the test quick.
    let verbose = [
        ("CHAINFRONT_LOG__FILTER", "warn,chainfront=info"),
        ("CHAINFRONT_INDEXER__LEADER_TTL_MS", "1500"),
    ];
    let a = spawn(&stack, "index", 1, &verbose, Some(&log_a));
    let token_a = wait_token(&mut conn, "A leads", |t| t.is_some()).await;
    let mut b = spawn(&stack, "index", 1, &verbose, Some(&log_b));
    for _ in 0..20 {
        assert_eq!(
            leader_token(&mut conn).await.as_ref(),
            Some(&token_a),
            "A alone leads"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while checkpoint(&mut conn).await.unwrap_or(0) < head / 4 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    signal(&a, "STOP");
    let frozen_at = checkpoint(&mut conn).await.unwrap_or(0);
    eprintln!("A frozen at block {frozen_at} of {head}");
    // Blocks only B can write, whether or not A had reached the head.
    seed::run(&stack, &deposits(600), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let token_b = wait_token(&mut conn, "B takes over", |t| {
        t.as_ref().is_some_and(|t| *t != token_a)
    })
    .await;
    // B writes while A is frozen.
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&mut conn).await.unwrap_or(0) < frozen_at + 20 {
        assert!(
            Instant::now() < deadline,
            "B does not write: checkpoint {:?}, frozen at {frozen_at}, leader {:?}\n{}",
            checkpoint(&mut conn).await,
            leader_token(&mut conn).await,
            tails(&both)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&a, "CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_has(&log_a, "lost leadership; back to standby") {
        assert!(
            Instant::now() < deadline,
            "A never went back to standby\n{}",
            tails(&both)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        leader_token(&mut conn).await,
        Some(token_b.clone()),
        "B still leads\n{}",
        tails(&both)
    );
    let refused = log_has(&log_a, "commit refused: this process no longer holds");
    eprintln!(
        "A was stopped by {}",
        if refused {
            "the fence in its commit"
        } else {
            "its lock renewal"
        }
    );
    b.kill();
    let token_a2 = wait_token(&mut conn, "A leads again", |t| {
        t.as_ref().is_some_and(|t| *t != token_b && *t != token_a)
    })
    .await;
    assert_ne!(token_a2, token_a, "a fresh token for the new term");
    wait_for(&mut conn, head, Duration::from_secs(300)).await;
    // New blocks while A leads again.
    seed::run(&stack, &deposits(300), 10).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    wait_for(&mut conn, head, Duration::from_secs(120)).await;
    drop(a);
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");
    assert_eq!(
        digest,
        reference_digest(&stack, 2, head).await,
        "state after two leader changes"
    );
    crate::truth::assert_deposits_match_chain(&stack, &mut conn, &keys).await;
}

/// The fence inside the commit script, exercised deterministically on a
/// real process: while the leader is frozen, its lock is taken over (the
/// test plays the new leader, with a 3 s lock). Thawed, the leader's very
/// next commit is refused by the script — before its renewal (every 1 s)
/// could notice — so nothing more is written while the other token holds;
/// it goes back to standby, takes the lock again when the other lapses, and
/// ends at the uninterrupted run's state.
#[tokio::test]
async fn a_leader_whose_lock_was_taken_is_refused_by_the_fence_and_leads_again() {
    let stack = Stack::start().await;
    seed::run(&stack, &deposits(6_000), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = keys();
    let mut conn = db(&stack, 1).await;
    let logs = tempfile::tempdir().expect("tmp");
    let log = logs.path().join("a.log");
    let env = [
        ("CHAINFRONT_LOG__FILTER", "warn,chainfront=info"),
        ("CHAINFRONT_INDEXER__LEADER_TTL_MS", "3000"),
    ];
    let a = spawn(&stack, "index", 1, &env, Some(&log));
    let token_a = wait_token(&mut conn, "A leads", |t| t.is_some()).await;
    while checkpoint(&mut conn).await.unwrap_or(0) < head / 4 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The renewal fires once a second; if it happens to fall inside the
    // few milliseconds A is frozen, it notices first (no commit is tried):
    // then take the lock once more.
    let mut token_a = token_a;
    let mut refused = false;
    let mut token_a2 = String::new();
    for attempt in 0..3 {
        let standby_before = log_count(&log, "lost leadership; back to standby");
        signal(&a, "STOP");
        let other = format!("99999{attempt}:00000000000000000000000000000000");
        let _: () = redis::cmd("SET")
            .arg(keys.leader())
            .arg(&other)
            .arg("PX")
            .arg(3_000)
            .query_async(&mut conn)
            .await
            .expect("take the lock");
        let frozen_at = checkpoint(&mut conn).await;
        // A has a block to commit once thawed even if it had already
        // reached the head (a loaded machine lets it get there first).
        seed::run(&stack, &deposits(40), 20).await;
        let refusals_before = log_count(&log, "commit refused: this process no longer holds");
        signal(&a, "CONT");
        let deadline = Instant::now() + Duration::from_secs(30);
        while log_count(&log, "lost leadership; back to standby") == standby_before {
            assert!(Instant::now() < deadline, "A never went back to standby");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        refused = log_count(&log, "commit refused: this process no longer holds") > refusals_before;
        // Nothing lands while the other token holds the lock.
        while leader_token(&mut conn).await.as_ref() == Some(&other) {
            assert_eq!(
                checkpoint(&mut conn).await,
                frozen_at,
                "A wrote without the lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        token_a2 = wait_token(&mut conn, "A leads again", |t| {
            t.as_ref().is_some_and(|t| *t != other && *t != token_a)
        })
        .await;
        if refused {
            break;
        }
        eprintln!("attempt {attempt}: the renewal noticed first; again");
        token_a = token_a2.clone();
    }
    assert!(
        refused,
        "the fence in the commit script never refused A's commit"
    );
    eprintln!("tokens: {token_a} -> (taken) -> {token_a2}");
    let head = stack.deployer.get_block_number().await.expect("head");
    wait_for(&mut conn, head, Duration::from_secs(300)).await;
    drop(a);
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");
    assert_eq!(digest, reference_digest(&stack, 2, head).await);
}
