//! Every signature and token check of the node: EIP-191 and raw-hash wallet
//! signatures, EIP-1271 contract wallets, server nonces, single-use signed
//! messages, Sign-In with Ethereum (EIP-4361), sign-in JWTs and the admin API
//! key. Nothing outside this module recovers a signer. Routes use [`Auth`]:
//!
//! - [`Auth::verify_vm_access`] (or [`Auth::precheck_vm_access`] then
//!   [`Auth::complete_vm_access`]) for ClawCloud's `/credentials`;
//! - [`Auth::wallet_from_request`] for any route that acts for a wallet (the
//!   Compute API): the proven wallet from a sign-in JWT or a per-request
//!   signature;
//! - [`Auth::verify_wallet_message`] for Clockchain's submission signature;
//! - [`Auth::login`] / [`Auth::issue_nonce`] for `/auth/*`, [`Auth::revoke`]
//!   for the admin route.
//!
//! Every message a wallet signs for this node names the node's domain
//! (`api.public_url`'s authority) and chain id, except ClawCloud's documented
//! legacy form, which is kept byte for byte and is off unless
//! `api.legacy_bearer_auth` is set. A VM access request proves control of the
//! NFT's owner in one of four forms (`{tokenId}` is the decimal token id):
//!
//! | form | headers | signed message (EIP-191 `personal_sign`) |
//! | --- | --- | --- |
//! | legacy (if `api.legacy_bearer_auth`) | `Authorization: Bearer <sig>` | `ClawCloud Access Request: {tokenId}` |
//! | timestamped, single-use | same + `X-ClawCloud-Timestamp: <unix s>` | `ClawCloud Access Request: {tokenId}\nDomain: {domain}\nChain ID: {chainId}\nTimestamp: {ts}` |
//! | nonce, single-use | same + `X-ClawCloud-Nonce: <nonce>` | `ClawCloud Access Request: {tokenId}\nDomain: {domain}\nChain ID: {chainId}\nNonce: {nonce}` |
//! | JWT | `Authorization: Bearer <jwt>` from `POST /auth/login` | — |
//!
//! A per-request signature ([`Auth::wallet_from_request`]) is three headers,
//! `X-Wallet-Address`, `X-Wallet-Timestamp` (unix seconds) and
//! `X-Wallet-Signature` (EIP-191, hex), over [`request_message`]:
//!
//! ```text
//! chainfront request
//! Domain: {domain}
//! Chain ID: {chainId}
//! Method: {METHOD}
//! Path: {path?query}
//! Body SHA-256: {hex of the body's sha256}
//! Timestamp: {unix seconds}
//! ```
//!
//! A signature by someone other than the owner is still accepted when the
//! owner is a contract whose EIP-1271 `isValidSignature` approves it.
//!
//! Order of work, so anonymous callers cost nothing: a request without a
//! well-formed credential is refused before any Redis or chain access; a
//! signature is recovered (CPU) before anything is looked up; a login's nonce
//! must exist before any chain call; chain calls go through the failover
//! `Rpc` with timeouts, `eth_getCode` answers are cached and EIP-1271 calls
//! are gas- and size-capped (`eip1271`).

pub mod admin;
pub mod eip1271;
pub mod jwt;
pub mod nonce;
pub mod sign_in;
pub mod signature;

use std::time::Duration;

use alloy::primitives::{Address, U256, keccak256};
use axum::http::{HeaderMap, header};
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::NodeKeys;
use chainfront_indexer::rpc::Rpc;
use sha2::{Digest, Sha256};

use crate::api::ApiError;
use crate::config::Config;
use eip1271::{ChainUnavailable, ContractWallets};
use jwt::{IssuedToken, JwtError, JwtKeys};
use nonce::{IssuedNonce, Nonces, ReplayGuard, unix_now};
use sign_in::{Expected, SignIn};
use signature::{SignatureError, Signer, WalletSignature, decode_hex, eip191_hash};

