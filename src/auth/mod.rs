//! Every signature and token check of the node: EIP-191 and raw-hash wallet
//! signatures, EIP-1271 contract wallets, server nonces, single-use
//! timestamped signatures, sign-in JWTs and the admin API key. Nothing outside
//! this module recovers a signer. Routes use [`Auth`]: `verify_vm_access` for
//! ClawCloud's `/credentials`, `verify_wallet_message` for any other signed
//! message, `login` / `issue_nonce` for `/auth/*`.
//!
//! A VM access request proves control of the NFT's owner in one of four forms
//! (`{tokenId}` is the decimal token id):
//!
//! | form | headers | signed message (EIP-191 `personal_sign`) |
//! | --- | --- | --- |
//! | legacy (if `api.legacy_bearer_auth`) | `Authorization: Bearer <sig>` | `ClawCloud Access Request: {tokenId}` |
//! | timestamped, single-use | same + `X-ClawCloud-Timestamp: <unix s>` | `ClawCloud Access Request: {tokenId}\nTimestamp: {ts}` |
//! | nonce, single-use | same + `X-ClawCloud-Nonce: <nonce>` | `ClawCloud Access Request: {tokenId}\nNonce: {nonce}` |
//! | JWT | `Authorization: Bearer <jwt>` from `POST /auth/login` | — |
//!
//! A signature by someone other than the owner is still accepted when the
//! owner is a contract whose EIP-1271 `isValidSignature` approves it.

pub mod admin;
pub mod eip1271;
pub mod jwt;
pub mod login;
pub mod nonce;
pub mod signature;

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use axum::http::{HeaderMap, header};
use chainfront_indexer::conn::RedisConn;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::api::ApiError;
use crate::config::Config;
use jwt::{IssuedToken, JwtError, JwtKeys};
use login::SignIn;
use nonce::{IssuedNonce, Nonces, ReplayGuard, unix_now};
use signature::{SignatureError, WalletSignature, decode_hex, eip191_hash};

/// Header carrying the unix time a timestamped access signature was made.
pub const TIMESTAMP_HEADER: &str = "x-clawcloud-timestamp";
/// Header carrying the server nonce a nonce access signature covers.
pub const NONCE_HEADER: &str = "x-clawcloud-nonce";
/// Largest signature accepted, in hex characters: contract-wallet signatures
/// may be longer than 65 bytes (multisig), but not unboundedly.
const MAX_SIGNATURE_HEX: usize = 4 * 1024;
/// Bytes of the random JWT secret used when none is configured.
const GENERATED_SECRET_LEN: usize = 32;

/// ClawCloud's documented access message (legacy form).
pub fn access_message(token_id: U256) -> String {
    format!("ClawCloud Access Request: {token_id}")
}

/// The access message of the timestamped form.
pub fn timestamped_access_message(token_id: U256, timestamp: u64) -> String {
    format!("ClawCloud Access Request: {token_id}\nTimestamp: {timestamp}")
}

/// The access message of the nonce form.
pub fn nonce_access_message(token_id: U256, nonce: &str) -> String {
    format!("ClawCloud Access Request: {token_id}\nNonce: {nonce}")
}

/// How a caller proved control of the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// ClawCloud's documented bearer: a signature of the bare message (replayable).
    Legacy,
    /// The message plus a timestamp, valid for minutes and single-use.
    Timestamped,
    /// The message plus a server nonce, single-use.
    Nonce,
    /// A sign-in JWT.
    Jwt,
}

impl Method {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Legacy => "legacy",
            Method::Timestamped => "timestamped",
            Method::Nonce => "nonce",
            Method::Jwt => "jwt",
        }
    }
}

/// An authenticated VM caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The owner whose control was proved (an EOA, or the contract wallet
    /// that approved the signature).
    pub address: Address,
    /// How.
    pub method: Method,
    /// The signing key's public key, to encrypt answers to (`None` for JWTs
    /// and for contract-wallet signatures that are not one ECDSA signature).
    pub public_key: Option<k256::PublicKey>,
    /// The key that signed, when a signature was used: `address` itself, or
    /// the key a contract wallet approved.
    pub signer: Option<Address>,
}

