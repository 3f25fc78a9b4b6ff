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

use crate::harness::{Stack, wait_until};

/// How long a wait on the chain or the node may take.
const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
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
    assert_eq!(a.body["routes"][2]["available"], true, "credits");
    assert_eq!(a.body["routes"][3]["path"], "/v1/compute/{service}");
    let a = send(
        reqwest::Method::POST,
        &format!("{}/x402/purchase-compute", node.url),
        &[],
        Some(json!({"amount": "5.00"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        a.header("payment-required").expect("offer")["accepts"][0]["amount"],
        "5000000"
    );
    // Without the Compute API there are no credits: refused before any payment.
    let off = start_node(x402_config(
        &stack,
        &[("CHAINFRONT_COMPUTE__ENABLED", "false")],
    ))
    .await;
    let a = send(
        reqwest::Method::POST,
        &format!("{}/x402/purchase-compute", off.url),
        &[],
        Some(json!({"amount": "5.00"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED, "{:?}", a.body);
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

// ---- Credits, jobs paid per call, and payments that are never deposits ----

/// The payer's Compute balance.
async fn balance_of(node: &Node, who: Address) -> chainfront::ledger::Balance {
    node.state
        .compute
        .as_ref()
        .expect("compute on")
        .ledger()
        .balance(who)
        .await
        .expect("balance")
}

/// The ledger's record of one transfer's deposit key.
async fn credit_record(
    node: &Node,
    tx: B256,
    log: u64,
) -> Option<chainfront::ledger::CreditRecord> {
    let key = chainfront_indexer::keys::LedgerKeys::deposit_credit(31337, tx, log);
    node.state
        .compute
        .as_ref()
        .expect("compute on")
        .ledger()
        .credit_records(&[key])
        .await
        .expect("records")
        .pop()
        .flatten()
}

/// Waits until the indexer has the head, then runs one pass of the
/// deposit reconciler over the home chain (the node runs its own too).
async fn reconciled(node: &Node, stack: &Stack) {
    indexed(node, stack).await;
    let ledger = node
        .state
        .compute
        .as_ref()
        .expect("compute on")
        .ledger()
        .clone();
    let followed = node
        .state
        .config
        .chain_specs()
        .expect("specs")
        .into_iter()
        .map(|s| chainfront::ledger::reconcile::Followed {
            chain_id: s.chain_id,
            window: s.follow.window,
        })
        .collect();
    chainfront::ledger::reconcile::Reconciler::new(ledger, followed)
        .pass()
        .await
        .expect("reconcile pass");
}

/// The index of the USDC `Transfer` log in `tx`.
async fn transfer_log(stack: &Stack, tx: B256) -> u64 {
    let receipt = stack
        .deployer
        .get_transaction_receipt(tx)
        .await
        .expect("rpc")
        .expect("mined");
    receipt
        .inner
        .logs()
        .iter()
        .find(|l| {
            l.address() == stack.deployment.usdc
                && l.topics().first()
                    == Some(&<MockUSDC::Transfer as alloy::sol_types::SolEvent>::SIGNATURE_HASH)
        })
        .and_then(|l| l.log_index)
        .expect("Transfer log")
}

fn paid_tx(a: &Answer) -> B256 {
    a.header("payment-response").expect("PAYMENT-RESPONSE")["transaction"]
        .as_str()
        .expect("tx")
        .parse()
        .expect("hash")
}

/// `POST /v1/deposit` of `tx` for `wallet`.
async fn prove_deposit(node: &Node, wallet: Address, tx: B256, amount: &str) -> Answer {
    send(
        reqwest::Method::POST,
        &format!("{}/v1/deposit", node.url),
        &[],
        Some(json!({
            "wallet": wallet.to_string(),
            "paymentProof": {"txHash": tx.to_string(), "network": "local", "amountUsd": amount, "token": "USDC", "timestamp": 1706500000000u64}
        })),
    )
    .await
}

#[tokio::test]
async fn credits_bought_with_x402_are_credited_once_whoever_sees_the_transfer_first() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(&stack, &[])).await;
    let d = stack.deployment.clone();
    let payer = stack.signer(3);
    let url = format!("{}/x402/purchase-compute", node.url);

    // Amounts the node does not sell: 400 before any payment is asked for.
    for (body, why) in [
        (json!({"amount": "0.01"}), "below credits_min"),
        (json!({"amount": 5000}), "above credits_max"),
        (json!({"amount": "1.0000001"}), "finer than a base unit"),
        (json!({"amount": "ten"}), "not a number"),
        (json!({"amount": "1", "vm": {"tier": 0, "days": 1}}), "both"),
    ] {
        let a = send(reqwest::Method::POST, &url, &[], Some(body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{why}: {:?}", a.body);
    }

    // 402: exactly 2.50 USDC to the treasury.
    let order = json!({"amount": "2.50"});
    let a = send(reqwest::Method::POST, &url, &[], Some(order.clone())).await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED, "{:?}", a.body);
    let accepted = a.header("payment-required").expect("402")["accepts"][0].clone();
    assert_eq!(accepted["amount"], "2500000");
    assert_eq!(accepted["payTo"], d.treasury.to_string());

    // Credits are what you pay, exactly: paying more is refused, nothing moves.
    let before = ledger(&stack, &[payer.address()]).await;
    let over = Auth::new(payer.address(), d.treasury, 3_000_000);
    let pay = v2_payment(
        &accepted,
        &over,
        &over.sign(&payer, "USD Coin", d.usdc, false),
    );
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay)],
        Some(order.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(a.reason(), "invalid_exact_evm_payload_authorization_value");
    assert_eq!(before, ledger(&stack, &[payer.address()]).await);

    // Paid: settled, credited to the payer's balance.
    let auth = Auth::new(payer.address(), d.treasury, 2_500_000);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&payer, "USD Coin", d.usdc, false),
    );
    let headers = [
        ("payment-signature", pay.clone()),
        ("idempotency-key", "buy-credits-1".to_owned()),
    ];
    let a = send(reqwest::Method::POST, &url, &headers, Some(order.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["success"], true);
    assert_eq!(a.body["credits"].to_string(), "2.5");
    assert_eq!(a.body["alreadyCredited"], false);
    let tx: B256 = a.body["transaction"]
        .as_str()
        .expect("tx")
        .parse()
        .expect("hash");
    assert_eq!(paid_tx(&a), tx);
    let b = balance_of(&node, payer.address()).await;
    assert_eq!((b.available.0, b.deposited.0), (2_500_000, 2_500_000));
    let log = transfer_log(&stack, tx).await;
    let record = credit_record(&node, tx, log).await.expect("credited");
    assert!(record.credited && !record.consumed);
    assert_eq!(
        record.source, "x402",
        "under the transfer's own deposit key"
    );
    assert_eq!(
        usdc_of(&stack, payer.address()).await,
        before[1] - U256::from(2_500_000u64)
    );

    // The same request with the same key: the first answer again.
    let again = send(reqwest::Method::POST, &url, &headers, Some(order.clone())).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again
            .headers
            .get("x-idempotent-replay")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(again.body["transaction"], a.body["transaction"]);
    // Without it: one payment, one purchase.
    let a2 = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay)],
        Some(order.clone()),
    )
    .await;
    assert_eq!(a2.status, StatusCode::CONFLICT);

    // The indexer sees the transfer and the reconciler passes; the payer
    // proves it as a deposit too: still credited once.
    reconciled(&node, &stack).await;
    let proved = prove_deposit(&node, payer.address(), tx, "2.50").await;
    assert_eq!(proved.status, StatusCode::OK, "{:?}", proved.body);
    assert_eq!(proved.body["alreadyCredited"], true);
    let b = balance_of(&node, payer.address()).await;
    assert_eq!((b.available.0, b.deposited.0), (2_500_000, 2_500_000));

    // The other order: the deposit path first (the payment waits for two
    // confirmations, which only come when this test mines them), x402 second.
    let slow = start_node(x402_config(
        &stack,
        &[("CHAINFRONT_X402__CONFIRMATIONS", "2")],
    ))
    .await;
    let auth = Auth::new(payer.address(), d.treasury, 1_000_000);
    let order = json!({"amount": "1"});
    let accepted = send(
        reqwest::Method::POST,
        &format!("{}/x402/purchase-compute", slow.url),
        &[],
        Some(order.clone()),
    )
    .await
    .header("payment-required")
    .expect("402")["accepts"][0]
        .clone();
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&payer, "USD Coin", d.usdc, false),
    );
    let paying = tokio::spawn({
        let url = format!("{}/x402/purchase-compute", slow.url);
        async move {
            send(
                reqwest::Method::POST,
                &url,
                &[("payment-signature", pay)],
                Some(order),
            )
            .await
        }
    });
    // The relayer's transaction, as the sender recorded it before broadcasting.
    let send_id = chainfront::x402::settle::send_id(d.usdc, payer.address(), auth.nonce, true);
    let mut redis = slow.state.redis.clone();
    wait_until("the settlement to be mined", MINUTE, || {
        let mut redis = redis.clone();
        let key = ChainKeys::new(31337).tx(&send_id);
        let stack = &stack;
        async move {
            let hash: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg("hash")
                .query_async(&mut redis)
                .await
                .expect("redis");
            match hash.and_then(|h| h.parse::<B256>().ok()) {
                Some(h) => stack
                    .deployer
                    .get_transaction_receipt(h)
                    .await
                    .expect("rpc")
                    .is_some(),
                None => false,
            }
        }
    })
    .await;
    let hash: String = redis::cmd("HGET")
        .arg(ChainKeys::new(31337).tx(&send_id))
        .arg("hash")
        .query_async(&mut redis)
        .await
        .expect("redis");
    let tx: B256 = hash.parse().expect("hash");
    let proved = prove_deposit(&slow, payer.address(), tx, "1").await;
    assert_eq!(proved.status, StatusCode::OK, "{:?}", proved.body);
    assert_eq!(
        proved.body["alreadyCredited"], false,
        "the deposit path was first"
    );
    for _ in 0..3 {
        let _: String = stack
            .deployer
            .raw_request("evm_mine".into(), ())
            .await
            .expect("mine");
    }
    let a = paying.await.expect("request");
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["alreadyCredited"], true, "x402 came second: a no-op");
    reconciled(&slow, &stack).await;
    let b = balance_of(&slow, payer.address()).await;
    assert_eq!(
        (b.available.0, b.deposited.0),
        (3_500_000, 3_500_000),
        "each purchase credited once"
    );
}

