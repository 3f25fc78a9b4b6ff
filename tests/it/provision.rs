//! Providers and the provisioning worker: the Vultr client against a local
//! server that answers like Vultr API v2, and the worker's retry, failure
//! record and operator retry with a real failing `command` provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chainfront::config::Secret;
use chainfront::provision::command::CommandProvider;
use chainfront::provision::vultr::VultrProvider;
use chainfront::provision::worker::Worker;
use chainfront::provision::{Provider, ProvisionRequest};
use chainfront_indexer::keys::ChainKeys;
use serde_json::{Value, json};

use crate::harness::Stack;
use crate::vms::{indexed, node_config, start_node};

#[derive(Default)]
struct Fake {
    instances: HashMap<String, Value>,
    keys: Vec<Value>,
    next: u32,
}

type Shared = Arc<Mutex<Fake>>;

fn authorized(h: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    if h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer test-key") {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Invalid API token.", "status": 401})),
        ))
    }
}

type Answer = Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)>;

async fn list(
    State(s): State<Shared>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    authorized(&h)?;
    let f = s.lock().expect("lock");
    let found: Vec<Value> = f
        .instances
        .values()
        .filter(|i| q.get("label").is_none_or(|l| i["label"] == *l))
        .cloned()
        .collect();
    Ok((
        StatusCode::OK,
        Json(json!({"instances": found, "meta": {"total": found.len()}})),
    ))
}

async fn add_key(State(s): State<Shared>, h: HeaderMap, Json(b): Json<Value>) -> Answer {
    authorized(&h)?;
    let mut f = s.lock().expect("lock");
    let id = format!("key-{}", f.keys.len());
    let key = json!({"id": id, "name": b["name"], "ssh_key": b["ssh_key"]});
    f.keys.push(key.clone());
    Ok((StatusCode::CREATED, Json(json!({"ssh_key": key}))))
}

async fn create(State(s): State<Shared>, h: HeaderMap, Json(b): Json<Value>) -> Answer {
    authorized(&h)?;
    let mut f = s.lock().expect("lock");
    if b["plan"].as_str().is_none() || b["sshkey_id"][0].as_str().is_none() {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "plan and sshkey_id required"})),
        ));
    }
    f.next += 1;
    let id = format!("cb676a46-{:04}", f.next);
    let inst = json!({
        "id": id, "label": b["label"], "plan": b["plan"], "region": b["region"],
        "main_ip": "0.0.0.0", "status": "pending", "power_status": "stopped",
        "server_status": "none",
    });
    f.instances.insert(id, inst.clone());
    Ok((StatusCode::ACCEPTED, Json(json!({"instance": inst}))))
}

async fn one(State(s): State<Shared>, h: HeaderMap, Path(id): Path<String>) -> Answer {
    authorized(&h)?;
    let f = s.lock().expect("lock");
    match f.instances.get(&id) {
        Some(i) => Ok((StatusCode::OK, Json(json!({"instance": i})))),
        None => Err((
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Invalid instance-id."})),
        )),
    }
}

async fn remove(State(s): State<Shared>, h: HeaderMap, Path(id): Path<String>) -> Answer {
    authorized(&h)?;
    let mut f = s.lock().expect("lock");
    match f.instances.remove(&id) {
        Some(_) => Ok((StatusCode::NO_CONTENT, Json(Value::Null))),
        None => Err((
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Invalid instance-id."})),
        )),
    }
}

async fn fake_vultr() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route("/v2/instances", get(list).post(create))
        .route("/v2/instances/{id}", get(one).merge(delete(remove)))
        .route("/v2/ssh-keys", post(add_key))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v2", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, shared)
}

