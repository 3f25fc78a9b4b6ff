//! Rate limits shared by two API processes through one Redis, with the
//! documented headers, 429 + Retry-After, and the automatic ban.

use reqwest::StatusCode;

use crate::harness::Stack;
use crate::vms::{node_config, start_node};

async fn tiers(url: &str) -> reqwest::Response {
    reqwest::get(format!("{url}/tiers"))
        .await
        .expect("GET /tiers")
}

fn header(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn two_api_processes_share_one_exact_count_and_repeat_offenders_are_banned() {
    let stack = Stack::start().await;
    let env = [
        ("CHAINFRONT_RATE_LIMITS__ENABLED", "true"),
        ("CHAINFRONT_RATE_LIMITS__TIERS__REQUESTS", "5"),
        ("CHAINFRONT_RATE_LIMITS__TIERS__WINDOW_SECS", "3600"),
        ("CHAINFRONT_RATE_LIMITS__BAN_THRESHOLD", "3"),
        ("CHAINFRONT_INDEXER__ENABLED", "false"),
    ];
    let a = start_node(node_config(&stack, &env)).await;
    let b = start_node(node_config(&stack, &env)).await;

    // 3 on A and 2 on B: all allowed, remaining counts down across both.
    let mut remaining = Vec::new();
    for url in [&a.url, &a.url, &a.url, &b.url, &b.url] {
        let r = tiers(url).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-ratelimit-limit"), Some(5));
        assert!(header(&r, "x-ratelimit-reset").is_some());
        remaining.push(header(&r, "x-ratelimit-remaining").expect("remaining"));
    }
    assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
    // The 6th, on either process, is refused with Retry-After.
    for url in [&a.url, &b.url] {
        let r = tiers(url).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = header(&r, "retry-after").expect("Retry-After");
        assert!((1..=3600).contains(&retry), "{retry}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert!(
            body["error"]
                .as_str()
                .expect("error")
                .contains("rate limit")
        );
    }
    // /health is never limited.
    for _ in 0..10 {
        let r = reqwest::get(format!("{}/health", a.url))
            .await
            .expect("health");
        assert_ne!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().get("x-ratelimit-limit").is_none());
    }
    // The third violation bans the IP from every limited route, on both.
    let r = tiers(&a.url).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("banned until")
    );
    let vms = reqwest::get(format!("{}/vms/{}", b.url, stack.signer(1).address()))
        .await
        .expect("vms");
    assert_eq!(vms.status(), StatusCode::FORBIDDEN);
}
