//! The security review's test gaps, through the real router and real
//! services: no secret from an RPC URL in any answer or log line (F13),
//! axum's own rejections in the `{"error"}` shape (F13b), one-time delivery
//! never burning a key it cannot serve (F3), IPv6 /64 buckets and
//! `X-Forwarded-For` handling (F9, F11), fail-closed limits and refused admin
//! keys counting toward a ban (F9, F19), `/metrics` on its own listener
//! (F20), and a token id re-minted after a reorg never inheriting the old VM
//! (F1).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::U256;
use alloy::signers::SignerSync;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::harness::Stack;
use crate::vms::{Node, indexed, legacy_sig, node_config, start_node, worker_with};
use chainfront::provision::dev::DevProvider;

/// A log sink the test can read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

/// A JSON-RPC relay to anvil that can be switched off (then the port is
/// closed: connection refused, the error reqwest reports with the full URL).
async fn relay(upstream: String) -> (u16, tokio::task::JoinHandle<()>) {
    use axum::routing::post;
    let http = reqwest::Client::new();
    let app = axum::Router::new().route(
        "/{*path}",
        post(move |body: axum::body::Bytes| {
            let (http, upstream) = (http.clone(), upstream.clone());
            async move {
                let resp = http
                    .post(&upstream)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("upstream");
                (
                    [("content-type", "application/json")],
                    resp.bytes().await.expect("body"),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (port, task)
}

/// F13: the node is pointed at an RPC URL with a secret in its user info and
/// path; the RPC then fails. No answer body and no log line (the node's own,
/// the indexer's, the security stream) carries the secret.
#[tokio::test(flavor = "current_thread")]
async fn no_rpc_url_secret_reaches_an_answer_or_a_log_line() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    let logs = Captured::default();
    let sink = logs.clone();
    // Everything down to TRACE, through the node's own filter (which keeps
    // alloy's URL-carrying transport spans out at any level).
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_filter(chainfront::telemetry::redacting_filter("trace")),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    let stack = Stack::start().await;
    let (port, relay_task) = relay(stack.anvil.endpoint()).await;
    let url = format!("http://rpcuser:USERSECRET@127.0.0.1:{port}/v2/PATHSECRET?key=QUERYSECRET");
    let urls = format!("[\"{url}\"]");
    let node = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_CHAINS__LOCAL__RPC_URLS", urls.as_str()),
            ("CHAINFRONT_API__RPC_TIMEOUT_MS", "500"),
        ],
    ))
    .await;
    indexed(&node, &stack).await;
    relay_task.abort();
    let _ = relay_task.await;

    let buyer = stack.signer(1);
    let http = reqwest::Client::new();
    let mut bodies = Vec::new();
    // A token the index does not have: the node asks the chain (ownerOf).
    let creds = format!("{}/credentials/77", node.url);
    let resp = http
        .get(&creds)
        .bearer_auth(legacy_sig(&buyer, U256::from(77)))
        .send()
        .await
        .expect("credentials");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "chain unavailable; retry shortly");
    bodies.push(body.to_string());
    // /health's probe fails.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let resp = http
        .get(format!("{}/health", node.url))
        .send()
        .await
        .expect("health");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    bodies.push(resp.text().await.expect("text"));
    // Sign-in as a would-be contract wallet: eth_getCode fails.
    let nonce: Value = http
        .get(format!("{}/auth/nonce", node.url))
        .send()
        .await
        .expect("nonce")
        .json()
        .await
        .expect("json");
    let message = chainfront::auth::sign_in::message(
        crate::auth::PUBLIC_URL,
        stack.signer(2).address(),
        31337,
        nonce["nonce"].as_str().expect("nonce"),
        &chainfront::time::now_iso8601(),
        &Default::default(),
    );
    let sig = buyer.sign_message_sync(message.as_bytes()).expect("sign");
    let resp = http
        .post(format!("{}/auth/login", node.url))
        .json(&serde_json::json!({
            "message": message,
            "signature": format!("0x{}", alloy::hex::encode(sig.as_bytes())),
        }))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    bodies.push(resp.text().await.expect("text"));
    // Give the indexer a few failing polls too.
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(node);

    let logs = logs.text();
    assert!(
        logs.contains("chain read failed") || logs.contains("RPC call failed"),
        "the failures were logged: {logs}"
    );
    for secret in ["USERSECRET", "PATHSECRET", "QUERYSECRET", "rpcuser"] {
        for body in &bodies {
            assert!(!body.contains(secret), "{secret} in an answer: {body}");
        }
        for line in logs.lines() {
            assert!(!line.contains(secret), "{secret} in a log line: {line}");
        }
    }
}

