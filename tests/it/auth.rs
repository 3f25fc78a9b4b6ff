//! `crate::auth` against a real redis-server and anvil, with real keys: every
//! accepted credential form (legacy, timestamped, nonce, JWT, EIP-1271
//! contract wallet, per-request signature) and every refusal (high s, wrong
//! length, bad v, wrong signer, expired, replayed, reused nonce, legacy off,
//! forged, foreign-audience and revoked JWTs, sign-in messages for another
//! domain or chain), then the `/auth` routes end to end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::node_bindings::AnvilInstance;
use alloy::primitives::{Address, Bytes, U256, keccak256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use chainfront::api::ApiError;
use chainfront::auth::jwt::{Claims, JwtKeys, audience};
use chainfront::auth::sign_in::{self, Optional};
use chainfront::auth::{
    Auth, AuthError, Method, Scheme, access_message, eip1271, nonce_access_message,
    request_message, timestamped_access_message,
};
use chainfront::config::Config;
use chainfront::devnet::{self, RedisServer};
use chainfront_indexer::contracts::{MockSmartWallet, MockUSDC};
use serde_json::Value;

pub const JWT_SECRET: &str = "integration-test-secret-32-bytes-long!";
/// The public URL the fixtures' nodes are configured with.
pub const PUBLIC_URL: &str = "https://node.test";
const DOMAIN: &str = "node.test";
const CHAIN: u64 = 31337;

/// redis-server + a bare anvil (no contracts) + an [`Auth`] on them.
struct Fixture {
    anvil: AnvilInstance,
    _redis: RedisServer,
    config: Config,
    auth: Arc<Auth>,
}

fn fixture_env(anvil: &AnvilInstance, redis: &RedisServer) -> BTreeMap<String, String> {
    [
        ("CHAINFRONT_REDIS__URL".to_owned(), redis.url()),
        (
            "CHAINFRONT_CHAINS__LOCAL__RPC_URLS".to_owned(),
            format!("[\"{}\"]", anvil.endpoint()),
        ),
        ("CHAINFRONT_JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
        (
            "CHAINFRONT_API__PUBLIC_URL".to_owned(),
            PUBLIC_URL.to_owned(),
        ),
    ]
    .into_iter()
    .collect()
}

impl Fixture {
    async fn start(extra: &[(&str, &str)]) -> Fixture {
        let anvil = devnet::start_anvil(CHAIN, None).expect("anvil");
        let redis = RedisServer::start().expect("redis-server");
        let mut env = fixture_env(&anvil, &redis);
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let config =
            Config::load_with_env(Some(&crate::harness::local_toml()), &env).expect("config");
        let auth = Arc::new(build_auth(&config, &anvil).await.expect("auth"));
        Fixture {
            anvil,
            _redis: redis,
            config,
            auth,
        }
    }

    fn key(&self, i: usize) -> PrivateKeySigner {
        PrivateKeySigner::from(self.anvil.keys()[i].clone())
    }

    fn provider(&self, i: usize) -> alloy::providers::DynProvider {
        chainfront::deploy::signing_provider(&self.anvil.endpoint(), self.key(i)).expect("provider")
    }

    fn rpc(&self) -> chainfront_indexer::rpc::Rpc {
        chainfront::node::api_rpc(&self.config, &[self.anvil.endpoint()]).expect("rpc")
    }
}

async fn build_auth(config: &Config, anvil: &AnvilInstance) -> chainfront::Result<Auth> {
    let redis = chainfront::node::connect_redis(&config.redis.url)
        .await
        .expect("redis");
    let rpc = chainfront::node::api_rpc(config, &[anvil.endpoint()]).expect("rpc");
    Auth::new(config, CHAIN, redis, rpc)
}

fn ts_msg(id: U256, t: u64) -> String {
    timestamped_access_message(id, DOMAIN, CHAIN, t)
}

fn nonce_msg(id: U256, n: &str) -> String {
    nonce_access_message(id, DOMAIN, CHAIN, n)
}

/// A SIWE message for this node signed in by `who`.
fn siwe(who: Address, nonce: &str) -> String {
    sign_in::message(
        PUBLIC_URL,
        who,
        CHAIN,
        nonce,
        &chainfront::time::now_iso8601(),
        &Optional::default(),
    )
}

/// Deploys raw EVM `runtime` code (for hostile "wallets").
async fn deploy_runtime(deployer: &alloy::providers::DynProvider, runtime: &[u8]) -> Address {
    use alloy::network::TransactionBuilder;
    // PUSHn runtime, PUSH1 0, MSTORE, then RETURN the right-aligned bytes.
    assert!(runtime.len() <= 32);
    let n = runtime.len() as u8;
    let mut init = vec![0x5f + n];
    init.extend_from_slice(runtime);
    init.extend_from_slice(&[0x60, 0x00, 0x52, 0x60, n, 0x60, 32 - n, 0xf3]);
    let tx = alloy::rpc::types::TransactionRequest::default().with_deploy_code(Bytes::from(init));
    let receipt = deployer
        .send_transaction(tx)
        .await
        .expect("send")
        .get_receipt()
        .await
        .expect("receipt");
    receipt.contract_address.expect("deployed")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// EIP-191 `personal_sign` of `message`, as `0x` hex.
fn sign(signer: &PrivateKeySigner, message: &str) -> String {
    let sig = signer.sign_message_sync(message.as_bytes()).expect("sign");
    format!("0x{}", alloy::hex::encode(sig.as_bytes()))
}

/// A raw signature of `keccak256(message)` (Clockchain's `signHash`).
fn sign_raw(signer: &PrivateKeySigner, message: &str) -> String {
    let sig = signer
        .sign_hash_sync(&keccak256(message.as_bytes()))
        .expect("sign");
    format!("0x{}", alloy::hex::encode(sig.as_bytes()))
}

/// The malleated twin `(r, n - s, v ^ 1)` of a signature.
fn high_s(sig: &str) -> String {
    let mut raw = alloy::hex::decode(sig).expect("hex");
    let n = U256::from_str_radix(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
        16,
    )
    .expect("n");
    let s = U256::from_be_slice(&raw[32..64]);
    raw[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    raw[64] = if raw[64] == 27 { 28 } else { 27 };
    format!("0x{}", alloy::hex::encode(raw))
}

/// The same signature with v written as 0/1.
fn v_zero_one(sig: &str) -> String {
    let mut raw = alloy::hex::decode(sig).expect("hex");
    raw[64] -= 27;
    format!("0x{}", alloy::hex::encode(raw))
}

fn headers(bearer: &str, extra: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {bearer}")).expect("header"),
    );
    for (k, v) in extra {
        h.insert(*k, HeaderValue::from_str(v).expect("header"));
    }
    h
}

fn ts(t: u64) -> [(&'static str, String); 1] {
    [("x-clawcloud-timestamp", t.to_string())]
}

fn nonce_header(n: &str) -> [(&'static str, String); 1] {
    [("x-clawcloud-nonce", n.to_owned())]
}

fn status(e: AuthError) -> StatusCode {
    ApiError::from(e).into_response().status()
}

fn is_invalid(r: Result<impl std::fmt::Debug, AuthError>) -> bool {
    matches!(r, Err(AuthError::Invalid(_)))
}

#[tokio::test]
async fn legacy_form_accepts_the_owner_and_refuses_everything_else() {
    let f = Fixture::start(&[]).await;
    let (owner, other) = (f.key(1), f.key(2));
    let id = U256::from(42);
    let sig = sign(&owner, &access_message(id));

    let caller = f
        .auth
        .verify_vm_access(&headers(&sig, &[]), id, owner.address())
        .await
        .expect("owner");
    assert_eq!(caller.address, owner.address());
    assert_eq!(caller.method, Method::Legacy);
    assert_eq!(caller.signer, Some(owner.address()));
    let key = caller.public_key.expect("public key to encrypt to");
    assert_eq!(
        Address::from_public_key(&k256::ecdsa::VerifyingKey::from(&key)),
        owner.address()
    );
    // Documented as replayable: the same header works again; bare hex and
    // v = 0/1 are accepted too.
    for s in [sig.clone(), sig[2..].to_owned(), v_zero_one(&sig)] {
        f.auth
            .verify_vm_access(&headers(&s, &[]), id, owner.address())
            .await
            .expect("legacy again");
    }

    // Another wallet's valid signature: 403.
    let theirs = f
        .auth
        .verify_vm_access(
            &headers(&sign(&other, &access_message(id)), &[]),
            id,
            owner.address(),
        )
        .await;
    assert_eq!(theirs.as_ref().err(), Some(&AuthError::NotOwner));
    assert_eq!(status(AuthError::NotOwner), StatusCode::FORBIDDEN);
    // A signature of another token id recovers someone else: 403.
    let wrong_id = sign(&owner, &access_message(U256::from(43)));
    assert_eq!(
        f.auth
            .verify_vm_access(&headers(&wrong_id, &[]), id, owner.address())
            .await
            .err(),
        Some(AuthError::NotOwner)
    );

    // Malformed signatures: 401, with the reason.
    let mut bad_v = alloy::hex::decode(&sig).expect("hex");
    bad_v[64] = 29;
    let cases = [
        (high_s(&sig), "high s"),
        (sig[..sig.len() - 2].to_owned(), "65 bytes"),
        (format!("{sig}00"), "65 bytes"),
        (format!("0x{}", alloy::hex::encode(&bad_v)), "recovery id"),
        ("0xnothex".to_owned(), "not hex"),
        (format!("0x{}", "00".repeat(65)), "out of range"),
    ];
    for (bad, reason) in cases {
        let r = f
            .auth
            .verify_vm_access(&headers(&bad, &[]), id, owner.address())
            .await;
        let Err(e @ AuthError::Invalid(_)) = r else {
            panic!("{reason}: {r:?}");
        };
        assert!(e.to_string().contains(reason), "{e}");
        assert_eq!(status(e), StatusCode::UNAUTHORIZED);
    }

    // No header, or not a bearer: 401.
    let missing = f
        .auth
        .verify_vm_access(&HeaderMap::new(), id, owner.address())
        .await;
    assert_eq!(missing.as_ref().err(), Some(&AuthError::Missing));
    assert_eq!(status(AuthError::Missing), StatusCode::UNAUTHORIZED);
    let mut basic = HeaderMap::new();
    basic.insert("authorization", HeaderValue::from_static("Basic abc"));
    assert!(is_invalid(
        f.auth.verify_vm_access(&basic, id, owner.address()).await
    ));
}

#[tokio::test]
async fn legacy_form_can_be_switched_off() {
    let f = Fixture::start(&[("CHAINFRONT_API__LEGACY_BEARER_AUTH", "false")]).await;
    let owner = f.key(1);
    let id = U256::from(7);
    let r = f
        .auth
        .verify_vm_access(
            &headers(&sign(&owner, &access_message(id)), &[]),
            id,
            owner.address(),
        )
        .await;
    assert_eq!(r.as_ref().err(), Some(&AuthError::LegacyDisabled));
    let message = AuthError::LegacyDisabled.to_string();
    for hint in [
        "disabled",
        "X-ClawCloud-Timestamp",
        "/auth/nonce",
        "/auth/login",
    ] {
        assert!(message.contains(hint), "{message}");
    }
    assert_eq!(status(AuthError::LegacyDisabled), StatusCode::UNAUTHORIZED);
    // The safe forms still work.
    let t = now();
    let sig = sign(&owner, &ts_msg(id, t));
    let caller = f
        .auth
        .verify_vm_access(&headers(&sig, &ts(t)), id, owner.address())
        .await
        .expect("timestamped");
    assert_eq!(caller.method, Method::Timestamped);
}

#[tokio::test]
async fn timestamped_signatures_are_fresh_and_single_use() {
    let f = Fixture::start(&[("CHAINFRONT_AUTH__SIGNATURE_MAX_AGE_SECS", "300")]).await;
    let (owner, other) = (f.key(1), f.key(2));
    let id = U256::from(5);
    let t = now();
    let sig = sign(&owner, &ts_msg(id, t));

    let caller = f
        .auth
        .verify_vm_access(&headers(&sig, &ts(t)), id, owner.address())
        .await
        .expect("fresh");
    assert_eq!(caller.method, Method::Timestamped);
    assert!(caller.public_key.is_some());

    // Replays, also with v rewritten as 0/1 or as bare hex: 401.
    for replay in [sig.clone(), v_zero_one(&sig), sig[2..].to_owned()] {
        let r = f
            .auth
            .verify_vm_access(&headers(&replay, &ts(t)), id, owner.address())
            .await;
        let Err(e @ AuthError::Replayed(_)) = r else {
            panic!("replay accepted: {r:?}");
        };
        assert!(e.to_string().contains("already used"), "{e}");
        assert_eq!(status(e), StatusCode::UNAUTHORIZED);
    }
    // Its high-s twin is refused as malformed, not as a fresh signature.
    assert!(is_invalid(
        f.auth
            .verify_vm_access(&headers(&high_s(&sig), &ts(t)), id, owner.address())
            .await
    ));

    // Outside the window, either side: 401.
    for t in [now() - 3_600, now() + 3_600, now() - 301] {
        let sig = sign(&owner, &ts_msg(id, t));
        let r = f
            .auth
            .verify_vm_access(&headers(&sig, &ts(t)), id, owner.address())
            .await;
        let Err(e @ AuthError::Expired(_)) = r else {
            panic!("t={t}: {r:?}");
        };
        assert_eq!(status(e), StatusCode::UNAUTHORIZED);
    }
    // Inside the window (a little old, a little ahead): accepted once.
    for t in [now() - 200, now() + 30] {
        let sig = sign(&owner, &ts_msg(id, t));
        f.auth
            .verify_vm_access(&headers(&sig, &ts(t)), id, owner.address())
            .await
            .expect("inside the window");
    }

    // A header that is not the signed timestamp recovers someone else: 403,
    // and does not burn the signature.
    let t = now() - 10;
    let sig = sign(&owner, &ts_msg(id, t));
    assert_eq!(
        f.auth
            .verify_vm_access(&headers(&sig, &ts(t + 1)), id, owner.address())
            .await
            .err(),
        Some(AuthError::NotOwner)
    );
    // Someone else's fresh signature: 403, not burned either.
    let theirs = sign(&other, &ts_msg(id, t));
    assert_eq!(
        f.auth
            .verify_vm_access(&headers(&theirs, &ts(t)), id, owner.address())
            .await
            .err(),
        Some(AuthError::NotOwner)
    );
    f.auth
        .verify_vm_access(&headers(&sig, &ts(t)), id, owner.address())
        .await
        .expect("still unused");

    let garbage = [("x-clawcloud-timestamp", "yesterday".to_owned())];
    assert!(is_invalid(
        f.auth
            .verify_vm_access(&headers(&sig, &garbage), id, owner.address())
            .await
    ));
}

#[tokio::test]
async fn nonces_are_single_use_and_expire() {
    let f = Fixture::start(&[("CHAINFRONT_AUTH__NONCE_TTL_SECS", "2")]).await;
    let (owner, other) = (f.key(1), f.key(2));
    let id = U256::from(9);

    let issued = f.auth.issue_nonce().await.expect("nonce");
    assert_eq!(issued.nonce.len(), 32);
    assert!(issued.expires_at > now() && issued.expires_at <= now() + 2);
    let second = f.auth.issue_nonce().await.expect("nonce");
    assert_ne!(issued.nonce, second.nonce);

    let message = nonce_msg(id, &issued.nonce);
    assert_eq!(
        message,
        format!(
            "ClawCloud Access Request: 9\nDomain: node.test\nChain ID: 31337\nNonce: {}",
            issued.nonce
        )
    );
    // Someone else's signature does not consume the owner's nonce.
    assert_eq!(
        f.auth
            .verify_vm_access(
                &headers(&sign(&other, &message), &nonce_header(&issued.nonce)),
                id,
                owner.address()
            )
            .await
            .err(),
        Some(AuthError::NotOwner)
    );
    let sig = sign(&owner, &message);
    let caller = f
        .auth
        .verify_vm_access(
            &headers(&sig, &nonce_header(&issued.nonce)),
            id,
            owner.address(),
        )
        .await
        .expect("nonce form");
    assert_eq!(caller.method, Method::Nonce);
    assert!(caller.public_key.is_some());

    // Reused: 401.
    let r = f
        .auth
        .verify_vm_access(
            &headers(&sig, &nonce_header(&issued.nonce)),
            id,
            owner.address(),
        )
        .await;
    let Err(e @ AuthError::Replayed(_)) = r else {
        panic!("reused nonce accepted: {r:?}");
    };
    assert!(e.to_string().contains("GET /auth/nonce"), "{e}");
    assert_eq!(status(e), StatusCode::UNAUTHORIZED);

    // Never issued: 401. Malformed: 401 without touching Redis.
    let unknown = "0123456789abcdef0123456789abcdef";
    let sig = sign(&owner, &nonce_msg(id, unknown));
    assert!(matches!(
        f.auth
            .verify_vm_access(&headers(&sig, &nonce_header(unknown)), id, owner.address())
            .await,
        Err(AuthError::Replayed(_))
    ));
    let sig = sign(&owner, &nonce_msg(id, "cf:*"));
    assert!(is_invalid(
        f.auth
            .verify_vm_access(&headers(&sig, &nonce_header("cf:*")), id, owner.address())
            .await
    ));

    // Both a timestamp and a nonce: 401.
    let both = [
        ("x-clawcloud-nonce", second.nonce.clone()),
        ("x-clawcloud-timestamp", now().to_string()),
    ];
    assert!(is_invalid(
        f.auth
            .verify_vm_access(&headers(&sig, &both), id, owner.address())
            .await
    ));

    // Expired (TTL 2 s): 401.
    tokio::time::sleep(std::time::Duration::from_millis(2_600)).await;
    let sig = sign(&owner, &nonce_msg(id, &second.nonce));
    assert!(matches!(
        f.auth
            .verify_vm_access(
                &headers(&sig, &nonce_header(&second.nonce)),
                id,
                owner.address()
            )
            .await,
        Err(AuthError::Replayed(_))
    ));
}

/// Many concurrent requests with one nonce (or one timestamped signature):
/// exactly one is let in.
#[tokio::test]
async fn concurrent_reuse_has_exactly_one_winner() {
    let f = Fixture::start(&[]).await;
    let owner = f.key(1);
    let id = U256::from(3);
    let issued = f.auth.issue_nonce().await.expect("nonce");
    let sig = sign(&owner, &nonce_msg(id, &issued.nonce));
    let t = now();
    let timed = sign(&owner, &ts_msg(id, t));
    for h in [
        headers(&sig, &nonce_header(&issued.nonce)),
        headers(&timed, &ts(t)),
    ] {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (auth, h) = (f.auth.clone(), h.clone());
                let who = owner.address();
                tokio::spawn(async move { auth.verify_vm_access(&h, id, who).await.is_ok() })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.expect("task"));
        }
        assert_eq!(wins, 1);
    }
}

/// The legacy form is off unless configured: the built-in default.
#[tokio::test]
async fn legacy_form_is_off_by_default() {
    let f = Fixture::start(&[]).await;
    assert!(
        f.config.api.legacy_bearer_auth,
        "config/local.toml turns it on"
    );
    let mut cfg = f.config.clone();
    cfg.api = chainfront::config::ApiConfig {
        public_url: cfg.api.public_url.clone(),
        ..Default::default()
    };
    let auth = build_auth(&cfg, &f.anvil).await.expect("auth");
    let owner = f.key(1);
    let id = U256::from(7);
    assert_eq!(
        auth.verify_vm_access(
            &headers(&sign(&owner, &access_message(id)), &[]),
            id,
            owner.address()
        )
        .await
        .err(),
        Some(AuthError::LegacyDisabled)
    );
}

#[tokio::test]
async fn a_node_without_a_strong_jwt_secret_refuses_to_start() {
    let f = Fixture::start(&[]).await;
    let mut cfg = f.config.clone();
    cfg.secrets.jwt_secret = None;
    let err = build_auth(&cfg, &f.anvil)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("jwt_secret") && err.contains("required"),
        "{err}"
    );
    cfg.secrets.jwt_secret = Some(chainfront::config::Secret::new("short-secret"));
    let err = build_auth(&cfg, &f.anvil)
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("shorter than 32 bytes"), "{err}");
}

#[tokio::test]
async fn sign_in_with_ethereum_issues_a_jwt_that_opens_the_owners_vms_only() {
    let f = Fixture::start(&[]).await;
    let (owner, other) = (f.key(1), f.key(2));
    let id = U256::from(11);

    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = siwe(owner.address(), &nonce);
    assert!(message.starts_with("node.test wants you to sign in with your Ethereum account:\n"));

    // High-s twin: 401, before anything is looked up (the nonce stays).
    assert!(is_invalid(
        f.auth
            .login(&message, &high_s(&sign(&owner, &message)))
            .await
    ));
    // Someone else's signature: 401. A signature by another key could only be
    // a contract wallet's, so the nonce is spent before the chain is asked.
    let r = f.auth.login(&message, &sign(&other, &message)).await;
    assert!(is_invalid(r), "wrong signer");
    assert!(matches!(
        f.auth.login(&message, &sign(&owner, &message)).await,
        Err(AuthError::Replayed(_))
    ));
    // A raw keccak signature (signHash) is not EIP-191: 401.
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = siwe(owner.address(), &nonce);
    assert!(is_invalid(
        f.auth.login(&message, &sign_raw(&owner, &message)).await
    ));
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = siwe(owner.address(), &nonce);
    let token = f
        .auth
        .login(&message, &sign(&owner, &message))
        .await
        .expect("login");
    assert!(token.expires_at >= now() + f.config.auth.jwt_ttl_secs - 1);
    assert_eq!(
        f.auth.verify_jwt(&token.token).await.expect("verify"),
        owner.address()
    );
    // `sub` is the checksummed address, `aud` names chain and domain.
    let payload = token.token.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(&b64url_decode(payload)).expect("claims");
    assert_eq!(claims["sub"], owner.address().to_checksum(None));
    assert_eq!(claims["aud"], "chainfront:31337:node.test");
    // The nonce is spent: a replay is 401.
    let again = f.auth.login(&message, &sign(&owner, &message)).await;
    let Err(e @ AuthError::Replayed(_)) = again else {
        panic!("replayed nonce: {again:?}");
    };
    assert_eq!(status(e), StatusCode::UNAUTHORIZED);

    // The token opens the owner's VM, not someone else's.
    let caller = f
        .auth
        .verify_vm_access(&headers(&token.token, &[]), id, owner.address())
        .await
        .expect("jwt");
    assert_eq!(caller.method, Method::Jwt);
    assert_eq!(caller.address, owner.address());
    assert!(caller.public_key.is_none());
    assert_eq!(
        f.auth
            .verify_vm_access(&headers(&token.token, &[]), id, other.address())
            .await
            .err(),
        Some(AuthError::NotOwner)
    );
    // ... and takes no timestamp header.
    assert!(is_invalid(
        f.auth
            .verify_vm_access(&headers(&token.token, &ts(now())), id, owner.address())
            .await
    ));

    // Revocation: tokens issued until now are refused; a new sign-in works.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    f.auth.revoke(owner.address()).await.expect("revoke");
    let revoked = f.auth.verify_jwt(&token.token).await;
    let Err(e) = revoked else {
        panic!("revoked token accepted")
    };
    assert!(e.to_string().contains("revoked"), "{e}");
    assert_eq!(status(e), StatusCode::UNAUTHORIZED);
    assert!(
        f.auth
            .verify_vm_access(&headers(&token.token, &[]), id, owner.address())
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let fresh = siwe(owner.address(), &nonce);
    let token = f
        .auth
        .login(&fresh, &sign(&owner, &fresh))
        .await
        .expect("login again");
    f.auth.verify_jwt(&token.token).await.expect("new token");

    // Malformed message: 400.
    for bad in [
        "hello",
        "chainfront sign-in\nAddress: 0x00\nNonce: x\nIssued At: now",
    ] {
        let r = f.auth.login(bad, &sign(&owner, bad)).await;
        let Err(e @ AuthError::Malformed(_)) = r else {
            panic!("{bad:?}: {r:?}");
        };
        assert_eq!(status(e), StatusCode::BAD_REQUEST);
    }
}

/// Every sign-in refusal the issue lists is a 401, and none of them spends
/// the nonce.
#[tokio::test]
async fn sign_in_refuses_other_domains_chains_times_replays_and_refusing_wallets() {
    let f = Fixture::start(&[]).await;
    let owner = f.key(1);
    let who = owner.address();
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let iso = |offset: i64| {
        chainfront::time::iso8601(i64::try_from(now()).expect("now") + offset).expect("iso")
    };
    let build = |url: &str, chain: u64, issued: String, opt: Optional<'_>| {
        sign_in::message(url, who, chain, &nonce, &issued, &opt)
    };
    let (expired, not_yet) = (iso(-10), iso(3_600));
    let cases = [
        (
            "wrong domain",
            build("https://evil.test", CHAIN, iso(0), Optional::default()),
        ),
        (
            "wrong scheme",
            build("http://node.test", CHAIN, iso(0), Optional::default()),
        ),
        (
            "wrong chain",
            build(PUBLIC_URL, 8453, iso(0), Optional::default()),
        ),
        (
            "stale",
            build(PUBLIC_URL, CHAIN, iso(-3_600), Optional::default()),
        ),
        (
            "expired",
            build(
                PUBLIC_URL,
                CHAIN,
                iso(-60),
                Optional {
                    expiration_time: Some(&expired),
                    ..Optional::default()
                },
            ),
        ),
        (
            "not yet valid",
            build(
                PUBLIC_URL,
                CHAIN,
                iso(0),
                Optional {
                    not_before: Some(&not_yet),
                    ..Optional::default()
                },
            ),
        ),
    ];
    for (why, message) in cases {
        let r = f.auth.login(&message, &sign(&owner, &message)).await;
        let e = r.err().unwrap_or_else(|| panic!("{why}: accepted"));
        assert_eq!(status(e.clone()), StatusCode::UNAUTHORIZED, "{why}: {e}");
    }
    // A nonce this node never issued: 401.
    let unknown = siwe(who, "0123456789abcdef0123456789abcdef");
    let r = f.auth.login(&unknown, &sign(&owner, &unknown)).await;
    assert!(matches!(r, Err(AuthError::Replayed(_))), "{r:?}");
    // None of the refusals spent the nonce.
    let good = build(PUBLIC_URL, CHAIN, iso(0), Optional::default());
    f.auth
        .login(&good, &sign(&owner, &good))
        .await
        .expect("nonce still live");

    // A contract wallet that says no: 401.
    let deployer = f.provider(0);
    let wallet = MockSmartWallet::deploy(&deployer, f.key(3).address())
        .await
        .expect("deploy wallet");
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = siwe(*wallet.address(), &nonce);
    let r = f.auth.login(&message, &sign(&owner, &message)).await;
    let e = r.expect_err("refusing wallet");
    assert_eq!(status(e), StatusCode::UNAUTHORIZED);
    // Its owner key signs in for it (EIP-1271): the token's subject is the wallet.
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = siwe(*wallet.address(), &nonce);
    let token = f
        .auth
        .login(&message, &sign(&f.key(3), &message))
        .await
        .expect("contract wallet sign-in");
    assert_eq!(
        f.auth.verify_jwt(&token.token).await.expect("jwt"),
        *wallet.address()
    );
}

/// A sign-in naming a hostile contract (one that loops forever, one that
/// answers a megabyte) ends quickly: the EIP-1271 call has a gas cap and a
/// timeout, and the nonce must exist before any chain call.
#[tokio::test]
async fn sign_in_as_a_gas_burning_contract_finishes_in_bounded_time() {
    let f = Fixture::start(&[("CHAINFRONT_AUTH__EIP1271_GAS", "200000")]).await;
    let deployer = f.provider(0);
    // JUMPDEST PUSH1 0 JUMP: an endless loop.
    let burner = deploy_runtime(&deployer, &[0x5b, 0x60, 0x00, 0x56]).await;
    // PUSH3 0x100000 PUSH1 0 RETURN: a megabyte of return data.
    let bloater = deploy_runtime(&deployer, &[0x62, 0x10, 0x00, 0x00, 0x60, 0x00, 0xf3]).await;
    let junk = sign(&f.key(5), "anything");
    for wallet in [burner, bloater] {
        // Without a live nonce the contract is never called.
        let m = siwe(wallet, "0123456789abcdef0123456789abcdef");
        assert!(matches!(
            f.auth.login(&m, &junk).await,
            Err(AuthError::Replayed(_))
        ));
        let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
        let m = siwe(wallet, &nonce);
        let started = Instant::now();
        let r = f.auth.login(&m, &junk).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(status(r.expect_err("refused")), StatusCode::UNAUTHORIZED);
        // The nonce was spent before the contract was asked: one call per nonce.
        assert!(matches!(
            f.auth.login(&m, &junk).await,
            Err(AuthError::Replayed(_))
        ));
    }
    // An oversized "yes": the magic value followed by 2 KiB is a refusal.
    // PUSH4 magic PUSH1 224 SHL PUSH1 0 MSTORE PUSH2 0x0800 PUSH1 0 RETURN
    let oversized = deploy_runtime(
        &deployer,
        &[
            0x63, 0x16, 0x26, 0xba, 0x7e, 0x60, 0xe0, 0x1b, 0x60, 0x00, 0x52, 0x61, 0x08, 0x00,
            0x60, 0x00, 0xf3,
        ],
    )
    .await;
    let rpc = f.rpc();
    let hash = chainfront::auth::signature::eip191_hash(b"x");
    assert!(
        !eip1271::is_valid_signature(&rpc, oversized, hash, &[1; 65], 200_000)
            .await
            .expect("call")
    );
}

/// The Compute API's proof of a wallet: a sign-in token, or a per-request
/// signature over method, path, body hash and time (single use).
#[tokio::test]
async fn requests_prove_their_wallet_by_token_or_per_request_signature() {
    let f = Fixture::start(&[]).await;
    let (owner, other) = (f.key(1), f.key(2));
    let path = "/v1/compute/llm?stream=false";
    let body = br#"{"prompt":"hi"}"#;
    let signed = |who: &PrivateKeySigner, t: u64, m: &str, p: &str, b: &[u8]| {
        let msg = request_message(DOMAIN, CHAIN, m, p, b, t);
        let mut h = HeaderMap::new();
        h.insert(
            "x-wallet-address",
            who.address().to_string().parse().expect("h"),
        );
        h.insert("x-wallet-timestamp", t.to_string().parse().expect("h"));
        h.insert("x-wallet-signature", sign(who, &msg).parse().expect("h"));
        h
    };
    let t = now();
    let h = signed(&owner, t, "POST", path, body);
    assert_eq!(
        f.auth
            .wallet_from_request("POST", path, &h, body)
            .await
            .expect("signed"),
        owner.address()
    );
    // Single use.
    assert!(matches!(
        f.auth.wallet_from_request("POST", path, &h, body).await,
        Err(AuthError::Replayed(_))
    ));
    // Another body, path or method than signed: refused (and not burned).
    let h = signed(&owner, t - 1, "POST", path, body);
    for (m, p, b) in [
        ("POST", path, &br#"{"prompt":"bye"}"#[..]),
        ("POST", "/v1/compute/image", &body[..]),
        ("GET", path, &body[..]),
    ] {
        let r = f.auth.wallet_from_request(m, p, &h, b).await;
        assert_eq!(
            status(r.expect_err("refused")),
            StatusCode::UNAUTHORIZED,
            "{m} {p}"
        );
    }
    f.auth
        .wallet_from_request("POST", path, &h, body)
        .await
        .expect("unburned");
    // Signed for another domain (a relay): refused.
    let msg = request_message("evil.test", CHAIN, "POST", path, body, t);
    let mut h = signed(&owner, t, "POST", path, body);
    h.insert("x-wallet-signature", sign(&owner, &msg).parse().expect("h"));
    assert!(
        f.auth
            .wallet_from_request("POST", path, &h, body)
            .await
            .is_err()
    );
    // Someone else's signature for the claimed address: refused.
    let mut h = signed(&other, t, "POST", path, body);
    h.insert(
        "x-wallet-address",
        owner.address().to_string().parse().expect("h"),
    );
    assert!(is_invalid(
        f.auth.wallet_from_request("POST", path, &h, body).await
    ));
    // Out of the time window: refused.
    let h = signed(&owner, t - 3_600, "POST", path, body);
    assert!(matches!(
        f.auth.wallet_from_request("POST", path, &h, body).await,
        Err(AuthError::Expired(_))
    ));
    // Nothing at all: 401 Missing.
    assert_eq!(
        f.auth
            .wallet_from_request("POST", path, &HeaderMap::new(), body)
            .await
            .err(),
        Some(AuthError::Missing)
    );
    // A sign-in token works for any request.
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = siwe(other.address(), &nonce);
    let token = f
        .auth
        .login(&message, &sign(&other, &message))
        .await
        .expect("login");
    assert_eq!(
        f.auth
            .wallet_from_request("POST", path, &headers(&token.token, &[]), body)
            .await
            .expect("jwt"),
        other.address()
    );
}

#[tokio::test]
async fn forged_foreign_and_expired_jwts_are_refused() {
    let f = Fixture::start(&[]).await;
    let owner = f.key(1);
    let id = U256::from(1);
    let aud = audience(CHAIN, DOMAIN);
    let same_secret = JwtKeys::new(JWT_SECRET.as_bytes(), &aud, 3_600).expect("keys");
    let check = |token: String| {
        let auth = f.auth.clone();
        let who = owner.address();
        async move { auth.verify_vm_access(&headers(&token, &[]), id, who).await }
    };

    // Another replica with the same secret: accepted.
    let good = same_secret.issue(owner.address(), now()).expect("issue");
    check(good.token.clone()).await.expect("shared secret");

    // Expired: 401.
    let old = same_secret
        .issue(owner.address(), now() - 7_200)
        .expect("issue");
    let r = check(old.token).await;
    let Err(e @ AuthError::Expired(_)) = r else {
        panic!("expired token: {r:?}");
    };
    assert_eq!(status(e), StatusCode::UNAUTHORIZED);

    // Wrong secret: 401.
    let forged = JwtKeys::new(b"not-the-node-secret-not-the-node", &aud, 3_600)
        .expect("keys")
        .issue(owner.address(), now())
        .expect("issue");
    assert!(is_invalid(check(forged.token).await));
    // Another audience (testnet node, same secret): 401.
    for other_aud in [audience(84532, DOMAIN), audience(CHAIN, "other.test")] {
        let foreign = JwtKeys::new(JWT_SECRET.as_bytes(), &other_aud, 3_600)
            .expect("keys")
            .issue(owner.address(), now())
            .expect("issue");
        let r = check(foreign.token).await;
        let Err(e @ AuthError::Invalid(_)) = r else {
            panic!("foreign audience: {r:?}");
        };
        assert!(e.to_string().contains("audience"), "{e}");
        assert_eq!(status(e), StatusCode::UNAUTHORIZED);
    }

    let claims = Claims {
        sub: owner.address().to_checksum(None),
        aud: aud.clone(),
        iat: now(),
        exp: now() + 600,
        iss: "chainfront".into(),
    };
    // HS384 and HS512 with the right secret: 401 (algorithm pinned).
    for alg in [
        jsonwebtoken::Algorithm::HS384,
        jsonwebtoken::Algorithm::HS512,
    ] {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .expect("encode");
        assert!(is_invalid(check(token).await), "{alg:?}");
    }
    // alg none, no signature: 401.
    let b64 = |v: &Value| b64url(&serde_json::to_vec(v).expect("json"));
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&serde_json::to_value(&claims).expect("claims"))
    );
    let r = check(none).await;
    assert!(is_invalid(r));
    // A good token's payload swapped for another subject: 401.
    let mut parts: Vec<String> = good.token.split('.').map(str::to_owned).collect();
    let mut evil = claims.clone();
    evil.sub = f.key(2).address().to_checksum(None);
    parts[1] = b64(&serde_json::to_value(&evil).expect("claims"));
    let tampered = parts.join(".");
    let r = f
        .auth
        .verify_vm_access(&headers(&tampered, &[]), id, f.key(2).address())
        .await;
    assert!(matches!(r, Err(AuthError::Invalid(_))), "{r:?}");
}

