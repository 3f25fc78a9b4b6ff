//! x402 end to end on anvil + redis-server: 402 requirements in both
//! versions, payments signed with real keys (EIP-712 computed here with
//! alloy, independently of the node's code), settlement by the node's
//! relayer before service, one settlement per authorization under
//! concurrency, refusals with reasons and nothing moved, gas-free VM
//! purchases, resumed settlements, contract wallets, and an external
//! facilitator checked against the chain.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct};
use base64::Engine;
use chainfront::config::Config;
use chainfront::deploy::mined;
use chainfront::provision::dev::DevProvider;
use chainfront::provision::worker::Worker;
use chainfront_indexer::contracts::{MockSmartWallet, MockUSDC, VMMarketplace};
use chainfront_indexer::keys::ChainKeys;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::Stack;
use crate::vms::{Node, indexed, legacy_sig, node_config, start_node};

/// anvil key of the node's relayer in these tests.
const RELAYER: usize = 8;
/// Default price of one credentials fetch: 0.01 USDC.
const PRICE: u64 = 10_000;

sol! {
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
    struct ReceiveWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

fn unb64(s: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

fn key_hex(s: &PrivateKeySigner) -> String {
    format!("0x{}", alloy::hex::encode(s.to_bytes()))
}

/// An EIP-3009 authorization as a client builds it.
#[derive(Debug, Clone)]
struct Auth {
    from: Address,
    to: Address,
    value: U256,
    valid_after: u64,
    valid_before: u64,
    nonce: B256,
}

impl Auth {
    fn new(from: Address, to: Address, value: u64) -> Self {
        Self {
            from,
            to,
            value: U256::from(value),
            valid_after: 0,
            valid_before: now() + 300,
            nonce: B256::from(rand::random::<[u8; 32]>()),
        }
    }

    fn json(&self) -> Value {
        json!({
            "from": self.from.to_string(),
            "to": self.to.to_string(),
            "value": self.value.to_string(),
            "validAfter": self.valid_after.to_string(),
            "validBefore": self.valid_before.to_string(),
            "nonce": self.nonce.to_string(),
        })
    }

    /// Signed over the domain (`name`, "2", 31337, `token`) as
    /// TransferWithAuthorization, or ReceiveWithAuthorization when `receive`.
    fn sign(&self, signer: &PrivateKeySigner, name: &str, token: Address, receive: bool) -> String {
        let domain = Eip712Domain::new(
            Some(name.to_owned().into()),
            Some("2".into()),
            Some(U256::from(31337)),
            Some(token),
            None,
        );
        let hash = if receive {
            ReceiveWithAuthorization {
                from: self.from,
                to: self.to,
                value: self.value,
                validAfter: U256::from(self.valid_after),
                validBefore: U256::from(self.valid_before),
                nonce: self.nonce,
            }
            .eip712_signing_hash(&domain)
        } else {
            TransferWithAuthorization {
                from: self.from,
                to: self.to,
                value: self.value,
                validAfter: U256::from(self.valid_after),
                validBefore: U256::from(self.valid_before),
                nonce: self.nonce,
            }
            .eip712_signing_hash(&domain)
        };
        let sig = signer.sign_hash_sync(&hash).expect("sign");
        format!("0x{}", alloy::hex::encode(sig.as_bytes()))
    }
}

/// The v2 `PAYMENT-SIGNATURE` for `accepted` (an entry of the 402's accepts).
fn v2_payment(accepted: &Value, auth: &Auth, signature: &str) -> String {
    b64(&json!({
        "x402Version": 2,
        "accepted": accepted,
        "payload": {"signature": signature, "authorization": auth.json()},
    }))
}

/// The v1 `X-PAYMENT`.
fn v1_payment(network: &str, auth: &Auth, signature: &str) -> String {
    b64(&json!({
        "x402Version": 1,
        "scheme": "exact",
        "network": network,
        "payload": {"signature": signature, "authorization": auth.json()},
    }))
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<Value> {
        self.headers
            .get(name)
            .map(|v| unb64(v.to_str().expect("ascii")))
    }

    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or_default()
    }
}

async fn send(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> Answer {
    let mut req = reqwest::Client::new().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// The node with the relayer key and `extra` settings.
fn x402_config(stack: &Stack, extra: &[(&str, &str)]) -> Config {
    let relayer = key_hex(&stack.signer(RELAYER));
    let mut all = vec![("CHAINFRONT_RELAYER_KEY", relayer.as_str())];
    all.extend_from_slice(extra);
    node_config(stack, &all)
}

async fn usdc_of(stack: &Stack, who: Address) -> U256 {
    MockUSDC::new(stack.deployment.usdc, &stack.deployer)
        .balanceOf(who)
        .call()
        .await
        .expect("balance")
}

async fn nonce_of(stack: &Stack, who: Address) -> u64 {
    stack
        .deployer
        .get_transaction_count(who)
        .await
        .expect("nonce")
}

/// Wallet 1 buys a VM and the node indexes and provisions it.
async fn running_vm(stack: &Stack, node: &Node) -> U256 {
    let token = stack.buy_vm(1, 0, 7).await;
    indexed(node, stack).await;
    let s = &node.state;
    Worker::new(
        s.redis.clone(),
        ChainKeys::new(s.home.deployment.chain_id),
        Arc::new(DevProvider::default()),
        s.master.clone().expect("master key"),
        s.config.provisioning.clone(),
    )
    .pass()
    .await
    .expect("provisioned");
    token
}

/// Everything that can move money in these tests, to prove nothing did.
async fn ledger(stack: &Stack, wallets: &[Address]) -> Vec<U256> {
    let mut out = vec![U256::from(
        nonce_of(stack, stack.signer(RELAYER).address()).await,
    )];
    for w in wallets.iter().chain([&stack.deployment.treasury]) {
        out.push(usdc_of(stack, *w).await);
    }
    out
}

#[tokio::test]
async fn a_credentials_fetch_is_paid_settled_and_served_once() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(&stack, &[])).await;
    let (owner, stranger) = (stack.signer(1), stack.signer(2));
    let token = running_vm(&stack, &node).await;
    let url = format!("{}/x402/vm-credentials/{token}", node.url);
    let bearer = (
        "authorization",
        format!("Bearer {}", legacy_sig(&owner, token)),
    );
    let d = &stack.deployment;

    // No payment: 402 with the v2 requirements as a header and the v1 ones as the body.
    let a = send(
        reqwest::Method::GET,
        &url,
        std::slice::from_ref(&bearer),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED);
    let required = a.header("payment-required").expect("PAYMENT-REQUIRED");
    assert_eq!(required["x402Version"], 2);
    let accepted = required["accepts"][0].clone();
    assert_eq!(accepted["scheme"], "exact");
    assert_eq!(accepted["network"], "eip155:31337");
    assert_eq!(accepted["amount"], PRICE.to_string());
    assert_eq!(accepted["asset"], d.usdc.to_string());
    assert_eq!(accepted["payTo"], d.treasury.to_string());
    assert_eq!(
        accepted["extra"]["name"], "USD Coin",
        "read from the contract"
    );
    assert_eq!(accepted["extra"]["version"], "2");
    assert!(
        required["resource"]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/x402/vm-credentials/{token}")))
    );
    assert_eq!(a.body["x402Version"], 1);
    assert_eq!(a.body["accepts"][0]["maxAmountRequired"], PRICE.to_string());
    assert_eq!(
        a.body["accepts"][0]["network"], "eip155:31337",
        "no v1 client names chain 31337"
    );
    assert!(
        a.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("payment required"))
    );

    // A stranger's valid payment with a stranger's signature: 403, nothing charged.
    let before = ledger(&stack, &[owner.address(), stranger.address()]).await;
    let auth = Auth::new(stranger.address(), d.treasury, PRICE);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&stranger, "USD Coin", d.usdc, false),
    );
    let stranger_bearer = (
        "authorization",
        format!("Bearer {}", legacy_sig(&stranger, token)),
    );
    let a = send(
        reqwest::Method::GET,
        &url,
        &[stranger_bearer, ("payment-signature", pay.clone())],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        before,
        ledger(&stack, &[owner.address(), stranger.address()]).await
    );

    // The owner's signature with that same payment (anyone may pay): served.
    let a = send(
        reqwest::Method::GET,
        &url,
        &[bearer.clone(), ("payment-signature", pay.clone())],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["tokenId"], token.to_string());
    assert!(
        a.body["privateKey"]
            .as_str()
            .is_some_and(|k| k.contains("PRIVATE KEY"))
    );
    let response = a.header("payment-response").expect("PAYMENT-RESPONSE");
    assert_eq!(response["success"], true);
    assert_eq!(response["network"], "eip155:31337");
    assert_eq!(response["payer"], stranger.address().to_string());
    let tx: B256 = response["transaction"]
        .as_str()
        .expect("tx")
        .parse()
        .expect("hash");
    let receipt = stack
        .deployer
        .get_transaction_receipt(tx)
        .await
        .expect("rpc")
        .expect("mined before the answer");
    assert!(receipt.status());
    assert_eq!(
        receipt.from,
        stack.signer(RELAYER).address(),
        "the relayer pays gas"
    );
    assert_eq!(
        usdc_of(&stack, stranger.address()).await,
        before[2] - U256::from(PRICE)
    );
    assert_eq!(
        usdc_of(&stack, d.treasury).await,
        before[3] + U256::from(PRICE)
    );
    // Recorded as an x402 payment under the deposit id of its Transfer log.
    let log = receipt
        .inner
        .logs()
        .iter()
        .find(|l| {
            l.address() == d.usdc
                && l.topics().first()
                    == Some(&<MockUSDC::Transfer as alloy::sol_types::SolEvent>::SIGNATURE_HASH)
        })
        .and_then(|l| l.log_index)
        .expect("Transfer log");
    let x = node.state.x402.clone().expect("x402 on");
    let recorded = x
        .payment_for_log(tx, log)
        .await
        .expect("redis")
        .expect("recorded");
    assert_eq!(recorded["amount"], PRICE.to_string());
    let keys = ChainKeys::new(31337);
    assert!(
        chainfront::x402::is_payment(&node.state.redis, &keys, tx, log)
            .await
            .expect("redis"),
        "the deposit path sees a payment, not a deposit"
    );
    // A plain USDC transfer to the treasury (a deposit) is not a payment.
    let deposit = mined(
        MockUSDC::new(d.usdc, stack.wallet(3))
            .transfer(d.treasury, U256::from(5))
            .send()
            .await
            .expect("deposit"),
        "deposit",
    )
    .await
    .expect("mined");
    let deposit_log = deposit.inner.logs()[0].log_index.expect("index");
    assert!(
        !chainfront::x402::is_payment(
            &node.state.redis,
            &keys,
            deposit.transaction_hash,
            deposit_log
        )
        .await
        .expect("redis")
    );

    // The same payment again: one payment serves one request.
    let a = send(
        reqwest::Method::GET,
        &url,
        &[bearer.clone(), ("payment-signature", pay)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{:?}", a.body);

    // Version 1: X-PAYMENT, answered with X-PAYMENT-RESPONSE.
    let v1 = Auth::new(owner.address(), d.treasury, PRICE);
    let pay = v1_payment(
        "eip155:31337",
        &v1,
        &v1.sign(&owner, "USD Coin", d.usdc, false),
    );
    let a = send(
        reqwest::Method::GET,
        &url,
        &[bearer.clone(), ("x-payment", pay)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let response = a.header("x-payment-response").expect("X-PAYMENT-RESPONSE");
    assert_eq!(response["success"], true);
    assert_eq!(response["payer"], owner.address().to_string());

    // 20 concurrent requests with one payment: one settlement, one 200.
    let before = ledger(&stack, &[owner.address()]).await;
    let once = Auth::new(owner.address(), d.treasury, PRICE);
    let pay = v2_payment(
        &accepted,
        &once,
        &once.sign(&owner, "USD Coin", d.usdc, false),
    );
    let headers = [bearer.clone(), ("payment-signature", pay.clone())];
    let answers = futures_util::future::join_all(
        (0..20).map(|_| send(reqwest::Method::GET, &url, &headers, None)),
    )
    .await;
    let ok = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    let conflicts = answers
        .iter()
        .filter(|a| a.status == StatusCode::CONFLICT)
        .count();
    assert_eq!(
        (ok, conflicts),
        (1, 19),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let after = ledger(&stack, &[owner.address()]).await;
    assert_eq!(
        after[0],
        before[0] + U256::from(1),
        "one relayer transaction"
    );
    assert_eq!(after[1], before[1] - U256::from(PRICE), "charged once");
    assert_eq!(after[2], before[2] + U256::from(PRICE));
}

#[tokio::test]
async fn refused_payments_say_why_and_move_nothing() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(&stack, &[])).await;
    let (owner, other) = (stack.signer(1), stack.signer(3));
    let broke = PrivateKeySigner::random();
    let token = running_vm(&stack, &node).await;
    let url = format!("{}/x402/vm-credentials/{token}", node.url);
    let bearer = (
        "authorization",
        format!("Bearer {}", legacy_sig(&owner, token)),
    );
    let d = stack.deployment.clone();
    let required = send(reqwest::Method::GET, &url, &[], None)
        .await
        .header("payment-required")
        .expect("402");
    let accepted = required["accepts"][0].clone();

    // A nonce the payer already used on chain (it submitted the authorization itself).
    let used = Auth::new(owner.address(), d.treasury, PRICE);
    let used_sig = used.sign(&owner, "USD Coin", d.usdc, false);
    let sig = alloy::primitives::Bytes::from(alloy::hex::decode(&used_sig[2..]).expect("hex"));
    mined(
        MockUSDC::new(d.usdc, stack.wallet(1))
            .transferWithAuthorization_0(
                used.from,
                used.to,
                used.value,
                U256::from(used.valid_after),
                U256::from(used.valid_before),
                used.nonce,
                sig,
            )
            .send()
            .await
            .expect("self-submitted"),
        "self-submitted",
    )
    .await
    .expect("mined");

    let watched = [owner.address(), other.address(), broke.address()];
    let before = ledger(&stack, &watched).await;
    let good = || Auth::new(owner.address(), d.treasury, PRICE);
    let mut cases: Vec<(&str, Auth, String, &str)> = Vec::new();
    let mut a = good();
    a.valid_before = now() - 10;
    cases.push((
        "expired",
        a.clone(),
        a.sign(&owner, "USD Coin", d.usdc, false),
        "invalid_exact_evm_payload_authorization_valid_before",
    ));
    let mut a = good();
    a.valid_after = now() + 600;
    cases.push((
        "not yet valid",
        a.clone(),
        a.sign(&owner, "USD Coin", d.usdc, false),
        "invalid_exact_evm_payload_authorization_valid_after",
    ));
    let mut a = good();
    a.value = U256::from(PRICE - 1);
    cases.push((
        "underpaid",
        a.clone(),
        a.sign(&owner, "USD Coin", d.usdc, false),
        "invalid_exact_evm_payload_authorization_value",
    ));
    let mut a = good();
    a.to = other.address();
    cases.push((
        "wrong recipient",
        a.clone(),
        a.sign(&owner, "USD Coin", d.usdc, false),
        "invalid_exact_evm_payload_recipient_mismatch",
    ));
    let a = good();
    cases.push((
        "wrong token domain",
        a.clone(),
        a.sign(&owner, "USDC", d.usdc, false),
        "invalid_exact_evm_payload_signature",
    ));
    cases.push((
        "reused nonce",
        used.clone(),
        used_sig.clone(),
        "invalid_exact_evm_nonce_already_used",
    ));
    let a = good();
    cases.push((
        "wrongly signed",
        a.clone(),
        a.sign(&other, "USD Coin", d.usdc, false),
        "invalid_exact_evm_payload_signature",
    ));
    let a = Auth::new(broke.address(), d.treasury, PRICE);
    cases.push((
        "insufficient balance",
        a.clone(),
        a.sign(&broke, "USD Coin", d.usdc, false),
        "invalid_exact_evm_insufficient_balance",
    ));

    for (name, auth, sig, code) in &cases {
        let a = send(
            reqwest::Method::GET,
            &url,
            &[
                bearer.clone(),
                ("payment-signature", v2_payment(&accepted, auth, sig)),
            ],
            None,
        )
        .await;
        assert_eq!(
            a.status,
            StatusCode::PAYMENT_REQUIRED,
            "{name}: {:?}",
            a.body
        );
        assert_eq!(a.reason(), *code, "{name}: {:?}", a.body["error"]);
        assert!(
            a.header("payment-required").is_some(),
            "{name}: requirements again"
        );
        assert!(!a.body["error"].as_str().unwrap_or_default().is_empty());
    }
    // The wrong domain is explained as such.
    let a = &cases[4];
    let answer = send(
        reqwest::Method::GET,
        &url,
        &[
            bearer.clone(),
            ("payment-signature", v2_payment(&accepted, &a.1, &a.2)),
        ],
        None,
    )
    .await;
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("another domain"),
        "{:?}",
        answer.body
    );
    assert_eq!(
        before,
        ledger(&stack, &watched).await,
        "nothing moved, no transaction sent"
    );

    // Malformed headers are 400; after all that, a good payment still works.
    let a = send(
        reqwest::Method::GET,
        &url,
        &[bearer.clone(), ("payment-signature", "%%%".into())],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let ok = good();
    let pay = v2_payment(&accepted, &ok, &ok.sign(&owner, "USD Coin", d.usdc, false));
    let a = send(
        reqwest::Method::GET,
        &url,
        &[bearer, ("payment-signature", pay)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
}

#[tokio::test]
async fn a_vm_is_bought_gas_free_and_an_idempotent_retry_gets_the_same_vm() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(&stack, &[])).await;
    let d = stack.deployment.clone();
    // A payer with USDC and no ETH at all.
    let payer = PrivateKeySigner::random();
    mined(
        MockUSDC::new(d.usdc, &stack.deployer)
            .mint(payer.address(), U256::from(100_000_000u64))
            .send()
            .await
            .expect("mint"),
        "mint",
    )
    .await
    .expect("minted");
    let url = format!("{}/x402/purchase-compute", node.url);
    let order = json!({"vm": {"tier": 0, "days": 3}});
    let a = send(reqwest::Method::POST, &url, &[], Some(order.clone())).await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED, "{:?}", a.body);
    let accepted = a.header("payment-required").expect("402")["accepts"][0].clone();
    assert_eq!(
        accepted["amount"],
        (200_000u64 * 3).to_string(),
        "tier 0 price × days"
    );
    assert_eq!(accepted["payTo"], d.vm_marketplace.to_string());
    assert_eq!(accepted["extra"]["primaryType"], "ReceiveWithAuthorization");

    // What a standard client signs (TransferWithAuthorization) is refused by name.
    let auth = Auth::new(payer.address(), d.vm_marketplace, 600_000);
    let wrong = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&payer, "USD Coin", d.usdc, false),
    );
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", wrong)],
        Some(order.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ReceiveWithAuthorization"),
        "{:?}",
        a.body
    );

    // ReceiveWithAuthorization, 20 concurrent requests with one Idempotency-Key.
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&payer, "USD Coin", d.usdc, true),
    );
    let headers = [
        ("payment-signature", pay.clone()),
        ("idempotency-key", "order-1".to_owned()),
    ];
    let answers = futures_util::future::join_all(
        (0..20).map(|_| send(reqwest::Method::POST, &url, &headers, Some(order.clone()))),
    )
    .await;
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    }
    let first = &answers[0].body;
    assert!(
        answers.iter().all(|a| a.body == *first),
        "one answer, replayed"
    );
    assert_eq!(
        answers
            .iter()
            .filter(|a| a.headers.contains_key("x-idempotent-replay"))
            .count(),
        19
    );
    let token: U256 = first["tokenId"]
        .as_str()
        .expect("tokenId")
        .parse()
        .expect("id");
    let vm = VMMarketplace::new(d.vm_marketplace, &stack.deployer);
    assert_eq!(
        vm.ownerOf(token).call().await.expect("owner"),
        payer.address()
    );
    assert_eq!(
        vm.nextTokenId().call().await.expect("next"),
        token + U256::from(1),
        "one VM minted"
    );
    assert_eq!(
        usdc_of(&stack, payer.address()).await,
        U256::from(100_000_000u64 - 600_000)
    );
    assert_eq!(
        stack
            .deployer
            .get_balance(payer.address())
            .await
            .expect("eth"),
        U256::ZERO,
        "gas-free: the payer never needed ETH"
    );
    assert_eq!(first["owner"], payer.address().to_string());
    assert_eq!(first["totalCost"], "0.60");
    // Without the key, the same payment is a conflict, not a second VM.
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay)],
        Some(order.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT);

    // A settlement not mined within the timeout is resumed, not repeated.
    let slow = start_node(x402_config(
        &stack,
        &[("CHAINFRONT_X402__SETTLE_TIMEOUT_SECS", "1")],
    ))
    .await;
    let _: () = stack
        .deployer
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .expect("automine off");
    let url = format!("{}/x402/purchase-compute", slow.url);
    let auth = Auth::new(payer.address(), d.vm_marketplace, 600_000);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&payer, "USD Coin", d.usdc, true),
    );
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay.clone())],
        Some(order.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED, "{:?}", a.body);
    assert_eq!(a.reason(), "settlement_pending");
    let pending = a.header("payment-response").expect("PAYMENT-RESPONSE");
    assert_eq!(pending["success"], false);
    let _: String = stack
        .deployer
        .raw_request("evm_mine".into(), ())
        .await
        .expect("mine");
    let _: () = stack
        .deployer
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .expect("automine on");
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay)],
        Some(order),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(
        a.body["transaction"], pending["transaction"],
        "the first transaction, resumed"
    );
    assert_eq!(
        vm.nextTokenId().call().await.expect("next"),
        token + U256::from(2)
    );
    assert_eq!(
        usdc_of(&stack, payer.address()).await,
        U256::from(100_000_000u64 - 1_200_000)
    );
}