/// Which hash a wallet signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// EIP-191 `personal_sign` of the message.
    Eip191,
    /// A raw signature of `keccak256(message)` (`signHash`, no prefix).
    RawKeccak,
    /// A contract wallet's EIP-1271 approval of the EIP-191 hash.
    Eip1271,
}

/// A verified signature of a message by a claimed address.
#[derive(Debug, Clone)]
pub struct WalletProof {
    /// The claimed (and proved) address.
    pub address: Address,
    /// How it signed.
    pub scheme: Scheme,
    /// The recovered key, when the signature is one ECDSA signature.
    pub public_key: Option<k256::PublicKey>,
    /// The recovered signer (differs from `address` for contract wallets).
    pub signer: Option<Address>,
    /// The signature in canonical form (v = 27/28), what single-use guards key on.
    pub canonical_signature: Vec<u8>,
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("missing Authorization: Bearer <signature> header (or a token from POST /auth/login)")]
    Missing,
    /// A malformed or non-recovering signature, a bad token, a bad header.
    #[error("invalid credentials: {0}")]
    Invalid(String),
    /// The legacy bearer form is switched off.
    #[error(
        "the untimed signature form is disabled on this node: sign \"ClawCloud Access Request: {{tokenId}}\\nTimestamp: {{unix seconds}}\" and send the timestamp in X-ClawCloud-Timestamp, or sign \"ClawCloud Access Request: {{tokenId}}\\nNonce: {{nonce}}\" with a nonce from GET /auth/nonce in X-ClawCloud-Nonce, or send a token from POST /auth/login"
    )]
    LegacyDisabled,
    /// A timestamp outside the window or an expired token.
    #[error("{0}")]
    Expired(String),
    /// A single-use signature or nonce seen before.
    #[error("{0}")]
    Replayed(String),
    /// Valid credentials of someone who does not own the resource.
    #[error("not the owner of this VM")]
    NotOwner,
    /// A malformed request (sign-in body or message).
    #[error("{0}")]
    Malformed(String),
    /// Redis or the chain failed while checking.
    #[error("{0}")]
    Unavailable(String),
}

impl AuthError {
    /// A short, stable reason for security logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid(_) => "invalid",
            AuthError::LegacyDisabled => "legacy_disabled",
            AuthError::Expired(_) => "expired",
            AuthError::Replayed(_) => "replayed",
            AuthError::NotOwner => "not_owner",
            AuthError::Malformed(_) => "malformed",
            AuthError::Unavailable(_) => "unavailable",
        }
    }

    fn store(e: redis::RedisError) -> Self {
        tracing::error!(target: "chainfront::auth", error = %e, "redis error while authenticating");
        AuthError::Unavailable("state store unavailable; retry shortly".into())
    }
}

impl From<SignatureError> for AuthError {
    fn from(e: SignatureError) -> Self {
        AuthError::Invalid(e.to_string())
    }
}

impl From<JwtError> for AuthError {
    fn from(e: JwtError) -> Self {
        match e {
            JwtError::Expired => AuthError::Expired(e.to_string()),
            JwtError::Invalid(_) => AuthError::Invalid(e.to_string()),
            JwtError::Signing(m) => AuthError::Unavailable(format!("could not issue a token: {m}")),
        }
    }
}

impl From<eip1271::ChainUnavailable> for AuthError {
    fn from(e: eip1271::ChainUnavailable) -> Self {
        AuthError::Unavailable(e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::NotOwner => ApiError::Forbidden(e.to_string()),
            AuthError::Malformed(m) => ApiError::BadRequest(m),
            AuthError::Unavailable(m) => ApiError::Unavailable(m),
            other => ApiError::Unauthorized(other.to_string()),
        }
    }
}

