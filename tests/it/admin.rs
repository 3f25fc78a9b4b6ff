//! `/admin/*` behind the admin key: bans, failed provisionings, stats, and a
//! key rotation through the hash file without a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::Stack;
use crate::vms::{indexed, node_config, start_node};

fn hash(key: &str) -> String {
    alloy::hex::encode(Sha256::digest(key.as_bytes()))
}

async fn admin(
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(k) = key {
        req = req.header("X-Admin-Key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn admin_routes_need_the_key_and_manage_bans_and_provisionings() {
    use reqwest::Method;
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("admin.sha256");
    std::fs::write(&key_file, hash("key-1")).expect("write");
    let key_file_s = key_file.display().to_string();
    let node = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_ADMIN_KEY_HASH_FILE", key_file_s.as_str()),
            ("CHAINFRONT_RATE_LIMITS__ENABLED", "true"),
        ],
    ))
    .await;
    // Stats report the indexed block once the indexer has committed one.
    indexed(&node, &stack).await;
    let stats = format!("{}/admin/stats", node.url);
    assert_eq!(
        admin(Method::GET, stats.clone(), None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin(Method::GET, stats.clone(), Some("wrong"), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = admin(Method::GET, stats.clone(), Some("key-1"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["indexedBlock"].is_u64(), "{body}");

    // Ban this client (127.0.0.1): limited routes answer 403; unban restores.
    let bans = format!("{}/admin/bans", node.url);
    let (status, _) = admin(
        Method::POST,
        bans.clone(),
        Some("key-1"),
        Some(json!({"ip": "127.0.0.1", "duration_secs": 600, "reason": "test"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let tiers = reqwest::get(format!("{}/tiers", node.url))
        .await
        .expect("tiers");
    assert_eq!(tiers.status(), StatusCode::FORBIDDEN);
    // A banned IP is refused on /admin too (it is a limited route), so the
    // ban is lifted through a second node with rate limits off, as an
    // operator would from another address.
    let other = start_node(node_config(
        &stack,
        &[("CHAINFRONT_ADMIN_KEY_HASH_FILE", key_file_s.as_str())],
    ))
    .await;
    let (status, body) = admin(
        Method::GET,
        format!("{}/admin/bans", other.url),
        Some("key-1"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["bans"][0]["ip"], "127.0.0.1", "{body}");
    assert_eq!(body["bans"][0]["reason"], "test");
    let (status, body) = admin(
        Method::DELETE,
        format!("{}/admin/bans/127.0.0.1", other.url),
        Some("key-1"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["wasBanned"], true);
    let tiers = reqwest::get(format!("{}/tiers", node.url))
        .await
        .expect("tiers");
    assert_eq!(tiers.status(), StatusCode::OK);
    let (status, _) = admin(
        Method::POST,
        bans,
        Some("key-1"),
        Some(json!({"ip": "not-an-ip"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A failed provisioning is listed and retried.
    let token = stack.buy_vm(2, 0, 3).await;
    indexed(&node, &stack).await;
    let q = chainfront::provision::queue::Queue::new(
        node.state.redis.clone(),
        chainfront_indexer::keys::ChainKeys::new(31337),
    );
    q.enqueue_new(0).await.expect("enqueue");
    q.fail(token, "out of capacity").await.expect("fail");
    let (status, body) = admin(
        Method::GET,
        format!("{}/admin/provisionings/failed", node.url),
        Some("key-1"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["failed"][0]["tokenId"], token.to_string(), "{body}");
    assert_eq!(body["failed"][0]["lastError"], "out of capacity");
    let retry = format!("{}/admin/provisionings/{token}/retry", node.url);
    assert_eq!(
        admin(Method::POST, retry.clone(), Some("key-1"), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        admin(Method::POST, retry, Some("key-1"), None).await.0,
        StatusCode::CONFLICT,
        "nothing left to retry"
    );

    // Rotation: the file now holds only key-2.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    std::fs::write(&key_file, hash("key-2")).expect("rotate");
    assert_eq!(
        admin(Method::GET, stats.clone(), Some("key-1"), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin(Method::GET, stats, Some("key-2"), None).await.0,
        StatusCode::OK
    );
}
