//! ECIES on secp256k1 in ClawCloud's documented at-rest form
//! `ecc:<ephemeralPubKey>:<iv>:<authTag>:<ciphertext>` (see `docs/encryption.md`).
//!
//! A fresh ephemeral key per message (forward secrecy for the sender side),
//! ECDH with the recipient key, HKDF-SHA256 (salt = the ephemeral public key,
//! info = [`INFO`]) to a 32-byte key, AES-256-GCM with a random 12-byte IV.
//! Every part is lower-case hex; the public key is 65-byte uncompressed SEC1.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{PublicKey, SecretKey};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::config::Secrets;
use crate::{Error, Result};

/// Prefix of every sealed value.
pub const PREFIX: &str = "ecc:";
/// HKDF info string: binds keys to this scheme and version.
pub const INFO: &[u8] = b"chainfront/ecies/v1";

/// The node's master key: a secp256k1 secret. Values are sealed to its
/// public key and opened with it.
pub struct MasterKey(SecretKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

fn crypto(m: impl Into<String>) -> Error {
    Error::Crypto(m.into())
}

impl MasterKey {
    /// From 32 bytes of hex, with or without `0x`.
    pub fn from_hex(hex_key: &str) -> Result<Self> {
        let raw = Zeroizing::new(
            hex::decode(hex_key.trim().trim_start_matches("0x"))
                .map_err(|_| crypto("master key must be 32 bytes of hex"))?,
        );
        if raw.len() != 32 {
            return Err(crypto("master key must be 32 bytes of hex"));
        }
        SecretKey::from_slice(&raw)
            .map(Self)
            .map_err(|_| crypto("master key is not a valid secp256k1 secret"))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self(SecretKey::random(&mut rand::rngs::OsRng))
    }

    /// The key as hex (for writing a key file); handle as a secret.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.to_bytes()))
    }

    /// The configured master key (`CHAINFRONT_MASTER_KEY` or `_FILE`), if any.
    pub fn from_secrets(secrets: &Secrets) -> Result<Option<Self>> {
        match &secrets.master_key {
            None => Ok(None),
            Some(s) => Self::from_hex(s.expose())
                .map(Some)
                .map_err(|e| Error::Config {
                    key: "master_key".into(),
                    message: e.to_string(),
                }),
        }
    }

    /// The public key values are sealed to.
    pub fn public_key(&self) -> PublicKey {
        self.0.public_key()
    }

    /// Encrypts `plaintext` to this key.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        encrypt_to(&self.public_key(), plaintext)
    }

    /// Decrypts an `ecc:` value; any other value is a plaintext stored before
    /// encryption existed and is returned unchanged (backward compatible).
    pub fn open(&self, stored: &str) -> Result<Zeroizing<Vec<u8>>> {
        if !is_sealed(stored) {
            return Ok(Zeroizing::new(stored.as_bytes().to_vec()));
        }
        decrypt(&self.0, stored)
    }

    /// [`MasterKey::open`] for UTF-8 values.
    pub fn open_string(&self, stored: &str) -> Result<Zeroizing<String>> {
        let bytes = self.open(stored)?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| crypto("decrypted value is not UTF-8"))
    }
}

/// Whether a stored value is sealed (rather than legacy plaintext).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// Encrypts `plaintext` to `recipient` with a fresh ephemeral key and IV.
pub fn encrypt_to(recipient: &PublicKey, plaintext: &[u8]) -> String {
    let ephemeral = SecretKey::random(&mut rand::rngs::OsRng);
    let mut iv = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    encrypt_with(recipient, &ephemeral, iv, plaintext)
}

fn derive_key(shared_x: &[u8], ephemeral_public: &[u8]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(ephemeral_public), shared_x);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
    let _ = hk.expand(INFO, key.as_mut());
    key
}

/// Deterministic core of [`encrypt_to`] (fixed ephemeral key and IV), for
/// test vectors.
pub fn encrypt_with(
    recipient: &PublicKey,
    ephemeral: &SecretKey,
    iv: [u8; 12],
    plaintext: &[u8],
) -> String {
    let shared = k256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), recipient.as_affine());
    let epk = ephemeral.public_key().to_encoded_point(false);
    let shared_x: &[u8] = shared.raw_secret_bytes();
    let key = derive_key(shared_x, epk.as_bytes());
    let cipher = Aes256Gcm::new(key.as_ref().into());
    // AES-GCM encryption only fails for inputs beyond 64 GiB.
    let mut sealed = cipher
        .encrypt(
            &Nonce::from(iv),
            Payload {
                msg: plaintext,
                aad: b"",
            },
        )
        .unwrap_or_default();
    let tag = sealed.split_off(sealed.len().saturating_sub(16));
    format!(
        "{PREFIX}{}:{}:{}:{}",
        hex::encode(epk.as_bytes()),
        hex::encode(iv),
        hex::encode(tag),
        hex::encode(sealed)
    )
}

