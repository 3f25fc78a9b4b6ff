//! Wallet signatures: 65-byte `r || s || v` (v 27/28 or 0/1) over an EIP-191
//! `personal_sign` message or over a raw 32-byte hash (Clockchain's
//! `signHash(keccak256(message))`). Recovery runs on libsecp256k1 (the
//! `secp256k1` crate with its global context, as reth does): several times
//! k256's speed (`cargo bench --bench recover`). The k256 implementation
//! stays for the cross-check test and the benchmark.
//!
//! Parsing is strict and never panics: wrong length, non-hex, a recovery id
//! other than 0/1/27/28, r or s out of range and high s (EIP-2: the malleated
//! twin `(r, n - s, v ^ 1)` of a valid signature) are typed errors.

use alloy::primitives::{Address, B256, keccak256};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};

/// Length of an ECDSA wallet signature: r (32) || s (32) || v (1).
pub const SIGNATURE_LEN: usize = 65;

/// Why a signature was rejected (answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not hex.
    #[error("signature is not hex")]
    NotHex,
    /// Not 65 bytes.
    #[error("signature must be 65 bytes (r, s, v), got {0}")]
    Length(usize),
    /// v is not 0, 1, 27 or 28.
    #[error("signature has an invalid recovery id (v must be 27, 28, 0 or 1)")]
    RecoveryId,
    /// r or s is not below the curve order.
    #[error("signature r or s is out of range")]
    OutOfRange,
    /// s in the upper half of the curve order (EIP-2 malleability).
    #[error("signature has a high s value (not canonical, EIP-2)")]
    HighS,
    /// No public key recovers from it.
    #[error("signature does not recover to a public key")]
    Unrecoverable,
}

/// Result of signature parsing and recovery.
pub type Result<T, E = SignatureError> = std::result::Result<T, E>;

/// A parsed, canonical (low-s) 65-byte signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletSignature {
    rs: [u8; 64],
    /// 0 or 1.
    recid: u8,
}

/// Who signed: the address and the uncompressed public key it derives from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signer {
    /// The wallet address (last 20 bytes of keccak256 of the public key).
    pub address: Address,
    /// SEC1 uncompressed public key (`0x04 || x || y`, 65 bytes), to encrypt
    /// answers to the signer.
    pub public_key: [u8; 65],
}

impl Signer {
    /// The public key as a k256 key (what `crypto::ecies` encrypts to).
    pub fn k256_public_key(&self) -> Option<k256::PublicKey> {
        k256::PublicKey::from_sec1_bytes(&self.public_key).ok()
    }
}

/// Decodes `0x`-prefixed or bare hex of any length (contract-wallet
/// signatures need not be 65 bytes).
pub fn decode_hex(s: &str) -> Result<Vec<u8>> {
    let s = s.trim();
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    hex::decode(digits).map_err(|_| SignatureError::NotHex)
}

impl WalletSignature {
    /// Parses `0x`-prefixed or bare hex.
    pub fn from_hex(s: &str) -> Result<Self> {
        Self::from_bytes(&decode_hex(s)?)
    }

    /// From 65 raw bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self> {
        let raw: &[u8; SIGNATURE_LEN] = raw
            .try_into()
            .map_err(|_| SignatureError::Length(raw.len()))?;
        let recid = match raw[64] {
            0 | 27 => 0,
            1 | 28 => 1,
            _ => return Err(SignatureError::RecoveryId),
        };
        let mut rs = [0u8; 64];
        rs.copy_from_slice(&raw[..64]);
        // r and s must lie in [1, n - 1]; libsecp256k1's parser checks only the top.
        if rs[..32].iter().all(|b| *b == 0) || rs[32..].iter().all(|b| *b == 0) {
            return Err(SignatureError::OutOfRange);
        }
        let parsed = Signature::from_compact(&rs).map_err(|_| SignatureError::OutOfRange)?;
        let mut low = parsed;
        low.normalize_s();
        if low != parsed {
            return Err(SignatureError::HighS);
        }
        Ok(Self { rs, recid })
    }

    /// The 65 bytes with v = 27/28 (one canonical encoding per signature, so
    /// the single-use guard cannot be dodged by rewriting v as 0/1).
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out[..64].copy_from_slice(&self.rs);
        out[64] = 27 + self.recid;
        out
    }

    /// Recovers the signer of a 32-byte hash (libsecp256k1).
    pub fn recover_prehash(&self, hash: B256) -> Result<Signer> {
        let recid =
            RecoveryId::try_from(i32::from(self.recid)).map_err(|_| SignatureError::RecoveryId)?;
        let sig = RecoverableSignature::from_compact(&self.rs, recid)
            .map_err(|_| SignatureError::OutOfRange)?;
        let key = sig
            .recover(secp256k1::Message::from_digest(hash.0))
            .map_err(|_| SignatureError::Unrecoverable)?;
        let public_key = key.serialize_uncompressed();
        Ok(Signer {
            address: Address::from_raw_public_key(&public_key[1..]),
            public_key,
        })
    }

    /// Recovers the signer of an EIP-191 `personal_sign` message (libsecp256k1).
    pub fn recover_eip191(&self, message: &[u8]) -> Result<Signer> {
        self.recover_prehash(eip191_hash(message))
    }

    /// The same recovery with k256 (pure Rust): address only.
    pub fn recover_prehash_k256(&self, hash: B256) -> Result<Address> {
        recover_k256(hash, self).map(|s| s.address)
    }
}