/// Header carrying the unix time a timestamped access signature was made.
pub const TIMESTAMP_HEADER: &str = "x-clawcloud-timestamp";
/// Header carrying the server nonce a nonce access signature covers.
pub const NONCE_HEADER: &str = "x-clawcloud-nonce";
/// Per-request signature: the wallet that signed.
pub const WALLET_ADDRESS_HEADER: &str = "x-wallet-address";
/// Per-request signature: the unix time in the signed message.
pub const WALLET_TIMESTAMP_HEADER: &str = "x-wallet-timestamp";
/// Per-request signature: the EIP-191 signature of [`request_message`].
pub const WALLET_SIGNATURE_HEADER: &str = "x-wallet-signature";
/// Largest signature accepted, in hex characters: contract-wallet signatures
/// may be longer than 65 bytes (multisig), but not unboundedly.
const MAX_SIGNATURE_HEX: usize = 4 * 1024;
/// The answer to every chain outage (the cause is logged, URL redacted).
pub const CHAIN_UNAVAILABLE: &str = "chain unavailable; retry shortly";
/// Legacy-form recoveries remembered before the cache is cleared.
const RECOVERY_CACHE_MAX: usize = 10_000;

/// Signers recovered from legacy-form signatures, which clients resend
/// unchanged on every request (the documented client polls `/credentials`
/// with one header until the VM is ready). Recovery is a pure function of
/// (message, signature), so remembering it changes no decision; the
/// single-use forms are never cached (each signature is seen once).
#[derive(Default)]
struct RecoveryCache(std::sync::RwLock<std::collections::HashMap<(U256, [u8; 65]), Signer>>);

impl RecoveryCache {
    fn get(&self, token_id: U256, raw: &[u8]) -> Option<Signer> {
        let key: [u8; 65] = raw.try_into().ok()?;
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(token_id, key))
            .copied()
    }

    fn put(&self, token_id: U256, raw: &[u8], signer: Signer) {
        let Ok(key) = <[u8; 65]>::try_from(raw) else {
            return;
        };
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= RECOVERY_CACHE_MAX {
            map.clear();
        }
        map.insert((token_id, key), signer);
    }
}

/// ClawCloud's documented access message (legacy form, unchanged).
pub fn access_message(token_id: U256) -> String {
    format!("ClawCloud Access Request: {token_id}")
}

/// The access message of the timestamped form.
pub fn timestamped_access_message(
    token_id: U256,
    domain: &str,
    chain_id: u64,
    timestamp: u64,
) -> String {
    format!(
        "ClawCloud Access Request: {token_id}\nDomain: {domain}\nChain ID: {chain_id}\nTimestamp: {timestamp}"
    )
}

/// The access message of the nonce form.
pub fn nonce_access_message(token_id: U256, domain: &str, chain_id: u64, nonce: &str) -> String {
    format!(
        "ClawCloud Access Request: {token_id}\nDomain: {domain}\nChain ID: {chain_id}\nNonce: {nonce}"
    )
}

/// The message of a per-request signature ([`Auth::wallet_from_request`]).
/// `method` is upper-cased; `path_and_query` is the request target as sent.
pub fn request_message(
    domain: &str,
    chain_id: u64,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp: u64,
) -> String {
    format!(
        "chainfront request\nDomain: {domain}\nChain ID: {chain_id}\nMethod: {}\nPath: {path_and_query}\nBody SHA-256: {}\nTimestamp: {timestamp}",
        method.to_ascii_uppercase(),
        hex::encode(Sha256::digest(body))
    )
}

/// How a caller proved control of the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// ClawCloud's documented bearer: a signature of the bare message (replayable).
    Legacy,
    /// The message plus domain, chain and a timestamp, valid for minutes and single-use.
    Timestamped,
    /// The message plus domain, chain and a server nonce, single-use.
    Nonce,
    /// A sign-in JWT.
    Jwt,
    /// A per-request signature over method, path, body and time.
    Request,
}

