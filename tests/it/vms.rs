//! ClawCloud's VM routes end to end: a real purchase on anvil → the indexer →
//! provisioning (the `dev` provider) → `/credentials` with real signatures.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use chainfront::api::AppState;
use chainfront::config::Config;
use chainfront::provision::dev::DevProvider;
use chainfront::provision::worker::Worker;
use chainfront_indexer::keys::ChainKeys;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::harness::Stack;

/// A running node (indexer + API) on a random port, stopped on drop.
pub struct Node {
    pub url: String,
    pub state: AppState,
    stop: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The stack's config with a master key, fast polling, no limits and no
/// background provisioning (tests drive the worker themselves).
pub fn node_config(stack: &Stack, extra: &[(&str, &str)]) -> Config {
    let mut env = stack.env();
    for (k, v) in [
        ("CHAINFRONT_CHAINS__LOCAL__POLL_INTERVAL_MS", "50"),
        ("CHAINFRONT_PROVISIONING__ENABLED", "false"),
        ("CHAINFRONT_RATE_LIMITS__ENABLED", "false"),
        (
            "CHAINFRONT_MASTER_KEY",
            "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
        ),
        ("CHAINFRONT_API__PUBLIC_URL", crate::auth::PUBLIC_URL),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        env.insert(k.into(), v.into());
    }
    Config::load_with_env(Some(&crate::harness::local_toml()), &env).expect("config")
}

pub async fn start_node(config: Config) -> Node {
    let state = chainfront::node::connect(config).await.expect("connect");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(chainfront::node::run_on(
        state.clone(),
        listener,
        stop.clone(),
    ));
    Node { url, state, stop }
}

fn worker(node: &Node) -> Worker {
    worker_with(node, Arc::new(DevProvider::default()))
}

/// A worker on a provider the test keeps (to read its records).
pub fn worker_with(node: &Node, provider: Arc<DevProvider>) -> Worker {
    let s = &node.state;
    Worker::new(
        s.redis.clone(),
        ChainKeys::new(s.home.deployment.chain_id),
        provider,
        s.master.clone().expect("master key"),
        s.config.provisioning.clone(),
    )
}

/// The OpenSSH public key of an OpenSSH private key.
fn public_of(private: &str) -> String {
    ssh_key::PrivateKey::from_openssh(private)
        .expect("an OpenSSH private key")
        .public_key()
        .to_openssh()
        .expect("public key")
}

/// The documented legacy bearer: EIP-191 signature of the access message.
pub fn legacy_sig(signer: &PrivateKeySigner, token: U256) -> String {
    let msg = format!("ClawCloud Access Request: {token}");
    let sig = signer.sign_message_sync(msg.as_bytes()).expect("sign");
    format!("0x{}", alloy::hex::encode(sig.as_bytes()))
}

async fn get(url: &str, bearer: Option<&str>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Waits until the node has indexed the chain's current head.
pub async fn indexed(node: &Node, stack: &Stack) {
    let head = stack.deployer.get_block_number().await.expect("head");
    for _ in 0..400 {
        let (_, body) = get(&format!("{}/health", node.url), None).await;
        if body["indexed_block"].as_u64().is_some_and(|n| n >= head) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the node did not index block {head}");
}

#[tokio::test]
async fn purchase_to_credentials_with_ownership_transfer_and_expiry() {
    let stack = Stack::start().await;
    let node = start_node(node_config(&stack, &[])).await;
    let (buyer, other) = (stack.signer(1), stack.signer(2));
    let token = stack.buy_vm(1, 0, 7).await;
    indexed(&node, &stack).await;

    // Prometheus metrics of the node's indexer.
    let metrics = reqwest::get(format!("{}/metrics", node.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let indexed_line = metrics
        .lines()
        .find(|l| l.starts_with("chainfront_indexed_block{chain=\"local\""))
        .expect("indexed_block gauge");
    let indexed_value: u64 = indexed_line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(
        indexed_value >= stack.deployment.start_block,
        "{indexed_line}"
    );
    assert!(
        metrics.contains("chainfront_events_applied_total"),
        "{metrics}"
    );

    // Public views.
    let (status, tiers) = get(&format!("{}/tiers", node.url), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tiers.as_array().expect("array").len(), 8, "{tiers}");
    assert_eq!(tiers[0]["pricePerDay"], "0.20");
    assert_eq!(tiers[0]["pricePerMonth"], "6.00");
    let (status, vms) = get(&format!("{}/vms/{}", node.url, buyer.address()), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vms["count"], 1, "{vms}");
    assert_eq!(vms["vms"][0]["token_id"], 1);
    assert_eq!(vms["vms"][0]["status"], "provisioning");
    let (status, _) = get(&format!("{}/status/999", node.url), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = get(&format!("{}/vms/not-an-address", node.url), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string());

    let creds = format!("{}/credentials/{token}", node.url);
    // No signature, garbage, someone else's signature.
    assert_eq!(get(&creds, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&creds, Some("0xdeadbeef")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&creds, Some(&legacy_sig(&other, token))).await.0,
        StatusCode::FORBIDDEN
    );
    // Owner, before provisioning: 202.
    let (status, body) = get(&creds, Some(&legacy_sig(&buyer, token))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Provisioning (dev provider) → 200 with a key that parses.
    let provider = Arc::new(DevProvider::default());
    worker_with(&node, provider.clone())
        .pass()
        .await
        .expect("provisioning pass");
    let (status, body) = get(&creds, Some(&legacy_sig(&buyer, token))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tokenId"], token.to_string());
    assert_eq!(body["host"], "127.0.0.1");
    assert_eq!(body["username"], "root");
    assert_eq!(body["type"], "gcp");
    let key_a = body["privateKey"].as_str().expect("private key").to_owned();
    let public_a = public_of(&key_a);
    let instance = format!("chainfront-vm-{token}");
    assert_eq!(provider.authorized_keys(&instance), vec![public_a.clone()]);
    // Public reads are cached for a second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (_, vms) = get(&format!("{}/vms/{}", node.url, buyer.address()), None).await;
    assert_eq!(vms["vms"][0]["status"], "running");
    assert_eq!(vms["vms"][0]["ssh_host"], "127.0.0.1");
    // At rest the key is sealed, never plaintext.
    let stored: Option<String> = redis::cmd("HGET")
        .arg(ChainKeys::new(31337).provision(token))
        .arg("private_key")
        .query_async(&mut node.state.redis.clone())
        .await
        .expect("hget");
    assert!(stored.expect("stored").starts_with("ecc:v2:"));

    // ERC-721 transfer: the VM is re-keyed for the new owner (F1). Until the
    // re-key is done the new owner hears 202; the old owner is refused.
    stack.transfer_vm(1, other.address(), token).await;
    indexed(&node, &stack).await;
    assert_eq!(
        get(&creds, Some(&legacy_sig(&buyer, token))).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = get(&creds, Some(&legacy_sig(&other, token))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("re-keyed"),
        "{body}"
    );
    worker_with(&node, provider.clone())
        .pass()
        .await
        .expect("re-key pass");
    let (status, body) = get(&creds, Some(&legacy_sig(&other, token))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key_b = body["privateKey"].as_str().expect("private key").to_owned();
    assert_ne!(key_b, key_a, "the new owner gets a new key");
    let public_b = public_of(&key_b);
    // The provider's record: B is the only authorized key, A no longer opens the VM.
    assert_eq!(provider.authorized_keys(&instance), vec![public_b]);
    assert!(!provider.authorized_keys(&instance).contains(&public_a));
    assert_eq!(
        get(&creds, Some(&legacy_sig(&buyer, token))).await.0,
        StatusCode::FORBIDDEN,
        "the old owner is refused"
    );

    // Expiry: 8 days later the NFT is no longer valid.
    let _: Value = stack
        .deployer
        .raw_request("evm_increaseTime".into(), (8 * 86_400u64,))
        .await
        .expect("increase time");
    crate::seed::mine(&stack.deployer).await;
    indexed(&node, &stack).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // head tracker picks up the time
    let (status, body) = get(&creds, Some(&legacy_sig(&other, token))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().expect("error").contains("expired"));
}

#[tokio::test]
async fn one_time_delivery_erases_the_key_after_the_first_success() {
    let stack = Stack::start().await;
    let node = start_node(node_config(
        &stack,
        &[("CHAINFRONT_PROVISIONING__ONE_TIME_DELIVERY", "true")],
    ))
    .await;
    let buyer = stack.signer(2);
    let token = stack.buy_vm(2, 1, 3).await;
    indexed(&node, &stack).await;
    worker(&node).pass().await.expect("pass");
    let creds = format!("{}/credentials/{token}", node.url);
    let (status, first) = get(&creds, Some(&legacy_sig(&buyer, token))).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(first["privateKey"].is_string());
    let (status, second) = get(&creds, Some(&legacy_sig(&buyer, token))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(second["privateKey"].is_null(), "{second}");
    assert!(second["note"].as_str().expect("note").contains("one-time"));
    assert_eq!(second["host"], first["host"]);
}

#[tokio::test]
async fn generate_wallet_returns_a_working_key_and_keeps_no_copy_unless_asked() {
    let stack = Stack::start().await;
    let node = start_node(node_config(&stack, &[])).await;
    // A wallet without VMs is an empty list, not an error.
    let (status, body) = get(
        &format!("{}/vms/{}", node.url, stack.signer(3).address()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 0);
    let generate = |url: String| async move {
        reqwest::Client::new()
            .post(format!("{url}/agents/generate-wallet"))
            .json(&serde_json::json!({ "agentId": "agent-7" }))
            .send()
            .await
            .expect("post")
    };
    let resp = generate(node.url.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body: Value = resp.json().await.expect("json");
    let key = body["privateKey"].as_str().expect("key");
    let signer: PrivateKeySigner = key.parse().expect("a secp256k1 key");
    let address: Address = body["address"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("addr");
    assert_eq!(signer.address(), address);
    // No escrow by default: nothing about the wallet is stored.
    let mut c = node.state.redis.clone();
    let kept: Option<String> = redis::cmd("GET")
        .arg(chainfront_indexer::keys::NodeKeys.agent_wallet_escrow(address))
        .query_async(&mut c)
        .await
        .expect("get");
    assert!(kept.is_none());
    let legacy: u64 = redis::cmd("HLEN")
        .arg(chainfront_indexer::keys::NodeKeys.agent_wallets())
        .query_async(&mut c)
        .await
        .expect("hlen");
    assert_eq!(legacy, 0);

    // Opted in: a sealed copy that expires.
    let escrow = start_node(node_config(
        &stack,
        &[("CHAINFRONT_API__WALLET_ESCROW_TTL_SECS", "600")],
    ))
    .await;
    let body: Value = generate(escrow.url.clone())
        .await
        .json()
        .await
        .expect("json");
    let key = body["privateKey"].as_str().expect("key");
    let address: Address = body["address"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("addr");
    let escrow_key = chainfront_indexer::keys::NodeKeys.agent_wallet_escrow(address);
    let stored: String = redis::cmd("GET")
        .arg(&escrow_key)
        .query_async(&mut c)
        .await
        .expect("stored copy");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&escrow_key)
        .query_async(&mut c)
        .await
        .expect("ttl");
    assert!((1..=600).contains(&ttl), "{ttl}");
    assert!(
        !stored.contains(key.trim_start_matches("0x")),
        "stored in plaintext"
    );
    let stored: Value = serde_json::from_str(&stored).expect("json");
    let master = escrow.state.master.clone().expect("master");
    let opened = master
        .open_string(stored["private_key"].as_str().expect("sealed"), &escrow_key)
        .expect("opens");
    assert_eq!(opened.as_str(), key);
    let bad = reqwest::Client::new()
        .post(format!("{}/agents/generate-wallet", node.url))
        .json(&serde_json::json!({ "agentId": "no spaces allowed" }))
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// The safe form: the message with a timestamp, single-use and short-lived;
/// and the replayable legacy form can be switched off.
#[tokio::test]
async fn timestamped_signatures_are_single_use_and_legacy_can_be_switched_off() {
    let stack = Stack::start().await;
    let node = start_node(node_config(
        &stack,
        &[("CHAINFRONT_API__LEGACY_BEARER_AUTH", "false")],
    ))
    .await;
    let buyer = stack.signer(4);
    let token = stack.buy_vm(4, 0, 2).await;
    indexed(&node, &stack).await;
    worker(&node).pass().await.expect("pass");
    let creds = format!("{}/credentials/{token}", node.url);
    let timed = |ts: u64| {
        let msg = format!(
            "ClawCloud Access Request: {token}\nDomain: node.test\nChain ID: 31337\nTimestamp: {ts}"
        );
        let sig = buyer.sign_message_sync(msg.as_bytes()).expect("sign");
        format!("0x{}", alloy::hex::encode(sig.as_bytes()))
    };
    let send = |sig: String, ts: u64| {
        reqwest::Client::new()
            .get(&creds)
            .bearer_auth(sig)
            .header("X-ClawCloud-Timestamp", ts.to_string())
            .send()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();

    let (status, body) = get(&creds, Some(&legacy_sig(&buyer, token))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "legacy form is off");
    assert!(body["error"].as_str().expect("error").contains("Timestamp"));

    let sig = timed(now);
    assert_eq!(
        send(sig.clone(), now).await.expect("send").status(),
        StatusCode::OK
    );
    let replay = send(sig, now).await.expect("send");
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED, "replayed");
    let body: Value = replay.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("already used")
    );
    let old = now - 3_600;
    assert_eq!(
        send(timed(old), old).await.expect("send").status(),
        StatusCode::UNAUTHORIZED,
        "an hour-old signature"
    );
    // A signature over another timestamp than the header's recovers someone else.
    assert_eq!(
        send(timed(now), now + 1).await.expect("send").status(),
        StatusCode::FORBIDDEN
    );
}

/// `keys rotate` re-seals every stored secret (VM keys, escrowed wallets)
/// with the newest key of the keyring; credentials still come out right; a
/// second run changes nothing; afterwards plaintext values are refused.
#[tokio::test]
async fn key_rotation_reseals_everything_and_can_be_rerun() {
    use chainfront::cli::keys::{Rotated, rotate};
    use chainfront::crypto::ecies::{Keyring, MasterKey};
    let stack = Stack::start().await;
    let node = start_node(node_config(
        &stack,
        &[("CHAINFRONT_API__WALLET_ESCROW_TTL_SECS", "600")],
    ))
    .await;
    let token = stack.buy_vm(1, 0, 2).await;
    indexed(&node, &stack).await;
    worker(&node).pass().await.expect("pass");
    let resp = reqwest::Client::new()
        .post(format!("{}/agents/generate-wallet", node.url))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::OK);

    let old_hex = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    let new = MasterKey::generate();
    let ring =
        Keyring::from_hex_list(&format!("{},{old_hex}", new.to_hex().as_str())).expect("ring");
    let mut conn = node.state.redis.clone();
    let first = rotate(&mut conn, &[31337], &ring).await.expect("rotate");
    assert_eq!(
        first,
        Rotated {
            moved: 2,
            skipped: 0,
            raced: 0
        }
    );
    let again = rotate(&mut conn, &[31337], &ring).await.expect("rerun");
    assert_eq!(
        again,
        Rotated {
            moved: 0,
            skipped: 2,
            raced: 0
        }
    );
    let keys = ChainKeys::new(31337);
    let sealed: String = redis::cmd("HGET")
        .arg(keys.provision(token))
        .arg("private_key")
        .query_async(&mut conn)
        .await
        .expect("hget");
    let aad = chainfront::provision::worker::key_aad(&keys, token);
    let old_only = Keyring::from_hex_list(old_hex).expect("ring");
    assert!(
        old_only.open(&sealed, &aad).is_err(),
        "the old key no longer opens it"
    );
    let new_only = Keyring::from_hex_list(new.to_hex().as_str()).expect("ring");
    let key = new_only
        .open_string(&sealed, &aad)
        .expect("the new key opens it");
    ssh_key::PrivateKey::from_openssh(key.as_str()).expect("still an SSH key");
    // Migrated: plaintext values are refused from now on.
    let migrated: bool = redis::cmd("EXISTS")
        .arg(chainfront_indexer::keys::NodeKeys.crypto_migrated())
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert!(migrated);
}