/// Recovers the signer of an EIP-191 `personal_sign` signature of `message`.
pub fn recover_eip191(message: &[u8], sig: &WalletSignature) -> Result<Signer> {
    sig.recover_eip191(message)
}

/// Recovers the signer of a raw signature of `hash` (e.g. `keccak256(message)`
/// signed with `signHash`, no prefix).
pub fn recover_prehash(hash: B256, sig: &WalletSignature) -> Result<Signer> {
    sig.recover_prehash(hash)
}

/// [`recover_prehash`] with k256 instead of libsecp256k1: the benchmark's
/// baseline and the cross-check that both libraries agree.
pub fn recover_k256(hash: B256, sig: &WalletSignature) -> Result<Signer> {
    let parsed =
        k256::ecdsa::Signature::from_slice(&sig.rs).map_err(|_| SignatureError::OutOfRange)?;
    let recid = k256::ecdsa::RecoveryId::from_byte(sig.recid).ok_or(SignatureError::RecoveryId)?;
    let key = k256::ecdsa::VerifyingKey::recover_from_prehash(hash.as_slice(), &parsed, recid)
        .map_err(|_| SignatureError::Unrecoverable)?;
    let point = key.to_encoded_point(false);
    let public_key: [u8; 65] = point
        .as_bytes()
        .try_into()
        .map_err(|_| SignatureError::Unrecoverable)?;
    Ok(Signer {
        address: Address::from_raw_public_key(&public_key[1..]),
        public_key,
    })
}

