//! Signed webhooks, both ways.
//!
//! **Outgoing** (`callbackUrl`): the final job JSON is POSTed with
//! `X-Clodds-Signature: <hex HMAC-SHA256 of the raw body>` keyed with the
//! paying wallet's webhook secret, through the SSRF guard, retried with
//! backoff. A wallet's secret is
//! `hex(HMAC-SHA256(node webhook key, "chainfront webhook secret\n<wallet>\n<generation>"))`:
//! nothing per wallet is stored but a generation counter, and the wallet
//! reads it (after proving control) from `GET /v1/webhook-secret`, or rotates
//! it with `POST /v1/webhook-secret`. The node key is
//! `CHAINFRONT_COMPUTE_WEBHOOK_KEY`, else a random key kept in Redis and
//! shared by every replica.
//!
//! **Incoming** (`POST /v1/webhook/{service}`): the gateway document's form —
//! `x-webhook-signature: <hex>` or `x-hub-signature-256: sha256=<hex>`, an
//! HMAC-SHA256 of the raw body with the wallet's secret — checked in
//! constant time by the `hmac` crate.

use alloy::primitives::Address;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::{LedgerKeys, lower};
use hmac::{Hmac, Mac};
use redis::AsyncCommands;
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Header of outgoing callbacks.
pub const SIGNATURE_HEADER: &str = "x-clodds-signature";

/// Derives and checks webhook secrets.
#[derive(Clone)]
pub struct Secrets {
    key: std::sync::Arc<Zeroizing<Vec<u8>>>,
    conn: RedisConn,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("webhook::Secrets(<redacted>)")
    }
}

/// Hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable_mac());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn unreachable_mac() -> HmacSha256 {
    // `new_from_slice` only fails for fixed-size-key MACs; HMAC accepts any
    // length. Kept total without a panic path.
    <HmacSha256 as Mac>::new(&Default::default())
}

/// Checks a signature header value (`<hex>` or `sha256=<hex>`) over `body`,
/// in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let hex_sig = header.trim();
    let hex_sig = hex_sig.strip_prefix("sha256=").unwrap_or(hex_sig);
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable_mac());
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

impl Secrets {
    /// From the configured key, or the node's random key in Redis (created once).
    pub async fn new(configured: Option<&str>, conn: RedisConn) -> Result<Self, redis::RedisError> {
        let key = match configured {
            Some(k) => k.as_bytes().to_vec(),
            None => {
                use rand::RngCore;
                let mut fresh = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut fresh);
                let mut c = conn.clone();
                let k = LedgerKeys.webhook_key();
                let _: bool = redis::cmd("SET")
                    .arg(&k)
                    .arg(hex::encode(fresh))
                    .arg("NX")
                    .query_async::<Option<String>>(&mut c)
                    .await?
                    .is_some();
                let stored: String = c.get(&k).await?;
                stored.into_bytes()
            }
        };
        Ok(Self {
            key: std::sync::Arc::new(Zeroizing::new(key)),
            conn,
        })
    }

    /// The wallet's current secret (hex).
    pub async fn secret(&self, wallet: Address) -> Result<Zeroizing<String>, redis::RedisError> {
        let mut c = self.conn.clone();
        let generation: Option<u64> = c
            .hget(LedgerKeys.webhook_generations(), lower(wallet))
            .await?;
        Ok(self.derive(wallet, generation.unwrap_or(0)))
    }

    /// A new secret for the wallet (the old one stops working).
    pub async fn rotate(&self, wallet: Address) -> Result<Zeroizing<String>, redis::RedisError> {
        let mut c = self.conn.clone();
        let generation: u64 = c
            .hincr(LedgerKeys.webhook_generations(), lower(wallet), 1)
            .await?;
        Ok(self.derive(wallet, generation))
    }

    fn derive(&self, wallet: Address, generation: u64) -> Zeroizing<String> {
        let msg = format!("chainfront webhook secret\n{}\n{generation}", lower(wallet));
        Zeroizing::new(sign(&self.key, msg.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_in_both_header_forms() {
        let body = br#"{"jobId":"job_1"}"#;
        let sig = sign(b"secret", body);
        assert_eq!(sig.len(), 64);
        assert!(verify(b"secret", body, &sig));
        assert!(verify(b"secret", body, &format!("sha256={sig}")));
        assert!(!verify(b"other", body, &sig));
        assert!(!verify(b"secret", b"tampered", &sig));
        assert!(!verify(b"secret", body, "nothex"));
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