/// Clockchain's form: any message, signed with `personal_sign` or as a raw
/// `keccak256(message)`; the claimed wallet must be the signer.
#[tokio::test]
async fn wallet_messages_accept_eip191_and_raw_keccak() {
    let f = Fixture::start(&[]).await;
    let (creator, other) = (f.key(3), f.key(4));
    let message = format!(
        "123e4567-e89b-12d3-a456-426614174000:I predict the actor will say hello:0.1:0x{}",
        "ab".repeat(32)
    );
    let eip191 = f
        .auth
        .verify_wallet_message(
            message.as_bytes(),
            &sign(&creator, &message),
            creator.address(),
        )
        .await
        .expect("eip-191");
    assert_eq!(eip191.scheme, Scheme::Eip191);
    assert_eq!(eip191.address, creator.address());
    let raw = f
        .auth
        .verify_wallet_message(
            message.as_bytes(),
            &sign_raw(&creator, &message),
            creator.address(),
        )
        .await
        .expect("raw keccak");
    assert_eq!(raw.scheme, Scheme::RawKeccak);
    assert!(raw.public_key.is_some());

    for bad in [
        sign(&other, &message),
        sign_raw(&other, &message),
        high_s(&sign(&creator, &message)),
        sign(&creator, "another message"),
        "0x1234".to_owned(),
    ] {
        let r = f
            .auth
            .verify_wallet_message(message.as_bytes(), &bad, creator.address())
            .await;
        let Err(e @ AuthError::Invalid(_)) = r else {
            panic!("{r:?}");
        };
        assert_eq!(status(e), StatusCode::UNAUTHORIZED);
    }
}