/// A job's answer once it finished.
async fn finished_job(node: &Node, id: &str) -> Value {
    let url = format!("{}/v1/jobs/{id}", node.url);
    let mut last = Value::Null;
    for _ in 0..1200 {
        let a = send(reqwest::Method::GET, &url, &[], None).await;
        if matches!(a.body["status"].as_str(), Some("completed" | "failed")) {
            return a.body;
        }
        last = a.body;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish: {last}");
}

fn usd_units(v: &Value) -> u64 {
    chainfront::ledger::money::parse_usd(&v.to_string())
        .expect("usd")
        .0
}

#[tokio::test]
async fn a_compute_job_paid_per_call_keeps_what_it_did_not_cost_in_the_balance() {
    let stack = Stack::start().await;
    // Storage reads reserve the largest object (1 MiB) at 0.1 USDC per MB
    // and cost what they read: most of a read's payment is not spent.
    let node = start_node(x402_config(
        &stack,
        &[(
            "CHAINFRONT_COMPUTE__PRICING__STORAGE__PRICE_PER_UNIT",
            "0.1",
        )],
    ))
    .await;
    let d = stack.deployment.clone();
    let (payer, other) = (stack.signer(4), stack.signer(5));
    let url = format!("{}/v1/compute/storage", node.url);
    let put = json!({"payload": {"operation": "put", "key": "note", "content": "hello"}});
    let get = json!({"payload": {"operation": "get", "key": "note"}});

    // No credentials and no payment: 402 offering this job at its maximum charge.
    let a = send(reqwest::Method::POST, &url, &[], Some(put.clone())).await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED, "{:?}", a.body);
    assert!(
        a.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/auth/login")),
        "the other ways too"
    );
    let accepted = a.header("payment-required").expect("402")["accepts"][0].clone();
    assert_eq!(
        accepted["amount"], "1000",
        "a 5-byte put: the minimum charge"
    );
    // A bad payload is refused before anything is paid.
    let bad = send(
        reqwest::Method::POST,
        &url,
        &[],
        Some(json!({"payload": {"operation": "explode"}})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.body);

    // A payment for a request naming another wallet: 403, nothing moved.
    let before = ledger(&stack, &[payer.address()]).await;
    let auth = Auth::new(payer.address(), d.treasury, 1_000);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&payer, "USD Coin", d.usdc, false),
    );
    let mut named = put.clone();
    named["wallet"] = other.address().to_string().into();
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay.clone())],
        Some(named),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.body);
    assert_eq!(before, ledger(&stack, &[payer.address()]).await);

    // Paid per call: the payer's job.
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay.clone())],
        Some(put.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(
        a.header("payment-response").expect("response")["payer"],
        payer.address().to_string()
    );
    let put_job = finished_job(&node, a.body["jobId"].as_str().expect("jobId")).await;
    assert_eq!(put_job["status"], "completed", "{put_job}");
    let put_tx = paid_tx(&a);
    // The same payment again: one payment, one job.
    let again = send(
        reqwest::Method::POST,
        &url,
        &[("payment-signature", pay)],
        Some(put.clone()),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);

    // A read, paid per call with an Idempotency-Key.
    let a = send(reqwest::Method::POST, &url, &[], Some(get.clone())).await;
    let accepted = a.header("payment-required").expect("402")["accepts"][0].clone();
    let price: u64 = accepted["amount"]
        .as_str()
        .expect("amount")
        .parse()
        .expect("units");
    assert_eq!(price, 104_858, "1 MiB at 0.1 USDC per MB, rounded up");
    let auth = Auth::new(payer.address(), d.treasury, price);
    let pay = v2_payment(
        &accepted,
        &auth,
        &auth.sign(&payer, "USD Coin", d.usdc, false),
    );
    let headers = [
        ("payment-signature", pay),
        ("idempotency-key", "read-1".to_owned()),
    ];
    let a = send(reqwest::Method::POST, &url, &headers, Some(get.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(usd_units(&a.body["cost"]), price, "reserved: the payment");
    let job_id = a.body["jobId"].as_str().expect("jobId").to_owned();
    let replayed = send(reqwest::Method::POST, &url, &headers, Some(get.clone())).await;
    assert_eq!(replayed.status, StatusCode::OK);
    assert_eq!(
        replayed.body["jobId"],
        job_id.as_str(),
        "the same job, not a second"
    );
    let job = finished_job(&node, &job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let cost = usd_units(&job["cost"]);
    assert_eq!(cost, 1_000, "a 5-byte read costs the minimum");

    // What the jobs did not cost is in the payer's balance; nothing else is.
    let expect = |b: chainfront::ledger::Balance| {
        assert_eq!(b.deposited.0, 1_000 + price, "both payments credited, once");
        assert_eq!(b.spent.0, 1_000 + cost);
        assert_eq!(b.pending.0, 0);
        assert_eq!(b.available.0, price - cost);
    };
    expect(balance_of(&node, payer.address()).await);
    assert_eq!(
        usdc_of(&stack, payer.address()).await,
        before[1] - U256::from(1_000 + price)
    );
    // The indexer sees both transfers and the reconciler passes: unchanged.
    reconciled(&node, &stack).await;
    expect(balance_of(&node, payer.address()).await);
    let record = credit_record(&node, put_tx, transfer_log(&stack, put_tx).await)
        .await
        .expect("credited");
    assert_eq!(record.source, "x402");
    let jobs = node
        .state
        .compute
        .as_ref()
        .expect("compute")
        .jobs(payer.address(), 100)
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 2, "one job per payment");

    // A signed-in wallet without balance hears the document's 402 (the
    // failed job) and, with it, the offer to pay this job per call.
    let token = crate::compute::login(&node.url, &other).await;
    let a = send(
        reqwest::Method::POST,
        &url,
        &[("authorization", format!("Bearer {token}"))],
        Some(put),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED, "{:?}", a.body);
    assert_eq!(a.body["status"], "failed");
    assert!(
        a.body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Insufficient balance"))
    );
    assert_eq!(
        a.header("payment-required").expect("offer")["accepts"][0]["amount"],
        "1000"
    );
}

#[tokio::test]
async fn a_paid_credentials_fetch_is_never_credited_as_a_deposit() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(&stack, &[])).await;
    let d = stack.deployment.clone();
    let owner = stack.signer(1);
    let token = running_vm(&stack, &node).await;
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
    let fetch = |node_url: String| {
        let (bearer, accepted, owner, usdc, treasury) = (
            bearer.clone(),
            accepted.clone(),
            owner.clone(),
            d.usdc,
            d.treasury,
        );
        async move {
            let auth = Auth::new(owner.address(), treasury, PRICE);
            let pay = v2_payment(
                &accepted,
                &auth,
                &auth.sign(&owner, "USD Coin", usdc, false),
            );
            send(
                reqwest::Method::GET,
                &format!("{node_url}/x402/vm-credentials/{token}"),
                &[bearer, ("payment-signature", pay)],
                None,
            )
            .await
        }
    };

    // Settled by the node's relayer: the transfer to the treasury is a
    // payment. The indexer has it and the reconciler passes: not credited.
    let a = fetch(node.url.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let tx = paid_tx(&a);
    let log = transfer_log(&stack, tx).await;
    reconciled(&node, &stack).await;
    let b = balance_of(&node, owner.address()).await;
    assert_eq!((b.available.0, b.deposited.0), (0, 0), "{b:?}");
    let record = credit_record(&node, tx, log).await.expect("marked");
    assert!(record.consumed && !record.credited, "{record:?}");
    assert_eq!(record.source, "x402:/x402/vm-credentials");
    // Nor can it be proven as a deposit.
    let proved = prove_deposit(&node, owner.address(), tx, "0.01").await;
    assert_eq!(proved.status, StatusCode::BAD_REQUEST, "{:?}", proved.body);
    assert!(
        proved.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("paid for an x402 request")),
        "{:?}",
        proved.body
    );
    // A real deposit of the same wallet is credited as ever.
    let deposit = mined(
        MockUSDC::new(d.usdc, stack.wallet(1))
            .transfer(d.treasury, U256::from(500_000u64))
            .send()
            .await
            .expect("deposit"),
        "deposit",
    )
    .await
    .expect("mined");
    reconciled(&node, &stack).await;
    assert_eq!(
        balance_of(&node, owner.address()).await.available.0,
        500_000
    );
    let _ = deposit;

    // Before the settlement is even confirmed (two confirmations, mined by
    // this test later), the deposit path already knows the relayer's
    // transaction for a payment: proofs are refused, the reconciler skips it.
    let slow = start_node(x402_config(
        &stack,
        &[("CHAINFRONT_X402__CONFIRMATIONS", "2")],
    ))
    .await;
    let auth_nonce = std::sync::Arc::new(std::sync::Mutex::new(None::<B256>));
    let paying = tokio::spawn({
        let (bearer, accepted, owner, usdc, treasury, url, nonce) = (
            bearer.clone(),
            accepted.clone(),
            owner.clone(),
            d.usdc,
            d.treasury,
            format!("{}/x402/vm-credentials/{token}", slow.url),
            auth_nonce.clone(),
        );
        let auth = Auth::new(owner.address(), treasury, PRICE);
        *nonce.lock().expect("lock") = Some(auth.nonce);
        let pay = v2_payment(
            &accepted,
            &auth,
            &auth.sign(&owner, "USD Coin", usdc, false),
        );
        async move {
            send(
                reqwest::Method::GET,
                &url,
                &[bearer, ("payment-signature", pay)],
                None,
            )
            .await
        }
    });
    let nonce = auth_nonce.lock().expect("lock").expect("nonce");
    let tx_key = ChainKeys::new(31337).tx(&chainfront::x402::settle::send_id(
        d.usdc,
        owner.address(),
        nonce,
        false,
    ));
    let redis = slow.state.redis.clone();
    let settlement = || {
        let (mut redis, key) = (redis.clone(), tx_key.clone());
        async move {
            let hash: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg("hash")
                .query_async(&mut redis)
                .await
                .expect("redis");
            hash.and_then(|h| h.parse::<B256>().ok())
        }
    };
    wait_until("the settlement to be mined", MINUTE, || async {
        match settlement().await {
            Some(h) => stack
                .deployer
                .get_transaction_receipt(h)
                .await
                .expect("rpc")
                .is_some(),
            None => false,
        }
    })
    .await;
    let pending_tx = settlement().await.expect("sent");
    let proved = prove_deposit(&slow, owner.address(), pending_tx, "0.01").await;
    assert_eq!(proved.status, StatusCode::BAD_REQUEST, "{:?}", proved.body);
    reconciled(&slow, &stack).await;
    assert_eq!(
        balance_of(&slow, owner.address()).await.available.0,
        500_000
    );
    assert!(
        credit_record(&slow, pending_tx, transfer_log(&stack, pending_tx).await)
            .await
            .is_none(),
        "not recorded yet: the refusals came from the transaction's send id"
    );
    for _ in 0..3 {
        let _: String = stack
            .deployer
            .raw_request("evm_mine".into(), ())
            .await
            .expect("mine");
    }
    let a = paying.await.expect("request");
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(paid_tx(&a), pending_tx);

    // An external facilitator's settlement is known only once it is mined:
    // here the deposit path credits it first (the payment waits for two
    // confirmations this test mines later); recording the payment then
    // takes the credit back.
    let facilitator = facilitator_stub(stack.anvil.endpoint(), stack.signer(7), false).await;
    let fac = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_X402__FACILITATOR_URL", &facilitator),
            ("CHAINFRONT_X402__CONFIRMATIONS", "2"),
            ("CHAINFRONT_COMPUTE__RECONCILE_INTERVAL_MS", "50"),
        ],
    ))
    .await;
    let paying = tokio::spawn(fetch(fac.url.clone()));
    wait_until(
        "the facilitator's transfer credited as a deposit",
        MINUTE,
        || async { balance_of(&fac, owner.address()).await.available.0 == 500_000 + PRICE },
    )
    .await;
    for _ in 0..3 {
        let _: String = stack
            .deployer
            .raw_request("evm_mine".into(), ())
            .await
            .expect("mine");
    }
    let a = paying.await.expect("request");
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let tx = paid_tx(&a);
    let record = credit_record(&fac, tx, transfer_log(&stack, tx).await)
        .await
        .expect("marked");
    assert!(record.consumed && !record.credited, "{record:?}");
    reconciled(&fac, &stack).await;
    let b = balance_of(&fac, owner.address()).await;
    assert_eq!(
        (b.available.0, b.deposited.0, b.owed.0),
        (500_000, 500_000, 0),
        "the payment's credit reversed, the deposit kept: {b:?}"
    );
    let entries = fac
        .state
        .compute
        .as_ref()
        .expect("compute")
        .ledger()
        .entries(owner.address(), 10)
        .await
        .expect("entries");
    assert_eq!(entries[0].kind, "reversal", "{entries:?}");
}