impl Method {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Legacy => "legacy",
            Method::Timestamped => "timestamped",
            Method::Nonce => "nonce",
            Method::Jwt => "jwt",
            Method::Request => "request",
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
    /// The signing key's public key, to encrypt answers to: only when the
    /// owner itself signed with one ECDSA signature (never for JWTs or
    /// contract wallets, whose recovered key may belong to nobody).
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
    /// A raw signature of `keccak256(message)` (`signHash`, no prefix): only
    /// for Clockchain's submission message, whose document asks for it.
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
    /// The recovered key, when the address itself signed with one ECDSA signature.
    pub public_key: Option<k256::PublicKey>,
    /// The recovered signer (differs from `address` for contract wallets).
    pub signer: Option<Address>,
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("missing Authorization: Bearer <signature> header (or a token from POST /auth/login)")]
    Missing,
    /// A malformed or non-recovering signature, a bad token, a bad header, a
    /// message for another domain or chain.
    #[error("invalid credentials: {0}")]
    Invalid(String),
    /// The legacy bearer form is switched off.
    #[error(
        "the untimed signature form is disabled on this node: sign \"ClawCloud Access Request: {{tokenId}}\\nDomain: {{domain}}\\nChain ID: {{chainId}}\\nTimestamp: {{unix seconds}}\" and send the timestamp in X-ClawCloud-Timestamp, or the same with \"Nonce: {{nonce}}\" and a nonce from GET /auth/nonce in X-ClawCloud-Nonce, or send a token from POST /auth/login"
    )]
    LegacyDisabled,
    /// A timestamp outside the window, an expired token or sign-in message.
    #[error("{0}")]
    Expired(String),
    /// A single-use signature or nonce seen before, or a revoked token.
    #[error("{0}")]
    Replayed(String),
    /// Valid credentials of someone who does not own the resource.
    #[error("not the owner of this VM")]
    NotOwner,
    /// A malformed request (sign-in body or message).
    #[error("{0}")]
    Malformed(String),
    /// Redis or the chain failed while checking (a fixed message; the cause
    /// is logged where it happened).
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
            JwtError::Signing(m) => {
                tracing::error!(target: "chainfront::auth", error = %m, "could not sign a token");
                AuthError::Unavailable("could not issue a token; retry shortly".into())
            }
        }
    }
}