#[tokio::test]
async fn contract_wallets_pay_through_eip1271_and_erc6492_is_refused() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(&stack, &[])).await;
    let owner = stack.signer(1);
    let token = running_vm(&stack, &node).await;
    let d = stack.deployment.clone();
    let url = format!("{}/x402/vm-credentials/{token}", node.url);
    let bearer = (
        "authorization",
        format!("Bearer {}", legacy_sig(&owner, token)),
    );
    let accepted = send(reqwest::Method::GET, &url, &[], None)
        .await
        .header("payment-required")
        .expect("402")["accepts"][0]
        .clone();
    let wallet_key = stack.signer(4);
    let wallet = *MockSmartWallet::deploy(&stack.deployer, wallet_key.address())
        .await
        .expect("wallet")
        .address();
    mined(
        MockUSDC::new(d.usdc, &stack.deployer)
            .mint(wallet, U256::from(PRICE * 10))
            .send()
            .await
            .expect("mint"),
        "mint",
    )
    .await
    .expect("minted");

    // The wallet's owner key signs for the wallet: EIP-1271 approves.
    let auth = Auth::new(wallet, d.treasury, PRICE);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&wallet_key, "USD Coin", d.usdc, false),
    );
    let a = send(
        reqwest::Method::GET,
        &url,
        &[bearer.clone(), ("payment-signature", pay)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(usdc_of(&stack, wallet).await, U256::from(PRICE * 9));

    // Another key's signature for the wallet: the wallet says no.
    let auth = Auth::new(wallet, d.treasury, PRICE);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&stack.signer(5), "USD Coin", d.usdc, false),
    );
    let a = send(
        reqwest::Method::GET,
        &url,
        &[bearer.clone(), ("payment-signature", pay)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("EIP-1271"),
        "{:?}",
        a.body
    );

    // ERC-6492 (a wallet not deployed yet): recognised and refused.
    let auth = Auth::new(Address::repeat_byte(0x65), d.treasury, PRICE);
    let wrapped = format!("0x{}{}", "00".repeat(160), "6492".repeat(16));
    let pay = v2_payment(&accepted, &auth, &wrapped);
    let a = send(
        reqwest::Method::GET,
        &url,
        &[bearer, ("payment-signature", pay)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        a.reason(),
        "invalid_exact_evm_payload_undeployed_smart_wallet"
    );
    assert_eq!(
        usdc_of(&stack, wallet).await,
        U256::from(PRICE * 9),
        "nothing more moved"
    );
}

/// A stand-in facilitator (the real ones are outside this machine): settles
/// with its own key on anvil — or, as `liar`, reports a transaction that
/// never happened.
async fn facilitator_stub(rpc: String, key: PrivateKeySigner, liar: bool) -> String {
    use axum::routing::post;
    let provider = chainfront::deploy::signing_provider(&rpc, key).expect("provider");
    let settle = move |axum::Json(req): axum::Json<Value>| {
        let provider = provider.clone();
        async move {
            if liar {
                return axum::Json(
                    json!({"success": true, "transaction": B256::from(rand::random::<[u8; 32]>()).to_string(), "network": "eip155:31337"}),
                );
            }
            let p = &req["paymentPayload"]["payload"];
            let a = &p["authorization"];
            let u = |k: &str| -> U256 { a[k].as_str().expect("field").parse().expect("uint") };
            let sig = alloy::hex::decode(
                p["signature"]
                    .as_str()
                    .expect("sig")
                    .trim_start_matches("0x"),
            )
            .expect("hex");
            let token: Address = req["paymentRequirements"]["asset"]
                .as_str()
                .expect("asset")
                .parse()
                .expect("address");
            let usdc = MockUSDC::new(token, &provider);
            let call = usdc.transferWithAuthorization_0(
                a["from"].as_str().expect("from").parse().expect("address"),
                a["to"].as_str().expect("to").parse().expect("address"),
                u("value"),
                u("validAfter"),
                u("validBefore"),
                a["nonce"].as_str().expect("nonce").parse().expect("nonce"),
                sig.into(),
            );
            let receipt = mined(call.send().await.expect("send"), "settle")
                .await
                .expect("mined");
            axum::Json(
                json!({"success": true, "transaction": receipt.transaction_hash.to_string(), "network": "eip155:31337"}),
            )
        }
    };
    let app = axum::Router::new()
        .route(
            "/verify",
            post(|| async { axum::Json(json!({"isValid": true})) }),
        )
        .route("/settle", post(settle));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn an_external_facilitator_settles_and_is_checked_against_the_chain() {
    let stack = Stack::start().await;
    let owner = stack.signer(1);
    let good = facilitator_stub(stack.anvil.endpoint(), stack.signer(7), false).await;
    let liar = facilitator_stub(stack.anvil.endpoint(), stack.signer(7), true).await;
    // No relayer key: settlement is the facilitator's.
    let node = start_node(node_config(
        &stack,
        &[("CHAINFRONT_X402__FACILITATOR_URL", &good)],
    ))
    .await;
    let lying = start_node(node_config(
        &stack,
        &[("CHAINFRONT_X402__FACILITATOR_URL", &liar)],
    ))
    .await;
    let token = running_vm(&stack, &node).await;
    let d = stack.deployment.clone();
    let bearer = (
        "authorization",
        format!("Bearer {}", legacy_sig(&owner, token)),
    );
    let url = format!("{}/x402/vm-credentials/{token}", node.url);
    let accepted = send(reqwest::Method::GET, &url, &[], None)
        .await
        .header("payment-required")
        .expect("402")["accepts"][0]
        .clone();

    let before = usdc_of(&stack, owner.address()).await;
    let auth = Auth::new(owner.address(), d.treasury, PRICE);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&owner, "USD Coin", d.usdc, false),
    );
    let a = send(
        reqwest::Method::GET,
        &url,
        &[bearer.clone(), ("payment-signature", pay)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let tx: B256 = a.header("payment-response").expect("response")["transaction"]
        .as_str()
        .expect("tx")
        .parse()
        .expect("hash");
    let receipt = stack
        .deployer
        .get_transaction_receipt(tx)
        .await
        .expect("rpc")
        .expect("mined");
    assert_eq!(
        receipt.from,
        stack.signer(7).address(),
        "sent by the facilitator"
    );
    assert_eq!(
        usdc_of(&stack, owner.address()).await,
        before - U256::from(PRICE)
    );

    // A facilitator that reports a settlement the chain does not show: refused.
    let url = format!("{}/x402/vm-credentials/{token}", lying.url);
    let auth = Auth::new(owner.address(), d.treasury, PRICE);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&owner, "USD Coin", d.usdc, false),
    );
    let a = send(
        reqwest::Method::GET,
        &url,
        &[bearer, ("payment-signature", pay)],
        None,
    )
    .await;
    assert_ne!(a.status, StatusCode::OK, "{:?}", a.body);
    assert!(a.body["privateKey"].is_null(), "nothing served");
    assert_eq!(
        usdc_of(&stack, owner.address()).await,
        before - U256::from(PRICE)
    );
}

