//! Indexer benchmark (`scripts/bench-indexer`, or `cargo bench --bench indexer`).
//!
//! In one run, on local anvils and a redis-server:
//! 1. Throughput. `BENCH_EVENTS` (default 100,000) USDC deposits are seeded,
//!    100 per block. Three timed phases, each repeated over the same chain
//!    until it has lasted `BENCH_PHASE_SECS` (default 5 s), in three rounds;
//!    the median round is reported:
//!    - ceiling A: bare `eth_getLogs` over the same filters and 100-block
//!      ranges (10,000 logs per response, the cap common providers enforce),
//!      decoded into alloy `Log`s as a client's `get_logs` does, discarded;
//!    - ceiling B: the same calls, only parsed as JSON (a stricter ceiling);
//!    - a chainfront backfill of the same blocks into an empty Redis
//!      database (every range checked and proven complete; the last
//!      `reorg_window` blocks in window mode with undo records).
//!      Ratio to ceiling A: target >= 0.75.
//! 2. Peak RSS of a `chainfront index` process doing the whole backfill
//!    (target < 150 MB).
//! 3. Live latency on an automining chain: a purchase mined → the VM in
//!    Redis, 100 ms poll interval (target p99 <= poll + 50 ms).
//! 4. Head latency (`BENCH_HEAD_SECS`, default 300; 0 skips): anvil mining
//!    a block every 2 s with a deposit in each, followed by two indexers with
//!    the default configuration, one over plain HTTP and one with `ws_url`.
//!    From a block's publication (anvil's WebSocket new-head notification to
//!    this process) to its events being readable (the Redis checkpoint at or
//!    past it): median, p99, how far behind they ever were, and HTTP
//!    requests per block. Targets: median <= 100 ms (HTTP), <= 20 ms (WS).

use chainfront_indexer::conn::RedisConn;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::U256;
use alloy::providers::{Provider, ProviderBuilder, WsConnect};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use chainfront::deploy;
use chainfront::devnet::{self, RedisServer};
use chainfront_indexer::apply::Watched;
use chainfront_indexer::contracts::{MockUSDC, VMMarketplace};
use chainfront_indexer::deployment::Deployment;
use chainfront_indexer::follow::{FollowConfig, Follower};
use chainfront_indexer::keys::ChainKeys;
use chainfront_indexer::metrics::IndexerMetrics;
use chainfront_indexer::retry::RetryPolicy;
use chainfront_indexer::rpc::Rpc;
use chainfront_indexer::store::Store;
use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Blocks per `eth_getLogs`: 100 deposits per seeded block make 10,000 logs
/// per response, the most providers return. Wider ranges would make the whole
/// backfill one response, leaving nothing to overlap.
const RANGE: u64 = 100;
const POLL: Duration = Duration::from_millis(100);
const ROUNDS: usize = 3;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn redis_db(server: &RedisServer, db: u8) -> Res<RedisConn> {
    Ok(chainfront_indexer::conn::connect(&format!("{}/{db}", server.url())).await?)
}

fn watched(d: &Deployment) -> Watched {
    Watched {
        keys: ChainKeys::new(31337),
        vm_marketplace: Some(d.vm_marketplace),
        submission_stakes: d.submission_stakes,
        usdc: Some(d.usdc),
        treasury: Some(d.treasury),
    }
}

fn follower(
    url: &str,
    conn: RedisConn,
    d: &Deployment,
    cfg: FollowConfig,
    metrics: Arc<IndexerMetrics>,
) -> Res<Follower> {
    let mut rpc = Rpc::new(
        &[url.to_owned()],
        RetryPolicy::default(),
        Duration::from_secs(30),
    )?;
    rpc.stats = metrics.rpc.clone();
    Ok(Follower::new(
        rpc,
        Store::new(conn, ChainKeys::new(31337), cfg.window),
        watched(d),
        cfg,
        metrics,
    ))
}