#[tokio::test]
async fn the_official_clients_buy_credits_and_pay_compute_jobs_per_call() {
    let stack = Stack::start().await;
    let node = start_node(x402_config(&stack, &[])).await;
    let payer = stack.signer(6);
    let allow = format!("eip155:31337={}", stack.deployment.usdc);
    let client = |url: String, body: Value| {
        vec![
            "--url".to_owned(),
            url,
            "--method".into(),
            "POST".into(),
            "--body".into(),
            body.to_string(),
            "--payer-key".into(),
            key_hex(&payer),
            "--allow-asset".into(),
            allow.clone(),
        ]
    };
    let before = usdc_of(&stack, payer.address()).await;

    // Credits with the Python client (requests).
    let mut args = vec!["requests".to_owned()];
    args.extend(client(
        format!("{}/x402/purchase-compute", node.url),
        json!({"amount": "1.50"}),
    ));
    let report = run_client("x402_python.py", &args).await;
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["body"]["credits"].to_string(), "1.5", "{report}");
    assert_eq!(report["paymentResponse"]["success"], true, "{report}");

    // A storage job paid per call with the Python client (httpx), and one
    // with @x402/fetch: no balance spent, no sign-in.
    let jobs = format!("{}/v1/compute/storage", node.url);
    let mut args = vec!["httpx".to_owned()];
    args.extend(client(
        jobs.clone(),
        json!({"payload": {"operation": "put", "key": "k", "content": "hi"}}),
    ));
    let report = run_client("x402_python.py", &args).await;
    assert_eq!(report["status"], 200, "{report}");
    let put = finished_job(&node, report["body"]["jobId"].as_str().expect("jobId")).await;
    assert_eq!(put["status"], "completed", "{put}");
    let report = run_client(
        "x402_fetch.mjs",
        &client(jobs, json!({"payload": {"operation": "get", "key": "k"}})),
    )
    .await;
    assert_eq!(report["status"], 200, "{report}");
    let get = finished_job(&node, report["body"]["jobId"].as_str().expect("jobId")).await;
    assert_eq!(get["status"], "completed", "{get}");
    assert_eq!(get["result"]["content"], "hi", "{get}");

    // 1.50 of credits untouched; each job paid its own (minimum) charge.
    let b = balance_of(&node, payer.address()).await;
    assert_eq!(
        (b.available.0, b.spent.0, b.deposited.0),
        (1_500_000, 2_000, 1_502_000),
        "{b:?}"
    );
    assert_eq!(
        usdc_of(&stack, payer.address()).await,
        before - U256::from(1_502_000u64)
    );
}
