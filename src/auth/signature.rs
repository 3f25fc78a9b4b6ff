//! Wallet signatures: 65-byte `r || s || v` (v 27/28 or 0/1), EIP-191
//! `personal_sign` or a raw 32-byte hash. Recovery runs on libsecp256k1 (the
//! `secp256k1` crate, as reth does) — about 5x k256 on these machines; k256's
//! implementation stays for the cross-check and the benchmark.

use alloy::primitives::{Address, B256, keccak256};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};

/// Why a signature was rejected (all answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not hex.
    #[error("signature is not hex")]
    NotHex,
    /// Not 65 bytes.
    #[error("signature must be 65 bytes (r, s, v), got {0}")]
    Length(usize),
    /// v is not 0, 1, 27 or 28.
    #[error("signature has an invalid recovery id")]
    RecoveryId,
    /// s in the upper half of the curve order (EIP-2 malleability).
    #[error("signature has a high s value (not canonical)")]
    HighS,
    /// No public key recovers from it.
    #[error("signature does not recover to a public key")]
    Unrecoverable,
}

/// A parsed 65-byte signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletSignature {
    rs: [u8; 64],
    recid: u8,
}

/// The signer of a message: address and uncompressed public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signer {
    /// The wallet address.
    pub address: Address,
    /// SEC1 uncompressed public key (65 bytes).
    pub public_key: [u8; 65],
}

impl WalletSignature {
    /// Parses `0x`-prefixed or bare hex.
    pub fn from_hex(s: &str) -> Result<Self, SignatureError> {
        let raw =
            hex::decode(s.trim().trim_start_matches("0x")).map_err(|_| SignatureError::NotHex)?;
        Self::from_bytes(&raw)
    }

    /// From 65 raw bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SignatureError> {
        if raw.len() != 65 {
            return Err(SignatureError::Length(raw.len()));
        }
        let recid = match raw[64] {
            0 | 27 => 0,
            1 | 28 => 1,
            _ => return Err(SignatureError::RecoveryId),
        };
        let mut rs = [0u8; 64];
        rs.copy_from_slice(&raw[..64]);
        let mut normal = Signature::from_compact(&rs).map_err(|_| SignatureError::Unrecoverable)?;
        let original = normal;
        normal.normalize_s();
        if normal != original {
            return Err(SignatureError::HighS);
        }
        Ok(Self { rs, recid })
    }

    /// The 65 bytes with v = 27/28.
    pub fn to_bytes(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&self.rs);
        out[64] = 27 + self.recid;
        out
    }

    /// Recovers the signer of a 32-byte hash (libsecp256k1).
    pub fn recover_prehash(&self, hash: B256) -> Result<Signer, SignatureError> {
        let recid =
            RecoveryId::try_from(i32::from(self.recid)).map_err(|_| SignatureError::RecoveryId)?;
        let sig = RecoverableSignature::from_compact(&self.rs, recid)
            .map_err(|_| SignatureError::Unrecoverable)?;
        let key = sig
            .recover(secp256k1::Message::from_digest(hash.0))
            .map_err(|_| SignatureError::Unrecoverable)?;
        let public_key = key.serialize_uncompressed();
        Ok(Signer {
            address: Address::from_raw_public_key(&public_key[1..]),
            public_key,
        })
    }

    /// Recovers the signer of an EIP-191 `personal_sign` message.
    pub fn recover_eip191(&self, message: &[u8]) -> Result<Signer, SignatureError> {
        self.recover_prehash(eip191_hash(message))
    }

    /// The same recovery with k256 (pure Rust), for cross-checks and benchmarks.
    pub fn recover_prehash_k256(&self, hash: B256) -> Result<Address, SignatureError> {
        let sig = k256::ecdsa::Signature::from_slice(&self.rs)
            .map_err(|_| SignatureError::Unrecoverable)?;
        let recid =
            k256::ecdsa::RecoveryId::from_byte(self.recid).ok_or(SignatureError::RecoveryId)?;
        let key = k256::ecdsa::VerifyingKey::recover_from_prehash(hash.as_slice(), &sig, recid)
            .map_err(|_| SignatureError::Unrecoverable)?;
        let point = key.to_encoded_point(false);
        Ok(Address::from_raw_public_key(&point.as_bytes()[1..]))
    }
}

/// keccak256("\x19Ethereum Signed Message:\n" + len + message).
pub fn eip191_hash(message: &[u8]) -> B256 {
    let mut data = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
    data.extend_from_slice(message);
    keccak256(&data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    #[test]
    fn recovers_real_signatures_both_ways() {
        let signer = PrivateKeySigner::random();
        let sig = signer
            .sign_message_sync(b"ClawCloud Access Request: 42")
            .expect("sign");
        let parsed = WalletSignature::from_bytes(&sig.as_bytes()).expect("parse");
        let who = parsed
            .recover_eip191(b"ClawCloud Access Request: 42")
            .expect("recover");
        assert_eq!(who.address, signer.address());
        let hash = eip191_hash(b"ClawCloud Access Request: 42");
        assert_eq!(
            parsed.recover_prehash_k256(hash).expect("k256"),
            signer.address()
        );
        // Another message recovers someone else.
        assert_ne!(
            parsed
                .recover_eip191(b"ClawCloud Access Request: 43")
                .expect("recover")
                .address,
            signer.address()
        );
        // v as 0/1 is accepted too.
        let mut raw = sig.as_bytes();
        raw[64] -= 27;
        assert_eq!(WalletSignature::from_bytes(&raw).expect("v 0/1"), parsed);
    }

    #[test]
    fn malformed_signatures_are_errors_not_panics() {
        let signer = PrivateKeySigner::random();
        let sig = signer.sign_message_sync(b"m").expect("sign").as_bytes();
        assert_eq!(
            WalletSignature::from_hex("0xzz"),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            WalletSignature::from_bytes(&sig[..64]),
            Err(SignatureError::Length(64))
        );
        let mut bad_v = sig;
        bad_v[64] = 29;
        assert_eq!(
            WalletSignature::from_bytes(&bad_v),
            Err(SignatureError::RecoveryId)
        );
        // s' = n - s with v flipped is the malleated twin: rejected (EIP-2).
        let n = alloy::primitives::U256::from_str_radix(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
            16,
        )
        .expect("n");
        let s = alloy::primitives::U256::from_be_slice(&sig[32..64]);
        let mut high = sig;
        high[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
        high[64] = if sig[64] == 27 { 28 } else { 27 };
        assert_eq!(
            WalletSignature::from_bytes(&high),
            Err(SignatureError::HighS)
        );
        let zero = WalletSignature::from_bytes(&[0u8; 65]);
        assert!(zero.and_then(|z| z.recover_prehash(B256::ZERO)).is_err());
    }
}