impl From<ChainUnavailable> for AuthError {
    fn from(e: ChainUnavailable) -> Self {
        tracing::error!(target: "chainfront::auth", error = %e.0, "chain unavailable while authenticating");
        AuthError::Unavailable(CHAIN_UNAVAILABLE.into())
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

/// A VM access credential checked for shape (and, for a JWT, its signature)
/// without any I/O: what [`Auth::precheck_vm_access`] returns.
#[derive(Debug, Clone)]
pub struct VmCredential {
    token_id: U256,
    kind: Credential,
}

#[derive(Debug, Clone)]
enum Credential {
    Jwt(jwt::Verified),
    Signed {
        form: Method,
        message: String,
        raw: Vec<u8>,
        /// The recovered signer of a 65-byte signature.
        signer: Option<Signer>,
        nonce: Option<String>,
    },
}

impl VmCredential {
    /// The form used.
    pub fn method(&self) -> Method {
        match &self.kind {
            Credential::Jwt(_) => Method::Jwt,
            Credential::Signed { form, .. } => *form,
        }
    }
}

/// The node's authenticator, shared by every route (`AppState::auth`).
pub struct Auth {
    legacy: bool,
    expected: Expected,
    nonces: Nonces,
    replay: ReplayGuard,
    jwt: JwtKeys,
    jwt_ttl_secs: u64,
    redis: RedisConn,
    wallets: ContractWallets,
    legacy_recoveries: RecoveryCache,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("legacy", &self.legacy)
            .field("expected", &self.expected)
            .field("jwt", &self.jwt)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// From the node config, for the home chain `chain_id`, reading the chain
    /// through `rpc`. Refuses a missing JWT secret or one shorter than
    /// [`jwt::MIN_SECRET_LEN`] bytes (HS256 tokens are known plaintext; a
    /// short secret is brute-forced offline).
    pub fn new(config: &Config, chain_id: u64, redis: RedisConn, rpc: Rpc) -> crate::Result<Self> {
        let auth = &config.auth;
        let expected = Expected::from_public_url(
            &config.api.public_url(),
            chain_id,
            auth.signature_max_age_secs,
        );
        let secret = config.secrets.jwt_secret.as_ref().ok_or_else(|| crate::Error::Config {
            key: "jwt_secret".into(),
            message: format!(
                "is required: set CHAINFRONT_JWT_SECRET or CHAINFRONT_JWT_SECRET_FILE to at least {} random bytes (e.g. `openssl rand -hex 32`)",
                jwt::MIN_SECRET_LEN
            ),
        })?;
        let jwt = JwtKeys::new(
            secret.expose().as_bytes(),
            &jwt::audience(chain_id, &expected.domain),
            auth.jwt_ttl_secs,
        )
        .map_err(|_| crate::Error::Config {
            key: "jwt_secret".into(),
            message: format!(
                "is shorter than {} bytes; use at least {} random bytes (e.g. `openssl rand -hex 32`)",
                jwt::MIN_SECRET_LEN,
                jwt::MIN_SECRET_LEN
            ),
        })?;
        Ok(Self {
            legacy: config.api.legacy_bearer_auth,
            expected,
            nonces: Nonces::new(redis.clone(), auth.nonce_ttl_secs),
            replay: ReplayGuard::new(redis.clone(), auth.signature_max_age_secs),
            jwt,
            jwt_ttl_secs: auth.jwt_ttl_secs,
            redis,
            wallets: ContractWallets::new(
                rpc,
                auth.eip1271_gas,
                Duration::from_secs(auth.code_cache_secs),
            ),
            legacy_recoveries: RecoveryCache::default(),
        })
    }

    /// The domain every signed message must name.
    pub fn domain(&self) -> &str {
        &self.expected.domain
    }

    /// The chain id every signed message must name.
    pub fn chain_id(&self) -> u64 {
        self.expected.chain_id
    }

    /// A fresh server nonce (`GET /auth/nonce`).
    pub async fn issue_nonce(&self) -> Result<IssuedNonce, AuthError> {
        self.nonces.issue().await.map_err(AuthError::store)
    }

    /// The wallet a sign-in JWT was issued to, if the token is valid and not
    /// revoked (one Redis read for the revocation mark).
    pub async fn verify_jwt(&self, token: &str) -> Result<Address, AuthError> {
        let verified = self.jwt.verify(token)?;
        self.check_not_revoked(verified).await?;
        Ok(verified.address)
    }

    async fn check_not_revoked(&self, verified: jwt::Verified) -> Result<(), AuthError> {
        let mut c = self.redis.clone();
        let not_before: Option<u64> = redis::cmd("GET")
            .arg(NodeKeys.jwt_not_before(verified.address))
            .query_async(&mut c)
            .await
            .map_err(AuthError::store)?;
        if not_before.is_some_and(|nbf| verified.issued_at <= nbf) {
            return Err(AuthError::Replayed(
                "token was revoked; sign in again (POST /auth/login)".into(),
            ));
        }
        Ok(())
    }

    /// Revokes every sign-in token of `address` issued until now; returns
    /// the "not before" time (unix seconds). Kept as long as such a token
    /// could live.
    pub async fn revoke(&self, address: Address) -> Result<u64, AuthError> {
        let now = unix_now();
        let mut c = self.redis.clone();
        let () = redis::cmd("SET")
            .arg(NodeKeys.jwt_not_before(address))
            .arg(now)
            .arg("EX")
            .arg(self.jwt_ttl_secs.saturating_add(120))
            .query_async(&mut c)
            .await
            .map_err(AuthError::store)?;
        tracing::warn!(target: "chainfront::security", event = "jwt_revoked", address = %address, "sign-in tokens revoked");
        Ok(now)
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
        let credential = self.precheck_vm_access(headers, token_id)?;
        self.complete_vm_access(credential, owner).await
    }

    /// The I/O-free part of [`Auth::verify_vm_access`]: headers, signature
    /// shape and recovery, timestamp window, a JWT's signature and claims.
    /// A request that fails here costs no Redis or chain access.
    pub fn precheck_vm_access(
        &self,
        headers: &HeaderMap,
        token_id: U256,
    ) -> Result<VmCredential, AuthError> {
        let mut method = None;
        let result = self.precheck_inner(headers, token_id, &mut method);
        if let Err(e) = &result {
            log_refusal(method, e, token_id);
        }
        result
    }

    fn precheck_inner(
        &self,
        headers: &HeaderMap,
        token_id: U256,
        method: &mut Option<Method>,
    ) -> Result<VmCredential, AuthError> {
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
            return Ok(VmCredential {
                token_id,
                kind: Credential::Jwt(self.jwt.verify(bearer)?),
            });
        }
        let (domain, chain) = (&self.expected.domain, self.expected.chain_id);
        let (message, form, nonce) = match (timestamp, nonce) {
            (Some(_), Some(_)) => {
                return Err(AuthError::Invalid(
                    "send X-ClawCloud-Timestamp or X-ClawCloud-Nonce, not both".into(),
                ));
            }
            (Some(ts), None) => {
                *method = Some(Method::Timestamped);
                let ts = self.fresh_timestamp(ts, "X-ClawCloud-Timestamp")?;
                (
                    timestamped_access_message(token_id, domain, chain, ts),
                    Method::Timestamped,
                    None,
                )
            }
            (None, Some(n)) => {
                *method = Some(Method::Nonce);
                if !nonce::is_well_formed(n) {
                    return Err(AuthError::Invalid(
                        "X-ClawCloud-Nonce must be a nonce from GET /auth/nonce".into(),
                    ));
                }
                (
                    nonce_access_message(token_id, domain, chain, n),
                    Method::Nonce,
                    Some(n.to_owned()),
                )
            }
            (None, None) => {
                *method = Some(Method::Legacy);
                if !self.legacy {
                    return Err(AuthError::LegacyDisabled);
                }
                (access_message(token_id), Method::Legacy, None)
            }
        };
        let (raw, signer) = if form == Method::Legacy {
            // The legacy message is fixed per token, so (token, signature)
            // determines the signer.
            let raw = decode_signature(bearer)?;
            match self.legacy_recoveries.get(token_id, &raw) {
                Some(s) => (raw, Some(s)),
                None => {
                    let signer = recover_eip191(&raw, message.as_bytes())?;
                    if let Some(s) = signer {
                        self.legacy_recoveries.put(token_id, &raw, s);
                    }
                    (raw, signer)
                }
            }
        } else {
            parse_signature(bearer, &message)?
        };
        Ok(VmCredential {
            token_id,
            kind: Credential::Signed {
                form,
                message,
                raw,
                signer,
                nonce,
            },
        })
    }

    /// The rest of [`Auth::verify_vm_access`] once the owner is known: the
    /// owner's key, else the owner contract's EIP-1271 approval; then single
    /// use (timestamped and nonce forms) or revocation (JWT).
    pub async fn complete_vm_access(
        &self,
        credential: VmCredential,
        owner: Address,
    ) -> Result<Caller, AuthError> {
        let (token_id, method) = (credential.token_id, credential.method());
        let result = self.complete_inner(credential, owner).await;
        match &result {
            Err(AuthError::Unavailable(_)) => {}
            Err(e) => log_refusal(Some(method), e, token_id),
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

    async fn complete_inner(
        &self,
        credential: VmCredential,
        owner: Address,
    ) -> Result<Caller, AuthError> {
        match credential.kind {
            Credential::Jwt(verified) => {
                if verified.address != owner {
                    return Err(AuthError::NotOwner);
                }
                self.check_not_revoked(verified).await?;
                Ok(Caller {
                    address: owner,
                    method: Method::Jwt,
                    public_key: None,
                    signer: None,
                })
            }
            Credential::Signed {
                form,
                message,
                raw,
                signer,
                nonce,
            } => {
                let proof = self
                    .prove(message.as_bytes(), &raw, signer, owner)
                    .await
                    .map_err(|e| match e {
                        ProveError::NotSigner => AuthError::NotOwner,
                        ProveError::Auth(e) => e,
                    })?;
                // Single use is claimed only once the signature is the owner's,
                // so junk cannot fill Redis or burn someone else's nonce.
                match form {
                    Method::Timestamped => self.first_use("vm-access", owner, &message).await?,
                    Method::Nonce => {
                        self.consume_nonce(nonce.as_deref().unwrap_or_default())
                            .await?
                    }
                    _ => {}
                }
                Ok(Caller {
                    address: owner,
                    method: form,
                    public_key: proof.public_key,
                    signer: proof.signer,
                })
            }
        }
    }

    /// The wallet a request acts for: a sign-in JWT (`Authorization: Bearer
    /// <jwt>`), or a per-request signature (`X-Wallet-Address`,
    /// `X-Wallet-Timestamp`, `X-Wallet-Signature` over [`request_message`] of
    /// `method`, `path_and_query` and `body`; single-use, valid
    /// `auth.signature_max_age_secs`). Contract wallets sign through
    /// EIP-1271. Refusals are logged as security events.
    pub async fn wallet_from_request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Address, AuthError> {
        let result = self
            .wallet_from_request_inner(method, path_and_query, headers, body)
            .await;
        if let Err(e) = &result
            && !matches!(e, AuthError::Unavailable(_))
        {
            tracing::warn!(
                target: "chainfront::security",
                event = "auth_failure",
                method = "request",
                reason = e.reason(),
                "wallet request refused"
            );
        }
        result
    }

    async fn wallet_from_request_inner(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Address, AuthError> {
        let signature = header_str(headers, WALLET_SIGNATURE_HEADER)?;
        if headers.contains_key(header::AUTHORIZATION) {
            if signature.is_some() {
                return Err(AuthError::Invalid(
                    "send a sign-in token or X-Wallet-Signature, not both".into(),
                ));
            }
            let token = bearer(headers)?;
            if !jwt::looks_like_jwt(token) {
                return Err(AuthError::Invalid(
                    "Authorization must be `Bearer <token from POST /auth/login>`".into(),
                ));
            }
            return self.verify_jwt(token).await;
        }
        let Some(signature) = signature else {
            return Err(AuthError::Missing);
        };
        let claimed: Address = header_str(headers, WALLET_ADDRESS_HEADER)?
            .ok_or_else(|| AuthError::Invalid("X-Wallet-Signature needs X-Wallet-Address".into()))?
            .parse()
            .map_err(|_| AuthError::Invalid("X-Wallet-Address must be a 0x address".into()))?;
        let ts = header_str(headers, WALLET_TIMESTAMP_HEADER)?.ok_or_else(|| {
            AuthError::Invalid("X-Wallet-Signature needs X-Wallet-Timestamp".into())
        })?;
        let ts = self.fresh_timestamp(ts, "X-Wallet-Timestamp")?;
        let message = request_message(
            &self.expected.domain,
            self.expected.chain_id,
            method,
            path_and_query,
            body,
            ts,
        );
        let (raw, signer) = parse_signature(signature, &message)?;
        self.prove(message.as_bytes(), &raw, signer, claimed)
            .await
            .map_err(|e| match e {
                ProveError::NotSigner => {
                    AuthError::Invalid(format!("signature was not made by {claimed}"))
                }
                ProveError::Auth(e) => e,
            })?;
        self.first_use("request", claimed, &message).await?;
        Ok(claimed)
    }

    /// Clockchain's submission signature: `claimed` signed `message` as an
    /// EIP-191 `personal_sign`, as a raw signature of `keccak256(message)`
    /// (the document's Python example), or (when `claimed` is a contract)
    /// through EIP-1271 over the EIP-191 hash. `signature` is hex, with or
    /// without `0x`. Raw-hash signatures are accepted here only, because that
    /// document asks for them; no other message takes them.
    pub async fn verify_wallet_message(
        &self,
        message: &[u8],
        signature: &str,
        claimed: Address,
    ) -> Result<WalletProof, AuthError> {
        let not_signer = || AuthError::Invalid(format!("signature was not made by {claimed}"));
        if signature.len() > MAX_SIGNATURE_HEX {
            return Err(SignatureError::Length(signature.len() / 2).into());
        }
        let raw = decode_hex(signature)?;
        if raw.len() == signature::SIGNATURE_LEN {
            let sig = WalletSignature::from_bytes(&raw)?;
            if let Ok(s) = sig.recover_prehash(keccak256(message))
                && s.address == claimed
            {
                return Ok(WalletProof {
                    address: claimed,
                    scheme: Scheme::RawKeccak,
                    public_key: s.k256_public_key(),
                    signer: Some(s.address),
                });
            }
        }
        let signer = recover_eip191(&raw, message)?;
        self.prove(message, &raw, signer, claimed)
            .await
            .map_err(|e| match e {
                ProveError::NotSigner => not_signer(),
                ProveError::Auth(e) => e,
            })
    }

    /// Wallet sign-in (`POST /auth/login`) with an EIP-4361 message: checks
    /// the message ([`sign_in`]), then the signature: the address's own key
    /// (then the nonce is consumed), or — for a signature by another key —
    /// the nonce is consumed *before* any chain call and the address must be
    /// a contract whose EIP-1271 `isValidSignature` approves. Issues a JWT
    /// whose `sub` is the checksummed address.
    pub async fn login(&self, message: &str, signature: &str) -> Result<IssuedToken, AuthError> {
        let result = self.login_inner(message, signature).await;
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

    async fn login_inner(&self, message: &str, signature: &str) -> Result<IssuedToken, AuthError> {
        let sign_in = SignIn::parse(message)?;
        let now = unix_now();
        sign_in.check(&self.expected, i64::try_from(now).unwrap_or(i64::MAX))?;
        let address = sign_in.address;
        let (raw, signer) = parse_signature(signature, message)?;
        if signer.is_some_and(|s| s.address == address) {
            self.consume_nonce(&sign_in.nonce).await?;
            return Ok(self.jwt.issue(address, now)?);
        }
        // Not the address's own key: only a contract wallet can approve it.
        // The nonce must be live before the chain is asked, and is spent
        // first, so each chain lookup (`eth_getCode` of an attacker-chosen
        // address, then its EIP-1271 call) costs the caller one nonce.
        self.consume_nonce(&sign_in.nonce).await?;
        let not_signer = || AuthError::Invalid(format!("signature was not made by {address}"));
        if !self.wallets.is_contract(address).await? {
            return Err(not_signer());
        }
        if !self
            .wallets
            .approves(address, eip191_hash(message.as_bytes()), &raw)
            .await?
        {
            return Err(not_signer());
        }
        Ok(self.jwt.issue(address, now)?)
    }

    /// A timestamp header within the allowed window.
    fn fresh_timestamp(&self, raw: &str, header: &str) -> Result<u64, AuthError> {
        let ts: u64 = raw
            .parse()
            .map_err(|_| AuthError::Invalid(format!("{header} must be unix seconds")))?;
        let max_age = self.expected.max_age_secs;
        if unix_now().abs_diff(ts) > max_age {
            return Err(AuthError::Expired(format!(
                "signature timestamp is outside the allowed {max_age} s window; sign again with the current time"
            )));
        }
        Ok(ts)
    }

    async fn first_use(&self, form: &str, signer: Address, message: &str) -> Result<(), AuthError> {
        if self
            .replay
            .first_use(form, signer.as_slice(), message.as_bytes())
            .await
            .map_err(AuthError::store)?
        {
            Ok(())
        } else {
            Err(AuthError::Replayed(
                "signature was already used; sign a fresh request".into(),
            ))
        }
    }

    async fn consume_nonce(&self, nonce: &str) -> Result<(), AuthError> {
        if self.nonces.consume(nonce).await.map_err(AuthError::store)? {
            Ok(())
        } else {
            Err(nonce_gone())
        }
    }

    /// Proves `owner` signed `message`: `signer` (recovered from a 65-byte
    /// signature) is the owner, or the owner is a contract that approves
    /// `raw` over the EIP-191 hash.
    async fn prove(
        &self,
        message: &[u8],
        raw: &[u8],
        signer: Option<Signer>,
        owner: Address,
    ) -> Result<WalletProof, ProveError> {
        if let Some(s) = signer
            && s.address == owner
        {
            return Ok(WalletProof {
                address: owner,
                scheme: Scheme::Eip191,
                public_key: s.k256_public_key(),
                signer: Some(s.address),
            });
        }
        if self
            .wallets
            .is_contract(owner)
            .await
            .map_err(AuthError::from)?
            && self
                .wallets
                .approves(owner, eip191_hash(message), raw)
                .await
                .map_err(AuthError::from)?
        {
            return Ok(WalletProof {
                address: owner,
                scheme: Scheme::Eip1271,
                public_key: None,
                signer: signer.map(|s| s.address),
            });
        }
        match signer {
            Some(_) => Err(ProveError::NotSigner),
            None if raw.len() == signature::SIGNATURE_LEN => {
                Err(AuthError::from(SignatureError::Unrecoverable).into())
            }
            None => Err(AuthError::from(SignatureError::Length(raw.len())).into()),
        }
    }
}

/// Why [`Auth::prove`] failed.
enum ProveError {
    /// A valid signature of someone else.
    NotSigner,
    /// Anything else.
    Auth(AuthError),
}

impl From<AuthError> for ProveError {
    fn from(e: AuthError) -> Self {
        ProveError::Auth(e)
    }
}

/// Decodes a hex signature and, when it is 65 bytes, checks it strictly and
/// recovers its EIP-191 signer of `message`. Longer or shorter signatures are
/// left to a contract owner's EIP-1271 check.
fn parse_signature(hex_sig: &str, message: &str) -> Result<(Vec<u8>, Option<Signer>), AuthError> {
    let raw = decode_signature(hex_sig)?;
    let signer = recover_eip191(&raw, message.as_bytes())?;
    Ok((raw, signer))
}

/// The bytes of a hex signature of bounded length.
fn decode_signature(hex_sig: &str) -> Result<Vec<u8>, AuthError> {
    if hex_sig.len() > MAX_SIGNATURE_HEX {
        return Err(SignatureError::Length(hex_sig.len() / 2).into());
    }
    Ok(decode_hex(hex_sig)?)
}

fn recover_eip191(raw: &[u8], message: &[u8]) -> Result<Option<Signer>, AuthError> {
    if raw.is_empty() {
        return Err(SignatureError::Length(0).into());
    }
    if raw.len() != signature::SIGNATURE_LEN {
        return Ok(None);
    }
    let sig = WalletSignature::from_bytes(raw)?;
    Ok(Some(sig.recover_prehash(eip191_hash(message))?))
}

fn log_refusal(method: Option<Method>, e: &AuthError, token_id: U256) {
    if matches!(e, AuthError::Unavailable(_)) {
        return;
    }
    tracing::warn!(
        target: "chainfront::security",
        event = "auth_failure",
        method = method.map_or("none", Method::as_str),
        reason = e.reason(),
        token_id = %token_id,
        "VM access refused"
    );
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
            timestamped_access_message(id, "node.example", 8453, 1_770_120_000),
            "ClawCloud Access Request: 42\nDomain: node.example\nChain ID: 8453\nTimestamp: 1770120000"
        );
        assert_eq!(
            nonce_access_message(id, "node.example", 8453, "00ff"),
            "ClawCloud Access Request: 42\nDomain: node.example\nChain ID: 8453\nNonce: 00ff"
        );
        assert_eq!(
            request_message(
                "node.example",
                8453,
                "post",
                "/v1/compute/llm?x=1",
                b"{}",
                1_770_120_000
            ),
            "chainfront request\nDomain: node.example\nChain ID: 8453\nMethod: POST\nPath: /v1/compute/llm?x=1\nBody SHA-256: 44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\nTimestamp: 1770120000"
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