/// A VM owned by a contract wallet opens with its owner key's signature
/// (EIP-1271), not with anyone else's.
#[tokio::test]
async fn contract_wallets_approve_through_eip1271() {
    let f = Fixture::start(&[]).await;
    let (wallet_owner, other) = (f.key(1), f.key(2));
    let deployer = f.provider(0);
    let wallet = MockSmartWallet::deploy(&deployer, wallet_owner.address())
        .await
        .expect("deploy wallet");
    let wallet = *wallet.address();
    let id = U256::from(77);

    // Legacy, timestamped and nonce forms, signed by the wallet's owner key.
    let caller = f
        .auth
        .verify_vm_access(
            &headers(&sign(&wallet_owner, &access_message(id)), &[]),
            id,
            wallet,
        )
        .await
        .expect("legacy via EIP-1271");
    assert_eq!(caller.address, wallet);
    assert_eq!(caller.signer, Some(wallet_owner.address()));
    assert_eq!(caller.method, Method::Legacy);
    let t = now();
    let sig = sign(&wallet_owner, &ts_msg(id, t));
    f.auth
        .verify_vm_access(&headers(&sig, &ts(t)), id, wallet)
        .await
        .expect("timestamped via EIP-1271");
    assert!(matches!(
        f.auth
            .verify_vm_access(&headers(&sig, &ts(t)), id, wallet)
            .await,
        Err(AuthError::Replayed(_))
    ));
    let n = f.auth.issue_nonce().await.expect("nonce").nonce;
    let sig = sign(&wallet_owner, &nonce_msg(id, &n));
    f.auth
        .verify_vm_access(&headers(&sig, &nonce_header(&n)), id, wallet)
        .await
        .expect("nonce via EIP-1271");

    // Another key: the wallet says no → 403. Malformed: 401.
    assert_eq!(
        f.auth
            .verify_vm_access(
                &headers(&sign(&other, &access_message(id)), &[]),
                id,
                wallet
            )
            .await
            .err(),
        Some(AuthError::NotOwner)
    );
    assert!(is_invalid(
        f.auth
            .verify_vm_access(
                &headers(&high_s(&sign(&wallet_owner, &access_message(id))), &[]),
                id,
                wallet
            )
            .await
    ));
    assert!(is_invalid(
        f.auth
            .verify_vm_access(&headers("0x1234", &[]), id, wallet)
            .await
    ));

    // A contract owner's approval gives no public key to encrypt to.
    let n = f.auth.issue_nonce().await.expect("nonce").nonce;
    let sig = sign(&wallet_owner, &nonce_msg(id, &n));
    let caller = f
        .auth
        .verify_vm_access(&headers(&sig, &nonce_header(&n)), id, wallet)
        .await
        .expect("nonce via EIP-1271");
    assert!(caller.public_key.is_none());

    // Sign-in as the wallet: the token's subject is the wallet.
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = siwe(wallet, &nonce);
    let token = f
        .auth
        .login(&message, &sign(&wallet_owner, &message))
        .await
        .expect("contract wallet login");
    assert_eq!(f.auth.verify_jwt(&token.token).await.expect("jwt"), wallet);
    let proof = f
        .auth
        .verify_wallet_message(b"hello", &sign(&wallet_owner, "hello"), wallet)
        .await
        .expect("proof");
    assert_eq!(proof.scheme, Scheme::Eip1271);

    // The raw EIP-1271 call: true for the wallet, false for an EOA and for a
    // contract without isValidSignature (it reverts).
    let chain = f.rpc();
    let gas = f.config.auth.eip1271_gas;
    let hash = chainfront::auth::signature::eip191_hash(b"hello");
    let sig = alloy::hex::decode(sign(&wallet_owner, "hello")).expect("hex");
    assert!(
        eip1271::is_valid_signature(&chain, wallet, hash, &sig, gas)
            .await
            .expect("call")
    );
    assert!(
        !eip1271::is_valid_signature(&chain, other.address(), hash, &sig, gas)
            .await
            .expect("call")
    );
    let usdc = MockUSDC::deploy(&deployer).await.expect("deploy usdc");
    assert!(
        !eip1271::is_valid_signature(&chain, *usdc.address(), hash, &sig, gas)
            .await
            .expect("call")
    );
    let theirs = alloy::hex::decode(sign(&other, "hello")).expect("hex");
    assert!(
        !eip1271::is_valid_signature(&chain, wallet, hash, &theirs, gas)
            .await
            .expect("call")
    );
}

