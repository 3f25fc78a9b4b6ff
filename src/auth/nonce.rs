//! Single-use values in Redis: server nonces (`GET /auth/nonce`, consumed by
//! the nonce access form and by sign-in) and the replay guard that makes a
//! timestamped signature single-use. Both rest on one Redis property: `SET NX`
//! succeeds and `DEL` answers 1 for exactly one client, however many race.

use std::time::{SystemTime, UNIX_EPOCH};

use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::NodeKeys;
use rand::RngCore;
use redis::RedisResult;
use sha2::{Digest, Sha256};

/// Hex digits of a nonce (128 random bits).
pub const NONCE_HEX_LEN: usize = 32;

/// A nonce handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedNonce {
    /// 32 lower-case hex digits.
    pub nonce: String,
    /// Unix seconds after which it is no longer accepted.
    pub expires_at: u64,
}

/// Whether `s` has the shape of a nonce this node issues. Checked before any
/// Redis access, so a client cannot make us build keys from arbitrary text.
pub fn is_well_formed(s: &str) -> bool {
    s.len() == NONCE_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Server nonces: random, short-lived, single-use.
#[derive(Clone)]
pub struct Nonces {
    redis: RedisConn,
    ttl_secs: u64,
}

impl Nonces {
    /// Nonces valid for `ttl_secs` (at least 1).
    pub fn new(redis: RedisConn, ttl_secs: u64) -> Self {
        Self {
            redis,
            ttl_secs: ttl_secs.max(1),
        }
    }

    /// Issues a fresh nonce (`SET key 1 EX ttl NX`). A collision of 128 random
    /// bits is not expected; if `NX` ever refuses, another one is drawn.
    pub async fn issue(&self) -> RedisResult<IssuedNonce> {
        let mut c = self.redis.clone();
        loop {
            let mut bytes = [0u8; NONCE_HEX_LEN / 2];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let nonce = hex::encode(bytes);
            let set: Option<String> = redis::cmd("SET")
                .arg(NodeKeys.auth_nonce(&nonce))
                .arg(1)
                .arg("EX")
                .arg(self.ttl_secs)
                .arg("NX")
                .query_async(&mut c)
                .await?;
            if set.is_some() {
                return Ok(IssuedNonce {
                    nonce,
                    expires_at: unix_now().saturating_add(self.ttl_secs),
                });
            }
        }
    }

    /// Consumes `nonce`: true for exactly one caller while it is live; false
    /// when it is malformed, unknown, expired or already used.
    pub async fn consume(&self, nonce: &str) -> RedisResult<bool> {
        if !is_well_formed(nonce) {
            return Ok(false);
        }
        let mut c = self.redis.clone();
        let deleted: u64 = redis::cmd("DEL")
            .arg(NodeKeys.auth_nonce(nonce))
            .query_async(&mut c)
            .await?;
        Ok(deleted == 1)
    }
}

/// Remembers signed messages already used, for as long as they could still be
/// accepted: `2 × signature_max_age_secs` (a timestamp may be up to
/// `max_age` in the future and is then valid until `max_age` past it) plus
/// [`CLOCK_MARGIN_SECS`] for replicas whose clocks disagree.
///
/// The marker is keyed on what was signed (the form, the signer and the
/// message), never on the signature bytes: a contract wallet may accept many
/// encodings of one approval (trailing bytes, high-s twins), and each would
/// otherwise be a fresh replay.
#[derive(Clone)]
pub struct ReplayGuard {
    redis: RedisConn,
    ttl_secs: u64,
}

/// Extra lifetime of a replay marker, covering clock skew between replicas.
pub const CLOCK_MARGIN_SECS: u64 = 60;

impl ReplayGuard {
    /// A guard for signatures valid `max_age_secs` either side of their timestamp.
    pub fn new(redis: RedisConn, max_age_secs: u64) -> Self {
        Self {
            redis,
            ttl_secs: max_age_secs
                .saturating_mul(2)
                .saturating_add(CLOCK_MARGIN_SECS),
        }
    }

    /// Records the use of `message` signed for `signer` in `form` (by their
    /// SHA-256, never the message itself) and answers whether this was its
    /// first use.
    pub async fn first_use(&self, form: &str, signer: &[u8], message: &[u8]) -> RedisResult<bool> {
        let mut h = Sha256::new();
        for part in [form.as_bytes(), signer, message] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let digest = hex::encode(h.finalize());
        let mut c = self.redis.clone();
        let fresh: Option<String> = redis::cmd("SET")
            .arg(NodeKeys.signature_used(&digest))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(self.ttl_secs)
            .query_async(&mut c)
            .await?;
        Ok(fresh.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_issued_shapes_are_well_formed() {
        assert!(is_well_formed(&"0f".repeat(16)));
        assert!(!is_well_formed(&"0F".repeat(16)), "upper case");
        assert!(!is_well_formed(&"0f".repeat(15)), "short");
        assert!(!is_well_formed(&"0f".repeat(17)), "long");
        assert!(
            !is_well_formed(&format!("{}}}:x", "a".repeat(29))),
            "key text"
        );
        assert!(!is_well_formed(""));
    }
}