/// Empties the database and compacts Redis's append-only file, waiting for
/// the rewrite to end, so every backfill pass starts from the same Redis (a
/// file grown by earlier passes would slow later ones).
async fn fresh_redis(conn: &mut RedisConn) -> Res<()> {
    let _: () = redis::cmd("FLUSHDB").query_async(conn).await?;
    let _: String = redis::cmd("BGREWRITEAOF").query_async(conn).await?;
    loop {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(conn)
            .await?;
        if info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU seconds (user + system) a process has used so far, from
/// `/proc/<pid>/stat` (`self` for this process: the follower runs here).
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of anvil, redis-server and this process.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    anvil: f64,
    redis: f64,
    this: f64,
}

impl CpuUse {
    fn now(anvil: u32, redis: u32) -> Self {
        Self {
            anvil: cpu_secs(&anvil.to_string()),
            redis: cpu_secs(&redis.to_string()),
            this: cpu_secs("self"),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            anvil: self.anvil - before.anvil,
            redis: self.redis - before.redis,
            this: self.this - before.this,
        }
    }
}

/// Runs `pass` until the passes add up to `min`; returns the events they
/// handled and the time they took.
async fn timed<F, Fut>(min: Duration, mut pass: F) -> Res<(usize, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Res<(usize, Duration)>>,
{
    let (mut events, mut took, mut failed) = (0, Duration::ZERO, 0);
    while took < min {
        let (n, d) = pass().await?;
        // A pass that failed (and said so) returns nothing: a few are
        // retried, a run of them is an error.
        failed = if d.is_zero() { failed + 1 } else { 0 };
        if failed > 5 {
            return Err("five passes in a row failed".into());
        }
        events += n;
        took += d;
    }
    Ok((events, took))
}

/// Fetches `ranges` with bare `eth_getLogs` calls (the filters of a range
/// concurrently), reading each entry as `T` and discarding it; returns the
/// number of logs and the time taken. `T = Log` is what alloy's `get_logs`
/// does; `T = IgnoredAny` only parses the JSON.
async fn fetch_bare<
    T: serde::de::DeserializeOwned + Send + Sync + Unpin + std::fmt::Debug + 'static,
>(
    reader: &alloy::providers::DynProvider,
    filters: &[Filter],
    ranges: &[(u64, u64)],
) -> Res<(usize, Duration)> {
    let t = Instant::now();
    let mut n = 0;
    for &(from, to) in ranges {
        let calls = filters.iter().map(|f| {
            let f = f.clone().from_block(from).to_block(to);
            async move {
                reader
                    .raw_request::<_, Vec<T>>("eth_getLogs".into(), (f,))
                    .await
            }
        });
        for logs in futures_util::future::join_all(calls).await {
            n += logs?.len();
        }
    }
    Ok((n, t.elapsed()))
}

/// Fetches `ranges` the way the indexer does, bare: per range one JSON-RPC
/// batch with the logs of every filter, the headers of the last block and
/// the one before the range, and every log of the last block; logs decoded
/// into alloy `Log`s and discarded. What the completeness proof costs at
/// the node, without any checking or committing.
async fn fetch_batched(
    url: &str,
    filters: &[Filter],
    ranges: &[(u64, u64)],
) -> Res<(usize, Duration)> {
    use alloy::eips::BlockNumberOrTag;
    let client = alloy::rpc::client::RpcClient::new_http(url.parse()?);
    let t = Instant::now();
    let mut n = 0;
    for &(from, to) in ranges {
        let mut batch = client.new_batch();
        let mut waiters = Vec::new();
        for f in filters {
            let f = f.clone().from_block(from).to_block(to);
            waiters.push(batch.add_call::<_, Vec<alloy::rpc::types::Log>>("eth_getLogs", &(f,))?);
        }
        let last = batch.add_call::<_, serde_json::Value>(
            "eth_getBlockByNumber",
            &(BlockNumberOrTag::Number(to), false),
        )?;
        let before = batch.add_call::<_, serde_json::Value>(
            "eth_getBlockByNumber",
            &(BlockNumberOrTag::Number(from.saturating_sub(1)), false),
        )?;
        let whole = batch.add_call::<_, Vec<alloy::rpc::types::Log>>(
            "eth_getLogs",
            &(Filter::new().from_block(to).to_block(to),),
        )?;
        batch.send().await?;
        for w in waiters {
            n += w.await?.len();
        }
        let _ = (last.await?, before.await?, whole.await?);
    }
    Ok((n, t.elapsed()))
}

#[tokio::main]
async fn main() -> Res<()> {
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let events: usize = env("BENCH_EVENTS", 100_000);
    let phase = Duration::from_secs(env("BENCH_PHASE_SECS", 5));
    let head_secs: u64 = env("BENCH_HEAD_SECS", 300);
    let anvil = devnet::start_anvil(31337, None)?;
    let redis = RedisServer::start()?;
    let url = anvil.endpoint();
    let key = |i: usize| PrivateKeySigner::from(anvil.keys()[i].clone());
    let wallets: Vec<PrivateKeySigner> = (1..=8).map(key).collect();
    let addrs: Vec<_> = wallets.iter().map(|w| w.address()).collect();
    let (deployer, d) = deploy::deploy_local(&url, key(0), key(9).address(), &addrs).await?;

    eprintln!("seeding {events} deposits ...");
    let t = Instant::now();
    deploy::seed_deposits(&url, &d, &wallets, events, 100).await?;
    let head = deployer.get_block_number().await?;
    eprintln!("seeded in {:.1}s, head {head}", t.elapsed().as_secs_f64());

    let keys = ChainKeys::new(31337);
    let filters = {
        let mut contracts = vec![d.vm_marketplace];
        contracts.extend(d.submission_stakes);
        vec![
            Filter::new().address(contracts),
            Filter::new()
                .address(d.usdc)
                .event_signature(MockUSDC::Transfer::SIGNATURE_HASH)
                .topic2(d.treasury.into_word()),
        ]
    };

    // 1. Throughput, in rounds of the three phases.
    let reader = chainfront::node::read_provider(&url)?;
    let ranges: Vec<(u64, u64)> = (d.start_block..=head)
        .step_by(RANGE as usize)
        .map(|from| (from, (from + RANGE - 1).min(head)))
        .collect();
    let cfg = FollowConfig {
        start_block: d.start_block,
        initial_range: RANGE,
        max_range: RANGE,
        ..FollowConfig::default()
    };
    let rate = |(n, d): (usize, Duration)| n as f64 / d.as_secs_f64();
    let (mut ceilings, mut raws, mut batcheds, mut backfills) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // One untimed pass: how many logs there are (and warm caches).
    let (fetched, _) = fetch_bare::<serde::de::IgnoredAny>(&reader, &filters, &ranges).await?;
    let (redis_ref, url_ref, d_ref) = (&redis, &url, &d);
    let anvil_pid = anvil.child().id();
    let redis_pid = redis.pid().ok_or("redis-server is not running")?;
    for round in 1..=ROUNDS {
        let cpu0 = CpuUse::now(anvil_pid, redis_pid);
        let ceiling = timed(phase, || {
            fetch_bare::<alloy::rpc::types::Log>(&reader, &filters, &ranges)
        })
        .await?;
        let ceiling_cpu = CpuUse::now(anvil_pid, redis_pid).since(cpu0);
        let raw = timed(phase, || {
            fetch_bare::<serde::de::IgnoredAny>(&reader, &filters, &ranges)
        })
        .await?;
        let batched = timed(phase, || fetch_batched(&url, &filters, &ranges)).await?;
        let cpu0 = CpuUse::now(anvil_pid, redis_pid);
        let backfill = timed(phase, || {
            let cfg = cfg.clone();
            async move {
                let (redis, url, d) = (redis_ref, url_ref, d_ref);
                let mut conn = redis_db(redis, 1).await?;
                fresh_redis(&mut conn).await?;
                let metrics = Arc::new(IndexerMetrics::default());
                let mut f = follower(url, conn, d, cfg, metrics.clone())?;
                let t = Instant::now();
                if let Err(e) = f.sync().await {
                    // As the run loop would, the pass is retried (e.g. a
                    // Redis reply slower than the connection's timeout on a
                    // loaded machine); the failed pass is not counted.
                    eprintln!("backfill pass failed ({e}); retried");
                    return Ok((0, Duration::ZERO));
                }
                let took = t.elapsed();
                let applied = metrics.events_applied.load(Ordering::Relaxed) as usize;
                if applied != fetched {
                    return Err(format!(
                        "the backfill applied {applied} events, the ceiling fetched {fetched}"
                    )
                    .into());
                }
                Ok((applied, took))
            }
        })
        .await?;
        let backfill_cpu = CpuUse::now(anvil_pid, redis_pid).since(cpu0);
        // CPU per 100,000 events, per process (the machine's cores are
        // shared by all three): what each phase costs, not just how long.
        let per = |c: CpuUse, n: usize| {
            let k = 100_000.0 / n.max(1) as f64;
            format!(
                "anvil {:.2}s, redis {:.2}s, bench/indexer {:.2}s",
                c.anvil * k,
                c.redis * k,
                c.this * k
            )
        };
        eprintln!(
            "round {round}: CPU per 100k events: ceiling A: {}; backfill: {}",
            per(ceiling_cpu, ceiling.0),
            per(backfill_cpu, backfill.0)
        );
        eprintln!(
            "round {round}: ceiling A {:.0}/s ({:.1}s), ceiling B {:.0}/s ({:.1}s), checked batches {:.0}/s ({:.1}s), backfill {:.0}/s ({:.1}s), ratio {:.2}",
            rate(ceiling),
            ceiling.1.as_secs_f64(),
            rate(raw),
            raw.1.as_secs_f64(),
            rate(batched),
            batched.1.as_secs_f64(),
            rate(backfill),
            backfill.1.as_secs_f64(),
            rate(backfill) / rate(ceiling)
        );
        ceilings.push(rate(ceiling));
        raws.push(rate(raw));
        batcheds.push(rate(batched));
        backfills.push(rate(backfill));
    }
    let ratios: Vec<f64> = backfills
        .iter()
        .zip(&ceilings)
        .map(|(b, c)| b / c)
        .collect();
    let (ceiling_rate, raw_rate, backfill_rate) =
        (median(ceilings), median(raws), median(backfills));
    println!("events                      {fetched}");
    println!(
        "medians of {ROUNDS} rounds, each phase >= {} s:",
        phase.as_secs()
    );
    println!("ceiling (eth_getLogs, Log)  {ceiling_rate:>10.0} events/s");
    println!("ceiling (eth_getLogs, JSON) {raw_rate:>10.0} events/s");
    println!(
        "the indexer's batches, bare  {:>9.0} events/s  (logs + headers + the last block's log list, per range)",
        median(batcheds)
    );
    println!("chainfront backfill         {backfill_rate:>10.0} events/s");
    println!(
        "ratio to the Log ceiling    {:>10.2}  (target >= 0.75; rounds {})",
        backfill_rate / ceiling_rate,
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!(
        "ratio to the JSON ceiling   {:>10.2}",
        backfill_rate / raw_rate
    );

    // 2. Peak RSS of a `chainfront index` process over the whole backfill.
    let dir = tempfile::tempdir()?;
    let deployment_file = dir.path().join("deployment.json");
    d.write(&deployment_file)?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chainfront"))
        .args(["index", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/local.toml"))
        .env("CHAINFRONT_CHAINS__LOCAL__RPC_URLS", format!("[\"{url}\"]"))
        .env(
            "CHAINFRONT_CHAINS__LOCAL__DEPLOYMENT_FILE",
            &deployment_file,
        )
        .env("CHAINFRONT_REDIS__URL", format!("{}/2", redis.url()))
        .env("CHAINFRONT_LOG__FILTER", "warn")
        .spawn()?;
    let mut c2 = redis_db(&redis, 2).await?;
    let t = Instant::now();
    loop {
        let n: Option<u64> = c2.hget(keys.checkpoint(), "number").await?;
        if n == Some(head) {
            break;
        }
        if t.elapsed() > Duration::from_secs(900) {
            return Err("chainfront index did not finish".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ? kB")
        .to_owned();
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "chainfront index peak RSS   {}  (target < 150 MB)",
        hwm.trim_start_matches("VmHWM:").trim()
    );

    // 3. Live: purchase mined → VM in Redis, polling every 100 ms.
    let live_cfg = FollowConfig {
        poll_interval: POLL,
        ..cfg
    };
    let live_conn = redis_db(&redis, 3).await?;
    let mut live = follower(&url, live_conn.clone(), &d, live_cfg, Arc::default())?;
    live.sync().await?;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { live.run(stop).await })
    };
    let buyer = deploy::signing_provider(&url, key(1))?;
    let usdc = MockUSDC::new(d.usdc, &buyer);
    deploy::mined(
        usdc.approve(d.vm_marketplace, U256::MAX).send().await?,
        "approve",
    )
    .await?;
    let vm = VMMarketplace::new(d.vm_marketplace, &buyer);
    let mut latencies = Vec::new();
    let mut c3 = live_conn.clone();
    for _ in 0..env("BENCH_LIVE_PURCHASES", 40) {
        let id = vm.nextTokenId().call().await?;
        let call = vm.purchaseVM(0, 1);
        let _pending = call.send().await?;
        // anvil automines before answering eth_sendRawTransaction: mined now.
        let mined = Instant::now();
        loop {
            let exists: bool = c3.exists(keys.vm(id)).await?;
            if exists {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if mined.elapsed() > POLL * 3 {
            eprintln!("slow: VM {id} took {:?}", mined.elapsed());
        }
        latencies.push(mined.elapsed());
        // Land at a random phase of the poll cycle.
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    stop.cancel();
    let _ = task.await;
    latencies.sort();
    println!(
        "live: mined -> in Redis     p50 {:>4} ms  p99 {:>4} ms  (poll {} ms; target p99 <= {} ms)",
        percentile(&latencies, 0.5).as_millis(),
        percentile(&latencies, 0.99).as_millis(),
        POLL.as_millis(),
        POLL.as_millis() + 50
    );

    // 4. Head latency on a chain with 2 s blocks.
    if head_secs > 0 {
        head_latency(&redis, Duration::from_secs(head_secs)).await?;
    }
    Ok(())
}

/// What a head-latency follower saw.
struct Readable {
    /// Block number → when its checkpoint was first seen in Redis.
    at: BTreeMap<u64, Instant>,
    /// The most blocks the checkpoint was ever behind the published head.
    max_behind: u64,
}

/// Section 4: a fresh anvil mining every 2 s, a deposit in every block, an
/// HTTP follower and a WebSocket follower with the default configuration.
async fn head_latency(redis: &RedisServer, run_for: Duration) -> Res<()> {
    let anvil = devnet::start_anvil(31337, None)?;
    let url = anvil.endpoint();
    let key = |i: usize| PrivateKeySigner::from(anvil.keys()[i].clone());
    let (deployer, d) =
        deploy::deploy_local(&url, key(0), key(9).address(), &[key(1).address()]).await?;
    // Deployed with automine; from now on a block every 2 s.
    let _: serde_json::Value = deployer
        .raw_request("evm_setIntervalMining".into(), (2,))
        .await?;
    let start_block = deployer.get_block_number().await? + 1;
    let published: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let stop = CancellationToken::new();

    // Publication: anvil's new-head notifications, as they reach us. Each
    // one also sends a deposit for the next block.
    let ws = ProviderBuilder::new()
        .connect_ws(WsConnect::new(anvil.ws_endpoint()))
        .await?;
    let mut heads = ws
        .subscribe::<_, serde_json::Value>(("newHeads",))
        .await?
        .into_stream();
    let sender = deploy::signing_provider(&url, key(1))?;
    let from = key(1).address();
    let mut nonce = sender.get_transaction_count(from).pending().await?;
    let observer = {
        let published = published.clone();
        let stop = stop.clone();
        let d = d.clone();
        tokio::spawn(async move {
            loop {
                let head = tokio::select! {
                    _ = stop.cancelled() => return,
                    h = heads.next() => h,
                };
                let Some(head) = head else { return };
                let seen = Instant::now();
                let Some(n) = head["number"]
                    .as_str()
                    .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                else {
                    continue;
                };
                published
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(n, seen);
                let tx = TransactionRequest::default()
                    .with_to(d.usdc)
                    .with_input(
                        MockUSDC::transferCall {
                            to: d.treasury,
                            value: U256::from(1_000 + n),
                        }
                        .abi_encode(),
                    )
                    .with_nonce(nonce)
                    .with_gas_limit(100_000)
                    .with_max_fee_per_gas(20_000_000_000)
                    .with_max_priority_fee_per_gas(1_000_000_000)
                    .with_chain_id(31337);
                nonce += 1;
                if let Err(e) = sender.send_transaction(tx).await {
                    eprintln!("deposit not sent: {e}");
                }
            }
        })
    };

    let mut runs = Vec::new();
    for (db, ws_url) in [(5u8, None), (6u8, Some(anvil.ws_endpoint()))] {
        let cfg = FollowConfig {
            start_block,
            ws_url,
            ..FollowConfig::default()
        };
        let conn = redis_db(redis, db).await?;
        let metrics = Arc::new(IndexerMetrics::default());
        let mut f = follower(&url, conn.clone(), &d, cfg, metrics.clone())?;
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move { f.run(stop).await })
        };
        // Readable: the checkpoint, read every millisecond.
        let reader = {
            let (stop, published) = (stop.clone(), published.clone());
            let mut conn = conn;
            let keys = ChainKeys::new(31337);
            tokio::spawn(async move {
                let mut r = Readable {
                    at: BTreeMap::new(),
                    max_behind: 0,
                };
                let mut last = 0;
                while !stop.is_cancelled() {
                    let n: Option<u64> =
                        conn.hget(keys.checkpoint(), "number").await.unwrap_or(None);
                    let now = Instant::now();
                    let newest = published
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .keys()
                        .next_back()
                        .copied();
                    if let Some(n) = n {
                        for k in last + 1..=n {
                            r.at.entry(k).or_insert(now);
                        }
                        last = last.max(n);
                    }
                    if let Some(newest) = newest
                        && newest >= start_block + 5
                    {
                        r.max_behind = r.max_behind.max(newest.saturating_sub(last));
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                r
            })
        };
        runs.push((metrics, task, reader));
    }
    eprintln!("following 2 s blocks for {} s ...", run_for.as_secs());
    tokio::time::sleep(run_for).await;
    stop.cancel();
    let _ = observer.await;
    let published = published
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for ((metrics, task, reader), name) in runs.into_iter().zip(["HTTP", "WebSocket"]) {
        let _ = task.await;
        let readable = reader.await?;
        // The first blocks teach the follower the block time and phase.
        let warmup = start_block + 10;
        let mut latencies: Vec<Duration> = published
            .iter()
            .filter(|(n, _)| **n >= warmup)
            .filter_map(|(n, p)| readable.at.get(n).map(|r| r.saturating_duration_since(*p)))
            .collect();
        latencies.sort();
        if latencies.is_empty() {
            return Err(format!("{name}: no block became readable").into());
        }
        let blocks = published
            .keys()
            .filter(|n| **n >= start_block)
            .count()
            .max(1);
        println!(
            "head latency, 2 s blocks, {name:<9} p50 {:>4} ms  p99 {:>4} ms  max {:>4} ms  at most {} blocks behind  {:.2} requests/block  ({} blocks; target p50 <= {} ms)",
            percentile(&latencies, 0.5).as_millis(),
            percentile(&latencies, 0.99).as_millis(),
            latencies.last().map_or(0, Duration::as_millis),
            readable.max_behind,
            metrics.rpc.requests.load(Ordering::Relaxed) as f64 / blocks as f64,
            latencies.len(),
            if name == "HTTP" { 100 } else { 20 },
        );
    }
    Ok(())
}