/// keccak256("\x19Ethereum Signed Message:\n" + len(message) + message).
pub fn eip191_hash(message: &[u8]) -> B256 {
    let mut data = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
    data.extend_from_slice(message);
    keccak256(&data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::U256;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    const MESSAGE: &[u8] = b"ClawCloud Access Request: 42";

    /// secp256k1's group order n.
    fn order() -> U256 {
        U256::from_str_radix(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
            16,
        )
        .expect("n")
    }

    /// `(r, n - s, v ^ 1)`: the malleated twin, which recovers the same key.
    fn high_s_twin(sig: &[u8; 65]) -> [u8; 65] {
        let s = U256::from_be_slice(&sig[32..64]);
        let mut high = *sig;
        high[32..64].copy_from_slice(&(order() - s).to_be_bytes::<32>());
        high[64] = if sig[64] == 27 { 28 } else { 27 };
        high
    }

    #[test]
    fn recovers_personal_sign_with_address_and_public_key() {
        let signer = PrivateKeySigner::random();
        let sig = signer.sign_message_sync(MESSAGE).expect("sign");
        let hex_sig = format!("0x{}", hex::encode(sig.as_bytes()));
        let parsed = WalletSignature::from_hex(&hex_sig).expect("parse");
        let who = recover_eip191(MESSAGE, &parsed).expect("recover");
        assert_eq!(who.address, signer.address());
        let expected_key = signer.credential().verifying_key().to_encoded_point(false);
        assert_eq!(&who.public_key[..], expected_key.as_bytes());
        assert!(who.k256_public_key().is_some());
        // Bare hex parses the same.
        assert_eq!(
            WalletSignature::from_hex(&hex_sig[2..]).expect("bare hex"),
            parsed
        );
        // Another message recovers someone else.
        let other = recover_eip191(b"ClawCloud Access Request: 43", &parsed).expect("recover");
        assert_ne!(other.address, signer.address());
    }

    #[test]
    fn recovers_raw_keccak_signatures() {
        let signer = PrivateKeySigner::random();
        let hash = keccak256(MESSAGE);
        let sig = signer.sign_hash_sync(&hash).expect("sign");
        let parsed = WalletSignature::from_bytes(&sig.as_bytes()).expect("parse");
        assert_eq!(
            recover_prehash(hash, &parsed).expect("recover").address,
            signer.address()
        );
        // The same signature read as personal_sign names another key.
        assert_ne!(
            recover_eip191(MESSAGE, &parsed).expect("recover").address,
            signer.address()
        );
    }

    #[test]
    fn k256_and_libsecp256k1_agree() {
        for i in 0..32u8 {
            let signer = PrivateKeySigner::random();
            let message = [b"message ".as_slice(), &[i]].concat();
            let sig = signer.sign_message_sync(&message).expect("sign");
            let parsed = WalletSignature::from_bytes(&sig.as_bytes()).expect("parse");
            let hash = eip191_hash(&message);
            let fast = recover_prehash(hash, &parsed).expect("libsecp256k1");
            let slow = recover_k256(hash, &parsed).expect("k256");
            assert_eq!(fast, slow);
            assert_eq!(fast.address, signer.address());
            assert_eq!(
                parsed.recover_prehash_k256(hash).expect("k256"),
                signer.address()
            );
        }
    }

    #[test]
    fn v_may_be_27_28_or_0_1() {
        let signer = PrivateKeySigner::random();
        let sig = signer.sign_message_sync(MESSAGE).expect("sign").as_bytes();
        let parsed = WalletSignature::from_bytes(&sig).expect("v 27/28");
        let mut raw = sig;
        raw[64] -= 27;
        let zero_one = WalletSignature::from_bytes(&raw).expect("v 0/1");
        assert_eq!(zero_one, parsed);
        assert_eq!(zero_one.to_bytes(), sig, "re-encoded with v 27/28");
        assert_eq!(
            zero_one.recover_eip191(MESSAGE).expect("recover").address,
            signer.address()
        );
    }

    #[test]
    fn high_s_twin_is_rejected() {
        let signer = PrivateKeySigner::random();
        let sig = signer.sign_message_sync(MESSAGE).expect("sign").as_bytes();
        let high = high_s_twin(&sig);
        assert_eq!(
            WalletSignature::from_bytes(&high),
            Err(SignatureError::HighS)
        );
        // The twin really is a signature of the same key that libsecp256k1's
        // recovery accepts: only the EIP-2 check in parsing stops it.
        let recid = RecoveryId::try_from(i32::from(high[64] - 27)).expect("recid");
        let twin = RecoverableSignature::from_compact(&high[..64], recid).expect("parses");
        let key = twin
            .recover(secp256k1::Message::from_digest(eip191_hash(MESSAGE).0))
            .expect("recovers");
        assert_eq!(
            Address::from_raw_public_key(&key.serialize_uncompressed()[1..]),
            signer.address(),
            "the malleated twin recovers the signer"
        );
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
            WalletSignature::from_hex("0x123"),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            WalletSignature::from_hex(""),
            Err(SignatureError::Length(0))
        );
        assert_eq!(
            WalletSignature::from_bytes(&sig[..64]),
            Err(SignatureError::Length(64))
        );
        assert_eq!(
            WalletSignature::from_bytes(&[sig.as_slice(), &[0]].concat()),
            Err(SignatureError::Length(66))
        );
        for v in [2u8, 26, 29, 35, 36, 255] {
            let mut bad_v = sig;
            bad_v[64] = v;
            assert_eq!(
                WalletSignature::from_bytes(&bad_v),
                Err(SignatureError::RecoveryId),
                "v = {v}"
            );
        }
        let mut r_too_big = sig;
        r_too_big[..32].copy_from_slice(&[0xff; 32]);
        assert_eq!(
            WalletSignature::from_bytes(&r_too_big),
            Err(SignatureError::OutOfRange)
        );
        for zeroed in [0..32, 32..64] {
            let mut z = sig;
            z[zeroed].fill(0);
            assert_eq!(
                WalletSignature::from_bytes(&z),
                Err(SignatureError::OutOfRange)
            );
        }
    }
}
