//! RPC faults: every RPC URL goes through a local proxy that, for every third
//! request, answers 500, hangs past the timeout, answers 429 or truncates the
//! response (in turn). The indexer retries and fails over between the two
//! proxies and ends at the same digest as a run against the node directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy::providers::Provider;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chainfront_indexer::digest::state_digest;

use crate::crash::{db, deposits, spawn_indexer, wait_for};
use crate::harness::Stack;
use crate::seed;

#[derive(Default)]
struct Faults {
    requests: AtomicU64,
    /// Injected faults by kind: 500, timeout, 429, truncated.
    injected: [AtomicU64; 4],
}

struct Proxy {
    upstream: String,
    http: reqwest::Client,
    faults: Faults,
}

async fn forward(State(p): State<Arc<Proxy>>, body: Bytes) -> Response {
    let n = p.faults.requests.fetch_add(1, Ordering::Relaxed);
    let kind = (n / 3 % 4) as usize;
    if n % 3 == 2 {
        p.faults.injected[kind].fetch_add(1, Ordering::Relaxed);
        match kind {
            0 => return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
            1 => {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            2 => return (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response(),
            _ => {}
        }
    }
    let upstream = p
        .http
        .post(&p.upstream)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let Ok(resp) = upstream else {
        return (StatusCode::BAD_GATEWAY, "no upstream").into_response();
    };
    let status = resp.status().as_u16();
    let mut bytes = resp.bytes().await.unwrap_or_default().to_vec();
    if n % 3 == 2 && kind == 3 {
        bytes.truncate(bytes.len() / 2);
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        [("content-type", "application/json")],
        bytes,
    )
        .into_response()
}

async fn start_proxy(upstream: String) -> (String, Arc<Proxy>) {
    let proxy = Arc::new(Proxy {
        upstream,
        http: reqwest::Client::new(),
        faults: Faults::default(),
    });
    let app = axum::Router::new()
        .route("/", post(forward))
        .with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, proxy)
}

#[tokio::test]
async fn failing_timing_out_rate_limiting_and_truncating_endpoints_change_nothing() {
    let stack = Stack::start().await;
    seed::run(&stack, &deposits(3_000), 20).await;
    let head = stack.deployer.get_block_number().await.expect("head");
    let keys = chainfront_indexer::keys::ChainKeys::new(31337);
    let (p1, f1) = start_proxy(stack.anvil.endpoint()).await;
    let (p2, f2) = start_proxy(stack.anvil.endpoint()).await;
    let urls = format!("[\"{p1}\", \"{p2}\"]");

    let mut faulty = spawn_indexer(
        &stack,
        1,
        &[
            ("CHAINFRONT_CHAINS__LOCAL__RPC_URLS", urls.as_str()),
            ("CHAINFRONT_INDEXER__RPC_TIMEOUT_MS", "400"),
        ],
    );
    let mut conn = db(&stack, 1).await;
    wait_for(&mut conn, head, Duration::from_secs(300)).await;
    faulty.kill();
    let (digest, _) = state_digest(&mut conn, &keys).await.expect("digest");

    let expected = crate::crash::reference_digest(&stack, 2, head).await;
    assert_eq!(digest, expected, "faults changed the indexed state");

    for (name, f) in [("first", &f1), ("second", &f2)] {
        assert!(
            f.faults.requests.load(Ordering::Relaxed) > 3,
            "the {name} proxy was used (failover)"
        );
    }
    for kind in 0..4 {
        let total = f1.faults.injected[kind].load(Ordering::Relaxed)
            + f2.faults.injected[kind].load(Ordering::Relaxed);
        assert!(total > 0, "fault kind {kind} was injected");
    }
}
