//! Clockchain prediction markets end to end: real stakes on anvil, the
//! indexer, and `/v1` (also `/ai_agent/v1`, `/api/chain/v1`) with real
//! signatures — the documented shapes, every submission rule and its error
//! string, one submission per transaction hash under concurrency, reorgs,
//! and the rate limits per IP and per wallet.

use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use chainfront::deploy::{DEMO_MARKET_UUID, mined};
use chainfront_indexer::contracts::{MockCbBTC, SubmissionStakes};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::Stack;
use crate::vms::{Node, indexed, node_config, start_node};

const ETH: u64 = 1_000_000_000_000_000_000;

/// `n` thousandths of an ETH in wei.
fn milli_eth(n: u64) -> U256 {
    U256::from(n) * U256::from(ETH / 1000)
}

pub async fn get(url: &str) -> (StatusCode, Value) {
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn post(url: &str, body: &Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn error(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
}

/// `error` and, for the documented strings, `: detail` after it.
fn full(body: &Value) -> String {
    match body["detail"].as_str() {
        Some(detail) => format!("{}: {detail}", error(body)),
        None => error(body).to_owned(),
    }
}

fn stakes(stack: &Stack) -> Address {
    stack.deployment.submission_stakes.expect("stakes deployed")
}

/// Head block timestamp.
async fn chain_time(p: &DynProvider) -> u64 {
    p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .expect("block")
        .expect("latest")
        .header
        .timestamp
}

/// Moves chain time forward and mines a block.
async fn warp(p: &DynProvider, secs: u64) {
    let _: Value = p
        .raw_request("evm_increaseTime".into(), (secs,))
        .await
        .expect("increaseTime");
    let _: Value = p.raw_request("evm_mine".into(), ()).await.expect("mine");
}

/// Opens a market with a fresh UUID from `start` to `end` (offsets from now,
/// in seconds), the deployer as oracle. Returns its UUID.
pub async fn create_market(stack: &Stack, start: i64, end: i64, actor: &str) -> String {
    let uuid = uuid_v4();
    let now = chain_time(&stack.deployer).await as i64;
    let metadata = json!({"actor": {"id": format!("actor-{actor}"), "name": actor}, "title": "t"});
    mined(
        SubmissionStakes::new(stakes(stack), &stack.deployer)
            .createMarket(
                chainfront::deploy::market_id(&uuid).expect("id"),
                (now + start) as u64,
                (now + end) as u64,
                vec![stack.signer(0).address()],
                metadata.to_string(),
            )
            .send()
            .await
            .expect("createMarket"),
        "createMarket",
    )
    .await
    .expect("mined");
    uuid
}

fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    for (i, x) in b.iter_mut().enumerate() {
        *x = keccak256(format!("{:?}{i}", Instant::now()).as_bytes())[0];
    }
    b
}

/// Wallet `i` sends `value` wei to `to` with `data`; returns the mined tx hash.
pub async fn send(stack: &Stack, i: usize, to: Address, value: U256, data: Bytes) -> B256 {
    let tx = TransactionRequest::default()
        .with_to(to)
        .with_value(value)
        .with_input(data);
    let receipt = stack
        .wallet(i)
        .send_transaction(tx)
        .await
        .expect("send")
        .get_receipt()
        .await
        .expect("receipt");
    receipt.transaction_hash
}

/// Wallet `i` pays `value` wei to the stakes escrow by a plain transfer.
pub async fn pay_eth(stack: &Stack, i: usize, value: U256) -> B256 {
    send(stack, i, stakes(stack), value, Bytes::new()).await
}

/// Wallet `i` calls `submit` itself, paying stake + 7% in ETH.
pub async fn submit_direct(
    stack: &Stack,
    i: usize,
    market: &str,
    kind: u8,
    text: &str,
    stake: U256,
) -> B256 {
    let c = SubmissionStakes::new(stakes(stack), stack.wallet(i));
    let fee = (stake * U256::from(700u64)).div_ceil(U256::from(10_000u64));
    let r = mined(
        c.submit(
            chainfront::deploy::market_id(market).expect("id"),
            kind,
            text.to_owned(),
            Address::ZERO,
            stake,
        )
        .value(stake + fee)
        .send()
        .await
        .expect("submit"),
        "submit",
    )
    .await
    .expect("submit mined");
    r.transaction_hash
}

/// How the creator signs.
#[derive(Clone, Copy)]
pub enum Sig {
    /// EIP-191 personal_sign (ethers' signMessage).
    PersonalSign,
    /// Raw signature of keccak256(message) (eth_account's unsafe_sign_hash), no 0x.
    RawHashBareHex,
}

/// The documented body, signed by `signer`.
#[allow(clippy::too_many_arguments)]
pub fn body(
    signer: &PrivateKeySigner,
    market: &str,
    kind: &str,
    text: Option<&str>,
    stake: &str,
    currency: &str,
    tx: &str,
    sig: Sig,
) -> Value {
    let message = format!("{market}:{}:{stake}:{tx}", text.unwrap_or("null"));
    let signature = match sig {
        Sig::PersonalSign => format!(
            "0x{}",
            alloy::hex::encode(
                signer
                    .sign_message_sync(message.as_bytes())
                    .expect("sign")
                    .as_bytes()
            )
        ),
        Sig::RawHashBareHex => alloy::hex::encode(
            signer
                .sign_hash_sync(&keccak256(message.as_bytes()))
                .expect("sign")
                .as_bytes(),
        ),
    };
    json!({
        "market_id": market,
        "creator_wallet": signer.address().to_string(),
        "predicted_text": text,
        "submission_type": kind,
        "initial_stake_amount": stake,
        "currency": currency,
        "transaction_hash": tx,
        "signature": signature,
    })
}

/// Polls `url` until `done` holds for its answer (generous deadline, CI is loaded).
pub async fn wait_for(url: &str, what: &str, done: impl Fn(StatusCode, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(url).await;
        if done(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn node(stack: &Stack, extra: &[(&str, &str)]) -> Node {
    let node = start_node(node_config(stack, extra)).await;
    indexed(&node, stack).await;
    node
}

#[tokio::test]
async fn health_markets_fees_and_statuses_as_documented() {
    let stack = Stack::start().await;
    let upcoming = create_market(&stack, 3_600, 7_200, "Upcoming").await;
    let closing = create_market(&stack, -10, 300, "Closing").await;
    let resolving = create_market(&stack, -10, 300, "Resolving").await;
    // An original in the market that gets resolved and paid out.
    submit_direct(&stack, 1, &resolving, 0, "the winner", milli_eth(100)).await;
    let n = node(&stack, &[]).await;
    let v1 = format!("{}/v1", n.url);

    // /v1/health and /health name the treasury (the stakes escrow).
    let (status, h) = get(&format!("{v1}/health")).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["api_version"], "v1");
    assert_eq!(h["rate_limit"], "10 per minute for submissions");
    assert_eq!(h["treasury"], stakes(&stack).to_string());
    let ts = h["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    let (_, h) = get(&format!("{}/health", n.url)).await;
    assert_eq!(h["treasury"], stakes(&stack).to_string());

    // GET /v1/markets: the active ones by default, documented fields, on every prefix.
    let (status, list) = get(&format!("{v1}/markets")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["markets"]
        .as_array()
        .expect("markets")
        .iter()
        .map(|m| m["market_id"].as_str().expect("id"))
        .collect();
    assert_eq!(list["count"], ids.len());
    assert!(
        ids.contains(&DEMO_MARKET_UUID) && ids.contains(&closing.as_str()),
        "{list}"
    );
    assert!(
        !ids.contains(&upcoming.as_str()),
        "upcoming is not accepting submissions"
    );
    let demo = list["markets"]
        .as_array()
        .expect("markets")
        .iter()
        .find(|m| m["market_id"] == DEMO_MARKET_UUID)
        .expect("demo market");
    for field in [
        "market_id",
        "actor",
        "start_time",
        "end_time",
        "oracle_wallets",
        "existing_submissions",
        "status",
        "created_at",
    ] {
        assert!(!demo[field].is_null(), "{field} in {demo}");
    }
    assert_eq!(demo["actor"]["name"], "Demo Actor");
    assert_eq!(demo["status"], "active");
    assert_eq!(demo["existing_submissions"], 0);
    assert_eq!(
        demo["oracle_wallets"],
        json!([stack.signer(0).address().to_string()])
    );
    assert!(
        demo["created_at"]
            .as_str()
            .expect("created_at")
            .ends_with(".000Z")
    );
    for prefix in ["/ai_agent/v1", "/api/chain/v1"] {
        let (status, other) = get(&format!("{}{prefix}/markets", n.url)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(other["count"], list["count"], "{prefix}");
    }

    // ?status= reaches every status; the head block's time decides.
    let statuses = |body: &Value| -> Vec<(String, String)> {
        body["markets"]
            .as_array()
            .expect("markets")
            .iter()
            .map(|m| {
                (
                    m["market_id"].as_str().expect("id").to_owned(),
                    m["status"].as_str().expect("status").to_owned(),
                )
            })
            .collect()
    };
    let (_, up) = get(&format!("{v1}/markets?status=upcoming")).await;
    assert_eq!(
        statuses(&up),
        vec![(upcoming.clone(), "upcoming".to_owned())]
    );
    let (status, bad) = get(&format!("{v1}/markets?status=open")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&bad).starts_with("Invalid status"), "{bad}");
    warp(&stack.deployer, 400).await;
    // The oracle resolves; the winner claims the pool.
    let stakes_owner = SubmissionStakes::new(stakes(&stack), &stack.deployer);
    let rid = chainfront::deploy::market_id(&resolving).expect("id");
    mined(
        stakes_owner
            .resolveMarket(rid, U256::from(1))
            .send()
            .await
            .expect("resolve"),
        "resolve",
    )
    .await
    .expect("resolved");
    mined(
        SubmissionStakes::new(stakes(&stack), stack.wallet(1))
            .claim(rid, Address::ZERO)
            .send()
            .await
            .expect("claim"),
        "claim",
    )
    .await
    .expect("claimed");
    let all = wait_for(
        &format!("{v1}/markets?status=all"),
        "closed and resolved",
        |_, b| {
            let s = statuses(b);
            s.contains(&(closing.clone(), "closed".into()))
                && s.contains(&(resolving.clone(), "resolved".into()))
        },
    )
    .await;
    assert_eq!(all["count"], 4, "demo, upcoming, closing, resolving: {all}");
    let (_, closed) = get(&format!("{v1}/markets?status=closed,resolved")).await;
    assert_eq!(closed["count"], 2, "{closed}");
    // A resolved market takes no more submissions.
    let paid = pay_eth(&stack, 4, milli_eth(107)).await.to_string();
    let late = body(
        &stack.signer(4),
        &resolving,
        "competitor",
        Some("late"),
        "0.1",
        "ETH",
        &paid,
        Sig::PersonalSign,
    );
    let (status, e) = post(&format!("{v1}/submissions"), &late).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(error(&e).starts_with("Market is resolved"), "{e}");

    // The market's resolution: winner, resolver, payouts per currency.
    let res = wait_for(
        &format!("{v1}/markets/{resolving}/resolution"),
        "payout indexed",
        |s, b| s == StatusCode::OK && b["payouts_claimed"]["ETH"].is_string(),
    )
    .await;
    assert_eq!(res["resolved"], true);
    assert_eq!(res["winning_submission_id"], 1);
    assert_eq!(res["winner"], stack.signer(1).address().to_string());
    assert_eq!(res["resolved_by"], stack.signer(0).address().to_string());
    assert_eq!(res["payouts_claimed"]["ETH"], "0.1");
    let (_, sub) = get(&format!("{v1}/submissions/1")).await;
    assert_eq!(sub["is_winner"], true, "{sub}");
    assert_eq!(sub["resolution"]["winner"], res["winner"]);
    let (_, market) = get(&format!("{v1}/markets/{resolving}")).await;
    assert_eq!(market["status"], "resolved");
    assert_eq!(market["resolution"]["resolved_by"], res["resolved_by"]);
    let (status, body) = get(&format!("{v1}/markets/{}/resolution", uuid_v4())).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::NOT_FOUND, "Market not found")
    );

    // calculate_fees: the document's example exactly, BTC's 8 decimals, clear 400s.
    let fees = format!("{v1}/calculate_fees");
    let (status, q) = post(
        &fees,
        &json!({"initial_stake_amount": "0.5", "currency": "ETH"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        q,
        json!({"initial_stake_amount": "0.5", "platform_fee_percentage": "7.0", "platform_fee_amount": "0.035", "total_required": "0.535", "currency": "ETH"})
    );
    let (_, q) = post(
        &fees,
        &json!({"initial_stake_amount": "0.00000001", "currency": "BTC"}),
    )
    .await;
    assert_eq!(
        (
            q["platform_fee_amount"].as_str(),
            q["total_required"].as_str()
        ),
        (Some("0.00000001"), Some("0.00000002"))
    );
    for (body, expected) in [
        (
            json!({"initial_stake_amount": "-1", "currency": "ETH"}),
            "greater than zero",
        ),
        (
            json!({"initial_stake_amount": "0", "currency": "ETH"}),
            "greater than zero",
        ),
        (
            json!({"initial_stake_amount": "abc", "currency": "ETH"}),
            "decimal string",
        ),
        (
            json!({"initial_stake_amount": "0.000000001", "currency": "BTC"}),
            "more than 8 decimal places",
        ),
        (
            json!({"initial_stake_amount": "0.0000000000000000001", "currency": "ETH"}),
            "more than 18 decimal places",
        ),
        (
            json!({"initial_stake_amount": "1", "currency": "DOGE"}),
            "currency must be",
        ),
        (
            json!({"currency": "ETH"}),
            "Missing required field: `initial_stake_amount`",
        ),
        (
            json!({"initial_stake_amount": 0.5, "currency": "ETH"}),
            "must be a string",
        ),
    ] {
        let (status, e) = post(&fees, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(full(&e).contains(expected), "{body}: {e}");
    }
    let r = reqwest::Client::new()
        .post(&fees)
        .body("not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Path ids: malformed → 400, unknown → 404 `Market not found`.
    let (status, e) = get(&format!("{v1}/markets/not-a-uuid/submissions")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    let (status, e) = get(&format!("{v1}/markets/{}/submissions", uuid_v4())).await;
    assert_eq!(
        (status, error(&e)),
        (StatusCode::NOT_FOUND, "Market not found")
    );
    let (status, _) = get(&format!("{v1}/submissions/abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, e) = get(&format!("{v1}/submissions/999")).await;
    assert_eq!(
        (status, error(&e)),
        (StatusCode::NOT_FOUND, "Submission not found")
    );
}

/// The node remembers each quoted amount's answer (`FeeBodies`); a fee
/// change on chain must still reach the quotes as soon as it is indexed.
#[tokio::test]
async fn a_fee_change_on_chain_reaches_remembered_quotes() {
    let stack = Stack::start().await;
    let n = node(&stack, &[]).await;
    let fees = format!("{}/v1/calculate_fees", n.url);
    let quote = json!({"initial_stake_amount": "0.5", "currency": "ETH"});
    // Twice: the second answer comes from the memo, and is the same.
    for _ in 0..2 {
        let (status, q) = post(&fees, &quote).await;
        assert_eq!(status, StatusCode::OK, "{q}");
        assert_eq!(
            q,
            json!({"initial_stake_amount": "0.5", "platform_fee_percentage": "7.0", "platform_fee_amount": "0.035", "total_required": "0.535", "currency": "ETH"})
        );
    }
    mined(
        SubmissionStakes::new(stakes(&stack), &stack.deployer)
            .setFeeBps(250)
            .send()
            .await
            .expect("send setFeeBps"),
        "setFeeBps",
    )
    .await
    .expect("fee set");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, q) = post(&fees, &quote).await;
        assert_eq!(status, StatusCode::OK, "{q}");
        if q["platform_fee_percentage"] == "2.5" {
            assert_eq!(
                q,
                json!({"initial_stake_amount": "0.5", "platform_fee_percentage": "2.5", "platform_fee_amount": "0.0125", "total_required": "0.5125", "currency": "ETH"})
            );
            break;
        }
        assert_eq!(
            q["platform_fee_percentage"], "7.0",
            "old or new rate only: {q}"
        );
        assert!(
            Instant::now() < deadline,
            "the new fee never reached the quote: {q}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An amount never quoted before is answered at the new rate at once.
    let (_, q) = post(
        &fees,
        &json!({"initial_stake_amount": "2", "currency": "ETH"}),
    )
    .await;
    assert_eq!(q["platform_fee_amount"], "0.05", "{q}");
}

#[tokio::test]
async fn every_submission_rule_answers_its_documented_error() {
    let stack = Stack::start().await;
    let closed = create_market(&stack, -10, 60, "Soon closed").await;
    let upcoming = create_market(&stack, 3_600, 7_200, "Later").await;
    let n = node(&stack, &[]).await;
    let url = format!("{}/ai_agent/v1/submissions", n.url);
    let (w1, w2) = (stack.signer(1), stack.signer(2));
    let demo = DEMO_MARKET_UUID;
    let paid = pay_eth(&stack, 1, milli_eth(107)).await.to_string();
    let sub = |signer: &PrivateKeySigner,
               market: &str,
               kind: &str,
               text: Option<&str>,
               stake: &str,
               tx: &str| {
        body(
            signer,
            market,
            kind,
            text,
            stake,
            "ETH",
            tx,
            Sig::PersonalSign,
        )
    };
    let expect = |status: StatusCode, e: &Value, want: StatusCode, prefix: &str| {
        assert_eq!(status, want, "{e}");
        assert!(error(e).starts_with(prefix), "want `{prefix}`, got {e}");
    };
    // The seed's documented strings come back exactly, the detail beside them.
    let documented = |status: StatusCode, e: &Value, exact: &str| {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(error(e), exact, "{e}");
        assert!(e["detail"].as_str().is_some_and(|d| !d.is_empty()), "{e}");
    };

    // Missing required field (each), Invalid submission type.
    for field in [
        "market_id",
        "creator_wallet",
        "predicted_text",
        "submission_type",
        "initial_stake_amount",
        "currency",
        "transaction_hash",
        "signature",
    ] {
        let mut b = sub(&w1, demo, "original", Some("x"), "0.1", &paid);
        b.as_object_mut().expect("object").remove(field);
        let (s, e) = post(&url, &b).await;
        documented(s, &e, "Missing required field");
        assert!(full(&e).contains(field), "{e}");
    }
    let (s, e) = post(&url, &sub(&w1, demo, "prediction", Some("x"), "0.1", &paid)).await;
    documented(s, &e, "Invalid submission type");

    // Market not found; closed and not-yet-open markets.
    let (s, e) = post(
        &url,
        &sub(&w1, &uuid_v4(), "original", Some("x"), "0.1", &paid),
    )
    .await;
    expect(s, &e, StatusCode::NOT_FOUND, "Market not found");
    let (s, e) = post(
        &url,
        &sub(&w1, &upcoming, "original", Some("x"), "0.1", &paid),
    )
    .await;
    expect(s, &e, StatusCode::BAD_REQUEST, "Market is not open yet");
    warp(&stack.deployer, 120).await;
    let closed_url = format!("{}/v1/markets?status=closed", n.url);
    wait_for(&closed_url, "closed", |_, b| b["count"] == 1).await;
    let (s, e) = post(
        &url,
        &sub(&w1, &closed, "original", Some("x"), "0.1", &paid),
    )
    .await;
    expect(s, &e, StatusCode::BAD_REQUEST, "Market is closed");

    // Competitor and null need an original.
    let (s, e) = post(&url, &sub(&w1, demo, "competitor", Some("x"), "0.1", &paid)).await;
    expect(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "Market has no original submission",
    );
    let (s, e) = post(&url, &sub(&w1, demo, "null", None, "0.1", &paid)).await;
    expect(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "Market has no original submission",
    );

    // Invalid signature: another key, another message, garbage.
    let mut b = sub(&w2, demo, "original", Some("x"), "0.1", &paid);
    b["creator_wallet"] = json!(w1.address().to_string());
    let (s, e) = post(&url, &b).await;
    documented(s, &e, "Invalid signature");
    let mut b = sub(&w1, demo, "original", Some("x"), "0.1", &paid);
    b["predicted_text"] = json!("y");
    let (s, e) = post(&url, &b).await;
    documented(s, &e, "Invalid signature");
    let mut b = sub(&w1, demo, "original", Some("x"), "0.1", &paid);
    b["signature"] = json!("0xnothex");
    let (s, e) = post(&url, &b).await;
    documented(s, &e, "Invalid signature");

    // Transaction amount insufficient: 0.1 ETH needs 0.107.
    let short = pay_eth(&stack, 1, milli_eth(106)).await.to_string();
    let (s, e) = post(&url, &sub(&w1, demo, "original", Some("x"), "0.1", &short)).await;
    documented(s, &e, "Transaction amount insufficient");
    assert!(
        full(&e).contains("paid 0.106 ETH, required 0.107 ETH"),
        "{e}"
    );

    // A transaction from another wallet.
    let (s, e) = post(&url, &sub(&w2, demo, "original", Some("x"), "0.1", &paid)).await;
    expect(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "Transaction was not sent by creator_wallet",
    );

    // Paid to someone else; reverted; unknown; currency mismatch.
    let elsewhere = send(
        &stack,
        1,
        stack.signer(7).address(),
        milli_eth(107),
        Bytes::new(),
    )
    .await
    .to_string();
    let (s, e) = post(
        &url,
        &sub(&w1, demo, "original", Some("x"), "0.1", &elsewhere),
    )
    .await;
    expect(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "Transaction does not pay the treasury",
    );
    let reverted = {
        let tx = TransactionRequest::default()
            .with_to(stakes(&stack))
            .with_value(milli_eth(107))
            .with_input(Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]))
            .with_gas_limit(100_000);
        let r = stack
            .wallet(1)
            .send_transaction(tx)
            .await
            .expect("send")
            .get_receipt()
            .await
            .expect("receipt");
        assert!(!r.status(), "an unknown selector reverts");
        r.transaction_hash.to_string()
    };
    let (s, e) = post(
        &url,
        &sub(&w1, demo, "original", Some("x"), "0.1", &reverted),
    )
    .await;
    expect(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "Transaction failed on chain",
    );
    let view_call = SubmissionStakes::isOracleCall {
        marketId: chainfront::deploy::market_id(demo).expect("id"),
        account: w1.address(),
    };
    let not_submit = send(
        &stack,
        1,
        stakes(&stack),
        U256::ZERO,
        Bytes::from(alloy::sol_types::SolCall::abi_encode(&view_call)),
    )
    .await
    .to_string();
    let (s, e) = post(
        &url,
        &sub(&w1, demo, "original", Some("x"), "0.1", &not_submit),
    )
    .await;
    expect(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "Transaction calls SubmissionStakes but not submit()",
    );
    let r = reqwest::Client::new()
        .post(&url)
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.expect("json error");
    assert!(error(&e).starts_with("body must be a JSON object"), "{e}");
    let unknown = B256::repeat_byte(0x42).to_string();
    let (s, e) = post(
        &url,
        &sub(&w1, demo, "original", Some("x"), "0.1", &unknown),
    )
    .await;
    expect(s, &e, StatusCode::BAD_REQUEST, "Transaction not found");
    let b = body(
        &w1,
        demo,
        "original",
        Some("x"),
        "0.1",
        "BTC",
        &paid,
        Sig::PersonalSign,
    );
    let (s, e) = post(&url, &b).await;
    expect(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "Transaction sends ETH but currency is BTC",
    );

    // A pending transaction is not confirmed yet.
    let _: Value = stack
        .deployer
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .expect("automine off");
    let pending = *stack
        .wallet(1)
        .send_transaction(
            TransactionRequest::default()
                .with_to(stakes(&stack))
                .with_value(milli_eth(107)),
        )
        .await
        .expect("send")
        .tx_hash();
    let (s, e) = post(
        &url,
        &sub(
            &w1,
            demo,
            "original",
            Some("x"),
            "0.1",
            &pending.to_string(),
        ),
    )
    .await;
    expect(s, &e, StatusCode::BAD_REQUEST, "Transaction not confirmed");
    let _: Value = stack
        .deployer
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .expect("automine on");
    let _: Value = stack
        .deployer
        .raw_request("evm_mine".into(), ())
        .await
        .expect("mine");

    // The good one (raw keccak signature, bare hex, through /ai_agent/v1): 202,
    // then the same hash again: 409; a second original: `Market already has original`.
    let ok = sub_raw(&w1, demo, "original", Some("x"), "0.1", &paid);
    let (s, accepted) = post(&url, &ok).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["status"], "pending");
    assert_eq!(
        accepted["status_url"],
        format!("/ai_agent/v1/submissions/{paid}")
    );
    let (s, e) = post(&url, &ok).await;
    expect(s, &e, StatusCode::CONFLICT, "Transaction hash already used");
    let other = pay_eth(&stack, 2, milli_eth(107)).await.to_string();
    let (s, e) = post(
        &url,
        &sub(&w2, demo, "original", Some("mine"), "0.1", &other),
    )
    .await;
    expect(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "Market already has original",
    );
    let (s, status) = get(&format!("{}/ai_agent/v1/submissions/{paid}", n.url)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{status}");
    assert_eq!(status["transaction_hash"], paid);
}

fn sub_raw(
    signer: &PrivateKeySigner,
    market: &str,
    kind: &str,
    text: Option<&str>,
    stake: &str,
    tx: &str,
) -> Value {
    body(
        signer,
        market,
        kind,
        text,
        stake,
        "ETH",
        tx,
        Sig::RawHashBareHex,
    )
}

#[tokio::test]
async fn unconfirmed_until_the_chains_confirmations_are_on_top() {
    let stack = Stack::start().await;
    let n = start_node(node_config(
        &stack,
        &[("CHAINFRONT_CHAINS__LOCAL__CONFIRMATIONS", "2")],
    ))
    .await;
    let head = stack.deployer.get_block_number().await.expect("head");
    wait_for(
        &format!("{}/health", n.url),
        "indexed to head - 2",
        |_, b| b["indexed_block"].as_u64().is_some_and(|i| i + 2 >= head),
    )
    .await;
    let url = format!("{}/v1/submissions", n.url);
    let w1 = stack.signer(1);
    let tx = pay_eth(&stack, 1, milli_eth(107)).await.to_string();
    let b = body(
        &w1,
        DEMO_MARKET_UUID,
        "original",
        Some("x"),
        "0.1",
        "ETH",
        &tx,
        Sig::PersonalSign,
    );
    let (s, e) = post(&url, &b).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        error(&e).starts_with("Transaction not confirmed: 0 of 2"),
        "{e}"
    );
    for _ in 0..2 {
        let _: Value = stack
            .deployer
            .raw_request("evm_mine".into(), ())
            .await
            .expect("mine");
    }
    let (s, ok) = post(&url, &b).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ok}");
}

#[tokio::test]
async fn a_submit_call_is_answered_with_the_indexed_submission_and_a_reorg_removes_it_everywhere() {
    use alloy::providers::ext::AnvilApi;
    use alloy::rpc::types::anvil::ReorgOptions;
    let stack = Stack::start().await;
    let n = node(&stack, &[]).await;
    let v1 = format!("{}/v1", n.url);
    let w1 = stack.signer(1);
    let demo = DEMO_MARKET_UUID;
    // The creator calls submit itself (original, 0.25 ETH + 7%).
    let tx = submit_direct(&stack, 1, demo, 0, "It will rain", milli_eth(250))
        .await
        .to_string();
    indexed(&n, &stack).await;
    let b = body(
        &w1,
        demo,
        "original",
        Some("It will rain"),
        "0.25",
        "ETH",
        &tx,
        Sig::PersonalSign,
    );
    // A request that does not match the transaction is refused.
    let wrong = body(
        &w1,
        demo,
        "original",
        Some("It will snow"),
        "0.25",
        "ETH",
        &tx,
        Sig::PersonalSign,
    );
    let (s, e) = post(&format!("{v1}/submissions"), &wrong).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(error(&e).contains("predicted_text differs"), "{e}");
    let (s, created) = post(&format!("{v1}/submissions"), &b).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    for (field, value) in [
        ("submission_id", json!(1)),
        ("market_id", json!(demo)),
        ("creator_wallet", json!(w1.address().to_string())),
        ("submission_type", json!("original")),
        ("predicted_text", json!("It will rain")),
        ("initial_stake_amount", json!("0.25")),
        ("platform_fee_amount", json!("0.0175")),
        ("currency", json!("ETH")),
        ("transaction_hash", json!(tx)),
        ("status", json!("recorded")),
    ] {
        assert_eq!(created[field], value, "{field} in {created}");
    }
    assert!(created["block"].as_u64().is_some() && created["created_at"].is_string());

    // Every route shows it.
    let routes = [
        format!("{v1}/submissions/1"),
        format!("{v1}/submissions/{tx}"),
        format!("{v1}/markets/{demo}/submissions"),
        format!("{v1}/markets/{demo}"),
    ];
    let (_, subs) = get(&routes[2]).await;
    assert_eq!(subs["count"], 1);
    assert_eq!(subs["submissions"][0]["transaction_hash"], tx);
    let (_, by_tx) = get(&routes[1]).await;
    assert_eq!(by_tx["submission_id"], 1);
    let (_, market) = get(&routes[3]).await;
    assert_eq!(
        (
            market["existing_submissions"].as_u64(),
            market["has_original"].as_bool()
        ),
        (Some(1), Some(true))
    );

    // The block with the stake transaction is replaced: gone from every route.
    stack
        .deployer
        .anvil_reorg(ReorgOptions {
            depth: 2,
            tx_block_pairs: vec![],
        })
        .await
        .expect("anvil_reorg");
    wait_for(&routes[0], "submission 1 gone", |s, _| {
        s == StatusCode::NOT_FOUND
    })
    .await;
    let (s, e) = get(&routes[1]).await;
    assert_eq!(
        (s, error(&e)),
        (StatusCode::NOT_FOUND, "Submission not found"),
        "status URL"
    );
    let (_, subs) = get(&routes[2]).await;
    assert_eq!(subs["count"], 0, "{subs}");
    let (_, market) = get(&routes[3]).await;
    assert_eq!(
        (
            market["existing_submissions"].as_u64(),
            market["has_original"].as_bool()
        ),
        (Some(0), Some(false))
    );
    let (_, list) = get(&format!("{v1}/markets")).await;
    let demo_listed = list["markets"]
        .as_array()
        .expect("markets")
        .iter()
        .find(|m| m["market_id"] == demo)
        .cloned();
    assert_eq!(demo_listed.expect("demo")["existing_submissions"], 0);
    // The hash is free again (its transaction is gone), but unknown to the chain.
    let (s, e) = post(&format!("{v1}/submissions"), &b).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(error(&e).starts_with("Transaction not found"), "{e}");
}

#[tokio::test]
async fn fifty_concurrent_posts_of_one_hash_give_exactly_one_success() {
    let stack = Stack::start().await;
    // Two API processes on one Redis: the claim holds across replicas.
    let a = node(&stack, &[]).await;
    let b = start_node(node_config(
        &stack,
        &[("CHAINFRONT_INDEXER__ENABLED", "false")],
    ))
    .await;
    let w1 = stack.signer(1);
    let tx = pay_eth(&stack, 1, milli_eth(107)).await.to_string();
    let req = body(
        &w1,
        DEMO_MARKET_UUID,
        "original",
        Some("first"),
        "0.1",
        "ETH",
        &tx,
        Sig::PersonalSign,
    );
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = format!(
            "{}/v1/submissions",
            if i % 2 == 0 { &a.url } else { &b.url }
        );
        let req = req.clone();
        tasks.push(tokio::spawn(async move { post(&url, &req).await }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task"));
    }
    let ok: Vec<_> = answers.iter().filter(|(s, _)| s.is_success()).collect();
    assert_eq!(ok.len(), 1, "exactly one success: {answers:?}");
    assert_eq!(ok[0].0, StatusCode::ACCEPTED);
    for (s, e) in answers.iter().filter(|(s, _)| !s.is_success()) {
        assert_eq!(*s, StatusCode::CONFLICT, "{e}");
        assert!(error(e).starts_with("Transaction hash already used"), "{e}");
    }
}

#[tokio::test]
async fn btc_stakes_are_cbbtc_transfers_to_the_treasury() {
    let stack = Stack::start().await;
    let n = node(&stack, &[]).await;
    let url = format!("{}/v1/submissions", n.url);
    let w3 = stack.signer(3);
    let cbbtc = stack.deployment.cbbtc.expect("cbBTC deployed");
    let transfer = |amount: u64| {
        let call = MockCbBTC::transferCall {
            to: stakes(&stack),
            value: U256::from(amount),
        };
        Bytes::from(alloy::sol_types::SolCall::abi_encode(&call))
    };
    // 0.01 BTC + 7% = 0.0107 BTC = 1,070,000 satoshi.
    let short = send(&stack, 3, cbbtc, U256::ZERO, transfer(1_069_999))
        .await
        .to_string();
    let b = body(
        &w3,
        DEMO_MARKET_UUID,
        "original",
        Some("btc"),
        "0.01",
        "BTC",
        &short,
        Sig::PersonalSign,
    );
    let (s, e) = post(&url, &b).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        full(&e).starts_with(
            "Transaction amount insufficient: paid 0.01069999 BTC, required 0.0107 BTC"
        ),
        "{e}"
    );
    let enough = send(&stack, 3, cbbtc, U256::ZERO, transfer(1_070_000))
        .await
        .to_string();
    let eth = body(
        &w3,
        DEMO_MARKET_UUID,
        "original",
        Some("btc"),
        "0.01",
        "ETH",
        &enough,
        Sig::PersonalSign,
    );
    let (s, e) = post(&url, &eth).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        error(&e).starts_with("Transaction transfers cbBTC but currency is ETH"),
        "{e}"
    );
    let b = body(
        &w3,
        DEMO_MARKET_UUID,
        "original",
        Some("btc"),
        "0.01",
        "BTC",
        &enough,
        Sig::PersonalSign,
    );
    let (s, accepted) = post(&url, &b).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(
        (
            accepted["currency"].as_str(),
            accepted["initial_stake_amount"].as_str()
        ),
        (Some("BTC"), Some("0.01"))
    );
}

#[tokio::test]
async fn limits_per_ip_and_per_wallet_with_headers() {
    let stack = Stack::start().await;
    let n = node(
        &stack,
        &[
            ("CHAINFRONT_RATE_LIMITS__ENABLED", "true"),
            ("CHAINFRONT_API__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let from = |ip: &str| ip.to_owned();
    // Reads: 60 per minute per IP, counted per route.
    let mut last = None;
    for i in 0..61 {
        let r = client
            .get(format!("{}/v1/markets", n.url))
            .header("x-forwarded-for", from("198.51.100.1"))
            .send()
            .await
            .expect("GET");
        if i < 60 {
            assert_eq!(r.status(), StatusCode::OK, "request {i}");
            assert_eq!(r.headers()["x-ratelimit-limit"], "60");
            assert_eq!(
                r.headers()["x-ratelimit-remaining"],
                (59 - i).to_string().as_str()
            );
        }
        last = Some(r);
    }
    let r = last.expect("61st");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    // The same IP may still quote fees (its own 60/min) and read /v1/health (unlimited).
    let r = client
        .post(format!("{}/ai_agent/v1/calculate_fees", n.url))
        .header("x-forwarded-for", "198.51.100.1")
        .json(&json!({"initial_stake_amount": "0.1", "currency": "ETH"}))
        .send()
        .await
        .expect("fees");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "59");

    // Submissions: 10 per minute per IP ...
    let w1 = stack.signer(1);
    let tx = B256::repeat_byte(7).to_string();
    let req = body(
        &w1,
        DEMO_MARKET_UUID,
        "original",
        Some("x"),
        "0.1",
        "ETH",
        &tx,
        Sig::PersonalSign,
    );
    for i in 0..11 {
        let r = client
            .post(format!("{}/v1/submissions", n.url))
            .header("x-forwarded-for", "198.51.100.2")
            .json(&json!({}))
            .send()
            .await
            .expect("post");
        let want = if i < 10 {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(r.status(), want, "request {i}");
    }
    // ... and per wallet: 10 from ten different IPs, the 11th is refused.
    for i in 0..11 {
        let r = client
            .post(format!("{}/v1/submissions", n.url))
            .header("x-forwarded-for", format!("203.0.113.{}", 10 + i))
            .json(&req)
            .send()
            .await
            .expect("post");
        let status = r.status();
        let remaining = r.headers().get("x-ratelimit-remaining").cloned();
        let retry = r.headers().get("retry-after").cloned();
        let body: Value = r.json().await.expect("json");
        if i < 10 {
            // Signed by the wallet, refused later for the unknown transaction.
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(error(&body).starts_with("Transaction not found"), "{body}");
            assert_eq!(
                remaining.expect("remaining"),
                (9 - i).to_string().as_str(),
                "the wallet's count is the tighter one"
            );
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            assert!(error(&body).contains("per wallet"), "{body}");
            assert!(retry.is_some());
            assert_eq!(remaining.expect("remaining"), "0");
        }
    }
    // Another wallet from a fresh IP is not affected.
    let w2 = stack.signer(2);
    let req = body(
        &w2,
        DEMO_MARKET_UUID,
        "original",
        Some("x"),
        "0.1",
        "ETH",
        &tx,
        Sig::PersonalSign,
    );
    let r = client
        .post(format!("{}/v1/submissions", n.url))
        .header("x-forwarded-for", "203.0.113.99")
        .json(&req)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// Anvil key 8 becomes the stakes contract's operator; its hex key for
/// `CHAINFRONT_OPERATOR_KEY`.
async fn operator_key(stack: &Stack) -> String {
    mined(
        SubmissionStakes::new(stakes(stack), &stack.deployer)
            .setOperator(stack.signer(8).address(), true)
            .send()
            .await
            .expect("setOperator"),
        "setOperator",
    )
    .await
    .expect("operator set");
    format!("0x{}", alloy::hex::encode(stack.anvil.keys()[8].to_bytes()))
}

/// Every `SubmissionCreated` on chain, as (payment tx, submission id).
async fn created_events(stack: &Stack) -> Vec<(B256, U256)> {
    use alloy::rpc::types::Filter;
    let logs = stack
        .deployer
        .get_logs(&Filter::new().address(stakes(stack)).from_block(0))
        .await
        .expect("logs");
    logs.iter()
        .filter_map(|l| l.log_decode::<SubmissionStakes::SubmissionCreated>().ok())
        .map(|e| (e.inner.data.paymentTxHash, e.inner.data.submissionId))
        .collect()
}

#[tokio::test]
async fn plain_transfers_are_recorded_by_the_operator_and_served() {
    let stack = Stack::start().await;
    let key = operator_key(&stack).await;
    let n = node(&stack, &[("CHAINFRONT_OPERATOR_KEY", &key)]).await;
    let v1 = format!("{}/v1", n.url);
    let treasury = stack.signer(9).address();
    let before = stack.deployer.get_balance(treasury).await.expect("balance");
    let demo = DEMO_MARKET_UUID;

    let pay1 = pay_eth(&stack, 1, milli_eth(107)).await.to_string();
    let b = body(
        &stack.signer(1),
        demo,
        "original",
        Some("sunny"),
        "0.1",
        "ETH",
        &pay1,
        Sig::PersonalSign,
    );
    let (s, accepted) = post(&format!("{v1}/submissions"), &b).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let status_url = format!(
        "{}{}",
        n.url,
        accepted["status_url"].as_str().expect("status_url")
    );
    let recorded = wait_for(&status_url, "recorded and indexed", |s, _| {
        s == StatusCode::OK
    })
    .await;
    assert_eq!(recorded["transaction_hash"], pay1);
    assert_ne!(
        recorded["record_transaction_hash"], pay1,
        "recorded by the operator's own transaction"
    );
    assert_eq!(
        recorded["creator_wallet"],
        stack.signer(1).address().to_string()
    );
    assert_eq!(
        (
            recorded["initial_stake_amount"].as_str(),
            recorded["platform_fee_amount"].as_str()
        ),
        (Some("0.1"), Some("0.007"))
    );
    let after = stack.deployer.get_balance(treasury).await.expect("balance");
    assert_eq!(
        after - before,
        milli_eth(7),
        "the fee reached the fee treasury"
    );

    // A competitor (raw keccak signature, bare hex) and a null submission.
    let pay2 = pay_eth(&stack, 2, milli_eth(214)).await.to_string();
    let b = body(
        &stack.signer(2),
        demo,
        "competitor",
        Some("rainy"),
        "0.2",
        "ETH",
        &pay2,
        Sig::RawHashBareHex,
    );
    let (s, accepted) = post(&format!("{}/api/chain/v1/submissions", n.url), &b).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let pay3 = pay_eth(&stack, 3, milli_eth(107)).await.to_string();
    let b = body(
        &stack.signer(3),
        demo,
        "null",
        None,
        "0.1",
        "ETH",
        &pay3,
        Sig::PersonalSign,
    );
    let (s, accepted) = post(&format!("{v1}/submissions"), &b).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let subs = wait_for(
        &format!("{v1}/markets/{demo}/submissions"),
        "three submissions",
        |_, b| b["count"] == 3,
    )
    .await;
    let kinds: Vec<(&str, &Value)> = subs["submissions"]
        .as_array()
        .expect("subs")
        .iter()
        .map(|s| {
            (
                s["submission_type"].as_str().expect("type"),
                &s["predicted_text"],
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("original", &json!("sunny")),
            ("competitor", &json!("rainy")),
            ("null", &Value::Null)
        ]
    );
    assert_eq!(created_events(&stack).await.len(), 3);
    // The original is indexed now: another one is refused by the rules.
    let pay4 = pay_eth(&stack, 4, milli_eth(107)).await.to_string();
    let b = body(
        &stack.signer(4),
        demo,
        "original",
        Some("again"),
        "0.1",
        "ETH",
        &pay4,
        Sig::PersonalSign,
    );
    let (s, e) = post(&format!("{v1}/submissions"), &b).await;
    assert_eq!(
        (s, error(&e)),
        (StatusCode::BAD_REQUEST, "Market already has original")
    );
}

#[tokio::test]
async fn a_crash_between_claim_and_record_resumes_and_never_records_twice() {
    use chainfront::chain::{SenderConfig, TxSender};
    use chainfront_indexer::retry::RetryPolicy;
    use chainfront_indexer::rpc::Rpc;
    let stack = Stack::start().await;
    let key = operator_key(&stack).await;
    let short = create_market(&stack, -10, 600, "Short").await;
    // A node without the operator key claims and queues, then "crashes".
    let a = node(&stack, &[]).await;
    let url = format!("{}/v1/submissions", a.url);
    let mut payments = Vec::new();
    for (i, market) in [
        (1, DEMO_MARKET_UUID),
        (2, short.as_str()),
        (3, short.as_str()),
    ] {
        let tx = pay_eth(&stack, i, milli_eth(107)).await.to_string();
        let kind = if i == 3 { "competitor" } else { "original" };
        let b = body(
            &stack.signer(i),
            market,
            kind,
            Some("p"),
            "0.1",
            "ETH",
            &tx,
            Sig::PersonalSign,
        );
        let (s, e) = post(&url, &b).await;
        if i == 3 {
            // The short market's original is claimed but not indexed yet.
            assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
            assert!(error(&e).starts_with("Market has no original"), "{e}");
        } else {
            assert_eq!(s, StatusCode::ACCEPTED, "{e}");
            payments.push(tx.parse::<B256>().expect("hash"));
        }
    }
    let (p1, p2) = (payments[0], payments[1]);
    // A second original for the short market while the first is only claimed.
    let tx = pay_eth(&stack, 4, milli_eth(107)).await.to_string();
    let b = body(
        &stack.signer(4),
        &short,
        "original",
        Some("q"),
        "0.1",
        "ETH",
        &tx,
        Sig::PersonalSign,
    );
    let (s, e) = post(&url, &b).await;
    assert_eq!(
        (s, error(&e)),
        (StatusCode::BAD_REQUEST, "Market already has original")
    );
    drop(a);

    // Before dying, a recorder had sent p1's record (send id record:<tx>:0),
    // and p2 got recorded by another path (e.g. another replica) meanwhile.
    let rpc = Rpc::new(
        &[stack.anvil.endpoint()],
        RetryPolicy::default(),
        Duration::from_secs(5),
    )
    .expect("rpc");
    let redis = chainfront_indexer::conn::connect(&stack.redis.url())
        .await
        .expect("redis");
    let sender = TxSender::new(rpc, stack.signer(8), 31337, redis, SenderConfig::default());
    let record =
        |payment: B256, market: &str, creator: Address| SubmissionStakes::recordSubmissionCall {
            marketId: chainfront::deploy::market_id(market).expect("id"),
            creator,
            submissionType: 0,
            predictedText: "p".into(),
            stakeToken: Address::ZERO,
            stake: milli_eth(100),
            paymentTxHash: payment,
        };
    let call = |c: SubmissionStakes::recordSubmissionCall| {
        TransactionRequest::default()
            .with_to(stakes(&stack))
            .with_input(alloy::sol_types::SolCall::abi_encode(&c))
    };
    let first = sender
        .send(
            &format!("record:{p1}:0"),
            call(record(p1, DEMO_MARKET_UUID, stack.signer(1).address())),
        )
        .await
        .expect("recorded before the crash");
    sender
        .send(
            "elsewhere",
            call(record(p2, &short, stack.signer(2).address())),
        )
        .await
        .expect("recorded elsewhere");

    // A node with the key resumes both: p1 is the same transaction, p2
    // is refused by the contract (PaymentAlreadyUsed) and read as recorded.
    let b = node(&stack, &[("CHAINFRONT_OPERATOR_KEY", &key)]).await;
    for p in [p1, p2] {
        let done = wait_for(
            &format!("{}/v1/submissions/{p}", b.url),
            "recorded",
            |s, _| s == StatusCode::OK,
        )
        .await;
        assert_eq!(done["transaction_hash"], p.to_string());
    }
    let (_, one) = get(&format!("{}/v1/submissions/{p1}", b.url)).await;
    assert_eq!(
        one["record_transaction_hash"],
        first.transaction_hash.to_string(),
        "resumed, not re-sent"
    );
    let events = created_events(&stack).await;
    for p in [p1, p2] {
        assert_eq!(
            events.iter().filter(|(pay, _)| *pay == p).count(),
            1,
            "exactly one record of {p}"
        );
    }
    assert_eq!(events.len(), 2);
    let queued = b.state.markets.claims().queued().await.expect("queue");
    assert_eq!(queued, 0, "nothing left to record");
}

#[tokio::test]
async fn a_submission_the_contract_refuses_is_reported_and_a_reorged_payment_is_released() {
    use alloy::providers::ext::AnvilApi;
    use alloy::rpc::types::anvil::ReorgOptions;
    let stack = Stack::start().await;
    let key = operator_key(&stack).await;
    let short = create_market(&stack, -10, 120, "Closing soon").await;
    let a = node(&stack, &[]).await;
    let url = format!("{}/v1/submissions", a.url);
    let late = pay_eth(&stack, 1, milli_eth(107)).await.to_string();
    let b = body(
        &stack.signer(1),
        &short,
        "original",
        Some("late"),
        "0.1",
        "ETH",
        &late,
        Sig::PersonalSign,
    );
    let (s, e) = post(&url, &b).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{e}");
    // The market closes before anyone records it.
    warp(&stack.deployer, 200).await;
    // A claimed payment that a reorg then drops.
    let dropped = pay_eth(&stack, 2, milli_eth(107)).await.to_string();
    let b = body(
        &stack.signer(2),
        DEMO_MARKET_UUID,
        "original",
        Some("gone"),
        "0.1",
        "ETH",
        &dropped,
        Sig::PersonalSign,
    );
    let (s, e) = post(&url, &b).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{e}");
    drop(a);
    stack
        .deployer
        .anvil_reorg(ReorgOptions {
            depth: 1,
            tx_block_pairs: vec![],
        })
        .await
        .expect("anvil_reorg");

    let n = node(&stack, &[("CHAINFRONT_OPERATOR_KEY", &key)]).await;
    let failed = wait_for(
        &format!("{}/v1/submissions/{late}", n.url),
        "failed",
        |s, _| s == StatusCode::CONFLICT,
    )
    .await;
    assert!(
        error(&failed).starts_with("Submission could not be recorded: the market closed"),
        "{failed}"
    );
    wait_for(
        &format!("{}/v1/submissions/{dropped}", n.url),
        "released",
        |s, _| s == StatusCode::NOT_FOUND,
    )
    .await;
    assert!(
        created_events(&stack).await.is_empty(),
        "nothing was recorded"
    );
    assert_eq!(n.state.markets.claims().queued().await.expect("queue"), 0);
}

/// Runs a client program from `tests/clients/` against a node with an
/// operator; returns the submissions it printed.
async fn run_client(program: &str, args: &[String]) -> Vec<Value> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .current_dir(crate::harness::repo_root())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn check_client_submissions(served: &[Value], wallet: Address, text: &str) {
    assert_eq!(served.len(), 2, "{served:?}");
    let kinds: Vec<&str> = served
        .iter()
        .map(|s| s["submission_type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["original", "competitor"]);
    for s in served {
        assert_eq!(s["status"], "recorded", "{s}");
        assert_eq!(s["market_id"], DEMO_MARKET_UUID);
        assert_eq!(s["creator_wallet"], wallet.to_string());
        assert_eq!(s["predicted_text"], text);
        assert_eq!(
            (
                s["initial_stake_amount"].as_str(),
                s["platform_fee_amount"].as_str()
            ),
            (Some("0.1"), Some("0.007"))
        );
        assert!(
            s["transaction_hash"]
                .as_str()
                .is_some_and(|t| t.starts_with("0x") && t.len() == 66),
            "{s}"
        );
    }
}

fn hex_key(stack: &Stack, i: usize) -> String {
    format!("0x{}", alloy::hex::encode(stack.anvil.keys()[i].to_bytes()))
}

/// The document's Python example with web3.py and eth_account: an ETH stake
/// sent on anvil, signed once with `unsafe_sign_hash(keccak(message))` (bare
/// hex) and once with `sign_message`, posted through `/ai_agent/v1` and read back.
#[tokio::test]
async fn the_documents_python_example_runs_for_real() {
    let python = crate::harness::repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/bootstrap first (it creates .venv with web3, eth-account, requests)"
    );
    let stack = Stack::start().await;
    let key = operator_key(&stack).await;
    let n = node(&stack, &[("CHAINFRONT_OPERATOR_KEY", &key)]).await;
    let served = run_client(
        python.to_str().expect("utf8"),
        &[
            "tests/clients/clockchain_example.py".into(),
            "--api".into(),
            format!("{}/ai_agent/v1", n.url),
            "--rpc".into(),
            stack.anvil.endpoint(),
            "--key".into(),
            hex_key(&stack, 1),
        ],
    )
    .await;
    check_client_submissions(&served, stack.signer(1).address(), "My prediction text");
    let (_, subs) = get(&format!(
        "{}/v1/markets/{DEMO_MARKET_UUID}/submissions",
        n.url
    ))
    .await;
    assert_eq!(subs["count"], 2);
}

/// The document's JavaScript example with ethers v6 and axios: the same,
/// signed once with `wallet.signMessage` and once with a raw keccak signature.
#[tokio::test]
async fn the_documents_javascript_example_runs_for_real() {
    assert!(
        crate::harness::repo_root()
            .join("node_modules/ethers/package.json")
            .exists(),
        "run scripts/bootstrap first (npm ci installs ethers and axios)"
    );
    let stack = Stack::start().await;
    let key = operator_key(&stack).await;
    let n = node(&stack, &[("CHAINFRONT_OPERATOR_KEY", &key)]).await;
    let served = run_client(
        "node",
        &[
            "tests/clients/clockchain_example.js".into(),
            format!("{}/ai_agent/v1", n.url),
            stack.anvil.endpoint(),
            hex_key(&stack, 2),
        ],
    )
    .await;
    check_client_submissions(&served, stack.signer(2).address(), "My prediction");
}

/// A node whose chain has two endpoints, proxies of the same anvil; the
/// first answers `fault` to every call of `methods` (the second, kept
/// alive with the node, answers everything).
async fn node_behind_two_endpoints(
    stack: &Stack,
    methods: &[&'static str],
    fault: crate::fault_proxy::Fault,
) -> (
    Node,
    crate::fault_proxy::FaultProxy,
    crate::fault_proxy::FaultProxy,
) {
    use crate::fault_proxy::FaultProxy;
    let (first, second) = (
        FaultProxy::start(&stack.anvil.endpoint()).await,
        FaultProxy::start(&stack.anvil.endpoint()).await,
    );
    for method in methods {
        first.inject(Some(method), fault.clone(), None);
    }
    let urls = format!("[\"{}\", \"{}\"]", first.url, second.url);
    let n = node(
        stack,
        &[("CHAINFRONT_CHAINS__LOCAL__RPC_URLS", urls.as_str())],
    )
    .await;
    (n, first, second)
}

/// Wallet 2 pays a 0.1 ETH stake (+7 %) by a plain transfer and posts it as
/// the demo market's original; the node accepts it (202). The payment's
/// hash.
async fn plain_stake_accepted(stack: &Stack, n: &Node, text: &str) -> String {
    let tx = pay_eth(stack, 2, milli_eth(107)).await.to_string();
    let b = body(
        &stack.signer(2),
        DEMO_MARKET_UUID,
        "original",
        Some(text),
        "0.1",
        "ETH",
        &tx,
        Sig::PersonalSign,
    );
    let (s, accepted) = post(&format!("{}/v1/submissions", n.url), &b).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    tx
}

/// The markets' chain reads go through the API's failover RPC client
/// (security-api.md F7): with the first endpoint failing every block,
/// transaction, receipt and head request, `/v1/health` is healthy, the
/// markets and their submissions still carry `created_at`, and a stake paid
/// by a plain transfer is verified, all read from the second.
#[tokio::test]
async fn markets_chain_reads_fail_over_to_the_next_endpoint() {
    let stack = Stack::start().await;
    let market = create_market(&stack, -10, 3_600, "Failover").await;
    submit_direct(&stack, 1, &market, 0, "an original", milli_eth(100)).await;
    let (n, first, _second) = node_behind_two_endpoints(
        &stack,
        &[
            "eth_getBlockByNumber",
            "eth_getTransactionByHash",
            "eth_getTransactionReceipt",
            "eth_blockNumber",
        ],
        crate::fault_proxy::Fault::BadGateway,
    )
    .await;
    // /v1/health probes the head through the same client.
    let (status, health) = get(&format!("{}/v1/health", n.url)).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");
    let (status, list) = get(&format!("{}/v1/markets", n.url)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ours = list["markets"]
        .as_array()
        .expect("markets")
        .iter()
        .find(|m| m["market_id"] == market.as_str())
        .unwrap_or_else(|| panic!("{market} in {list}"));
    assert!(ours["created_at"].is_string(), "{ours}");
    let (status, subs) = get(&format!("{}/v1/markets/{market}/submissions", n.url)).await;
    assert_eq!(status, StatusCode::OK, "{subs}");
    assert_eq!(subs["count"], 1, "{subs}");
    assert!(subs["submissions"][0]["created_at"].is_string(), "{subs}");
    // A plain-transfer stake: its receipt, transaction and the head.
    plain_stake_accepted(&stack, &n, "through the second endpoint").await;
    assert!(
        first.injected("502") > 0,
        "the first endpoint was asked and failed"
    );
}

/// A `null` receipt or transaction from one endpoint (it lags, or has not
/// seen the transaction yet) is not the last word: the call goes on to the
/// next endpoint. Otherwise a paid stake would be refused as "not found",
/// and a claimed one released as if a reorg had dropped it.
#[tokio::test]
async fn one_endpoints_null_receipt_is_not_taken_for_a_dropped_payment() {
    let stack = Stack::start().await;
    let (n, first, _second) = node_behind_two_endpoints(
        &stack,
        &["eth_getTransactionReceipt", "eth_getTransactionByHash"],
        crate::fault_proxy::Fault::NullResult,
    )
    .await;
    let tx = plain_stake_accepted(&stack, &n, "seen by the second endpoint").await;
    // The status check asks for the receipt again: the claim stays.
    let (s, status) = get(&format!("{}/v1/submissions/{tx}", n.url)).await;
    assert!(
        s == StatusCode::ACCEPTED || s == StatusCode::OK,
        "{s} {status}"
    );
    assert!(
        first.injected("null_result") > 0,
        "the first endpoint was asked and answered null"
    );
}