/// The node's authenticator, shared by every route (`AppState::auth`).
#[derive(Clone)]
pub struct Auth {
    legacy: bool,
    max_age: u64,
    nonces: Nonces,
    replay: ReplayGuard,
    jwt: JwtKeys,
    chain: DynProvider,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("legacy", &self.legacy)
            .field("max_age", &self.max_age)
            .field("jwt", &self.jwt)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// From the node config. Without `jwt_secret` a random per-process secret
    /// is drawn (and a warning logged): tokens then die with the process and
    /// are not accepted by other replicas.
    pub fn new(config: &Config, redis: RedisConn, chain: DynProvider) -> Self {
        let secret = match &config.secrets.jwt_secret {
            Some(s) => {
                if s.expose().len() < 32 {
                    tracing::warn!(target: "chainfront::security", "jwt_secret is shorter than 32 bytes; use at least 32 random bytes");
                }
                Zeroizing::new(s.expose().as_bytes().to_vec())
            }
            None => {
                tracing::warn!(target: "chainfront::security", "no jwt_secret (CHAINFRONT_JWT_SECRET): sign-in tokens use a random per-process secret, so they will not survive a restart or be accepted by other replicas");
                let mut bytes = Zeroizing::new(vec![0u8; GENERATED_SECRET_LEN]);
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                bytes
            }
        };
        let auth = &config.auth;
        Self {
            legacy: config.api.legacy_bearer_auth,
            max_age: auth.signature_max_age_secs,
            nonces: Nonces::new(redis.clone(), auth.nonce_ttl_secs),
            replay: ReplayGuard::new(redis, auth.signature_max_age_secs),
            jwt: JwtKeys::new(&secret, auth.jwt_ttl_secs),
            chain,
        }
    }

    /// A fresh server nonce (`GET /auth/nonce`).
    pub async fn issue_nonce(&self) -> Result<IssuedNonce, AuthError> {
        self.nonces.issue().await.map_err(AuthError::store)
    }

    /// The wallet a sign-in JWT was issued to.
    pub fn verify_jwt(&self, token: &str) -> Result<Address, AuthError> {
        Ok(self.jwt.verify(token)?)
    }

    /// Checks that the request proves control of `owner` for VM `token_id`
    /// (the forms are in the module docs). Failures are logged as security
    /// events with the form tried and a reason, never the credentials.
    pub async fn verify_vm_access(
        &self,
        headers: &HeaderMap,
        token_id: U256,
        owner: Address,
    ) -> Result<Caller, AuthError> {
        let mut method = None;
        let result = self.vm_access(headers, token_id, owner, &mut method).await;
        match &result {
            Err(AuthError::Unavailable(_)) => {}
            Err(e) => tracing::warn!(
                target: "chainfront::security",
                event = "auth_failure",
                method = method.map_or("none", Method::as_str),
                reason = e.reason(),
                token_id = %token_id,
                "VM access refused"
            ),
            Ok(caller) => tracing::debug!(
                target: "chainfront::auth",
                method = caller.method.as_str(),
                address = %caller.address,
                token_id = %token_id,
                "VM access granted"
            ),
        }
        result
    }

    async fn vm_access(
        &self,
        headers: &HeaderMap,
        token_id: U256,
        owner: Address,
        method: &mut Option<Method>,
    ) -> Result<Caller, AuthError> {
        let bearer = bearer(headers)?;
        let timestamp = header_str(headers, TIMESTAMP_HEADER)?;
        let nonce = header_str(headers, NONCE_HEADER)?;
        if jwt::looks_like_jwt(bearer) {
            *method = Some(Method::Jwt);
            if timestamp.is_some() || nonce.is_some() {
                return Err(AuthError::Invalid(
                    "a sign-in token takes no X-ClawCloud-Timestamp or X-ClawCloud-Nonce".into(),
                ));
            }
            let address = self.jwt.verify(bearer)?;
            if address != owner {
                return Err(AuthError::NotOwner);
            }
            return Ok(Caller {
                address,
                method: Method::Jwt,
                public_key: None,
                signer: None,
            });
        }
        let (message, form) = match (timestamp, nonce) {
            (Some(_), Some(_)) => {
                return Err(AuthError::Invalid(
                    "send X-ClawCloud-Timestamp or X-ClawCloud-Nonce, not both".into(),
                ));
            }
            (Some(ts), None) => {
                *method = Some(Method::Timestamped);
                let ts: u64 = ts.parse().map_err(|_| {
                    AuthError::Invalid("X-ClawCloud-Timestamp must be unix seconds".into())
                })?;
                if unix_now().abs_diff(ts) > self.max_age {
                    return Err(AuthError::Expired(format!(
                        "signature timestamp is outside the allowed {} s window; sign again with the current time",
                        self.max_age
                    )));
                }
                (
                    timestamped_access_message(token_id, ts),
                    Method::Timestamped,
                )
            }
            (None, Some(n)) => {
                *method = Some(Method::Nonce);
                if !nonce::is_well_formed(n) {
                    return Err(AuthError::Invalid(
                        "X-ClawCloud-Nonce must be a nonce from GET /auth/nonce".into(),
                    ));
                }
                (nonce_access_message(token_id, n), Method::Nonce)
            }
            (None, None) => {
                *method = Some(Method::Legacy);
                if !self.legacy {
                    return Err(AuthError::LegacyDisabled);
                }
                (access_message(token_id), Method::Legacy)
            }
        };
        let proof = self.prove(message.as_bytes(), bearer, owner, false).await?;
        // Single use is claimed only once the signature is the owner's, so
        // junk cannot fill Redis or burn someone else's nonce.
        match form {
            Method::Timestamped => {
                if !self
                    .replay
                    .first_use(&proof.canonical_signature)
                    .await
                    .map_err(AuthError::store)?
                {
                    return Err(AuthError::Replayed(
                        "signature was already used; sign a fresh request".into(),
                    ));
                }
            }
            Method::Nonce => {
                if !self
                    .nonces
                    .consume(nonce.unwrap_or_default())
                    .await
                    .map_err(AuthError::store)?
                {
                    return Err(nonce_gone());
                }
            }
            Method::Legacy | Method::Jwt => {}
        }
        Ok(Caller {
            address: proof.address,
            method: form,
            public_key: proof.public_key,
            signer: proof.signer,
        })
    }

