//! The Compute API end to end on real anvil chains and redis-server:
//! deposits credited once whoever sees them first, reorgs reversed, bad
//! proofs refused, jobs charged to the base unit, cancel refunds, and a node
//! SIGKILLed mid-job that resumes without charging twice.

use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use chainfront_indexer::contracts::MockUSDC;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Stack, wait_until};
use crate::vms::{Node, indexed, node_config, start_node};

/// Signs in as `signer` (GET /auth/nonce, EIP-4361, POST /auth/login) and
/// returns the JWT. Every node here serves `crate::auth::PUBLIC_URL`.
pub async fn login(url: &str, signer: &PrivateKeySigner) -> String {
    let c = reqwest::Client::new();
    let nonce: Value = c
        .get(format!("{url}/auth/nonce"))
        .send()
        .await
        .expect("nonce")
        .json()
        .await
        .expect("json");
    let msg = chainfront::auth::sign_in::message(
        crate::auth::PUBLIC_URL,
        signer.address(),
        nonce["chainId"].as_u64().expect("chain id"),
        nonce["nonce"].as_str().expect("nonce"),
        &chainfront::time::now_iso8601(),
        &Default::default(),
    );
    let sig = signer.sign_message_sync(msg.as_bytes()).expect("sign");
    let r: Value = c
        .post(format!("{url}/auth/login"))
        .json(&json!({"message": msg, "signature": format!("0x{}", alloy::hex::encode(sig.as_bytes()))}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    r["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {r}"))
        .to_owned()
}

/// `from` sends `amount` base units of `token` to `to`; returns the tx hash.
pub async fn transfer(wallet: &DynProvider, token: Address, to: Address, amount: u64) -> B256 {
    let r = chainfront::deploy::mined(
        MockUSDC::new(token, wallet)
            .transfer(to, U256::from(amount))
            .send()
            .await
            .expect("send"),
        "transfer",
    )
    .await
    .expect("mined");
    r.transaction_hash
}

async fn post(url: &str, body: &Value, token: Option<&str>) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new().post(url).json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.expect("request");
    let s = resp.status();
    (s, resp.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.expect("request");
    let s = resp.status();
    (s, resp.json().await.unwrap_or(Value::Null))
}

/// A balance answer as sent (its numbers are exact decimals; parsed into a
/// `Value` they would become floats).
async fn balance_text(node: &Node, wallet: Address) -> String {
    reqwest::Client::new()
        .get(format!("{}/v1/balance?wallet={wallet}", node.url))
        .send()
        .await
        .expect("balance")
        .text()
        .await
        .expect("text")
}

async fn raw(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

async fn available(node: &Node, wallet: Address) -> u64 {
    node.state
        .compute
        .as_ref()
        .expect("compute")
        .ledger()
        .balance(wallet)
        .await
        .expect("balance")
        .available
        .0
}

/// `(available, spent)` once nothing is pending (else `(0, 0)`).
async fn settled(node: &Node, wallet: Address) -> (u64, u64) {
    let b = node
        .state
        .compute
        .as_ref()
        .expect("compute")
        .ledger()
        .balance(wallet)
        .await
        .expect("balance");
    if b.pending.0 == 0 {
        (b.available.0, b.spent.0)
    } else {
        (0, 0)
    }
}

fn proof(wallet: Address, tx: B256, network: &str, amount: &str) -> Value {
    json!({
        "wallet": wallet.to_string(),
        "paymentProof": {"txHash": tx.to_string(), "network": network, "amountUsd": serde_json::from_str::<Value>(amount).expect("n"), "token": "USDC", "timestamp": 1706500000000u64}
    })
}

/// A second anvil chain with its own USDC, followed as network `other`.
struct Other {
    anvil: alloy::node_bindings::AnvilInstance,
    usdc: Address,
}

async fn other_chain(stack: &Stack, wallets: &[usize]) -> Other {
    let anvil = chainfront::devnet::start_anvil(31338, None).expect("anvil 2");
    let owner = PrivateKeySigner::from(anvil.keys()[0].clone());
    let p = chainfront::deploy::signing_provider(&anvil.endpoint(), owner).expect("provider");
    let usdc = *MockUSDC::deploy(&p).await.expect("deploy usdc").address();
    for i in wallets {
        chainfront::deploy::mined(
            MockUSDC::new(usdc, &p)
                .mint(stack.signer(*i).address(), U256::from(10_000_000_000u64))
                .send()
                .await
                .expect("mint"),
            "mint",
        )
        .await
        .expect("mint mined");
    }
    Other { anvil, usdc }
}

fn other_env(o: &Other, confirmations: u64) -> Vec<(String, String)> {
    vec![
        ("CHAINFRONT_CHAINS__OTHER__CHAIN_ID".into(), "31338".into()),
        (
            "CHAINFRONT_CHAINS__OTHER__RPC_URLS".into(),
            format!("[\"{}\"]", o.anvil.endpoint()),
        ),
        ("CHAINFRONT_CHAINS__OTHER__USDC".into(), o.usdc.to_string()),
        (
            "CHAINFRONT_CHAINS__OTHER__CONFIRMATIONS".into(),
            confirmations.to_string(),
        ),
        (
            "CHAINFRONT_CHAINS__OTHER__POLL_INTERVAL_MS".into(),
            "50".into(),
        ),
        (
            "CHAINFRONT_COMPUTE__RECONCILE_INTERVAL_MS".into(),
            "100".into(),
        ),
    ]
}

fn with<'a>(pairs: &'a [(String, String)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(more.iter().copied())
        .collect()
}

#[tokio::test]
async fn a_deposit_proven_50_times_while_indexed_is_credited_once_on_two_chains() {
    let stack = Stack::start().await;
    let other = other_chain(&stack, &[1]).await;
    let env = other_env(&other, 0);
    let node = start_node(node_config(&stack, &with(&env, &[]))).await;
    let signer = stack.signer(1);
    let wallet = signer.address();
    let treasury = stack.deployment.treasury;

    // Home chain: 5 USDC, proven 50 times at once while the indexer sees it too.
    let tx = transfer(&stack.wallet(1), stack.deployment.usdc, treasury, 5_000_000).await;
    let url = format!("{}/v1/deposit", node.url);
    let body = proof(wallet, tx, "local", "5.00");
    let answers = futures_util::future::join_all((0..50).map(|_| async {
        let r = reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("post");
        (r.status(), r.text().await.expect("text"))
    }))
    .await;
    for (s, text) in &answers {
        assert_eq!(*s, StatusCode::OK, "{text}");
        assert!(text.contains(r#""success":true,"credits":5.00,"#), "{text}");
    }
    let fresh = answers
        .iter()
        .filter(|(_, t)| t.contains(r#""alreadyCredited":false"#))
        .count();
    assert!(fresh <= 1, "at most one request credits ({fresh})");
    indexed(&node, &stack).await;

    // Second chain: one deposit proven, one left to the indexer alone.
    let p2 =
        chainfront::deploy::signing_provider(&other.anvil.endpoint(), signer.clone()).expect("p2");
    let tx2 = transfer(&p2, other.usdc, treasury, 2_500_000).await;
    let (s, b) = post(&url, &proof(wallet, tx2, "other", "2.5"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = post(&url, &proof(wallet, tx2, "eip155:31338", "2.5"), None).await;
    assert_eq!(
        (s, b["alreadyCredited"].clone()),
        (StatusCode::OK, json!(true)),
        "{b}"
    );
    let _unproven = transfer(&p2, other.usdc, treasury, 1_000_000).await;

    wait_until(
        "the indexed deposits to be credited",
        Duration::from_secs(60),
        || async { available(&node, wallet).await == 8_500_000 },
    )
    .await;
    // Give the reconciler more passes: nothing is credited twice.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(available(&node, wallet).await, 8_500_000);
    let b = balance_text(&node, wallet).await;
    assert!(
        b.contains(r#""available":8.50,"pending":0.00,"totalDeposited":8.50,"totalSpent":0.00"#),
        "{b}"
    );
    let token = login(&node.url, &signer).await;
    let (_, l) = get(&format!("{}/v1/ledger?limit=100", node.url), Some(&token)).await;
    let credits: Vec<&Value> = l["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["kind"] == "credit")
        .collect();
    assert_eq!(credits.len(), 3, "{l}");
}

#[tokio::test]
async fn bad_proofs_are_400_and_leave_the_balance_alone_and_shallow_ones_are_202() {
    let stack = Stack::start().await;
    let other = other_chain(&stack, &[1]).await;
    let env = other_env(&other, 2);
    let node = start_node(node_config(
        &stack,
        &with(
            &env,
            &[("CHAINFRONT_COMPUTE__RECONCILE_INTERVAL_MS", "100000")],
        ),
    ))
    .await;
    let d = &stack.deployment;
    let w1 = stack.signer(1).address();
    let url = format!("{}/v1/deposit", node.url);

    let good = transfer(&stack.wallet(1), d.usdc, d.treasury, 3_000_000).await;
    let elsewhere = transfer(
        &stack.wallet(1),
        d.usdc,
        stack.signer(3).address(),
        1_000_000,
    )
    .await;
    let others = transfer(&stack.wallet(2), d.usdc, d.treasury, 1_000_000).await;
    let cbbtc = transfer(&stack.wallet(1), d.cbbtc.expect("cbbtc"), d.treasury, 1_000).await;
    // A transfer of more than the wallet holds, sent with a fixed gas limit: it reverts on chain.
    let input = MockUSDC::transferCall {
        to: d.treasury,
        value: U256::MAX,
    }
    .abi_encode();
    let req = TransactionRequest::default()
        .with_to(d.usdc)
        .with_input(input)
        .with_gas_limit(200_000);
    let reverted = stack
        .wallet(1)
        .send_transaction(req)
        .await
        .expect("send")
        .get_receipt()
        .await
        .expect("receipt");
    assert!(!reverted.status());

    let mut cases = vec![
        (proof(w1, good, "solana", "3"), "unknown network"),
        (
            json!({"wallet": w1.to_string(), "paymentProof": {"txHash": good.to_string(), "network": "local", "amountUsd": 3, "token": "DAI"}}),
            "USDC only",
        ),
        (proof(w1, elsewhere, "local", "1"), "not to the treasury"),
        (
            proof(w1, reverted.transaction_hash, "local", "1"),
            "reverted",
        ),
        (proof(w1, others, "local", "1"), "not by"),
        (proof(w1, good, "local", "100"), "less than amountUsd"),
        (proof(w1, cbbtc, "local", "0.001"), "not local's USDC"),
        (proof(w1, B256::repeat_byte(7), "local", "1"), "not found"),
        (proof(w1, good, "local", "0.0000001"), "6 decimal"),
    ];
    cases.push((
        json!({"wallet": "nope", "paymentProof": {}}),
        "body must be JSON",
    ));
    for (body, want) in cases {
        let (s, b) = post(&url, &body, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{want}: {b}");
        let err = b["error"].as_str().unwrap_or_default();
        assert!(err.contains(want), "expected `{want}` in `{err}`");
    }
    assert_eq!(
        available(&node, w1).await,
        0,
        "nothing credited by bad proofs"
    );

    // The second chain needs 2 confirmations: 202 with what remains, then 200.
    let p2 =
        chainfront::deploy::signing_provider(&other.anvil.endpoint(), stack.signer(1)).expect("p2");
    let tx2 = transfer(&p2, other.usdc, d.treasury, 4_000_000).await;
    let (s, b) = post(&url, &proof(w1, tx2, "other", "4"), None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(
        (b["status"].clone(), b["remaining"].clone()),
        (json!("pending"), json!(2)),
        "{b}"
    );
    assert_eq!(available(&node, w1).await, 0);
    for _ in 0..2 {
        let _: Value = p2.raw_request("evm_mine".into(), ()).await.expect("mine");
    }
    let (s, b) = post(&url, &proof(w1, tx2, "other", "4"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = post(&url, &proof(w1, good, "local", "3"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(available(&node, w1).await, 7_000_000);
}

#[tokio::test]
async fn a_deposit_removed_by_a_reorg_is_reversed() {
    let stack = Stack::start().await;
    let node = start_node(node_config(
        &stack,
        &[("CHAINFRONT_COMPUTE__RECONCILE_INTERVAL_MS", "100")],
    ))
    .await;
    let signer = stack.signer(1);
    let wallet = signer.address();
    indexed(&node, &stack).await;
    let provider = &stack.deployer;
    let snapshot: U256 = provider
        .raw_request("evm_snapshot".into(), ())
        .await
        .expect("snapshot");
    let tx = transfer(
        &stack.wallet(1),
        stack.deployment.usdc,
        stack.deployment.treasury,
        2_000_000,
    )
    .await;
    let (s, b) = post(
        &format!("{}/v1/deposit", node.url),
        &proof(wallet, tx, "local", "2"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(available(&node, wallet).await, 2_000_000);
    indexed(&node, &stack).await;

    // The block with the deposit is replaced by a longer branch without it.
    let _: bool = provider
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .expect("revert");
    for _ in 0..3 {
        crate::seed::mine(provider).await;
    }
    wait_until("the reversal", Duration::from_secs(60), || async {
        available(&node, wallet).await == 0
    })
    .await;
    let b = balance_text(&node, wallet).await;
    assert!(
        b.contains(r#""available":0.00,"pending":0.00,"totalDeposited":0.00"#),
        "{b}"
    );
    let token = login(&node.url, &signer).await;
    let (_, l) = get(&format!("{}/v1/ledger", node.url), Some(&token)).await;
    let kinds: Vec<&str> = l["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["reversal", "credit"], "{l}");
}

/// A local page for `web` jobs: `/page` answers HTML, `/slow` after 3 s.
pub async fn local_site() -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/page", get(|| async { axum::response::Html("<html><head><title>Local page</title></head><body><h1>Hello compute</h1></body></html>") }))
        .route("/to-metadata", get(|| async { axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data") }))
        .route("/to-page", get(|| async { axum::response::Redirect::temporary("/page") }))
        .route("/slow", get(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "slow answer"
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn wait_job(node: &Node, id: &str) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let (_, j) = get(&format!("{}/v1/jobs/{id}", node.url), None).await;
        if j["status"] == "completed" || j["status"] == "failed" {
            return j;
        }
        last = j;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish: {last}");
}

fn usd(v: &Value) -> u64 {
    chainfront::ledger::money::parse_usd(&v.to_string())
        .expect("usd")
        .0
}

#[tokio::test]
async fn job_life_cycle_is_exact_to_the_base_unit_and_cancel_refunds() {
    let stack = Stack::start().await;
    let site = local_site().await;
    let node = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_COMPUTE__RECONCILE_INTERVAL_MS", "100"),
            ("CHAINFRONT_COMPUTE__WEB__ALLOW", "[\"127.0.0.1/32\"]"),
            ("CHAINFRONT_COMPUTE__WORKERS", "1"),
        ],
    ))
    .await;
    let signer = stack.signer(2);
    let wallet = signer.address();
    let token = login(&node.url, &signer).await;
    let compute_url = |svc: &str| format!("{}/v1/compute/{svc}", node.url);

    // No proof: 401 naming the ways; nothing funded yet: 402 as a failed job.
    let (s, b) = post(
        &compute_url("storage"),
        &json!({"wallet": wallet.to_string(), "payload": {"operation": "list"}}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(
        b["error"].as_str().unwrap_or("").contains("/auth/login"),
        "{b}"
    );
    let (s, b) = post(
        &compute_url("storage"),
        &json!({"payload": {"operation": "list"}}),
        Some(&token),
    )
    .await;
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED, "{b}");
    assert_eq!(
        b["error"], "Insufficient balance. Need $0.001, have $0.00",
        "{b}"
    );
    assert_eq!(b["status"], "failed");

    transfer(
        &stack.wallet(2),
        stack.deployment.usdc,
        stack.deployment.treasury,
        1_000_000,
    )
    .await;
    wait_until("the deposit", Duration::from_secs(60), || async {
        available(&node, wallet).await == 1_000_000
    })
    .await;

    // storage put of 2,500,000 bytes would be 0.00025 → clamped to the 0.001 minimum.
    let content = "x".repeat(1_500);
    let (s, b) = post(
        &compute_url("storage"),
        &json!({"payload": {"operation": "put", "key": "a.txt", "content": content, "ttl": 3600}}),
        Some(&token),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["status"].clone(), usd(&b["cost"])),
        (json!("pending"), 1_000),
        "{b}"
    );
    let put = wait_job(&node, b["jobId"].as_str().expect("id")).await;
    assert_eq!(put["status"], "completed", "{put}");
    assert_eq!(usd(&put["cost"]), 1_000);
    let text = raw(&format!(
        "{}/v1/jobs/{}",
        node.url,
        put["jobId"].as_str().expect("id")
    ))
    .await;
    assert!(
        text.contains(r#""breakdown":{"base":0,"usage":0.00000015,"total":0.001}"#),
        "{text}"
    );
    assert!(text.contains(r#""cost":0.001,"#), "{text}");

    // web with extract: 0.005 + 1 × 0.005 = 0.01 exactly.
    let (s, b) = post(&compute_url("web"), &json!({"payload": {"url": format!("{site}/page"), "extract": {"title": "title", "heading": "h1"}}}), Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let web = wait_job(&node, b["jobId"].as_str().expect("id")).await;
    assert_eq!(web["status"], "completed", "{web}");
    assert_eq!(
        web["result"]["extracted"],
        json!({"title": "Local page", "heading": "Hello compute"})
    );
    assert_eq!(usd(&web["cost"]), 10_000);
    // SSRF: a non-allow-listed private address fails the job, refunded.
    let (_, b) = post(
        &compute_url("web"),
        &json!({"payload": {"url": "http://169.254.169.254/latest/meta-data"}}),
        Some(&token),
    )
    .await;
    let blocked = wait_job(&node, b["jobId"].as_str().expect("id")).await;
    assert_eq!(
        (blocked["status"].clone(), usd(&blocked["cost"])),
        (json!("failed"), 0),
        "{blocked}"
    );

    // Redirects are followed and each hop checked again.
    let (_, b) = post(
        &compute_url("web"),
        &json!({"payload": {"url": format!("{site}/to-metadata")}}),
        Some(&token),
    )
    .await;
    let hop = wait_job(&node, b["jobId"].as_str().expect("id")).await;
    assert_eq!(hop["status"], "failed", "{hop}");
    assert!(
        hop["error"]
            .as_str()
            .unwrap_or("")
            .contains("169.254.169.254"),
        "{hop}"
    );
    let (_, b) = post(
        &compute_url("web"),
        &json!({"payload": {"url": format!("{site}/to-page"), "extract": {"h": "h1"}}}),
        Some(&token),
    )
    .await;
    let ok = wait_job(&node, b["jobId"].as_str().expect("id")).await;
    assert_eq!(ok["result"]["extracted"]["h"], "Hello compute", "{ok}");

    let spent = 1_000 + 10_000 + 10_000;
    assert_eq!(available(&node, wallet).await, 1_000_000 - spent);

    // Cancel: one worker busy on a slow page, the next job stays pending.
    let (_, slow) = post(
        &compute_url("web"),
        &json!({"payload": {"url": format!("{site}/slow")}}),
        Some(&token),
    )
    .await;
    let slow_id = slow["jobId"].as_str().expect("id").to_owned();
    wait_until("the slow job to start", Duration::from_secs(30), || async {
        get(&format!("{}/v1/jobs/{slow_id}", node.url), None)
            .await
            .1["status"]
            == "processing"
    })
    .await;
    let (_, queued) = post(
        &compute_url("web"),
        &json!({"payload": {"url": format!("{site}/page")}}),
        Some(&token),
    )
    .await;
    let queued_id = queued["jobId"].as_str().expect("id");
    assert_eq!(
        available(&node, wallet).await,
        1_000_000 - spent - 20_000,
        "two reservations of 0.01"
    );
    let (s, b) = post(
        &format!("{}/v1/jobs/{queued_id}/cancel", node.url),
        &json!({}),
        Some(&token),
    )
    .await;
    assert_eq!(
        (s, b.clone()),
        (StatusCode::OK, json!({"success": true, "jobId": queued_id})),
        "{b}"
    );
    let (s, _) = post(
        &format!("{}/v1/jobs/{slow_id}/cancel", node.url),
        &json!({}),
        Some(&token),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a processing job cannot be cancelled"
    );
    let other = login(&node.url, &stack.signer(3)).await;
    let (s, _) = post(
        &format!("{}/v1/jobs/{slow_id}/cancel", node.url),
        &json!({}),
        Some(&other),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    wait_job(&node, &slow_id).await;
    let spent = spent + 10_000;
    assert_eq!(available(&node, wallet).await, 1_000_000 - spent);

    // Balance, usage and the ledger add up.
    let b: Value = serde_json::from_str(&balance_text(&node, wallet).await).expect("json");
    assert_eq!(
        (
            usd(&b["available"]),
            usd(&b["pending"]),
            usd(&b["totalSpent"])
        ),
        (1_000_000 - spent, 0, spent),
        "{b}"
    );
    let (s, u) = get(&format!("{}/v1/usage?period=day", node.url), Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(usd(&u["totalCost"]), spent, "{u}");
    assert_eq!(u["byService"]["web"]["requests"], 5, "{u}");
    let (_, jobs) = get(&format!("{}/v1/jobs?limit=100", node.url), Some(&token)).await;
    assert_eq!(jobs["count"], 8, "{jobs}");
    let (s, _) = get(&format!("{}/v1/jobs", node.url), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = get(&format!("{}/v1/jobs/{slow_id}", node.url), None).await;
    assert_eq!(s, StatusCode::OK);
    let r = reqwest::Client::new()
        .get(format!("{}/v1/jobs/{slow_id}", node.url))
        .header("x-wallet-address", stack.signer(3).address().to_string())
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (s, h) = get(&format!("{}/v1/health", node.url), None).await;
    assert_eq!(s, StatusCode::OK, "{h}");
    assert_eq!(
        (
            h["service"].clone(),
            h["version"].clone(),
            h["activeJobs"].clone()
        ),
        (json!("chainfront-compute"), json!("v1"), json!(0)),
        "{h}"
    );
    assert!(h["uptime"].is_u64() && h["api_version"] == "v1", "{h}");
    let (_, m) = get(&format!("{}/v1/metrics", node.url), None).await;
    assert_eq!(usd(&m["totalRevenue"]), spent, "{m}");
    let (s, p) = get(&format!("{}/v1/pricing", node.url), None).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert!(
        raw(&format!("{}/v1/pricing", node.url))
            .await
            .contains(r#""pricePerUnit":0.000003,"#)
    );
    let (s, _) = post(&compute_url("trade"), &json!({"payload": {}}), Some(&token)).await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
    let (s, _) = post(
        &compute_url("data"),
        &json!({"payload": {"type": "orderbook"}}),
        Some(&token),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
}

/// Funds `i`'s balance with `amount` base units through a real deposit.
async fn fund(stack: &Stack, node: &Node, i: usize, amount: u64) -> String {
    let signer = stack.signer(i);
    let before = available(node, signer.address()).await;
    transfer(
        &stack.wallet(i),
        stack.deployment.usdc,
        stack.deployment.treasury,
        amount,
    )
    .await;
    wait_until("the deposit", Duration::from_secs(60), || async {
        available(node, signer.address()).await == before + amount
    })
    .await;
    login(&node.url, &signer).await
}

#[tokio::test]
async fn the_code_sandbox_contains_fork_bombs_loops_network_and_writes() {
    let stack = Stack::start().await;
    let node = start_node(node_config(
        &stack,
        &[("CHAINFRONT_COMPUTE__RECONCILE_INTERVAL_MS", "100")],
    ))
    .await;
    let token = fund(&stack, &node, 4, 5_000_000).await;
    let run = |language: &'static str, code: &'static str, timeout: u64| {
        let (url, token) = (format!("{}/v1/compute/code", node.url), token.clone());
        let node_url = node.url.clone();
        async move {
            let (s, b) = post(
                &url,
                &json!({"payload": {"language": language, "code": code, "timeout": timeout}}),
                Some(&token),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            let id = b["jobId"].as_str().expect("id").to_owned();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (_, j) = get(&format!("{node_url}/v1/jobs/{id}"), None).await;
                if j["status"] == "completed" || j["status"] == "failed" {
                    return j;
                }
                assert!(Instant::now() < deadline, "code job did not finish");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let ok = run("python", "print(6 * 7)", 10_000).await;
    assert_eq!(
        (
            ok["result"]["stdout"].clone(),
            ok["result"]["exitCode"].clone()
        ),
        (json!("42\n"), json!(0)),
        "{ok}"
    );
    let js = run(
        "javascript",
        "console.log([1,2,3].map(x => x * 2).join(','))",
        10_000,
    )
    .await;
    assert_eq!(js["result"]["stdout"], "2,4,6\n", "{js}");

    let bomb = run("bash", ":(){ :|:& };: ; sleep 1; echo survived", 5_000).await;
    assert_eq!(bomb["status"], "completed", "{bomb}");
    assert!(
        bomb["result"]["stderr"]
            .as_str()
            .unwrap_or("")
            .contains("fork")
            || bomb["result"]["timedOut"] == true,
        "{bomb}"
    );
    let looped = run("python", "while True: pass", 1_500).await;
    assert_eq!(looped["result"]["timedOut"], true, "{looped}");
    let net = run(
        "python",
        "import urllib.request\nurllib.request.urlopen('http://1.1.1.1', timeout=3)",
        10_000,
    )
    .await;
    assert_ne!(net["result"]["exitCode"], 0, "{net}");
    assert!(
        net["result"]["stderr"]
            .as_str()
            .unwrap_or("")
            .contains("Network is unreachable")
            || net["result"]["stderr"]
                .as_str()
                .unwrap_or("")
                .contains("Error"),
        "{net}"
    );
    let write = run("bash", "echo x > /etc/chainfront-escape; echo x > /usr/escape; echo ok > /work/inside && cat /work/inside", 5_000).await;
    let err = write["result"]["stderr"].as_str().unwrap_or("");
    assert!(
        err.contains("Read-only file system") || err.contains("Permission denied"),
        "{write}"
    );
    assert_eq!(write["result"]["stdout"], "ok\n", "{write}");
    assert!(!std::path::Path::new("/etc/chainfront-escape").exists());
    // Charged per second: 0.01 + seconds × 0.001, exact to the base unit.
    let ms = ok["result"]["durationMs"].as_u64().expect("ms");
    assert_eq!(usd(&ok["cost"]), (10_000 + ms).max(10_000), "{ok}");
    let (s, b) = post(
        &format!("{}/v1/compute/code", node.url),
        &json!({"payload": {"language": "go", "code": "package main"}}),
        Some(&token),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED, "{b}");
}

/// A small OpenAI-compatible upstream: `/chat/completions`, plain and streamed.
async fn llm_stub() -> String {
    use axum::routing::post;
    async fn chat(axum::Json(req): axum::Json<Value>) -> axum::response::Response {
        use axum::response::IntoResponse;
        let words = ["In ", "the ", "realm ", "of ", "code..."];
        if req["stream"] == true {
            let mut body = String::new();
            for w in words {
                body.push_str(&format!(
                    "data: {}\n\n",
                    json!({"choices": [{"delta": {"content": w}, "finish_reason": null}]})
                ));
            }
            body.push_str(&format!(
                "data: {}\n\n",
                json!({"choices": [{"delta": {}, "finish_reason": "stop"}]})
            ));
            body.push_str(&format!(
                "data: {}\n\n",
                json!({"choices": [], "usage": {"prompt_tokens": 25, "completion_tokens": 150}})
            ));
            body.push_str("data: [DONE]\n\n");
            // One event every 50 ms, like a model generating.
            let events: Vec<String> = body.split_inclusive("\n\n").map(str::to_owned).collect();
            let stream =
                futures_util::StreamExt::then(futures_util::stream::iter(events), |e| async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::convert::Infallible>(e)
                });
            (
                [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        } else {
            axum::Json(json!({
                "model": req["model"],
                "choices": [{"message": {"role": "assistant", "content": "The weather is sunny."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}
            }))
            .into_response()
        }
    }
    let app = axum::Router::new().route("/v1/chat/completions", post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn llm_jobs_and_streams_are_metered_in_tokens() {
    let stack = Stack::start().await;
    let upstream = llm_stub().await;
    let node = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_COMPUTE__RECONCILE_INTERVAL_MS", "100"),
            ("CHAINFRONT_COMPUTE__LLM__BASE_URL", &upstream),
            (
                "CHAINFRONT_COMPUTE__LLM__MODELS",
                "{claude-sonnet-4-20250514 = \"stub-model\"}",
            ),
        ],
    ))
    .await;
    let wallet = stack.signer(5).address();
    let token = fund(&stack, &node, 5, 1_000_000).await;
    let payload = json!({"model": "claude-sonnet-4-20250514", "messages": [{"role": "user", "content": "What's the weather?"}], "maxTokens": 100});
    let (s, b) = post(
        &format!("{}/v1/compute/llm", node.url),
        &json!({"payload": payload}),
        Some(&token),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let j = wait_job(&node, b["jobId"].as_str().expect("id")).await;
    assert_eq!(
        j["result"],
        json!({"content": "The weather is sunny.", "model": "claude-sonnet-4-20250514", "usage": {"inputTokens": 10, "outputTokens": 5}, "stopReason": "end_turn"})
    );
    // 15 tokens × 0.000003 = 0.000045, below the 0.001 minimum.
    assert_eq!(usd(&j["cost"]), 1_000);

    // The stream: start, text…, usage, done; 175 tokens → 0.000525 → 0.001 minimum.
    let text = reqwest::Client::new()
        .post(format!("{}/v1/stream/llm", node.url))
        .bearer_auth(&token)
        .json(&json!({"payload": payload}))
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("text");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event json"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "start", "text", "text", "text", "text", "text", "usage", "done"
        ],
        "{text}"
    );
    assert_eq!(
        events[6]["usage"],
        json!({"inputTokens": 25, "outputTokens": 150})
    );
    assert_eq!(events[7]["response"]["content"], "In the realm of code...");
    wait_until(
        "the stream's settlement",
        Duration::from_secs(30),
        || async { settled(&node, wallet).await == (1_000_000 - 2_000, 2_000) },
    )
    .await;

    // A client that leaves after the first bytes is still charged for the
    // generation (the stream is drained and settled without it).
    let mut resp = reqwest::Client::new()
        .post(format!("{}/v1/stream/llm", node.url))
        .bearer_auth(&token)
        .json(&json!({"payload": payload}))
        .send()
        .await
        .expect("stream");
    let first = resp.chunk().await.expect("chunk").expect("some bytes");
    assert!(String::from_utf8_lossy(&first).contains("start"));
    drop(resp);
    wait_until(
        "the abandoned stream's settlement",
        Duration::from_secs(30),
        || async { settled(&node, wallet).await == (1_000_000 - 3_000, 3_000) },
    )
    .await;
    let (_, l) = get(&format!("{}/v1/ledger", node.url), Some(&token)).await;
    let charges = l["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["kind"] == "charge")
        .count();
    assert_eq!(charges, 3, "{l}");
}

fn bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_chainfront"))
}

/// `chainfront run` as a child process on `port`.
fn spawn_node(stack: &Stack, port: u16, extra: &[(&str, &str)]) -> crate::crash::Indexer {
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("run")
        .arg("--config")
        .arg(crate::harness::local_toml())
        .envs(stack.env())
        .env("CHAINFRONT_API__LISTEN", format!("127.0.0.1:{port}"))
        .env("CHAINFRONT_RATE_LIMITS__ENABLED", "false")
        .env("CHAINFRONT_PROVISIONING__ENABLED", "false")
        .env(
            "CHAINFRONT_JWT_SECRET",
            "a-test-secret-of-at-least-32-bytes-long",
        )
        .env("CHAINFRONT_API__PUBLIC_URL", crate::auth::PUBLIC_URL)
        .env("CHAINFRONT_CHAINS__LOCAL__POLL_INTERVAL_MS", "50")
        .env("CHAINFRONT_COMPUTE__RECONCILE_INTERVAL_MS", "100")
        .env("CHAINFRONT_COMPUTE__LEASE_MS", "1500")
        .env("CHAINFRONT_LOG__FILTER", "warn")
        .envs(extra.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    crate::crash::Indexer(cmd.spawn().expect("spawn chainfront run"))
}

#[tokio::test]
async fn a_node_killed_mid_job_loses_no_job_and_charges_none_twice() {
    let stack = Stack::start().await;
    let site = local_site().await;
    let port = chainfront::devnet::free_port().expect("port");
    let url = format!("http://127.0.0.1:{port}");
    let allow = [
        ("CHAINFRONT_COMPUTE__WEB__ALLOW", "[\"127.0.0.1/32\"]"),
        ("CHAINFRONT_COMPUTE__WORKERS", "2"),
    ];
    let mut child = spawn_node(&stack, port, &allow);
    let signer = stack.signer(6);
    let wallet = signer.address();
    wait_until("the node", Duration::from_secs(60), || async {
        reqwest::get(format!("{url}/v1/health")).await.is_ok()
    })
    .await;
    let ledger = chainfront::ledger::Ledger::new(crate::crash::db(&stack, 0).await, Duration::ZERO);
    transfer(
        &stack.wallet(6),
        stack.deployment.usdc,
        stack.deployment.treasury,
        1_000_000,
    )
    .await;
    wait_until("the deposit", Duration::from_secs(60), || async {
        ledger.balance(wallet).await.expect("balance").available.0 == 1_000_000
    })
    .await;
    let token = login(&url, &signer).await;
    // Two slow jobs (running when the node dies) and three queued behind them.
    let mut ids = Vec::new();
    for i in 0..5 {
        let page = if i < 2 { "slow" } else { "page" };
        let (s, b) = post(
            &format!("{url}/v1/compute/web"),
            &json!({"payload": {"url": format!("{site}/{page}")}}),
            Some(&token),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        ids.push(b["jobId"].as_str().expect("id").to_owned());
    }
    wait_until("the slow jobs to run", Duration::from_secs(30), || async {
        get(&format!("{url}/v1/jobs/{}", ids[0]), None).await.1["status"] == "processing"
    })
    .await;
    child.kill();
    let during = ledger.balance(wallet).await.expect("balance");
    assert_eq!(
        during.available.0 + during.pending.0,
        1_000_000,
        "nothing charged yet"
    );

    let _restarted = spawn_node(&stack, port, &allow);
    wait_until("the node again", Duration::from_secs(60), || async {
        reqwest::get(format!("{url}/v1/health")).await.is_ok()
    })
    .await;
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, j) = get(&format!("{url}/v1/jobs/{id}"), None).await;
            if j["status"] == "completed" {
                assert_eq!(usd(&j["cost"]), 10_000, "{j}");
                break;
            }
            assert!(j["status"] != "failed", "{j}");
            assert!(Instant::now() < deadline, "job {id} lost: {j}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let after = ledger.balance(wallet).await.expect("balance");
    assert_eq!(
        (after.available.0, after.pending.0, after.spent.0),
        (1_000_000 - 50_000, 0, 50_000)
    );
    let charges = ledger
        .entries(wallet, 100)
        .await
        .expect("entries")
        .into_iter()
        .filter(|e| e.kind == "charge")
        .count();
    assert_eq!(charges, 5, "one charge per job");
}

#[tokio::test]
async fn the_python_client_deposits_proves_runs_jobs_and_reads_usage() {
    let stack = Stack::start().await;
    let site = local_site().await;
    let node = start_node(node_config(
        &stack,
        &[("CHAINFRONT_COMPUTE__WEB__ALLOW", "[\"127.0.0.1/32\"]")],
    ))
    .await;
    let python = crate::harness::repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/bootstrap first (it creates .venv with eth-account and requests)"
    );
    let key = format!("0x{}", alloy::hex::encode(stack.signer(3).to_bytes()));
    let out = tokio::process::Command::new(python)
        .arg(crate::harness::repo_root().join("tests/clients/compute_client.py"))
        .args([
            "--api",
            &node.url,
            "--rpc",
            &stack.anvil.endpoint(),
            "--key",
            &key,
        ])
        .args([
            "--usdc",
            &stack.deployment.usdc.to_string(),
            "--treasury",
            &stack.deployment.treasury.to_string(),
        ])
        .args([
            "--page",
            &format!("{site}/page"),
            "--public-url",
            crate::auth::PUBLIC_URL,
        ])
        .output()
        .await
        .expect("python client runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("summary json");
    assert_eq!(summary["credited"], "2.50");
    assert_eq!(
        summary["web"],
        json!({"title": "Local page", "heading": "Hello compute"})
    );
    // 0.001 + 0.001 (storage minimum) + 0.01 (web) = 0.012.
    assert_eq!(summary["usage"]["totalCost"], "0.012", "{summary}");
    assert_eq!(
        available(&node, stack.signer(3).address()).await,
        2_500_000 - 12_000
    );
}

#[tokio::test]
async fn callbacks_are_signed_webhooks_verified_limits_counted_and_trust_is_opt_in() {
    use std::sync::{Arc, Mutex};
    let stack = Stack::start().await;
    // A callback receiver that fails its first delivery (the node retries).
    type Seen = Arc<Mutex<Vec<(String, String)>>>;
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    let mut s = seen.lock().expect("lock");
                    let sig = headers
                        .get("x-clodds-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    s.push((sig, body));
                    if s.len() == 1 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let node = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_COMPUTE__RECONCILE_INTERVAL_MS", "100"),
            ("CHAINFRONT_COMPUTE__WEB__ALLOW", "[\"127.0.0.1/32\"]"),
            ("CHAINFRONT_COMPUTE__CALLBACKS__BASE_DELAY_MS", "50"),
            ("CHAINFRONT_RATE_LIMITS__ENABLED", "true"),
            (
                "CHAINFRONT_RATE_LIMITS__COMPUTE",
                "{requests = 100, window_secs = 60, wallet_requests = 3}",
            ),
        ],
    ))
    .await;
    let signer = stack.signer(4);
    let wallet = signer.address();
    let token = fund(&stack, &node, 4, 1_000_000).await;

    // The wallet's secret, with proof only.
    let (s, _) = get(&format!("{}/v1/webhook-secret", node.url), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, sec) = get(&format!("{}/v1/webhook-secret", node.url), Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{sec}");
    let secret = sec["secret"].as_str().expect("secret").to_owned();

    // 1: a job with a callback: delivered (after one retry), signed over the raw body.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/compute/storage", node.url))
        .bearer_auth(&token)
        .json(&json!({"payload": {"operation": "put", "key": "k", "content": "v"}, "callbackUrl": hook}))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "2");
    let job: Value = r.json().await.expect("json");
    wait_until("the callback", Duration::from_secs(30), || async {
        seen.lock().expect("lock").len() >= 2
    })
    .await;
    let (sig, body) = seen.lock().expect("lock")[1].clone();
    assert_eq!(
        sig,
        chainfront::compute::webhook::sign(secret.as_bytes(), body.as_bytes())
    );
    let delivered: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (delivered["jobId"].clone(), delivered["status"].clone()),
        (job["jobId"].clone(), json!("completed"))
    );

    // 2: an incoming webhook runs a job when signed with the wallet's secret.
    let hook_url = format!("{}/v1/webhook/{wallet}/storage", node.url);
    let raw = r#"{"payload":{"operation":"list"}}"#;
    let send = |sig: Option<(&'static str, String)>| {
        let mut r = reqwest::Client::new()
            .post(&hook_url)
            .header("content-type", "application/json")
            .body(raw);
        if let Some((h, v)) = sig {
            r = r.header(h, v);
        }
        r.send()
    };
    assert_eq!(
        send(None).await.expect("send").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(Some(("x-webhook-signature", "00".repeat(32))))
            .await
            .expect("send")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let good = chainfront::compute::webhook::sign(secret.as_bytes(), raw.as_bytes());
    let r = send(Some(("x-hub-signature-256", format!("sha256={good}"))))
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["ok"], true, "{b}");
    let r = send(Some(("x-webhook-signature", good)))
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);

    // 3: the per-wallet limit (3 per window here): the next request is 429 with Retry-After.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/compute/storage", node.url))
        .bearer_auth(&token)
        .json(&json!({"payload": {"operation": "list"}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    assert!(r.headers().get("x-ratelimit-remaining").is_some());

    // 4: /metrics carries the Compute counters.
    let text = raw_text(&format!("{}/metrics", node.url)).await;
    assert!(
        text.contains("chainfront_compute_requests_total{service=\"storage\"} 3"),
        "{text}"
    );
    assert!(text.contains("chainfront_compute_active_jobs"), "{text}");

    // 5: a per-request wallet signature (no token) also proves the wallet;
    // it is single-use.
    let nonce: Value = reqwest::get(format!("{}/auth/nonce", node.url))
        .await
        .expect("nonce")
        .json()
        .await
        .expect("json");
    let second_node = start_node(node_config(&stack, &[])).await;
    let body = r#"{"payload":{"operation":"list"}}"#;
    let ts = chainfront::ledger::now_ms() / 1000;
    let msg = chainfront::auth::request_message(
        nonce["domain"].as_str().expect("domain"),
        nonce["chainId"].as_u64().expect("chain"),
        "POST",
        "/v1/compute/storage",
        body.as_bytes(),
        ts,
    );
    let sig = signer.sign_message_sync(msg.as_bytes()).expect("sign");
    let signed = || {
        reqwest::Client::new()
            .post(format!("{}/v1/compute/storage", second_node.url))
            .header("content-type", "application/json")
            .header("x-wallet-address", wallet.to_string())
            .header("x-wallet-timestamp", ts.to_string())
            .header(
                "x-wallet-signature",
                format!("0x{}", alloy::hex::encode(sig.as_bytes())),
            )
            .body(body)
            .send()
    };
    let r = signed().await.expect("signed");
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    assert_eq!(
        signed().await.expect("replay").status(),
        StatusCode::UNAUTHORIZED,
        "single use"
    );

    // 6: a bare wallet field is refused here, accepted by a node that opts in.
    let bare = json!({"wallet": wallet.to_string(), "payload": {"operation": "list"}});
    let (s, b) = post(&format!("{}/v1/compute/storage", node.url), &bare, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let trusting = start_node(node_config(
        &stack,
        &[("CHAINFRONT_COMPUTE__TRUST_WALLET_FIELD", "true")],
    ))
    .await;
    let (s, b) = post(&format!("{}/v1/compute/storage", trusting.url), &bare, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = post(
        &format!("{}/v1/compute/storage", trusting.url),
        &json!({"payload": {"operation": "list"}}),
        None,
    )
    .await;
    // No wallet at all is still refused: with x402 on (the default) as the
    // job's payment offer (402, PAYMENT-REQUIRED; tests/it/x402.rs), else 401.
    assert_eq!(
        s,
        StatusCode::PAYMENT_REQUIRED,
        "no wallet at all is still refused"
    );
    let no_x402 = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_COMPUTE__TRUST_WALLET_FIELD", "true"),
            ("CHAINFRONT_X402__ENABLED", "false"),
        ],
    ))
    .await;
    let (s, _) = post(
        &format!("{}/v1/compute/storage", no_x402.url),
        &json!({"payload": {"operation": "list"}}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

async fn raw_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

/// Random sequences of every ledger operation against a real redis-server:
/// after each step `available + pending + spent − owed = deposited`,
/// `available` is never negative, and the wallet's stream has one entry per
/// movement. (A seeded xorshift, printed, so a failure can be replayed with
/// LEDGER_TEST_SEED.)
#[tokio::test]
async fn ledger_arithmetic_holds_under_random_operations() {
    use chainfront::ledger::{Balance, DepositRef, Ledger, NewJob, Settlement, Source, Usd};
    let redis = chainfront::devnet::RedisServer::start().expect("redis");
    let conn = chainfront_indexer::conn::connect(&redis.url())
        .await
        .expect("conn");
    let ledger = Ledger::new(conn, Duration::ZERO);
    let wallet = Address::repeat_byte(0x42);
    let mut seed: u64 = std::env::var("LEDGER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| chainfront::ledger::now_ms() | 1);
    eprintln!("LEDGER_TEST_SEED={seed}");
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut deposits: Vec<DepositRef> = Vec::new();
    let mut open: Vec<(String, u64)> = Vec::new();
    for step in 0..400u64 {
        match next(6) {
            0 | 1 => {
                // A new deposit, or the same one again (idempotent).
                let dep = if deposits.is_empty() || next(3) > 0 {
                    let d = DepositRef {
                        chain_id: 1 + next(2),
                        tx: B256::from(U256::from(step)),
                        log_index: next(4),
                        block: step,
                    };
                    deposits.push(d);
                    d
                } else {
                    deposits[next(deposits.len() as u64) as usize]
                };
                ledger
                    .credit_deposit(&dep, wallet, Usd(1 + next(5_000_000)), Source::Indexer)
                    .await
                    .expect("credit");
            }
            2 if !deposits.is_empty() => {
                let d = deposits[next(deposits.len() as u64) as usize];
                ledger
                    .reverse_deposit(&d, wallet, "test")
                    .await
                    .expect("reverse");
            }
            3 => {
                let id = format!("job_{:032x}", step);
                let reserve = 1 + next(3_000_000);
                let o = ledger
                    .open_job(&NewJob {
                        job_id: &id,
                        request_id: "req",
                        service: "web",
                        wallet,
                        reserve: Usd(reserve),
                        now_ms: step,
                        payload: "{}",
                        callback: "",
                        ttl_secs: 60,
                        run_here: None,
                    })
                    .await
                    .expect("open");
                if matches!(o, chainfront::ledger::Opened::Queued(_)) {
                    open.push((id, reserve));
                }
            }
            4 if !open.is_empty() => {
                let (id, reserve) = open.remove(next(open.len() as u64) as usize);
                let cost = next(reserve + 1_000); // sometimes more than reserved: capped
                for _ in 0..2 {
                    // Settling twice charges once.
                    ledger
                        .settle_job(&Settlement {
                            job_id: &id,
                            wallet,
                            status: "completed",
                            cost: Usd(cost),
                            result: "",
                            usage: "",
                            error: "",
                            duration_ms: 1,
                            now_ms: step,
                            ttl_secs: 60,
                        })
                        .await
                        .expect("settle");
                }
            }
            _ if !open.is_empty() => {
                let (id, _) = open.remove(next(open.len() as u64) as usize);
                ledger.cancel_job(&id, wallet).await.expect("cancel");
            }
            _ => {}
        }
        let b: Balance = ledger.balance(wallet).await.expect("balance");
        assert_eq!(
            i128::from(b.available.0) + i128::from(b.pending.0) + i128::from(b.spent.0)
                - i128::from(b.owed.0),
            i128::from(b.deposited.0),
            "step {step}: {b:?}"
        );
        assert!(
            b.owed.0 == 0 || b.available.0 == 0,
            "owed is paid before anything is available: {b:?}"
        );
    }
    let entries = ledger.entries(wallet, 10_000).await.expect("entries");
    let credits = entries.iter().filter(|e| e.kind == "credit").count();
    let reversals = entries.iter().filter(|e| e.kind == "reversal").count();
    let keys: Vec<String> = deposits.iter().map(DepositRef::credit_key).collect();
    let records = ledger.credit_records(&keys).await.expect("records");
    let live = {
        let mut uniq: Vec<(String, bool)> = keys
            .iter()
            .cloned()
            .zip(
                records
                    .iter()
                    .map(|r| r.as_ref().is_some_and(|r| r.credited)),
            )
            .collect();
        uniq.sort();
        uniq.dedup_by(|a, b| a.0 == b.0);
        uniq.iter().filter(|(_, c)| *c).count()
    };
    assert_eq!(
        credits - reversals,
        live,
        "each live credit is one credit entry more than its reversals"
    );
}

#[tokio::test]
async fn data_answers_from_node_state_and_commands_serve_mapped_services() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("trade.sh");
    // The provisioning command contract: JSON request on stdin, JSON answer on stdout.
    std::fs::write(
        &script,
        "#!/bin/sh\nreq=$(cat)\nprintf '{\"result\": {\"echo\": %s}, \"units\": 2}' \"$req\"\n",
    )
    .expect("script");
    let commands = format!("{{trade = [\"sh\", \"{}\"]}}", script.display());
    let node = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_COMPUTE__RECONCILE_INTERVAL_MS", "100"),
            ("CHAINFRONT_COMPUTE__COMMANDS", &commands),
        ],
    ))
    .await;
    let wallet = stack.signer(1).address();
    let token = fund(&stack, &node, 1, 1_000_000).await;
    let run = |svc: &'static str, payload: Value| {
        let (url, token) = (format!("{}/v1/compute/{svc}", node.url), token.clone());
        async move {
            let (s, b) = post(&url, &json!({"payload": payload}), Some(&token)).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            b["jobId"].as_str().expect("id").to_owned()
        }
    };
    let id = run("data", json!({"type": "balance"})).await;
    let j = wait_job(&node, &id).await;
    // 10,000 USDC minted, 1 deposited.
    assert_eq!(j["result"]["units"], "9999000000", "{j}");
    assert_eq!(usd(&j["cost"]), 2_000, "0.001 + 1 × 0.001");
    let id = run("data", json!({"type": "deposits"})).await;
    let j = wait_job(&node, &id).await;
    assert_eq!(j["result"]["count"], 1, "{j}");
    assert_eq!(j["result"]["deposits"][0]["amount"], "1.00", "{j}");
    let id = run("data", json!({"type": "markets"})).await;
    assert_eq!(
        wait_job(&node, &id).await["result"]["count"],
        1,
        "the demo market"
    );
    let id = run("trade", json!({"action": "quote"})).await;
    let j = wait_job(&node, &id).await;
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["result"]["echo"]["payload"], json!({"action": "quote"}));
    assert_eq!(
        j["result"]["echo"]["wallet"],
        chainfront_indexer::keys::lower(wallet)
    );
    // 0.01 + 2 × 0.01.
    assert_eq!(usd(&j["cost"]), 30_000, "{j}");
    let (s, _) = post(
        &format!("{}/v1/compute/gpu", node.url),
        &json!({"payload": {}}),
        Some(&token),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED, "gpu is not mapped");
}

/// A provider that leaves `mixHash` out of its blocks does not break deposit
/// proofs on a chain followed at its `safe` head: the ledger reads the
/// indexer's minimal header for the tag, as the indexer does.
#[tokio::test]
async fn a_deposit_is_proven_through_a_provider_without_mix_hash_at_the_safe_head() {
    use crate::fault_proxy::{Fault, FaultProxy};
    use alloy::providers::ext::AnvilApi;
    let stack = Stack::start().await;
    let other = other_chain(&stack, &[1]).await;
    let proxy = FaultProxy::start(&other.anvil.endpoint()).await;
    proxy.inject(None, Fault::StripMixHash, None);
    let mut env: Vec<(String, String)> = other_env(&other, 0)
        .into_iter()
        .filter(|(k, _)| k != "CHAINFRONT_CHAINS__OTHER__RPC_URLS")
        .collect();
    env.push((
        "CHAINFRONT_CHAINS__OTHER__RPC_URLS".into(),
        format!("[\"{}\"]", proxy.url),
    ));
    env.push(("CHAINFRONT_CHAINS__OTHER__HEAD".into(), "safe".into()));
    let node = start_node(node_config(&stack, &with(&env, &[]))).await;
    let signer = stack.signer(1);
    let wallet = signer.address();
    let p2 =
        chainfront::deploy::signing_provider(&other.anvil.endpoint(), signer.clone()).expect("p2");
    let tx = transfer(&p2, other.usdc, stack.deployment.treasury, 2_000_000).await;
    let url = format!("{}/v1/deposit", node.url);
    // anvil's `safe` block trails `latest` by 32: not yet safe.
    let (s, b) = post(&url, &proof(wallet, tx, "other", "2"), None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "not safe yet: {b}");
    p2.anvil_mine(Some(40), None).await.expect("mine");
    let (s, b) = post(&url, &proof(wallet, tx, "other", "2"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["success"], json!(true), "{b}");
    assert!(
        proxy.injected("strip_mix_hash") > 0,
        "the blocks came without mixHash"
    );
}