#[tokio::test]
async fn supported_lists_what_the_node_accepts() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(&stack, &[])).await;
    let a = send(
        reqwest::Method::GET,
        &format!("{}/x402/supported", node.url),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["kinds"][0]["x402Version"], 2);
    assert_eq!(a.body["kinds"][0]["network"], "eip155:31337");
    assert_eq!(a.body["kinds"][1]["x402Version"], 1);
    assert_eq!(
        a.body["signers"]["eip155:*"][0],
        stack.signer(RELAYER).address().to_string()
    );
    assert_eq!(a.body["settlement"], "relayer");
    assert_eq!(a.body["routes"][0]["amount"], PRICE.to_string());
    // Credits wait for the Compute API's ledger: refused before any payment.
    let a = send(
        reqwest::Method::POST,
        &format!("{}/x402/purchase-compute", node.url),
        &[],
        Some(json!({"amount": "5.00"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    let a = send(
        reqwest::Method::POST,
        &format!("{}/x402/purchase-compute", node.url),
        &[],
        Some(json!({"vm": {"tier": 9, "days": 1}})),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

/// Runs a client from `tests/clients/` and returns its one-line JSON report
/// (without blocking the runtime the node under test runs on).
async fn run_client(program: &str, args: &[String]) -> Value {
    let root = crate::harness::repo_root();
    let (bin, script): (std::path::PathBuf, &str) = if program.ends_with(".py") {
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "run scripts/bootstrap first (it installs the x402 Python client into .venv)"
        );
        (python, program)
    } else {
        ("node".into(), program)
    };
    let out = tokio::process::Command::new(bin)
        .arg(root.join("tests/clients").join(script))
        .args(args)
        .current_dir(&root)
        .kill_on_drop(true)
        .output()
        .await
        .expect("client runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{program}: not a JSON report ({e}):\n{stdout}\n{stderr}"))
}

/// Checks a client's report of a paid credentials fetch.
fn assert_paid(report: &Value, token: U256, payer: Address, what: &str) {
    assert_eq!(report["status"], 200, "{what}: {report}");
    assert_eq!(report["body"]["tokenId"], token.to_string(), "{what}");
    assert_eq!(
        report["paymentResponse"]["success"], true,
        "{what}: {report}"
    );
    assert_eq!(
        report["paymentResponse"]["payer"]
            .as_str()
            .map(str::to_lowercase),
        Some(payer.to_string().to_lowercase()),
        "{what}"
    );
}

#[tokio::test]
async fn the_official_python_and_js_clients_pay_unmodified() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(&stack, &[])).await;
    let (owner, payer) = (stack.signer(1), stack.signer(2));
    let token = running_vm(&stack, &node).await;
    let url = format!("{}/x402/vm-credentials/{token}", node.url);
    let args = vec![
        "--url".to_owned(),
        url,
        "--payer-key".into(),
        key_hex(&payer),
        "--owner-key".into(),
        key_hex(&owner),
        "--token-id".into(),
        token.to_string(),
        "--allow-asset".into(),
        format!("eip155:31337={}", stack.deployment.usdc),
    ];
    let before = usdc_of(&stack, payer.address()).await;
    let mut paid = 0u64;
    for mode in ["requests", "httpx"] {
        let mut a = vec![mode.to_owned()];
        a.extend(args.iter().cloned());
        let report = run_client("x402_python.py", &a).await;
        assert_paid(&report, token, payer.address(), mode);
        paid += 1;
    }
    let report = run_client("x402_fetch.mjs", &args).await;
    assert_paid(&report, token, payer.address(), "@x402/fetch");
    paid += 1;
    assert_eq!(
        usdc_of(&stack, payer.address()).await,
        before - U256::from(PRICE * paid),
        "each paid request settled once"
    );
}

#[tokio::test]
async fn version_1_clients_pay_with_x_payment_on_a_named_network() {
    // The clients' v1 path only knows named networks: an anvil with Base
    // Sepolia's chain id, so the node offers "base-sepolia".
    let stack = Stack::start_on(84532).await;
    let node = start_node(x402_config(
        &stack,
        &[("CHAINFRONT_CHAINS__LOCAL__CHAIN_ID", "84532")],
    ))
    .await;
    let (owner, payer) = (stack.signer(1), stack.signer(2));
    let token = running_vm(&stack, &node).await;
    let url = format!("{}/x402/vm-credentials/{token}", node.url);
    let a = send(reqwest::Method::GET, &url, &[], None).await;
    assert_eq!(a.body["accepts"][0]["network"], "base-sepolia");
    let args = vec![
        "--url".to_owned(),
        url,
        "--payer-key".into(),
        key_hex(&payer),
        "--owner-key".into(),
        key_hex(&owner),
        "--token-id".into(),
        token.to_string(),
        "--allow-asset".into(),
        format!("eip155:84532={}", stack.deployment.usdc),
        "--allow-asset".into(),
        format!("base-sepolia={}", stack.deployment.usdc),
    ];
    let mut py = vec!["v1".to_owned()];
    py.extend(args.iter().cloned());
    let report = run_client("x402_python.py", &py).await;
    assert_paid(&report, token, payer.address(), "python v1");
    assert_eq!(report["paymentResponse"]["network"], "base-sepolia");
    let mut js = args.clone();
    js.push("--v1".into());
    let report = run_client("x402_fetch.mjs", &js).await;
    assert_paid(&report, token, payer.address(), "js v1");
    // And v2 on the same chain.
    let report = run_client("x402_fetch.mjs", &args).await;
    assert_paid(&report, token, payer.address(), "js v2 on 84532");
    assert_eq!(report["paymentResponse"]["network"], "eip155:84532");
}

#[tokio::test]
async fn a_settlement_waits_for_the_configured_confirmations() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(
        &stack,
        &[("CHAINFRONT_X402__CONFIRMATIONS", "2")],
    ))
    .await;
    let d = stack.deployment.clone();
    let payer = stack.signer(2);
    let url = format!("{}/x402/purchase-compute", node.url);
    let order = json!({"vm": {"tier": 0, "days": 1}});
    let accepted = send(reqwest::Method::POST, &url, &[], Some(order.clone()))
        .await
        .header("payment-required")
        .expect("402")["accepts"][0]
        .clone();
    let auth = Auth::new(payer.address(), d.vm_marketplace, 200_000);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&payer, "USD Coin", d.usdc, true),
    );
    // Blocks keep coming (anvil only mines on transactions otherwise).
    let miner = {
        let p = stack.deployer.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                let _: Result<String, _> = p.raw_request("evm_mine".into(), ()).await;
            }
        })
    };
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay)],
        Some(order),
    )
    .await;
    let head = stack.deployer.get_block_number().await.expect("head");
    miner.abort();
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let tx: B256 = a.body["transaction"]
        .as_str()
        .expect("tx")
        .parse()
        .expect("hash");
    let block = stack
        .deployer
        .get_transaction_receipt(tx)
        .await
        .expect("rpc")
        .expect("mined")
        .block_number
        .expect("block");
    assert!(
        head >= block + 2,
        "served at head {head}, settled in {block}"
    );
}