/// F8: for a contract-owned token, single use is keyed on the signed message,
/// not the signature bytes, so a lenient wallet that accepts the same
/// approval with a trailing byte cannot be used to replay it.
#[tokio::test]
async fn a_contract_owners_timestamped_signature_cannot_be_replayed_with_trailing_bytes() {
    let f = Fixture::start(&[]).await;
    // A wallet that approves any signature of any length (the most lenient
    // encoding rules a real wallet could have).
    // PUSH4 magic PUSH1 224 SHL PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN
    let lenient = deploy_runtime(
        &f.provider(0),
        &[
            0x63, 0x16, 0x26, 0xba, 0x7e, 0x60, 0xe0, 0x1b, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60,
            0x00, 0xf3,
        ],
    )
    .await;
    let id = U256::from(5);
    let t = now();
    let sig = sign(&f.key(1), &ts_msg(id, t));
    f.auth
        .verify_vm_access(&headers(&sig, &ts(t)), id, lenient)
        .await
        .expect("first use");
    for replay in [format!("{sig}00"), format!("{sig}ff"), sig.clone()] {
        let r = f
            .auth
            .verify_vm_access(&headers(&replay, &ts(t)), id, lenient)
            .await;
        assert!(matches!(r, Err(AuthError::Replayed(_))), "{replay}: {r:?}");
    }
}

