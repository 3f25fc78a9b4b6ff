//! A transient fault never stops an indexer: a standby whose Redis goes away
//! for seconds keeps standing by and takes over afterwards (the Sentinel
//! failover case), and an indexer whose RPC is unreachable at start-up (the
//! chain check) waits it out. Only certain conditions stop it (see
//! `reorgs::a_reorg_deeper_than_the_window_stops_the_indexer_and_the_api_stays_up`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use chainfront_indexer::metrics::IndexerMetrics;
use chainfront_indexer::retry::RetryPolicy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::crash::{checkpoint, db, spawn, wait_for};
use crate::harness::{Stack, wait_until};
use crate::indexer::{conn, spec};
use crate::seed;

/// A TCP forwarder to `target` that drops every connection while `open` is
/// false: an RPC endpoint that is down, then back.
async fn gate(target: String, open: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if !open.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn an_rpc_outage_at_start_is_waited_out_not_fatal() {
    let stack = Stack::start().await;
    seed::run(&stack, &crate::indexer::workload(20), 5).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let open = Arc::new(AtomicBool::new(false));
    let anvil = stack
        .anvil
        .endpoint()
        .trim_start_matches("http://")
        .to_owned();
    let url = gate(anvil, open.clone()).await;
    let mut spec = spec(&stack);
    spec.rpc_urls = vec![url];
    // The RPC client's own retries give up within a second; the outage lasts
    // longer, so only the indexer's own retrying can bridge it.
    spec.retry = RetryPolicy {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        max_retries: 2,
    };
    spec.rpc_timeout = Duration::from_millis(500);
    spec.leader_ttl = Duration::from_millis(500);
    let c = conn(&stack, 1).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(chainfront_indexer::chain::run(
        c.clone(),
        spec,
        Arc::new(IndexerMetrics::default()),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!task.is_finished(), "the indexer stopped on an RPC outage");
    open.store(true, Ordering::SeqCst);
    let mut c2 = c.clone();
    wait_for(&mut c2, head, Duration::from_secs(60)).await;
    stop.cancel();
    task.await.expect("join").expect("a clean stop");
}

/// Two `chainfront index` processes; Redis disappears for 3 s (longer than
/// the lock's TTL) while B stands by. Neither process exits; afterwards one
/// of them leads, and when it is killed the other takes over and reaches the
/// head.
#[tokio::test]
async fn processes_survive_a_redis_outage_and_the_standby_takes_over() {
    let mut stack = Stack::start().await;
    seed::run(&stack, &crate::crash::deposits(2_000), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let mut c = db(&stack, 1).await;
    let mut a = spawn(&stack, "index", 1, &[], None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&mut c).await.unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "A never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut b = spawn(&stack, "index", 1, &[], None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.redis.stop();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        for (name, p) in [("A", &mut a), ("B", &mut b)] {
            assert!(
                p.0.try_wait().expect("try_wait").is_none(),
                "{name} exited while Redis was down"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.redis.start_again().expect("redis back");
    let mut c = db(&stack, 1).await;
    // Whoever leads now makes progress; then it dies and the other finishes.
    let before = checkpoint(&mut c).await.unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&mut c).await.unwrap_or(0) <= before && before < head {
        assert!(Instant::now() < deadline, "no progress after the outage");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    wait_for(&mut c, head, Duration::from_secs(120)).await;
    assert!(b.0.try_wait().expect("try_wait").is_none(), "B still runs");
    b.kill();
    let keys = chainfront_indexer::keys::ChainKeys::new(31337);
    crate::truth::assert_deposits_match_chain(&stack, &mut c, &keys).await;
}

/// A Redis that may evict any key (`allkeys-*`) could drop the checkpoint,
/// an undo record or a total: `run`, `index` and `reindex` refuse to start
/// on it, naming the setting. `volatile-*` (only keys with a TTL) starts.
#[tokio::test]
async fn a_redis_that_may_evict_state_is_refused_at_start() {
    let stack = Stack::start().await;
    let c = conn(&stack, 0).await;
    let set = |policy: &'static str| {
        let mut c = c.clone();
        async move {
            let () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg(policy)
                .query_async(&mut c)
                .await
                .expect("config set");
        }
    };
    set("allkeys-lru").await;
    let err = chainfront::node::connect(stack.config())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("maxmemory-policy")
            && err.contains("allkeys-lru")
            && err.contains("noeviction"),
        "{err}"
    );
    for command in ["index", "reindex"] {
        let mut p = spawn(&stack, command, 1, &[], None);
        let status = p.0.wait().expect("wait");
        assert!(!status.success(), "`{command}` started on allkeys-lru");
    }
    set("volatile-lru").await;
    chainfront::node::connect(stack.config())
        .await
        .expect("volatile-* is accepted (with a warning)");
    use chainfront_indexer::conn::{Eviction, check_eviction_policy};
    assert_eq!(
        check_eviction_policy(&mut c.clone())
            .await
            .expect("accepted"),
        Eviction::Volatile("volatile-lru".into())
    );
    // The indexer starts on it, and says what it risks.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("index.log");
    let mut p = spawn(&stack, "index", 1, &[], Some(&log));
    wait_until(
        "`index`'s warning about volatile-lru",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                p.0.try_wait().expect("try_wait").is_none(),
                "`index` exited on volatile-lru: {text}"
            );
            let warned = text.contains("maxmemory-policy may evict keys with a TTL")
                && text.contains("volatile-lru");
            async move { warned }
        },
    )
    .await;
    let _ = p.0.kill();
    let _ = p.0.wait();
    set("noeviction").await;
    assert_eq!(
        check_eviction_policy(&mut c.clone())
            .await
            .expect("accepted"),
        Eviction::None
    );
}