#[tokio::test]
async fn a_claim_abandoned_by_a_dead_replica_is_taken_over_by_the_same_payment() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(&stack, &[])).await;
    let d = stack.deployment.clone();
    let payer = stack.signer(2);
    let url = format!("{}/x402/purchase-compute", node.url);
    let order = json!({"vm": {"tier": 0, "days": 1}});
    let accepted = send(reqwest::Method::POST, &url, &[], Some(order.clone()))
        .await
        .header("payment-required")
        .expect("402")["accepts"][0]
        .clone();
    let auth = Auth::new(payer.address(), d.vm_marketplace, 200_000);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&payer, "USD Coin", d.usdc, true),
    );

    // Another replica claimed this payment and died: its lease ran out.
    let decoded = chainfront::x402::proto::decode_payment(pay.as_bytes()).expect("decodes");
    let key = ChainKeys::new(31337).x402_claim(d.usdc, payer.address(), auth.nonce);
    let mut redis = node.state.redis.clone();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("state")
        .arg("settling")
        .arg("payload")
        .arg(chainfront::x402::hash_hex(
            decoded.raw.to_string().as_bytes(),
        ))
        .arg("lease")
        .arg(1)
        .query_async(&mut redis)
        .await
        .expect("claim");
    // A different payment with the same authorization nonce is still refused.
    let mut other = auth.clone();
    other.valid_before += 1;
    let other_pay = v2_payment(
        &accepted,
        &other,
        &other.sign(&payer, "USD Coin", d.usdc, true),
    );
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", other_pay)],
        Some(order.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{:?}", a.body);
    // The same payment resumes the settlement and is served once.
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay.clone())],
        Some(order.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay)],
        Some(order),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let vm = VMMarketplace::new(d.vm_marketplace, &stack.deployer);
    assert_eq!(
        vm.nextTokenId().call().await.expect("next"),
        U256::from(2),
        "one VM"
    );
}