/// `/auth/nonce` → `/auth/login` → `/credentials` with the token, over HTTP.
#[tokio::test]
async fn http_sign_in_then_credentials_with_the_token() {
    use crate::vms::{indexed, node_config, start_node};
    let stack = crate::harness::Stack::start().await;
    let node = start_node(node_config(&stack, &[])).await;
    let (buyer, other) = (stack.signer(4), stack.signer(5));
    let token_id = stack.buy_vm(4, 0, 2).await;
    indexed(&node, &stack).await;
    let http = reqwest::Client::new();

    let sign_in = |who: PrivateKeySigner| {
        let (http, url) = (http.clone(), node.url.clone());
        async move {
            let resp = http
                .get(format!("{url}/auth/nonce"))
                .send()
                .await
                .expect("nonce");
            assert_eq!(resp.status(), reqwest::StatusCode::OK);
            assert_eq!(
                resp.headers()
                    .get("cache-control")
                    .and_then(|v| v.to_str().ok()),
                Some("no-store")
            );
            let body: Value = resp.json().await.expect("json");
            let nonce = body["nonce"].as_str().expect("nonce").to_owned();
            assert!(
                body["expiresAt"]
                    .as_str()
                    .expect("expiresAt")
                    .ends_with('Z')
            );
            assert_eq!(body["domain"], DOMAIN);
            assert_eq!(body["chainId"], CHAIN);
            let message = siwe(who.address(), &nonce);
            let resp = http
                .post(format!("{url}/v1/auth/login"))
                .json(&serde_json::json!({
                    "message": message,
                    "signature": sign(&who, &message),
                }))
                .send()
                .await
                .expect("login");
            assert_eq!(resp.status(), reqwest::StatusCode::OK);
            let body: Value = resp.json().await.expect("json");
            assert!(body["expiresAt"].is_string());
            body["token"].as_str().expect("token").to_owned()
        }
    };
    let mine = sign_in(buyer.clone()).await;
    let theirs = sign_in(other.clone()).await;

    let creds = format!("{}/credentials/{token_id}", node.url);
    let mine_resp = http
        .get(&creds)
        .bearer_auth(&mine)
        .send()
        .await
        .expect("get");
    assert!(
        mine_resp.status().is_success(),
        "owner's token: {}",
        mine_resp.status()
    );
    let theirs_resp = http
        .get(&creds)
        .bearer_auth(&theirs)
        .send()
        .await
        .expect("get");
    assert_eq!(theirs_resp.status(), reqwest::StatusCode::FORBIDDEN);

    // Malformed bodies: 400 / 422 in the usual error shape; bad signature: 401.
    let login = format!("{}/auth/login", node.url);
    for (body, code) in [
        ("not json", 400),
        ("{\"address\": \"0x1\"}", 422),
        ("{}", 422),
        ("{\"message\": \"hello\", \"signature\": \"0x00\"}", 400),
    ] {
        let resp = http
            .post(&login)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), code, "{body}");
        let err: Value = resp.json().await.expect("json");
        assert!(err["error"].is_string());
    }
    let nonce: Value = http
        .get(format!("{}/auth/nonce", node.url))
        .send()
        .await
        .expect("nonce")
        .json()
        .await
        .expect("json");
    let message = siwe(buyer.address(), nonce["nonce"].as_str().expect("nonce"));
    let resp = http
        .post(&login)
        .json(&serde_json::json!({
            "message": message,
            "signature": sign(&other, &message),
        }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
}

/// RFC 4648 base64url without padding, for hand-made tokens.
fn b64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Decodes RFC 4648 base64url without padding.
fn b64url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64url") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}
