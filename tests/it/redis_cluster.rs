//! Redis Cluster for real: a local 3-primary cluster (`redis-server
//! --cluster-enabled yes` + `redis-cli --cluster create`) behind a comma-
//! separated `redis.url`. The node indexes, follows a reorg, provisions a
//! VM, rate-limits and serves the API through it, and ends at the same state
//! digest as a fresh reindex into a single-node Redis.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::anvil::ReorgOptions;
use chainfront_indexer::conn::{self, RedisConn};
use chainfront_indexer::digest::state_digest;
use chainfront_indexer::keys::ChainKeys;
use redis::AsyncCommands;
use serde_json::Value;

use crate::harness::Stack;
use crate::indexer::{digest, follower, spec, workload};
use crate::seed::{self, Action};

/// Three cluster-mode redis-servers (no replicas), killed on drop.
pub struct LocalCluster {
    children: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl LocalCluster {
    pub fn start() -> LocalCluster {
        let dir = tempfile::tempdir().expect("tmp");
        let mut children = Vec::new();
        let mut ports = Vec::new();
        for i in 0..3 {
            let port = chainfront::devnet::free_port().expect("port");
            let data: PathBuf = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&data).expect("mkdir");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args([
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ])
                .arg("--dir")
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server");
            children.push(child);
            ports.push(port);
        }
        let cluster = LocalCluster {
            children,
            ports,
            _dir: dir,
        };
        for &port in &cluster.ports {
            wait_cli(port, &["PING"], "PONG");
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for &port in &cluster.ports {
            wait_cli(port, &["CLUSTER", "INFO"], "cluster_state:ok");
        }
        cluster
    }

    /// `redis.url` for the cluster: every node, comma-separated.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_cli(port: u16, args: &[&str], want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(port, args).contains(want) {
        assert!(
            Instant::now() < deadline,
            "redis {port}: {args:?} never said {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn checkpoint(c: &mut RedisConn) -> Option<u64> {
    c.hget(ChainKeys::new(31337).checkpoint(), "number")
        .await
        .expect("checkpoint")
}

#[tokio::test]
async fn a_three_primary_cluster_indexes_reorgs_and_serves_like_a_single_redis() {
    let stack = Stack::start().await;
    let cluster = LocalCluster::start();
    let mut c = conn::connect(&cluster.url()).await.expect("cluster");
    assert!(c.is_cluster());
    // A single node's URL finds the cluster by itself (a configuration endpoint).
    let seed_only = conn::connect(&format!("redis://127.0.0.1:{}", cluster.ports[0]))
        .await
        .expect("seed");
    assert!(seed_only.is_cluster());

    seed::run(&stack, &workload(60), 6).await;
    let config = crate::vms::node_config(
        &stack,
        &[
            ("CHAINFRONT_REDIS__URL", &cluster.url()),
            ("CHAINFRONT_CHAINS__LOCAL__REORG_WINDOW", "16"),
            ("CHAINFRONT_PROVISIONING__ENABLED", "true"),
            ("CHAINFRONT_PROVISIONING__POLL_INTERVAL_MS", "50"),
            ("CHAINFRONT_RATE_LIMITS__ENABLED", "true"),
        ],
    );
    let node = crate::vms::start_node(config).await;
    assert!(node.state.redis.is_cluster());
    let p = stack.deployer.clone();
    let head = p.get_block_number().await.expect("head");
    crate::crash::wait_for(&mut c, head, Duration::from_secs(120)).await;

    // A purchase, then a reorg that drops the purchase's block.
    let token = stack.buy_vm(2, 1, 3).await;
    let head = p.get_block_number().await.expect("head");
    crate::crash::wait_for(&mut c, head, Duration::from_secs(60)).await;
    p.anvil_reorg(ReorgOptions {
        depth: 1,
        tx_block_pairs: vec![],
    })
    .await
    .expect("reorg");
    let token = {
        // The purchase is gone; buy again on the new branch.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let exists: bool = c
                .exists(ChainKeys::new(31337).vm(token))
                .await
                .expect("exists");
            if !exists {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the reorged purchase stays indexed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stack.buy_vm(3, 0, 2).await
    };
    seed::run(
        &stack,
        &(0..30)
            .map(|i| Action::Deposit {
                wallet: 1 + i % 4,
                amount: 70 + i as u64,
            })
            .collect::<Vec<_>>(),
        3,
    )
    .await;
    let head = p.get_block_number().await.expect("head");
    crate::crash::wait_for(&mut c, head, Duration::from_secs(60)).await;

    // The API through the cluster.
    let (status, health) = get(&format!("{}/health", node.url)).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("healthy")),
        "{health}"
    );
    assert_eq!(health["indexed_block"], head);
    let r = reqwest::get(format!("{}/tiers", node.url))
        .await
        .expect("tiers");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers().contains_key("x-ratelimit-remaining"),
        "the limiter ran"
    );
    let (status, vms) = get(&format!("{}/vms/{}", node.url, stack.signer(3).address())).await;
    assert_eq!(status, 200, "{vms}");
    assert_eq!(vms["count"], 1, "{vms}");
    // The provisioning worker's queue scripts ran on the cluster.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: Option<String> = c
            .hget(ChainKeys::new(31337).provision(token), "status")
            .await
            .expect("hget");
        if status.as_deref() == Some("running") {
            break;
        }
        assert!(Instant::now() < deadline, "provisioning status {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A route that fails closed when the limiter cannot reach Redis.
    let (status, nonce) = get(&format!("{}/auth/nonce", node.url)).await;
    assert_eq!(status, 200, "{nonce}");
    let (status, markets) = get(&format!("{}/v1/markets", node.url)).await;
    assert_eq!(status, 200, "{markets}");
    assert!(
        markets.to_string().contains("123e4567"),
        "the demo market: {markets}"
    );

    // One chain lives in one slot: every key of the chain is on one node.
    let keys = chainfront_indexer::store::scan(&mut c, "cf:{c31337}:*")
        .await
        .expect("scan");
    assert!(keys.len() > 20, "{} keys", keys.len());
    let slot = |key: &str| cli(cluster.ports[0], &["CLUSTER", "KEYSLOT", key]);
    let first = slot(&keys[0]);
    assert!(
        keys.iter().all(|k| slot(k) == first),
        "one slot for the chain"
    );

    // Node-wide keys spread over the primaries by their own tag, and SCAN
    // finds them on every node (the admin ban list reads them this way).
    let node_keys = chainfront_indexer::keys::NodeKeys;
    let ips: Vec<String> = (1..=30).map(|i| format!("10.0.0.{i}")).collect();
    for ip in &ips {
        let _: () = c
            .set_ex(node_keys.ip_ban(ip), "manual", 60)
            .await
            .expect("ban");
    }
    let bans = chainfront_indexer::store::scan(&mut c, &node_keys.ip_ban_pattern())
        .await
        .expect("scan");
    assert_eq!(bans.len(), ips.len(), "{bans:?}");
    let mut holders = std::collections::BTreeSet::new();
    for &port in &cluster.ports {
        let n: usize = cli(port, &["DBSIZE"]).trim().parse().expect("dbsize");
        if n > 0 {
            holders.insert(port);
        }
    }
    assert!(
        holders.len() >= 2,
        "node-wide keys spread over the primaries"
    );

    // Same state as a fresh reindex into a single-node Redis.
    let spec = spec(&stack);
    let (clustered, n) = state_digest(&mut c, &spec.watched.keys)
        .await
        .expect("digest");
    let (mut fresh, mut single) = follower(&stack, 1, &spec).await;
    assert_eq!(fresh.sync().await.expect("fresh"), Some(head));
    assert_eq!(clustered, digest(&mut single, &spec).await, "{n} keys");
    crate::truth::assert_deposits_match_chain(&stack, &mut c, &spec.watched.keys).await;
    assert_eq!(checkpoint(&mut c).await, Some(head));
}

/// Every Lua script in the workspace names the keys it touches through
/// `KEYS` (never a key built inside the script or passed in `ARGV`), so it
/// is valid on a cluster and behind proxies that route or check by declared
/// keys. Reads the sources: a script added later with an undeclared key
/// fails here.
#[test]
fn every_lua_script_declares_every_key_it_touches() {
    let root = crate::harness::repo_root();
    let mut files = Vec::new();
    let mut dirs = vec![root.join("src"), root.join("indexer/src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut calls = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for (i, _) in text.match_indices("redis.call(") {
            let rest = &text[i + "redis.call(".len()..];
            // A command without arguments (`TIME`) touches no key.
            let first_arg_end = rest.find([',', ')']).unwrap_or(rest.len());
            if rest[first_arg_end..].starts_with(')') {
                continue;
            }
            // The first argument is the command, the second the key.
            let after_cmd = rest[first_arg_end + 1..].trim_start();
            assert!(
                after_cmd.starts_with("KEYS["),
                "{}: a script touches a key it does not declare: redis.call({}",
                f.display(),
                &rest[..rest.len().min(60)]
            );
            calls += 1;
        }
    }
    assert!(calls >= 10, "found only {calls} redis.call sites");
}