#[tokio::test]
async fn a_pending_settlement_is_reconciled_even_after_its_authorization_expired() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(
        &stack,
        &[("CHAINFRONT_X402__SETTLE_TIMEOUT_SECS", "1")],
    ))
    .await;
    let d = stack.deployment.clone();
    let payer = stack.signer(2);
    let url = format!("{}/x402/purchase-compute", node.url);
    let order = json!({"vm": {"tier": 0, "days": 1}});
    let accepted = send(reqwest::Method::POST, &url, &[], Some(order.clone()))
        .await
        .header("payment-required")
        .expect("402")["accepts"][0]
        .clone();
    let mut auth = Auth::new(payer.address(), d.vm_marketplace, 200_000);
    auth.valid_before = now() + 8;
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&payer, "USD Coin", d.usdc, true),
    );
    let _: () = stack
        .deployer
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .expect("automine off");
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay.clone())],
        Some(order.clone()),
    )
    .await;
    assert_eq!(a.reason(), "settlement_pending", "{:?}", a.body);
    // Mined in time...
    let _: String = stack
        .deployer
        .raw_request("evm_mine".into(), ())
        .await
        .expect("mine");
    let _: () = stack
        .deployer
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .expect("automine on");
    // ...but the client comes back only after validBefore.
    while now() <= auth.valid_before {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay)],
        Some(order.clone()),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "reconciled, not refused as expired: {:?}",
        a.body
    );
    // A new payment that is already expired is still refused.
    let mut late = Auth::new(payer.address(), d.vm_marketplace, 200_000);
    late.valid_before = now() - 1;
    let pay = v2_payment(
        &accepted,
        &late,
        &late.sign(&payer, "USD Coin", d.usdc, true),
    );
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay)],
        Some(order),
    )
    .await;
    assert_eq!(
        a.reason(),
        "invalid_exact_evm_payload_authorization_valid_before"
    );
}