/// A worker for `node` whose provider is the shell script `body` (a `command`
/// provider), written into `dir`.
fn script_worker(node: &crate::vms::Node, dir: &std::path::Path, body: &str) -> Worker {
    let script = dir.join("provider.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).expect("script");
    let s = &node.state;
    Worker::new(
        s.redis.clone(),
        ChainKeys::new(31337),
        Arc::new(CommandProvider::new(
            "sh".into(),
            vec![script.display().to_string()],
        )),
        s.master.clone().expect("master"),
        s.config.provisioning.clone(),
    )
}

fn request(tier: u8) -> ProvisionRequest {
    ProvisionRequest {
        token_id: "9".into(),
        tier,
        vm_type: "gcp".into(),
        ssh_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG chainfront".into(),
        label: "chainfront-vm-9".into(),
        expires_at: 2_000_000_000,
    }
}

#[tokio::test]
async fn vultr_creates_once_per_label_reports_readiness_and_terminates() {
    let (url, fake) = fake_vultr().await;
    let vultr =
        VultrProvider::new(&url, Secret::new("test-key"), "ewr".into(), 2136).expect("client");
    let created = vultr.create(&request(2)).await.expect("create");
    assert!(!created.ready, "a fresh Vultr instance is pending");
    assert_eq!(created.host, None);
    {
        let f = fake.lock().expect("lock");
        let inst = &f.instances[&created.instance_id];
        assert_eq!(inst["plan"], "vc2-2c-4gb");
        assert_eq!(inst["label"], "chainfront-vm-9");
        assert_eq!(f.keys[0]["ssh_key"], request(2).ssh_public_key);
    }
    // A retried job finds the same instance instead of buying a second one.
    let again = vultr.create(&request(2)).await.expect("create again");
    assert_eq!(again.instance_id, created.instance_id);
    assert_eq!(fake.lock().expect("lock").instances.len(), 1);
    // Vultr brings it up.
    if let Some(i) = fake
        .lock()
        .expect("lock")
        .instances
        .get_mut(&created.instance_id)
    {
        i["main_ip"] = json!("203.0.113.10");
        i["status"] = json!("active");
        i["power_status"] = json!("running");
    }
    let up = vultr
        .describe(&created.instance_id)
        .await
        .expect("describe");
    assert!(up.ready);
    assert_eq!(up.host.as_deref(), Some("203.0.113.10"));
    vultr
        .terminate(&created.instance_id)
        .await
        .expect("terminate");
    vultr
        .terminate(&created.instance_id)
        .await
        .expect("already gone is fine");
    assert!(fake.lock().expect("lock").instances.is_empty());

    let gpu = vultr
        .create(&request(5))
        .await
        .expect_err("GPU tiers are not Vultr's");
    assert!(gpu.to_string().contains("tiers 0-3"), "{gpu}");
    let wrong = VultrProvider::new(&url, Secret::new("nope"), "ewr".into(), 2136).expect("client");
    let err = wrong.create(&request(1)).await.expect_err("unauthorized");
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn failed_provisioning_is_retried_recorded_and_retried_by_an_operator() {
    let stack = Stack::start().await;
    let node = start_node(node_config(
        &stack,
        &[
            ("CHAINFRONT_PROVISIONING__MAX_ATTEMPTS", "2"),
            ("CHAINFRONT_PROVISIONING__RETRY_BASE_MS", "1"),
        ],
    ))
    .await;
    let token = stack.buy_vm(3, 2, 2).await;
    indexed(&node, &stack).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("fixed");
    let worker = script_worker(
        &node,
        dir.path(),
        &format!(
            "cat >/dev/null\nif [ -e {} ]; then echo '{{\"instance_id\":\"i-1\",\"host\":\"10.1.1.1\",\"ready\":true}}'; else echo 'out of capacity' >&2; exit 1; fi",
            flag.display()
        ),
    );
    for _ in 0..20 {
        worker.pass().await.expect("pass");
        if worker
            .queue()
            .failed()
            .await
            .expect("failed")
            .contains(&token)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(worker.queue().failed().await.expect("failed"), vec![token]);
    let rec = worker
        .queue()
        .record(token)
        .await
        .expect("record")
        .expect("exists");
    assert_eq!(rec.attempts, 2);
    assert!(rec.last_error.expect("error").contains("out of capacity"));
    assert_eq!(rec.status.as_deref(), Some("failed"));

    std::fs::write(&flag, "").expect("fix the provider");
    assert!(worker.queue().retry(token, 0).await.expect("retry"));
    assert!(
        !worker
            .queue()
            .retry(token, 0)
            .await
            .expect("not failed any more")
    );
    worker.pass().await.expect("pass");
    let rec = worker
        .queue()
        .record(token)
        .await
        .expect("record")
        .expect("exists");
    assert_eq!(rec.status.as_deref(), Some("running"));
    assert_eq!(rec.host.as_deref(), Some("10.1.1.1"));
    assert!(worker.queue().failed().await.expect("failed").is_empty());
    // Enqueueing again is a no-op: the token was seen.
    assert!(
        worker
            .queue()
            .enqueue_new(0)
            .await
            .expect("enqueue")
            .is_empty()
    );
}

#[tokio::test]
async fn the_sweeper_terminates_expired_vms_and_spares_unexpired_ones() {
    let stack = Stack::start().await;
    let node = start_node(node_config(&stack, &[])).await;
    let short = stack.buy_vm(5, 0, 1).await;
    let long = stack.buy_vm(6, 0, 5).await;
    indexed(&node, &stack).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("calls");
    // Records every request, answers a ready instance.
    let worker = script_worker(
        &node,
        dir.path(),
        &format!(
            "req=$(cat)\necho \"$req\" >> {}\necho '{{\"instance_id\":\"i-x\",\"host\":\"10.0.0.1\",\"ready\":true}}'",
            log.display()
        ),
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    worker.pass_at(now_ms).await.expect("provision");
    for id in [short, long] {
        let rec = worker
            .queue()
            .record(id)
            .await
            .expect("record")
            .expect("exists");
        assert_eq!(rec.status.as_deref(), Some("running"));
    }
    // Two days later: the 1-day VM is terminated and its key erased.
    worker
        .pass_at(now_ms + 2 * 86_400_000)
        .await
        .expect("sweep");
    let rec = worker
        .queue()
        .record(short)
        .await
        .expect("record")
        .expect("exists");
    assert_eq!(rec.status.as_deref(), Some("expired"));
    assert_eq!(rec.private_key, None, "no key kept for a terminated VM");
    let calls = std::fs::read_to_string(&log).expect("calls");
    assert_eq!(calls.matches("\"terminate\"").count(), 1, "{calls}");
    let rec = worker
        .queue()
        .record(long)
        .await
        .expect("record")
        .expect("exists");
    assert_eq!(rec.status.as_deref(), Some("running"));
}