/// The indexer's Redis connection gives up on an answer after its own
/// explicit timeout (`indexer.redis_timeout_ms`), not a library default: a
/// blocked server is reported as an error the indexer retries.
#[tokio::test]
async fn the_indexers_redis_connection_times_out_as_configured() {
    use chainfront_indexer::conn::{ConnOptions, connect_with};
    let stack = Stack::start().await;
    let mut env = stack.env();
    env.insert("CHAINFRONT_INDEXER__REDIS_TIMEOUT_MS".into(), "300".into());
    let config =
        chainfront::config::Config::load_with_env(Some(&crate::harness::local_toml()), &env)
            .expect("config");
    let opts: ConnOptions = chainfront::node::indexer_redis_options(&config);
    assert_eq!(opts.response_timeout, Duration::from_millis(300));
    let mut c = connect_with(&stack.redis.url(), opts)
        .await
        .expect("connect");
    // The server holds the answer for 2 s (a blocking pop on an empty list).
    let started = Instant::now();
    let r: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
        .arg("cf:{test}:empty")
        .arg(2)
        .query_async(&mut c)
        .await;
    let took = started.elapsed();
    assert!(
        r.is_err(),
        "no answer within the timeout is an error: {r:?}"
    );
    assert!(
        took < Duration::from_millis(1_500),
        "gave up after {took:?}"
    );
    let default = chainfront_indexer::conn::ConnOptions::default();
    assert_eq!(
        chainfront::node::indexer_redis_options(&stack.config()).response_timeout,
        Duration::from_secs(10),
        "the indexer's default ({:?} for the API)",
        default.response_timeout
    );
}

/// While a reindex wipe is unfinished, `/health` says the state is being
/// rebuilt (200, `degraded`), and is healthy again once it is done.
#[tokio::test]
async fn health_reports_an_unfinished_reindex_wipe() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use redis::AsyncCommands;
    use tower::ServiceExt;
    let stack = Stack::start().await;
    let state = chainfront::node::connect(stack.config())
        .await
        .expect("connect");
    let health = |state: chainfront::api::AppState| async move {
        let resp = chainfront::api::router(state)
            .oneshot(
                Request::get("/health")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        (status, body)
    };
    let keys = chainfront_indexer::keys::ChainKeys::new(31337);
    let mut c = state.redis.clone();
    let _: () = c.set(keys.wipe(), "1").await.expect("set");
    let (status, body) = health(state.clone()).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("degraded")),
        "{body}"
    );
    assert!(
        body["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("reindex")),
        "{body}"
    );
    let _: () = c.del(keys.wipe()).await.expect("del");
    let (status, body) = health(state).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("healthy")),
        "{body}"
    );
}