    /// Verifies that `claimed` signed `message`: an EIP-191 `personal_sign`
    /// signature, a raw signature of `keccak256(message)`, or (when `claimed`
    /// is a contract) its EIP-1271 approval of the EIP-191 hash. `signature` is
    /// hex, with or without `0x`. A signature by anyone else is `Invalid`.
    pub async fn verify_wallet_message(
        &self,
        message: &[u8],
        signature: &str,
        claimed: Address,
    ) -> Result<WalletProof, AuthError> {
        self.prove(message, signature, claimed, true)
            .await
            .map_err(|e| match e {
                AuthError::NotOwner => {
                    AuthError::Invalid(format!("signature was not made by {claimed}"))
                }
                other => other,
            })
    }

    /// Wallet sign-in (`POST /auth/login`): checks the message (see
    /// the `login` module), the signature by `address` and consumes the nonce, then
    /// issues a JWT.
    pub async fn login(
        &self,
        address: &str,
        message: &str,
        signature: &str,
    ) -> Result<IssuedToken, AuthError> {
        let result = self.login_inner(address, message, signature).await;
        if let Err(e) = &result
            && !matches!(e, AuthError::Unavailable(_))
        {
            tracing::warn!(
                target: "chainfront::security",
                event = "auth_failure",
                method = "login",
                reason = e.reason(),
                "sign-in refused"
            );
        }
        result
    }

    async fn login_inner(
        &self,
        address: &str,
        message: &str,
        signature: &str,
    ) -> Result<IssuedToken, AuthError> {
        let address: Address = address
            .trim()
            .parse()
            .map_err(|_| AuthError::Malformed("address must be a 0x address".into()))?;
        let sign_in = SignIn::parse(message).map_err(AuthError::Malformed)?;
        if sign_in.address != address {
            return Err(AuthError::Malformed(
                "the message's Address line differs from address".into(),
            ));
        }
        let now = unix_now();
        let now_i64 = i64::try_from(now).unwrap_or(i64::MAX);
        if now_i64.abs_diff(sign_in.issued_at) > self.max_age {
            return Err(AuthError::Expired(format!(
                "Issued At is more than {} s from the server's time; sign a fresh message",
                self.max_age
            )));
        }
        self.verify_wallet_message(message.as_bytes(), signature, address)
            .await?;
        if !self
            .nonces
            .consume(&sign_in.nonce)
            .await
            .map_err(AuthError::store)?
        {
            return Err(nonce_gone());
        }
        Ok(self.jwt.issue(address, now)?)
    }

