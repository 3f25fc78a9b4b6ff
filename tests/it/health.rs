//! `GET /health` reports the chain and the deployed contracts, and says when a
//! dependency is down.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::harness::Stack;

async fn get_health(router: chainfront::api::Api) -> (StatusCode, Value) {
    let resp = router
        .oneshot(
            Request::get("/health")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("json body"))
}

#[tokio::test]
async fn health_reports_chain_and_contracts() {
    let stack = Stack::start().await;
    let state = chainfront::node::connect(stack.config())
        .await
        .expect("node connects");
    let (status, body) = get_health(chainfront::api::router(state.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["chain_id"], 31337);
    let d = &stack.deployment;
    assert_eq!(
        body["contracts"]["vm_marketplace"],
        d.vm_marketplace.to_string()
    );
    assert_eq!(
        body["contracts"]["submission_stakes"],
        d.submission_stakes.expect("stakes").to_string()
    );
    assert_eq!(body["contracts"]["usdc"], d.usdc.to_string());
    assert_eq!(body["contracts"]["treasury"], d.treasury.to_string());
    assert!(body["head_block"].as_u64().expect("head") >= d.start_block);
    assert_eq!(body["redis"], "ok");

    // Redis gone: still an answer, now 503 and saying which part is down.
    let Stack { redis, anvil, .. } = stack;
    drop(redis);
    let (status, body) = get_health(chainfront::api::router(state)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["redis"], "unreachable");
    assert_eq!(body["rpc"], "ok");
    drop(anvil);
}

#[tokio::test]
async fn node_refuses_a_config_for_another_chain() {
    let stack = Stack::start().await;
    let mut env = stack.env();
    // The deployment file says 31337; point the config at chain 1 and the
    // mismatch must be named, not panicked on.
    env.insert("CHAINFRONT_CHAINS__LOCAL__CHAIN_ID".into(), "1".into());
    let config =
        chainfront::config::Config::load_with_env(Some(&crate::harness::local_toml()), &env)
            .expect("loads");
    let err = chainfront::node::connect(config)
        .await
        .err()
        .expect("must refuse")
        .to_string();
    assert!(err.contains("chain id") && err.contains("31337"), "{err}");
}
