//! `/openapi.json` describes every route, and every described route is served.
//!
//! Both directions: routes can only be added through `utoipa_axum`'s
//! `routes!` (which documents them), so no bare `.route(` may appear in
//! `src/`; and each documented path + method is requested through the real
//! router and must not land on the unknown-route or wrong-method fallbacks.

use std::path::Path;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::harness::{Stack, repo_root};

/// Lines of `src/` that add a route without describing it.
fn undocumented_route_calls(dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            undocumented_route_calls(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if [".route(", ".route_service(", ".nest_service("]
                    .iter()
                    .any(|call| code.contains(call))
                {
                    found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
}

#[test]
fn no_route_is_added_without_its_description() {
    let mut found = Vec::new();
    undocumented_route_calls(&repo_root().join("src"), &mut found);
    assert!(
        found.is_empty(),
        "add routes with `.routes(routes!(handler))` and a #[utoipa::path]: {found:#?}"
    );
}

/// A concrete URI for a templated OpenAPI path.
fn concrete(path: &str) -> String {
    path.replace("{token_id}", "1")
        .replace("{address}", "0x0000000000000000000000000000000000000001")
        .replace("{ip}", "192.0.2.1")
}

async fn call(router: &chainfront::api::Api, method: Method, uri: &str) -> (StatusCode, Value) {
    let resp = router
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let stack = Stack::start().await;
    let state = chainfront::node::connect(stack.config())
        .await
        .expect("node connects");
    let router = chainfront::api::router(state);

    let (status, doc) = call(&router, Method::GET, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1: {}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for expected in [
        "/openapi.json",
        "/health",
        "/credentials/{token_id}",
        "/admin/bans",
    ] {
        assert!(paths.contains_key(expected), "{expected} is documented");
    }

    let mut checked = 0;
    for (path, item) in paths {
        let item = item.as_object().expect("path item");
        for method in ["get", "post", "put", "delete", "patch"] {
            if !item.contains_key(method) {
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let (status, body) = call(&router, m, &concrete(path)).await;
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {body}"
            );
            assert!(
                !(status == StatusCode::NOT_FOUND
                    && body["error"] == chainfront::api::UNKNOWN_ROUTE),
                "{method} {path} is documented but not served"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} documented operations");

    // The fallbacks themselves answer in the usual error shape.
    let (status, body) = call(&router, Method::GET, "/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], chainfront::api::UNKNOWN_ROUTE);
    let (status, body) = call(&router, Method::DELETE, "/tiers").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].is_string(), "{body}");
}