    /// Proves `owner` signed `message` with `sig_hex`; `NotOwner` when the
    /// signature is valid but someone else's.
    async fn prove(
        &self,
        message: &[u8],
        sig_hex: &str,
        owner: Address,
        accept_raw_keccak: bool,
    ) -> Result<WalletProof, AuthError> {
        if sig_hex.len() > MAX_SIGNATURE_HEX {
            return Err(SignatureError::Length(sig_hex.len() / 2).into());
        }
        let raw = decode_hex(sig_hex)?;
        let hash = eip191_hash(message);
        let parsed = WalletSignature::from_bytes(&raw);
        let mut recovered = None;
        if let Ok(sig) = &parsed {
            let candidates: &[(B256, Scheme)] = if accept_raw_keccak {
                &[
                    (hash, Scheme::Eip191),
                    (keccak256(message), Scheme::RawKeccak),
                ]
            } else {
                &[(hash, Scheme::Eip191)]
            };
            for (digest, scheme) in candidates {
                let Ok(signer) = sig.recover_prehash(*digest) else {
                    continue;
                };
                if signer.address == owner {
                    return Ok(WalletProof {
                        address: owner,
                        scheme: *scheme,
                        public_key: signer.k256_public_key(),
                        signer: Some(signer.address),
                        canonical_signature: sig.to_bytes().to_vec(),
                    });
                }
                recovered.get_or_insert(signer);
            }
        }
        // Not the owner's own key: a contract owner may still approve it
        // (also signatures that are not one ECDSA signature, e.g. multisig).
        if self.is_contract(owner).await?
            && eip1271::is_valid_signature(&self.chain, owner, hash, &raw).await?
        {
            return Ok(WalletProof {
                address: owner,
                scheme: Scheme::Eip1271,
                public_key: recovered.and_then(|s| s.k256_public_key()),
                signer: recovered.map(|s| s.address),
                canonical_signature: parsed.map_or(raw, |s| s.to_bytes().to_vec()),
            });
        }
        match (parsed, recovered) {
            (Err(e), _) => Err(e.into()),
            (Ok(_), None) => Err(SignatureError::Unrecoverable.into()),
            (Ok(_), Some(_)) => Err(AuthError::NotOwner),
        }
    }

    async fn is_contract(&self, address: Address) -> Result<bool, AuthError> {
        let code = self
            .chain
            .get_code_at(address)
            .await
            .map_err(|e| AuthError::Unavailable(format!("chain unavailable: {e}")))?;
        Ok(!code.is_empty())
    }
}

fn nonce_gone() -> AuthError {
    AuthError::Replayed(
        "nonce is unknown, expired or already used; get a fresh one from GET /auth/nonce".into(),
    )
}

/// The `Authorization: Bearer <value>` value (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("Authorization header is not ASCII".into()))?;
    match value.trim().split_once(' ') {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() =>
        {
            Ok(rest.trim())
        }
        _ => Err(AuthError::Invalid(
            "Authorization must be `Bearer <signature or token>`".into(),
        )),
    }
}

/// An optional header as trimmed text.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AuthError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| AuthError::Invalid(format!("{name} is not ASCII")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn message_formats_are_exact() {
        let id = U256::from(42);
        assert_eq!(access_message(id), "ClawCloud Access Request: 42");
        assert_eq!(
            timestamped_access_message(id, 1_770_120_000),
            "ClawCloud Access Request: 42\nTimestamp: 1770120000"
        );
        assert_eq!(
            nonce_access_message(id, "00ff"),
            "ClawCloud Access Request: 42\nNonce: 00ff"
        );
    }

    #[test]
    fn bearer_parsing() {
        assert!(matches!(bearer(&headers(&[])), Err(AuthError::Missing)));
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer 0xab")])).expect("bearer"),
            "0xab"
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer  0xab ")])).expect("bearer"),
            "0xab"
        );
        for bad in ["Basic abc", "Bearer", "Bearer   ", "0xab"] {
            assert!(
                matches!(
                    bearer(&headers(&[("authorization", bad)])),
                    Err(AuthError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_map_to_status_codes() {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        let status = |e: AuthError| ApiError::from(e).into_response().status();
        assert_eq!(status(AuthError::Missing), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(AuthError::Invalid("x".into())),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status(AuthError::LegacyDisabled), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(AuthError::Expired("x".into())),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(AuthError::Replayed("x".into())),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status(AuthError::NotOwner), StatusCode::FORBIDDEN);
        assert_eq!(
            status(AuthError::Malformed("x".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(AuthError::Unavailable("x".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(AuthError::LegacyDisabled.to_string().contains("Timestamp"));
        assert!(
            AuthError::LegacyDisabled
                .to_string()
                .contains("/auth/nonce")
        );
    }
}