async fn call(router: &chainfront::api::Api, req: Request<Body>) -> (StatusCode, Value) {
    let resp = router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(ct.starts_with("application/json"), "{status}: {ct}");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// F13b: every refusal through the real router is `{"error": "..."}`,
/// axum's own extractor rejections included.
#[tokio::test]
async fn every_refusal_is_an_error_object_with_the_right_status() {
    let stack = Stack::start().await;
    let state = chainfront::node::connect(node_config(&stack, &[]))
        .await
        .expect("connect");
    let router = chainfront::api::router(state);
    let login = |ct: Option<&str>, body: Body| {
        let mut r = Request::post("/auth/login");
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.body(body).expect("request")
    };
    let json = Some("application/json");
    let cases: Vec<(&str, Request<Body>, u16)> = vec![
        ("malformed JSON", login(json, Body::from("{not json")), 400),
        ("missing body", login(json, Body::empty()), 400),
        (
            "wrong content type",
            login(Some("text/plain"), Body::from("{}")),
            415,
        ),
        (
            "unknown field",
            login(
                json,
                Body::from(r#"{"message":"m","signature":"s","address":"0x1"}"#),
            ),
            422,
        ),
        (
            "mistyped field",
            login(json, Body::from(r#"{"message":1,"signature":"s"}"#)),
            422,
        ),
        (
            "body too large",
            login(json, Body::from(vec![b' '; 70 * 1024])),
            413,
        ),
        (
            "unknown route",
            Request::get("/no/such/route")
                .body(Body::empty())
                .expect("request"),
            404,
        ),
        (
            "wrong method",
            Request::delete("/tiers")
                .body(Body::empty())
                .expect("request"),
            405,
        ),
        (
            "bad query",
            Request::get("/credentials/1?encrypt=someone")
                .body(Body::empty())
                .expect("request"),
            400,
        ),
    ];
    for (what, req, code) in cases {
        let (status, body) = call(&router, req).await;
        assert_eq!(status.as_u16(), code, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: {body}");
    }
}

/// The API's body limit is 64 KB, except on the Compute API's routes, which
/// take up to 4 MB (storage objects travel inside the body): a 70 KB job is
/// read and refused for what it is (no payment, no proof of a wallet), not
/// for its size, and only a body past 4 MB is too large there.
#[tokio::test]
async fn compute_routes_take_bodies_past_the_general_limit() {
    let stack = Stack::start().await;
    let state = chainfront::node::connect(node_config(&stack, &[]))
        .await
        .expect("connect");
    let router = chainfront::api::router(state);
    let job = |body: Body| {
        Request::post("/v1/compute/storage")
            .header("content-type", "application/json")
            .body(body)
            .expect("request")
    };
    let big = format!(
        r#"{{"payload":{{"operation":"put","key":"k","content":"{}"}}}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, body) = call(&router, job(Body::from(big.clone()))).await;
    assert_eq!(status.as_u16(), 402, "a 70 KB job: {body}");
    let (status, body) = call(&router, job(Body::from(vec![b' '; 5 << 20]))).await;
    assert_eq!(status.as_u16(), 413, "a 5 MB job: {body}");
    // The proven reads take a body too (a signed request's proof covers
    // it): read, and refused for the missing proof, not for the size.
    for path in ["/v1/usage?period=day", "/v1/ledger", "/v1/jobs"] {
        let (status, body) = call(
            &router,
            Request::get(path)
                .body(Body::from(big.clone()))
                .expect("request"),
        )
        .await;
        assert_eq!(status.as_u16(), 401, "70 KB to GET {path}: {body}");
    }
    // The same 70 KB is too large for any other route.
    let (status, body) = call(
        &router,
        Request::post("/auth/login")
            .header("content-type", "application/json")
            .body(Body::from(big.clone()))
            .expect("request"),
    )
    .await;
    assert_eq!(status.as_u16(), 413, "70 KB to /auth/login: {body}");

    // The same over HTTP, with a declared length and chunked (no length
    // known in advance): the limit holds either way.
    let node = start_node(node_config(&stack, &[])).await;
    let http = reqwest::Client::new();
    let chunked = |body: String| {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
            .into_bytes()
            .chunks(8 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    };
    for (path, body, want) in [
        ("/auth/login", reqwest::Body::from(big.clone()), 413),
        ("/auth/login", chunked(big.clone()), 413),
        ("/auth/login", chunked(r#"{"message":1}"#.into()), 422),
        ("/v1/compute/storage", reqwest::Body::from(big.clone()), 402),
        ("/v1/compute/storage", chunked(big.clone()), 402),
    ] {
        let resp = http
            .post(format!("{}{path}", node.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status().as_u16(), want, "{path}");
    }
}

/// F3: with one-time delivery, a request that cannot be served as asked
/// (`encrypt=owner` with a sign-in token: no key to encrypt to) is refused
/// before the key is erased; the owner still gets it afterwards.
#[tokio::test]
async fn one_time_delivery_with_encrypt_owner_and_a_jwt_does_not_erase_the_key() {
    let stack = Stack::start().await;
    let node = start_node(node_config(
        &stack,
        &[("CHAINFRONT_PROVISIONING__ONE_TIME_DELIVERY", "true")],
    ))
    .await;
    let buyer = stack.signer(3);
    let token = stack.buy_vm(3, 0, 2).await;
    indexed(&node, &stack).await;
    worker_with(&node, Arc::new(DevProvider::default()))
        .pass()
        .await
        .expect("pass");
    let jwt = sign_in(&node, &buyer).await;
    let http = reqwest::Client::new();
    let creds = format!("{}/credentials/{token}", node.url);
    let resp = http
        .get(format!("{creds}?encrypt=owner"))
        .bearer_auth(&jwt)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Still there: the owner's plain request gets it, once.
    let resp = http
        .get(&creds)
        .bearer_auth(&jwt)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body: Value = resp.json().await.expect("json");
    assert!(body["privateKey"].is_string(), "{body}");
    let body: Value = http
        .get(&creds)
        .bearer_auth(&jwt)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(body["privateKey"].is_null(), "{body}");
}

/// Signs in over HTTP (EIP-4361) and returns the JWT.
pub async fn sign_in(node: &Node, who: &alloy::signers::local::PrivateKeySigner) -> String {
    let http = reqwest::Client::new();
    let nonce: Value = http
        .get(format!("{}/auth/nonce", node.url))
        .send()
        .await
        .expect("nonce")
        .json()
        .await
        .expect("json");
    let message = chainfront::auth::sign_in::message(
        crate::auth::PUBLIC_URL,
        who.address(),
        31337,
        nonce["nonce"].as_str().expect("nonce"),
        &chainfront::time::now_iso8601(),
        &Default::default(),
    );
    let sig = who.sign_message_sync(message.as_bytes()).expect("sign");
    let body: Value = http
        .post(format!("{}/auth/login", node.url))
        .json(&serde_json::json!({
            "message": message,
            "signature": format!("0x{}", alloy::hex::encode(sig.as_bytes())),
        }))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    body["token"].as_str().expect("token").to_owned()
}

async fn tiers_from(url: &str, forwarded: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{url}/tiers"))
        .header("x-forwarded-for", forwarded)
        .send()
        .await
        .expect("tiers")
}

/// F9 + F11: behind a trusted proxy, clients in one IPv6 /64 share a bucket;
/// an `ip:port` entry written by the proxy is the client (not the entry the
/// client wrote left of it); garbage stops the walk.
#[tokio::test]
async fn ipv6_clients_share_their_64_and_forwarded_for_is_walked_safely() {
    let stack = Stack::start().await;
    let node = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_RATE_LIMITS__ENABLED", "true"),
            ("CHAINFRONT_RATE_LIMITS__TIERS__REQUESTS", "2"),
            ("CHAINFRONT_RATE_LIMITS__TIERS__WINDOW_SECS", "3600"),
            ("CHAINFRONT_RATE_LIMITS__BAN_THRESHOLD", "100"),
            ("CHAINFRONT_API__TRUSTED_PROXIES", "[\"127.0.0.0/8\"]"),
            ("CHAINFRONT_INDEXER__ENABLED", "false"),
        ],
    ))
    .await;
    let url = &node.url;
    // Two addresses of one /64: the third request is over the limit.
    assert_eq!(
        tiers_from(url, "2001:db8:1:2::1").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        tiers_from(url, "2001:db8:1:2:ffff::9").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        tiers_from(url, "2001:db8:1:2:abcd::1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // The next /64 is another client.
    assert_eq!(
        tiers_from(url, "2001:db8:1:3::1").await.status(),
        StatusCode::OK
    );
    // `1.2.3.4, 5.6.7.8:1234`: the client is 5.6.7.8, so 1.2.3.4 (which the
    // client wrote itself) keeps its whole bucket.
    for _ in 0..2 {
        assert_eq!(
            tiers_from(url, "1.2.3.4, 5.6.7.8:1234").await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        tiers_from(url, "1.2.3.4, 5.6.7.8:1234").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(tiers_from(url, "1.2.3.4").await.status(), StatusCode::OK);
    assert_eq!(tiers_from(url, "1.2.3.4").await.status(), StatusCode::OK);
}

/// F9 + F19: when the limiter's Redis fails, secret-bearing routes refuse
/// (503) while public reads go through to their handler; refused admin keys
/// count toward a ban.
#[tokio::test]
async fn limits_fail_closed_on_secret_routes_and_admin_key_guesses_get_banned() {
    let stack = Stack::start().await;
    let hash = alloy::hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"admin-key"));
    let node = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_RATE_LIMITS__ENABLED", "true"),
            ("CHAINFRONT_RATE_LIMITS__BAN_THRESHOLD", "3"),
            ("CHAINFRONT_ADMIN_KEY_HASH", hash.as_str()),
            ("CHAINFRONT_INDEXER__ENABLED", "false"),
        ],
    ))
    .await;
    let http = reqwest::Client::new();
    let stats = format!("{}/admin/stats", node.url);
    let guess = |key: &'static str| http.get(&stats).header("x-admin-key", key).send();
    assert_eq!(
        guess("admin-key").await.expect("ok").status(),
        StatusCode::OK
    );
    for _ in 0..3 {
        assert_eq!(
            guess("wrong").await.expect("guess").status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let banned = guess("admin-key").await.expect("banned");
    assert_eq!(
        banned.status(),
        StatusCode::FORBIDDEN,
        "banned after 3 wrong keys"
    );

    // Redis goes away.
    let Stack { redis, anvil, .. } = stack;
    drop(redis);
    for path in ["/credentials/1", "/auth/nonce"] {
        let resp = http
            .get(format!("{}{path}", node.url))
            .bearer_auth("0x00")
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let body: Value = resp.json().await.expect("json");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("rate limiter unavailable")),
            "{path}: {body}"
        );
    }
    // A public read passes the limiter and reaches its handler (which then
    // finds the state store down).
    let resp = http
        .get(format!("{}/status/1", node.url))
        .send()
        .await
        .expect("status");
    let body: Value = resp.json().await.expect("json");
    assert!(
        !body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("rate limiter"),
        "{body}"
    );
    drop(anvil);
}

/// F20: `/metrics` served on its own listener is gone from the public one.
#[tokio::test]
async fn metrics_can_move_to_an_internal_listener() {
    let stack = Stack::start().await;
    let port = chainfront::devnet::free_port().expect("port");
    let listen = format!("127.0.0.1:{port}");
    let node = start_node(node_config(
        &stack,
        &[("CHAINFRONT_API__METRICS_LISTEN", listen.as_str())],
    ))
    .await;
    let public = reqwest::get(format!("{}/metrics", node.url))
        .await
        .expect("public");
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    // The per-chain series appear once the chain's indexer has registered
    // (a loaded machine may answer the first scrape before that).
    let mut last = String::from("(no answer)");
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(format!("http://{listen}/metrics")).await {
            assert_eq!(r.status(), StatusCode::OK);
            last = r.text().await.expect("text");
            if last.contains("chainfront_events_applied_total") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the internal listener never served the indexer's metrics:\n{last}");
}

/// F1 (reorg): a purchase is provisioned and its key fetched, then reorged
/// out; the same token id is re-minted for another buyer. The new buyer
/// never gets the old VM's key: 202 until a fresh VM with a fresh key is
/// provisioned for their purchase, and the old instance is terminated.
#[tokio::test]
async fn a_token_id_reminted_after_a_reorg_never_inherits_the_old_vm() {
    use alloy::providers::Provider;
    let stack = Stack::start().await;
    let node = start_node(node_config(&stack, &[])).await;
    let provider = Arc::new(DevProvider::default());
    let (first, second) = (stack.signer(1), stack.signer(2));
    let snapshot: U256 = stack
        .deployer
        .raw_request("evm_snapshot".into(), ())
        .await
        .expect("snapshot");
    let token = stack.buy_vm(1, 0, 3).await;
    indexed(&node, &stack).await;
    worker_with(&node, provider.clone())
        .pass()
        .await
        .expect("pass");
    let creds = format!("{}/credentials/{token}", node.url);
    let http = reqwest::Client::new();
    let get = |who: &alloy::signers::local::PrivateKeySigner| {
        http.get(&creds).bearer_auth(legacy_sig(who, token)).send()
    };
    let resp = get(&first).await.expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    let old_key = resp.json::<Value>().await.expect("json")["privateKey"]
        .as_str()
        .expect("key")
        .to_owned();
    let instance = format!("chainfront-vm-{token}");
    assert_eq!(provider.authorized_keys(&instance).len(), 1);

    // Reorg: the purchase disappears; the same token id goes to `second`.
    let _: bool = stack
        .deployer
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .expect("revert");
    let again = stack.buy_vm(2, 1, 5).await;
    assert_eq!(again, token, "the token id is re-minted");
    crate::seed::mine(&stack.deployer).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = chainfront_indexer::keys::ChainKeys::new(31337);
    let mut c = node.state.redis.clone();
    let mut reindexed = false;
    for _ in 0..400 {
        let owner: Option<String> = redis::cmd("HGET")
            .arg(keys.vm(token))
            .arg("owner")
            .query_async(&mut c)
            .await
            .expect("hget");
        let cp: Option<u64> = redis::cmd("HGET")
            .arg(keys.checkpoint())
            .arg("number")
            .query_async(&mut c)
            .await
            .expect("hget");
        if owner == Some(format!("{:#x}", second.address())) && cp.is_some_and(|n| n >= head) {
            reindexed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(reindexed, "the indexer followed the reorg");

    // Before the worker notices: the new buyer is not served the old key.
    let resp = get(&second).await.expect("get");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        get(&first).await.expect("get").status(),
        StatusCode::FORBIDDEN
    );
    // The worker tears the old VM down and provisions a fresh one.
    worker_with(&node, provider.clone())
        .pass()
        .await
        .expect("pass");
    assert!(
        provider.authorized_keys(&instance).len() <= 1,
        "one key at most"
    );
    let resp = get(&second).await.expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    let new_key = body["privateKey"].as_str().expect("key");
    assert_ne!(new_key, old_key, "a fresh key for the new purchase");
    assert_eq!(body["tier"], 1, "the new purchase's tier, not the old VM's");
    let public_old = ssh_key::PrivateKey::from_openssh(&old_key)
        .expect("key")
        .public_key()
        .to_openssh()
        .expect("public");
    assert!(!provider.authorized_keys(&instance).contains(&public_old));
}

/// F2: when the index trails the chain, ownership is read on chain at the
/// confirmed height (head - confirmations), never at `latest`; and even a
/// confirmed new owner is never served the previous owner's key.
#[tokio::test]
async fn a_stale_index_reads_ownership_at_the_confirmed_height() {
    let stack = Stack::start().await;
    let indexer_node = start_node(node_config(&stack, &[])).await;
    let (seller, buyer) = (stack.signer(1), stack.signer(2));
    let token = stack.buy_vm(1, 0, 3).await;
    indexed(&indexer_node, &stack).await;
    worker_with(&indexer_node, Arc::new(DevProvider::default()))
        .pass()
        .await
        .expect("pass");
    // The index stops following the chain.
    drop(indexer_node);
    let node = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_INDEXER__ENABLED", "false"),
            ("CHAINFRONT_CHAINS__LOCAL__CONFIRMATIONS", "3"),
        ],
    ))
    .await;
    stack.transfer_vm(1, buyer.address(), token).await;
    for _ in 0..8 {
        crate::seed::mine(&stack.deployer).await;
    }
    let creds = format!("{}/credentials/{token}", node.url);
    let http = reqwest::Client::new();
    let status_of = |who: &alloy::signers::local::PrivateKeySigner| {
        http.get(&creds).bearer_auth(legacy_sig(who, token)).send()
    };
    // Wait for the head tracker to see the new head: the index is 9 blocks
    // behind (stale) and the transfer 9 deep, past the 3 confirmations: the
    // buyer owns the NFT at the confirmed height, but
    // the key was made for the seller, so the buyer waits (202).
    let mut seen = None;
    for _ in 0..200 {
        let s = status_of(&buyer).await.expect("get").status();
        if s == StatusCode::ACCEPTED {
            seen = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        seen,
        Some(StatusCode::ACCEPTED),
        "buyer waits for the re-key"
    );
    assert_eq!(
        status_of(&seller).await.expect("get").status(),
        StatusCode::FORBIDDEN,
        "the seller no longer owns it at the confirmed height"
    );
    // A transfer back that is not confirmed yet (1 block deep) is not honoured.
    stack.transfer_vm(2, seller.address(), token).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status_of(&seller).await.expect("get").status(),
        StatusCode::FORBIDDEN,
        "an unconfirmed transfer is not honoured"
    );
}

/// Per-wallet limits for surfaces that know the wallet (markets, compute).
#[tokio::test]
async fn per_wallet_limits_count_each_wallet() {
    use chainfront::api::limits::{RouteClass, check_wallet};
    let stack = Stack::start().await;
    let state = chainfront::node::connect(node_config(
        &stack,
        &[
            ("CHAINFRONT_RATE_LIMITS__ENABLED", "true"),
            ("CHAINFRONT_RATE_LIMITS__AUTH__WALLET_REQUESTS", "2"),
        ],
    ))
    .await
    .expect("connect");
    let (a, b) = (stack.signer(1).address(), stack.signer(2).address());
    let first = check_wallet(&state, RouteClass::Auth, a)
        .await
        .expect("allowed")
        .expect("a wallet limit");
    assert_eq!((first.limit, first.remaining), (2, 1));
    check_wallet(&state, RouteClass::Auth, a)
        .await
        .expect("allowed");
    let refused = check_wallet(&state, RouteClass::Auth, a)
        .await
        .expect_err("over the limit");
    assert!(refused.to_string().contains("per wallet"), "{refused}");
    check_wallet(&state, RouteClass::Auth, b)
        .await
        .expect("another wallet has its own bucket");
    // A class without a wallet limit is not counted.
    assert!(
        check_wallet(&state, RouteClass::Tiers, a)
            .await
            .expect("ok")
            .is_none()
    );
}
