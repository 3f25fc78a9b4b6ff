//! Indexer benchmark (`scripts/bench-indexer`, or `cargo bench --bench indexer`).
//!
//! In one run on a local anvil + redis-server: seeds `BENCH_EVENTS`
//! (default 100,000) USDC deposits, then measures
//! 1. the ceiling: the same logs fetched with bare `eth_getLogs` calls over the
//!    same filters and 100-block ranges (10,000 logs per response, the cap
//!    common providers enforce), discarded — once decoded into alloy `Log`s as
//!    a client's `get_logs` does, once only parsed as JSON (a stricter
//!    ceiling: no client builds less);
//! 2. a chainfront backfill of the same blocks into Redis (ranges adaptive
//!    up to 100 blocks; the last `reorg_window` blocks go through window mode
//!    with undo records, as in production);
//! 3. live mode: time from a mined purchase to the VM in Redis (p50/p99) with
//!    a 100 ms poll interval;
//! 4. peak RSS of a `chainfront index` process doing the whole backfill.
//!
//! Prints events/s for 1 and 2 and their ratios (target ≥ 0.7), the latency
//! percentiles (target p99 ≤ poll interval + 50 ms) and the RSS (target
//! < 150 MB). Figures go in `docs/benchmarks.md`.

use chainfront_indexer::conn::RedisConn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use chainfront::deploy;
use chainfront::devnet::{self, RedisServer};
use chainfront_indexer::apply::Watched;
use chainfront_indexer::contracts::{MockUSDC, VMMarketplace};
use chainfront_indexer::follow::{FollowConfig, Follower};
use chainfront_indexer::keys::ChainKeys;
use chainfront_indexer::metrics::IndexerMetrics;
use chainfront_indexer::retry::RetryPolicy;
use chainfront_indexer::rpc::Rpc;
use chainfront_indexer::store::Store;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Blocks per `eth_getLogs`: 100 deposits per seeded block make 10,000 logs
/// per response, the most providers return. Wider ranges would make the whole
/// backfill one response, leaving nothing to overlap.
const RANGE: u64 = 100;
const POLL: Duration = Duration::from_millis(100);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn redis_db(server: &RedisServer, db: u8) -> Res<RedisConn> {
    Ok(chainfront_indexer::conn::connect(&format!("{}/{db}", server.url())).await?)
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

#[tokio::main]
async fn main() -> Res<()> {
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
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
    let watched = Watched {
        keys: keys.clone(),
        vm_marketplace: Some(d.vm_marketplace),
        submission_stakes: d.submission_stakes,
        usdc: Some(d.usdc),
        treasury: Some(d.treasury),
    };
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

    // 1. Ceiling: bare eth_getLogs, same filters, same ranges, discarded;
    //    decoded as alloy `Log`s, then only parsed.
    let reader = chainfront::node::read_provider(&url)?;
    let ranges: Vec<(u64, u64)> = (d.start_block..=head)
        .step_by(RANGE as usize)
        .map(|from| (from, (from + RANGE - 1).min(head)))
        .collect();
    let (fetched, ceiling) =
        fetch_bare::<alloy::rpc::types::Log>(&reader, &filters, &ranges).await?;
    let (parsed, raw_ceiling) =
        fetch_bare::<serde::de::IgnoredAny>(&reader, &filters, &ranges).await?;
    assert_eq!(parsed, fetched, "both ceilings saw the same logs");

    // 2. chainfront backfill into Redis (database 1).
    let cfg = FollowConfig {
        start_block: d.start_block,
        initial_range: RANGE,
        max_range: RANGE,
        ..FollowConfig::default()
    };
    let conn = redis_db(&redis, 1).await?;
    let metrics = Arc::new(IndexerMetrics::default());
    let rpc = Rpc::new(
        std::slice::from_ref(&url),
        RetryPolicy::default(),
        Duration::from_secs(30),
    )?;
    let mut follower = Follower::new(
        rpc,
        Store::new(conn.clone(), keys.clone(), cfg.window),
        watched.clone(),
        cfg.clone(),
        metrics.clone(),
    );
    let t = Instant::now();
    follower.sync().await?;
    let backfill = t.elapsed();
    let applied = metrics.events_applied.load(Ordering::Relaxed) as usize;
    assert_eq!(
        applied, fetched,
        "the backfill applied what the ceiling fetched"
    );

    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let (ceiling_rate, raw_rate, backfill_rate) = (
        rate(fetched, ceiling),
        rate(fetched, raw_ceiling),
        rate(applied, backfill),
    );
    println!("events                      {fetched}");
    println!(
        "ceiling (eth_getLogs, Log)  {:>10.0} events/s  ({:.2}s)",
        ceiling_rate,
        ceiling.as_secs_f64()
    );
    println!(
        "ceiling (eth_getLogs, JSON) {:>10.0} events/s  ({:.2}s)",
        raw_rate,
        raw_ceiling.as_secs_f64()
    );
    println!(
        "chainfront backfill         {:>10.0} events/s  ({:.2}s)",
        backfill_rate,
        backfill.as_secs_f64()
    );
    println!(
        "ratio to the Log ceiling    {:>10.2}  (target >= 0.70)",
        backfill_rate / ceiling_rate
    );
    println!(
        "ratio to the JSON ceiling   {:>10.2}",
        backfill_rate / raw_rate
    );

    // 4. Peak RSS of a `chainfront index` process over the whole backfill.
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
    let rpc = Rpc::new(
        std::slice::from_ref(&url),
        RetryPolicy::default(),
        Duration::from_secs(30),
    )?;
    let mut live = Follower::new(
        rpc,
        Store::new(live_conn.clone(), keys.clone(), live_cfg.window),
        watched,
        live_cfg,
        Arc::default(),
    );
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
    for _ in 0..40 {
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
    Ok(())
}
