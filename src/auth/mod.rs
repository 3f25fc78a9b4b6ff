//! Every signature and token check of the node: EIP-191 and raw-hash wallet
//! signatures, EIP-1271 contract wallets, single-use timestamped signatures
//! and the admin API key. Nothing outside this module recovers a signer.

pub mod admin;
pub mod signature;

use alloy::primitives::{Address, B256, Bytes, FixedBytes, U256};
use alloy::providers::{DynProvider, Provider};
use axum::http::HeaderMap;
use chainfront_indexer::contracts::IERC1271;
use chainfront_indexer::keys::NodeKeys;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::api::ApiError;
use crate::config::Config;
use signature::{SignatureError, WalletSignature, eip191_hash};

/// Header carrying the unix time a timestamped access signature was made.
pub const TIMESTAMP_HEADER: &str = "x-clawcloud-timestamp";
/// ERC-1271's "valid" answer.
const ERC1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];

/// How a caller proved control of the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// ClawCloud's documented bearer: a signature of the bare message (replayable).
    Legacy,
    /// The message plus a timestamp, valid for minutes and single-use.
    Timestamped,
    /// A contract wallet's EIP-1271 `isValidSignature`.
    Contract,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The wallet that signed (or the contract wallet that approved).
    pub address: Address,
    /// How.
    pub method: Method,
    /// The signer's public key (EOA signatures), to encrypt answers to.
    pub public_key: Option<k256::PublicKey>,
}

/// Why access was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer <signature>`.
    #[error("missing Authorization: Bearer <signature> header")]
    Missing,
    /// A malformed or non-recovering signature, or bad timestamp header.
    #[error("invalid signature: {0}")]
    Invalid(String),
    /// The legacy bearer form is switched off.
    #[error(
        "the untimed signature form is disabled on this node: sign \"ClawCloud Access Request: {{tokenId}}\\nTimestamp: {{unix seconds}}\" and send the timestamp in X-ClawCloud-Timestamp"
    )]
    LegacyDisabled,
    /// A timestamped signature outside the allowed window.
    #[error("signature timestamp is outside the allowed {0} s window")]
    Expired(u64),
    /// A timestamped signature used before.
    #[error("signature was already used; sign a fresh request")]
    Replayed,
    /// A valid signature by someone who does not own the NFT.
    #[error("not the owner of this VM")]
    NotOwner,
    /// Redis or the chain failed while checking.
    #[error("{0}")]
    Unavailable(String),
}

impl From<SignatureError> for AuthError {
    fn from(e: SignatureError) -> Self {
        AuthError::Invalid(e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::NotOwner => ApiError::Forbidden(e.to_string()),
            AuthError::Unavailable(m) => ApiError::Unavailable(m),
            other => ApiError::Unauthorized(other.to_string()),
        }
    }
}

/// The node's authenticator.
#[derive(Clone)]
pub struct Auth {
    legacy: bool,
    max_age: u64,
    redis: ConnectionManager,
    chain: DynProvider,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Auth {
    /// From the node config.
    pub fn new(config: &Config, redis: ConnectionManager, chain: DynProvider) -> Self {
        Self {
            legacy: config.api.legacy_bearer_auth,
            max_age: config.auth.signature_max_age_secs,
            redis,
            chain,
        }
    }

    /// Checks that the request proves control of `owner` for VM `token_id`.
    pub async fn verify_vm_access(
        &self,
        headers: &HeaderMap,
        token_id: U256,
        owner: Address,
    ) -> Result<Caller, AuthError> {
        let result = self.verify_vm_access_inner(headers, token_id, owner).await;
        if let Err(e) = &result {
            tracing::warn!(target: "chainfront::security", event = "auth_failure", token_id = %token_id, reason = %e, "credential request refused");
        }
        result
    }

    async fn verify_vm_access_inner(
        &self,
        headers: &HeaderMap,
        token_id: U256,
        owner: Address,
    ) -> Result<Caller, AuthError> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(AuthError::Missing)?;
        let sig = WalletSignature::from_hex(bearer)?;
        let timestamp = headers
            .get(TIMESTAMP_HEADER)
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        AuthError::Invalid("X-ClawCloud-Timestamp must be unix seconds".into())
                    })
            })
            .transpose()?;
        let (message, method) = match timestamp {
            Some(ts) => {
                if unix_now().abs_diff(ts) > self.max_age {
                    return Err(AuthError::Expired(self.max_age));
                }
                (
                    format!("ClawCloud Access Request: {token_id}\nTimestamp: {ts}"),
                    Method::Timestamped,
                )
            }
            None if self.legacy => (
                format!("ClawCloud Access Request: {token_id}"),
                Method::Legacy,
            ),
            None => return Err(AuthError::LegacyDisabled),
        };
        let hash = eip191_hash(message.as_bytes());
        let signer = sig.recover_prehash(hash)?;
        let caller = if signer.address == owner {
            Caller {
                address: signer.address,
                method,
                public_key: k256::PublicKey::from_sec1_bytes(&signer.public_key).ok(),
            }
        } else if self.contract_approves(owner, hash, &sig).await? {
            Caller {
                address: owner,
                method: Method::Contract,
                public_key: None,
            }
        } else {
            return Err(AuthError::NotOwner);
        };
        if method == Method::Timestamped {
            self.use_once(&sig).await?;
        }
        Ok(caller)
    }

    /// EIP-1271: is `owner` a contract wallet that accepts this signature?
    async fn contract_approves(
        &self,
        owner: Address,
        hash: B256,
        sig: &WalletSignature,
    ) -> Result<bool, AuthError> {
        let code = self
            .chain
            .get_code_at(owner)
            .await
            .map_err(|e| AuthError::Unavailable(format!("chain unavailable: {e}")))?;
        if code.is_empty() {
            return Ok(false);
        }
        let wallet = IERC1271::new(owner, &self.chain);
        let answer = wallet
            .isValidSignature(hash, Bytes::copy_from_slice(&sig.to_bytes()))
            .call()
            .await;
        // A revert (or no such function) means "not approved", not an outage.
        Ok(matches!(answer, Ok(magic) if magic == FixedBytes(ERC1271_MAGIC)))
    }

    /// Marks a timestamped signature used; a second use is a replay.
    async fn use_once(&self, sig: &WalletSignature) -> Result<(), AuthError> {
        let digest = hex::encode(Sha256::digest(sig.to_bytes()));
        let mut c = self.redis.clone();
        let fresh: Option<String> = redis::cmd("SET")
            .arg(NodeKeys.signature_used(&digest))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(self.max_age.saturating_mul(2).max(1))
            .query_async(&mut c)
            .await
            .map_err(|e| AuthError::Unavailable(format!("state store unavailable: {e}")))?;
        if fresh.is_none() {
            return Err(AuthError::Replayed);
        }
        Ok(())
    }
}
