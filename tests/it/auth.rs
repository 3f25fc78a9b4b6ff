//! `crate::auth` against a real redis-server and anvil, with real keys: every
//! accepted credential form (legacy, timestamped, nonce, JWT, EIP-1271
//! contract wallet) and every refusal (high s, wrong length, bad v, wrong
//! signer, expired, replayed, reused nonce, legacy off, forged JWTs), then
//! the `/auth` routes end to end.

use std::collections::BTreeMap;

use alloy::node_bindings::AnvilInstance;
use alloy::primitives::{Address, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use chainfront::api::ApiError;
use chainfront::auth::jwt::{Claims, JwtKeys};
use chainfront::auth::login::SignIn;
use chainfront::auth::{
    Auth, AuthError, Method, Scheme, access_message, eip1271, nonce_access_message,
    timestamped_access_message,
};
use chainfront::config::Config;
use chainfront::devnet::{self, RedisServer};
use chainfront_indexer::contracts::{MockSmartWallet, MockUSDC};
use serde_json::Value;

const JWT_SECRET: &str = "integration-test-secret-32-bytes-long!";

/// redis-server + a bare anvil (no contracts) + an [`Auth`] on them.
struct Fixture {
    anvil: AnvilInstance,
    _redis: RedisServer,
    config: Config,
    auth: Auth,
}

impl Fixture {
    async fn start(extra: &[(&str, &str)]) -> Fixture {
        let anvil = devnet::start_anvil(31337, None).expect("anvil");
        let redis = RedisServer::start().expect("redis-server");
        let mut env: BTreeMap<String, String> = [
            ("CHAINFRONT_REDIS__URL".to_owned(), redis.url()),
            (
                "CHAINFRONT_CHAINS__LOCAL__RPC_URLS".to_owned(),
                format!("[\"{}\"]", anvil.endpoint()),
            ),
        ]
        .into_iter()
        .collect();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let config =
            Config::load_with_env(Some(&crate::harness::local_toml()), &env).expect("config");
        let auth = build_auth(&config, &anvil).await;
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
}

async fn build_auth(config: &Config, anvil: &AnvilInstance) -> Auth {
    let redis = chainfront::node::connect_redis(&config.redis.url)
        .await
        .expect("redis");
    let chain = chainfront::node::read_provider(&anvil.endpoint()).expect("provider");
    Auth::new(config, redis, chain)
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
    let sig = sign(&owner, &timestamped_access_message(id, t));
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
    let sig = sign(&owner, &timestamped_access_message(id, t));

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
        let sig = sign(&owner, &timestamped_access_message(id, t));
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
        let sig = sign(&owner, &timestamped_access_message(id, t));
        f.auth
            .verify_vm_access(&headers(&sig, &ts(t)), id, owner.address())
            .await
            .expect("inside the window");
    }

    // A header that is not the signed timestamp recovers someone else: 403,
    // and does not burn the signature.
    let t = now() - 10;
    let sig = sign(&owner, &timestamped_access_message(id, t));
    assert_eq!(
        f.auth
            .verify_vm_access(&headers(&sig, &ts(t + 1)), id, owner.address())
            .await
            .err(),
        Some(AuthError::NotOwner)
    );
    // Someone else's fresh signature: 403, not burned either.
    let theirs = sign(&other, &timestamped_access_message(id, t));
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

    let message = nonce_access_message(id, &issued.nonce);
    assert_eq!(
        message,
        format!("ClawCloud Access Request: 9\nNonce: {}", issued.nonce)
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
    let sig = sign(&owner, &nonce_access_message(id, unknown));
    assert!(matches!(
        f.auth
            .verify_vm_access(&headers(&sig, &nonce_header(unknown)), id, owner.address())
            .await,
        Err(AuthError::Replayed(_))
    ));
    let sig = sign(&owner, &nonce_access_message(id, "cf:*"));
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
    let sig = sign(&owner, &nonce_access_message(id, &second.nonce));
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
    let sig = sign(&owner, &nonce_access_message(id, &issued.nonce));
    let t = now();
    let timed = sign(&owner, &timestamped_access_message(id, t));
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

#[tokio::test]
async fn sign_in_issues_a_jwt_that_opens_the_owners_vms_only() {
    let f = Fixture::start(&[("CHAINFRONT_JWT_SECRET", JWT_SECRET)]).await;
    let (owner, other) = (f.key(1), f.key(2));
    let id = U256::from(11);
    let iso_now = chainfront::time::now_iso8601();

    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = SignIn::message(owner.address(), &nonce, &iso_now);
    let address = owner.address().to_string();

    // Someone else's signature: 401, nonce not consumed.
    let r = f
        .auth
        .login(&address, &message, &sign(&other, &message))
        .await;
    assert!(is_invalid(r), "wrong signer");
    // High-s twin: 401.
    assert!(is_invalid(
        f.auth
            .login(&address, &message, &high_s(&sign(&owner, &message)))
            .await
    ));
    let token = f
        .auth
        .login(&address, &message, &sign(&owner, &message))
        .await
        .expect("login");
    assert!(token.expires_at >= now() + f.config.auth.jwt_ttl_secs - 1);
    assert_eq!(
        f.auth.verify_jwt(&token.token).expect("verify"),
        owner.address()
    );
    // The nonce is spent.
    let again = f
        .auth
        .login(&address, &message, &sign(&owner, &message))
        .await;
    assert!(matches!(again, Err(AuthError::Replayed(_))), "{again:?}");

    // Raw keccak signatures (signHash) sign in too.
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = SignIn::message(owner.address(), &nonce, &iso_now);
    f.auth
        .login(&address, &message, &sign_raw(&owner, &message))
        .await
        .expect("raw keccak login");

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

    // Malformed input: 400. Stale Issued At: 401.
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let good = SignIn::message(owner.address(), &nonce, &iso_now);
    let sig = sign(&owner, &good);
    for (addr, msg) in [
        ("not-an-address", good.as_str()),
        (address.as_str(), "hello"),
        (
            other.address().to_string().as_str(),
            good.as_str(), // Address line differs from address
        ),
    ] {
        let r = f.auth.login(addr, msg, &sig).await;
        let Err(e @ AuthError::Malformed(_)) = r else {
            panic!("{addr} / {msg:?}: {r:?}");
        };
        assert_eq!(status(e), StatusCode::BAD_REQUEST);
    }
    let stale_time =
        chainfront::time::iso8601(i64::try_from(now()).expect("now") - 3_600).expect("iso");
    let stale = SignIn::message(owner.address(), &nonce, &stale_time);
    assert!(matches!(
        f.auth.login(&address, &stale, &sign(&owner, &stale)).await,
        Err(AuthError::Expired(_))
    ));
    // None of the refusals spent the nonce.
    f.auth
        .login(&address, &good, &sig)
        .await
        .expect("nonce still live");
}

#[tokio::test]
async fn forged_and_expired_jwts_are_refused() {
    let f = Fixture::start(&[("CHAINFRONT_JWT_SECRET", JWT_SECRET)]).await;
    let owner = f.key(1);
    let id = U256::from(1);
    let same_secret = JwtKeys::new(JWT_SECRET.as_bytes(), 3_600);
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
    let forged = JwtKeys::new(b"not-the-node-secret-not-the-node", 3_600)
        .issue(owner.address(), now())
        .expect("issue");
    assert!(is_invalid(check(forged.token).await));

    let claims = Claims {
        sub: format!("{:#x}", owner.address()),
        iat: now(),
        exp: now() + 600,
        iss: "chainfront".into(),
    };
    // HS384 with the right secret: 401 (algorithm pinned).
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("encode");
    assert!(is_invalid(check(hs384).await));
    // alg none, no signature: 401.
    let b64 = |v: &Value| b64url(&serde_json::to_vec(v).expect("json"));
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&serde_json::to_value(&claims).expect("claims"))
    );
    assert!(is_invalid(check(none).await));
    // A good token's payload swapped for another subject: 401.
    let mut parts: Vec<String> = good.token.split('.').map(str::to_owned).collect();
    let mut evil = claims.clone();
    evil.sub = format!("{:#x}", f.key(2).address());
    parts[1] = b64(&serde_json::to_value(&evil).expect("claims"));
    let tampered = parts.join(".");
    let r = f
        .auth
        .verify_vm_access(&headers(&tampered, &[]), id, f.key(2).address())
        .await;
    assert!(matches!(r, Err(AuthError::Invalid(_))), "{r:?}");
}

#[tokio::test]
async fn without_a_configured_secret_tokens_are_per_process() {
    let f = Fixture::start(&[]).await;
    assert!(f.config.secrets.jwt_secret.is_none());
    let owner = f.key(1);
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = SignIn::message(owner.address(), &nonce, &chainfront::time::now_iso8601());
    let token = f
        .auth
        .login(
            &owner.address().to_string(),
            &message,
            &sign(&owner, &message),
        )
        .await
        .expect("login");
    f.auth.verify_jwt(&token.token).expect("same process");
    let replica = build_auth(&f.config, &f.anvil).await;
    assert!(matches!(
        replica.verify_jwt(&token.token),
        Err(AuthError::Invalid(_))
    ));
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
    let f = Fixture::start(&[("CHAINFRONT_JWT_SECRET", JWT_SECRET)]).await;
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
    let sig = sign(&wallet_owner, &timestamped_access_message(id, t));
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
    let sig = sign(&wallet_owner, &nonce_access_message(id, &n));
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

    // Sign-in as the wallet: the token's subject is the wallet.
    let nonce = f.auth.issue_nonce().await.expect("nonce").nonce;
    let message = SignIn::message(wallet, &nonce, &chainfront::time::now_iso8601());
    let token = f
        .auth
        .login(
            &wallet.to_string(),
            &message,
            &sign(&wallet_owner, &message),
        )
        .await
        .expect("contract wallet login");
    assert_eq!(f.auth.verify_jwt(&token.token).expect("jwt"), wallet);
    let proof = f
        .auth
        .verify_wallet_message(b"hello", &sign(&wallet_owner, "hello"), wallet)
        .await
        .expect("proof");
    assert_eq!(proof.scheme, Scheme::Eip1271);

    // The raw EIP-1271 call: true for the wallet, false for an EOA and for a
    // contract without isValidSignature (it reverts).
    let chain = chainfront::node::read_provider(&f.anvil.endpoint()).expect("provider");
    let hash = chainfront::auth::signature::eip191_hash(b"hello");
    let sig = alloy::hex::decode(sign(&wallet_owner, "hello")).expect("hex");
    assert!(
        eip1271::is_valid_signature(&chain, wallet, hash, &sig)
            .await
            .expect("call")
    );
    assert!(
        !eip1271::is_valid_signature(&chain, other.address(), hash, &sig)
            .await
            .expect("call")
    );
    let usdc = MockUSDC::deploy(&deployer).await.expect("deploy usdc");
    assert!(
        !eip1271::is_valid_signature(&chain, *usdc.address(), hash, &sig)
            .await
            .expect("call")
    );
    let theirs = alloy::hex::decode(sign(&other, "hello")).expect("hex");
    assert!(
        !eip1271::is_valid_signature(&chain, wallet, hash, &theirs)
            .await
            .expect("call")
    );
}

/// `/auth/nonce` → `/auth/login` → `/credentials` with the token, over HTTP.
#[tokio::test]
async fn http_sign_in_then_credentials_with_the_token() {
    use crate::vms::{indexed, node_config, start_node};
    let stack = crate::harness::Stack::start().await;
    let node = start_node(node_config(
        &stack,
        &[("CHAINFRONT_JWT_SECRET", JWT_SECRET)],
    ))
    .await;
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
            let message = SignIn::message(who.address(), &nonce, &chainfront::time::now_iso8601());
            let resp = http
                .post(format!("{url}/auth/login"))
                .json(&serde_json::json!({
                    "address": who.address().to_string(),
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

    // Malformed bodies: 400 in the usual error shape; bad signature: 401.
    let login = format!("{}/auth/login", node.url);
    for body in ["not json", "{\"address\": \"0x1\"}", "{}"] {
        let resp = http
            .post(&login)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST, "{body}");
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
    let message = SignIn::message(
        buyer.address(),
        nonce["nonce"].as_str().expect("nonce"),
        &chainfront::time::now_iso8601(),
    );
    let resp = http
        .post(&login)
        .json(&serde_json::json!({
            "address": buyer.address().to_string(),
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