fn decrypt(secret: &SecretKey, stored: &str) -> Result<Zeroizing<Vec<u8>>> {
    let body = stored
        .strip_prefix(PREFIX)
        .ok_or_else(|| crypto("not an ecc: value"))?;
    let parts: Vec<&str> = body.split(':').collect();
    let [epk, iv, tag, ct] = parts.as_slice() else {
        return Err(crypto(
            "an ecc: value has four parts: ephemeralPubKey:iv:authTag:ciphertext",
        ));
    };
    let hex_part =
        |name: &str, v: &str| hex::decode(v).map_err(|_| crypto(format!("ecc: {name} is not hex")));
    let (epk, iv, tag, mut ct) = (
        hex_part("ephemeral public key", epk)?,
        hex_part("iv", iv)?,
        hex_part("auth tag", tag)?,
        hex_part("ciphertext", ct)?,
    );
    let iv: [u8; 12] = iv
        .as_slice()
        .try_into()
        .map_err(|_| crypto("ecc: iv must be 12 bytes"))?;
    if tag.len() != 16 {
        return Err(crypto("ecc: auth tag must be 16 bytes"));
    }
    let ephemeral = PublicKey::from_sec1_bytes(&epk)
        .map_err(|_| crypto("ecc: ephemeral public key is not a secp256k1 point"))?;
    let shared = k256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), ephemeral.as_affine());
    let shared_x: &[u8] = shared.raw_secret_bytes();
    let key = derive_key(shared_x, &epk);
    let cipher = Aes256Gcm::new(key.as_ref().into());
    ct.extend_from_slice(&tag);
    cipher
        .decrypt(&Nonce::from(iv), Payload { msg: &ct, aad: b"" })
        .map(Zeroizing::new)
        .map_err(|_| crypto("ecc: decryption failed (wrong key or tampered value)"))
}

/// Re-seals a stored value under `new` (legacy plaintext gets sealed too).
pub fn reencrypt(old: &MasterKey, new: &MasterKey, stored: &str) -> Result<String> {
    let plain = old.open(stored)?;
    Ok(new.seal(&plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPIENT: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const EPHEMERAL: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn key(h: &str) -> MasterKey {
        MasterKey::from_hex(h).expect("key")
    }

    #[test]
    fn round_trips_any_size() {
        let k = MasterKey::generate();
        for n in [0usize, 1, 15, 16, 17, 1000] {
            let msg: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let sealed = k.seal(&msg);
            assert!(is_sealed(&sealed));
            assert_eq!(k.open(&sealed).expect("open").as_slice(), msg.as_slice());
        }
        assert_ne!(k.seal(b"x"), k.seal(b"x"), "fresh ephemeral key and iv");
    }

    #[test]
    fn tampering_with_any_part_fails() {
        let k = MasterKey::generate();
        let sealed = k.seal(b"ssh private key");
        let body = sealed.strip_prefix(PREFIX).expect("prefix");
        for part in 0..4 {
            let mut parts: Vec<String> = body.split(':').map(str::to_owned).collect();
            let p = &mut parts[part];
            // Flip the last hex digit (for the public key: a byte in the middle,
            // which moves the point off the curve or to another point).
            let at = if part == 0 { 40 } else { p.len() - 1 };
            let c = p.as_bytes()[at];
            let flipped = if c == b'0' { '1' } else { '0' };
            p.replace_range(at..=at, &flipped.to_string());
            let tampered = format!("{PREFIX}{}", parts.join(":"));
            assert!(
                k.open(&tampered).is_err(),
                "part {part} tampered yet opened"
            );
        }
    }

    #[test]
    fn wrong_key_and_malformed_values_are_errors() {
        let sealed = MasterKey::generate().seal(b"secret");
        assert!(MasterKey::generate().open(&sealed).is_err());
        let k = MasterKey::generate();
        for bad in [
            "ecc:",
            "ecc:00:00:00",
            "ecc:zz:00:00:00:00",
            "ecc:04:000000000000000000000000:00000000000000000000000000000000:00",
            &format!("ecc:{}:00:{}:00", "04".repeat(33), "00".repeat(16)),
            "ecc:a:b:c:d:e",
        ] {
            assert!(k.open(bad).is_err(), "{bad}");
        }
        assert!(MasterKey::from_hex("abc").is_err());
        assert!(
            MasterKey::from_hex(&"00".repeat(32)).is_err(),
            "zero is not a key"
        );
    }

    #[test]
    fn plaintext_values_from_before_encryption_still_read() {
        let k = MasterKey::generate();
        assert_eq!(
            k.open_string("-----BEGIN OPENSSH PRIVATE KEY-----")
                .expect("legacy")
                .as_str(),
            "-----BEGIN OPENSSH PRIVATE KEY-----"
        );
    }

    #[test]
    fn reencrypt_moves_values_to_the_new_key() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let sealed = old.seal(b"v");
        let moved = reencrypt(&old, &new, &sealed).expect("reencrypt");
        assert_eq!(new.open(&moved).expect("new opens").as_slice(), b"v");
        assert!(old.open(&moved).is_err());
        let legacy = reencrypt(&old, &new, "plain").expect("legacy");
        assert!(is_sealed(&legacy));
        assert_eq!(new.open_string(&legacy).expect("open").as_str(), "plain");
    }

    /// Fixed vector: recipient, ephemeral key and IV fixed; the expected
    /// string was cross-checked with Python (`cryptography` + `coincurve`).
    #[test]
    fn fixed_test_vector() {
        let recipient = key(RECIPIENT);
        let ephemeral = SecretKey::from_slice(&hex::decode(EPHEMERAL).expect("hex")).expect("sk");
        let iv: [u8; 12] = core::array::from_fn(|i| i as u8);
        let sealed = encrypt_with(&recipient.public_key(), &ephemeral, iv, b"chainfront");
        assert_eq!(sealed, VECTOR);
        assert_eq!(
            recipient.open_string(VECTOR).expect("opens").as_str(),
            "chainfront"
        );
    }

    const VECTOR: &str = "ecc:044646ae5047316b4230d0086c8acec687f00b1cd9d1dc634f6cb358ac0a9a8ffffe77b4dd0a4bfb95851f3b7355c781dd60f8418fc8a65d14907aff47c903a559:000102030405060708090a0b:f03543be18eecd7abed6e7c44896f19e:cb19cdb79d73ccf1b529";
}
