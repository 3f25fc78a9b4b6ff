//! ECIES on secp256k1 for encryption at rest (see `docs/encryption.md`).
//!
//! A fresh ephemeral key per message, ECDH with the recipient key (the shared
//! point's x coordinate), HKDF-SHA256 (salt = the ephemeral public key,
//! info = [`INFO`]) to a 32-byte key, AES-256-GCM with a random 12-byte IV.
//! Every part is lower-case hex; the public key is 65-byte uncompressed SEC1.
//!
//! Two encodings:
//! - `ecc:<ephemeralPubKey>:<iv>:<authTag>:<ciphertext>`: ClawCloud's
//!   documented form, no associated data. Used for `?encrypt=owner` answers
//!   and read (never written) at rest for values sealed before key ids.
//! - `ecc:v2:<keyId>:<ephemeralPubKey>:<iv>:<authTag>:<ciphertext>`: what the
//!   node writes at rest. `keyId` names the master key (8 hex digits of the
//!   SHA-256 of its compressed public key), and the AES-GCM associated data
//!   is the value's place (e.g. `cf:{c8453}:p:vm:42#private_key`), so a
//!   sealed value moved to another record no longer opens.
//!
//! The [`Keyring`] holds every configured master key: it opens with any of
//! them and seals with the first (the newest), so keys rotate without
//! downtime. ECDH runs on libsecp256k1 (several times k256's speed, the same
//! bytes: `ecdh_matches_k256` checks it); k256 stays for the fixed test vector.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{PublicKey, SecretKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

use crate::config::Secrets;
use crate::{Error, Result};

/// Prefix of every sealed value.
pub const PREFIX: &str = "ecc:";
/// Prefix of values sealed with a key id and associated data.
pub const PREFIX_V2: &str = "ecc:v2:";
/// HKDF info string: binds keys to this scheme and version.
pub const INFO: &[u8] = b"chainfront/ecies/v1";

fn crypto(m: impl Into<String>) -> Error {
    Error::Crypto(m.into())
}

/// One master key: a secp256k1 secret. Values are sealed to its public key
/// and opened with it.
pub struct MasterKey {
    k256: SecretKey,
    fast: secp256k1::SecretKey,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, <redacted>)", self.id)
    }
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
        let k256 = SecretKey::from_slice(&raw)
            .map_err(|_| crypto("master key is not a valid secp256k1 secret"))?;
        Self::from_k256(k256)
    }

    fn from_k256(k256: SecretKey) -> Result<Self> {
        let fast = secp256k1::SecretKey::from_byte_array(k256.to_bytes().into())
            .map_err(|_| crypto("master key is not a valid secp256k1 secret"))?;
        let compressed = k256.public_key().to_encoded_point(true);
        let id = hex::encode(&Sha256::digest(compressed.as_bytes())[..4]);
        Ok(Self { k256, fast, id })
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        loop {
            if let Ok(k) = Self::from_k256(SecretKey::random(&mut rand::rngs::OsRng)) {
                return k;
            }
        }
    }

    /// The key as hex (for writing a key file); handle as a secret.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.k256.to_bytes()))
    }

    /// The key id written into values sealed with it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key values are sealed to.
    pub fn public_key(&self) -> PublicKey {
        self.k256.public_key()
    }

    /// Seals `plaintext` bound to `aad` (its place in Redis).
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> String {
        let mut iv = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        let ephemeral = random_fast_secret();
        let recipient = to_fast_public(&self.public_key());
        let (epk, body) = seal_parts(&recipient, &ephemeral, iv, plaintext, aad.as_bytes());
        format!("{PREFIX_V2}{}:{epk}:{body}", self.id)
    }

    /// Opens a value sealed to this key: a `ecc:v2:` value bound to `aad`, or
    /// a documented-form `ecc:` value (no associated data).
    pub fn open(&self, stored: &str, aad: &str) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(rest) = stored.strip_prefix(PREFIX_V2) {
            let (_kid, body) = rest
                .split_once(':')
                .ok_or_else(|| crypto("an ecc:v2: value names its key id"))?;
            return open_parts(&self.fast, body, aad.as_bytes());
        }
        let body = stored
            .strip_prefix(PREFIX)
            .ok_or_else(|| crypto("not an ecc: value"))?;
        open_parts(&self.fast, body, b"")
    }
}

/// Every configured master key: the first seals, any opens.
pub struct Keyring {
    keys: Vec<MasterKey>,
    /// Plaintext values (from before encryption existed) are still read.
    allow_plaintext: AtomicBool,
    /// Recently opened values (see [`Keyring::open_string_cached`]).
    opened: RwLock<HashMap<String, Opened>>,
}

/// A remembered opening: where the value was (its associated data), when,
/// and the plaintext.
type Opened = (String, Instant, Zeroizing<String>);

/// How long an opened value is remembered.
const OPENED_TTL: Duration = Duration::from_secs(2);
/// Opened values remembered before the cache is cleared.
const OPENED_MAX: usize = 4_096;

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.id))
            .finish()
    }
}

impl Keyring {
    /// A keyring of `keys`, the first being the one that seals.
    pub fn new(keys: Vec<MasterKey>) -> Result<Self> {
        if keys.is_empty() {
            return Err(crypto("a keyring needs at least one master key"));
        }
        Ok(Self {
            keys,
            allow_plaintext: AtomicBool::new(true),
            opened: RwLock::default(),
        })
    }

    /// One key.
    pub fn single(key: MasterKey) -> Self {
        Self {
            keys: vec![key],
            allow_plaintext: AtomicBool::new(true),
            opened: RwLock::default(),
        }
    }

    /// From hex keys separated by commas or newlines, newest first.
    pub fn from_hex_list(text: &str) -> Result<Self> {
        let keys = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(MasterKey::from_hex)
            .collect::<Result<Vec<_>>>()?;
        Self::new(keys)
    }

    /// The configured master keys (`CHAINFRONT_MASTER_KEY` or `_FILE`: one
    /// key, or several comma- or newline-separated, newest first), if any.
    pub fn from_secrets(secrets: &Secrets) -> Result<Option<Self>> {
        match &secrets.master_key {
            None => Ok(None),
            Some(s) => Self::from_hex_list(s.expose())
                .map(Some)
                .map_err(|e| Error::Config {
                    key: "master_key".into(),
                    message: e.to_string(),
                }),
        }
    }

    /// The key that seals.
    pub fn newest(&self) -> &MasterKey {
        &self.keys[0]
    }

    /// Refuse (`false`) or read (`true`) plaintext values. `keys rotate`
    /// marks a store migrated once everything in it is sealed; the node then
    /// refuses plaintext, so a value written around the encryption cannot be
    /// slipped in.
    pub fn set_allow_plaintext(&self, allow: bool) {
        self.allow_plaintext.store(allow, Ordering::Relaxed);
    }

    /// Seals with the newest key, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> String {
        self.newest().seal(plaintext, aad)
    }

    /// Opens a stored value with whichever configured key sealed it; a value
    /// without the `ecc:` prefix is a plaintext from before encryption
    /// existed, returned as is unless the store was migrated.
    pub fn open(&self, stored: &str, aad: &str) -> Result<Zeroizing<Vec<u8>>> {
        if !is_sealed(stored) {
            if self.allow_plaintext.load(Ordering::Relaxed) {
                return Ok(Zeroizing::new(stored.as_bytes().to_vec()));
            }
            return Err(crypto(
                "a plaintext value in a store whose secrets were all sealed (refused)",
            ));
        }
        if let Some(rest) = stored.strip_prefix(PREFIX_V2) {
            let kid = rest.split(':').next().unwrap_or_default();
            let key = self.keys.iter().find(|k| k.id == kid).ok_or_else(|| {
                crypto(format!(
                    "value sealed with master key {kid}, which is not configured"
                ))
            })?;
            return key.open(stored, aad);
        }
        let mut last = crypto("no master key configured");
        for key in &self.keys {
            match key.open(stored, aad) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// [`Keyring::open`] for UTF-8 values.
    pub fn open_string(&self, stored: &str, aad: &str) -> Result<Zeroizing<String>> {
        let bytes = self.open(stored, aad)?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| crypto("decrypted value is not UTF-8"))
    }

    /// [`Keyring::open_string`], remembering the answer for two seconds.
    ///
    /// For a value that is read again and again (a VM key its owner polls
    /// for), this skips the ECDH, which is most of `/credentials`' CPU. It
    /// changes no decision: the caller still reads the sealed value from
    /// Redis and checks everything on every request, and an entry is found
    /// only for the exact sealed value (and place) that is stored *now*, so an
    /// erased or re-keyed value is never answered from here. The remembered
    /// plaintext is zeroized when dropped; it adds nothing an attacker who can
    /// read this process's memory lacks (the master keys are there too).
    pub fn open_string_cached(&self, stored: &str, aad: &str) -> Result<Zeroizing<String>> {
        {
            let map = self
                .opened
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((place, at, plain)) = map.get(stored)
                && place == aad
                && at.elapsed() < OPENED_TTL
            {
                return Ok(plain.clone());
            }
        }
        let plain = self.open_string(stored, aad)?;
        if is_sealed(stored) {
            let mut map = self
                .opened
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.len() >= OPENED_MAX {
                map.retain(|_, (_, at, _)| at.elapsed() < OPENED_TTL);
                if map.len() >= OPENED_MAX {
                    map.clear();
                }
            }
            map.insert(
                stored.to_owned(),
                (aad.to_owned(), Instant::now(), plain.clone()),
            );
        }
        Ok(plain)
    }

    /// Whether `stored` is already sealed with the newest key (nothing for
    /// `keys rotate` to do).
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX_V2)
            .and_then(|r| r.split(':').next())
            .is_some_and(|kid| kid == self.newest().id)
    }

    /// Re-seals `stored` with the newest key, bound to `aad`.
    pub fn reseal(&self, stored: &str, aad: &str) -> Result<String> {
        let plain = self.open(stored, aad)?;
        Ok(self.seal(&plain, aad))
    }
}

/// Whether a stored value is sealed (rather than legacy plaintext).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

fn to_fast_public(key: &PublicKey) -> secp256k1::PublicKey {
    // A k256 public key is a valid curve point, so libsecp256k1 parses it.
    secp256k1::PublicKey::from_slice(key.to_encoded_point(false).as_bytes())
        .unwrap_or_else(|_| unreachable!("a k256 public key is a valid point"))
}

/// Encrypts `plaintext` to `recipient` in the documented `ecc:` form (no
/// associated data), with a fresh ephemeral key and IV: `?encrypt=owner`.
pub fn encrypt_to(recipient: &PublicKey, plaintext: &[u8]) -> String {
    let mut iv = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let ephemeral = random_fast_secret();
    let (epk, body) = seal_parts(&to_fast_public(recipient), &ephemeral, iv, plaintext, b"");
    format!("{PREFIX}{epk}:{body}")
}

/// A random libsecp256k1 secret (32 random bytes, redrawn in the
/// negligible case they are not a valid scalar).
fn random_fast_secret() -> secp256k1::SecretKey {
    loop {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        if let Ok(k) = secp256k1::SecretKey::from_byte_array(*bytes) {
            return k;
        }
    }
}

fn derive_key(shared_x: &[u8], ephemeral_public: &[u8]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(ephemeral_public), shared_x);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
    let _ = hk.expand(INFO, key.as_mut());
    key
}

/// `(epk hex, "iv:tag:ct")` of `plaintext` sealed to `recipient` with
/// `ephemeral` and `iv` (libsecp256k1 ECDH).
fn seal_parts(
    recipient: &secp256k1::PublicKey,
    ephemeral: &secp256k1::SecretKey,
    iv: [u8; 12],
    plaintext: &[u8],
    aad: &[u8],
) -> (String, String) {
    let shared = Zeroizing::new(secp256k1::ecdh::shared_secret_point(recipient, ephemeral));
    let epk = secp256k1::PublicKey::from_secret_key_global(ephemeral).serialize_uncompressed();
    let key = derive_key(&shared[..32], &epk);
    (hex::encode(epk), aead_seal(&key, iv, plaintext, aad))
}

fn aead_seal(key: &[u8; 32], iv: [u8; 12], plaintext: &[u8], aad: &[u8]) -> String {
    let cipher = Aes256Gcm::new(key.into());
    // AES-GCM encryption only fails for inputs beyond 64 GiB.
    let mut sealed = cipher
        .encrypt(
            &Nonce::from(iv),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default();
    let tag = sealed.split_off(sealed.len().saturating_sub(16));
    format!(
        "{}:{}:{}",
        hex::encode(iv),
        hex::encode(tag),
        hex::encode(sealed)
    )
}

/// Deterministic k256 variant of [`encrypt_to`] (fixed ephemeral key and IV),
/// for test vectors and the cross-check with libsecp256k1.
pub fn encrypt_with(
    recipient: &PublicKey,
    ephemeral: &SecretKey,
    iv: [u8; 12],
    plaintext: &[u8],
) -> String {
    let shared = k256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), recipient.as_affine());
    let epk = ephemeral.public_key().to_encoded_point(false);
    let key = derive_key(shared.raw_secret_bytes(), epk.as_bytes());
    format!(
        "{PREFIX}{}:{}",
        hex::encode(epk.as_bytes()),
        aead_seal(&key, iv, plaintext, b"")
    )
}

/// Opens `epk:iv:tag:ct` with `secret` and `aad`.
fn open_parts(secret: &secp256k1::SecretKey, body: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
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
    // Only 65-byte uncompressed points, as written; libsecp256k1 checks the
    // point is on the curve (no invalid-curve attack; cofactor 1).
    if epk.len() != 65 {
        return Err(crypto("ecc: ephemeral public key is not a secp256k1 point"));
    }
    let ephemeral = secp256k1::PublicKey::from_slice(&epk)
        .map_err(|_| crypto("ecc: ephemeral public key is not a secp256k1 point"))?;
    let shared = Zeroizing::new(secp256k1::ecdh::shared_secret_point(&ephemeral, secret));
    let key = derive_key(&shared[..32], &epk);
    let cipher = Aes256Gcm::new(key.as_ref().into());
    ct.extend_from_slice(&tag);
    cipher
        .decrypt(&Nonce::from(iv), Payload { msg: &ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| crypto("ecc: decryption failed (wrong key, wrong record or tampered value)"))
}

/// Opens a documented-form `ecc:` value with a k256 secret (the client side
/// of `?encrypt=owner`, and the cross-check).
pub fn decrypt_k256(secret: &SecretKey, stored: &str) -> Result<Zeroizing<Vec<u8>>> {
    let body = stored
        .strip_prefix(PREFIX)
        .ok_or_else(|| crypto("not an ecc: value"))?;
    let fast = secp256k1::SecretKey::from_byte_array(secret.to_bytes().into())
        .map_err(|_| crypto("not a secp256k1 secret"))?;
    open_parts(&fast, body, b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPIENT: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const EPHEMERAL: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const AAD: &str = "cf:{c31337}:p:vm:42#private_key";

    fn key(h: &str) -> MasterKey {
        MasterKey::from_hex(h).expect("key")
    }

    #[test]
    fn round_trips_any_size() {
        let k = Keyring::single(MasterKey::generate());
        for n in [0usize, 1, 15, 16, 17, 1000] {
            let msg: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let sealed = k.seal(&msg, AAD);
            assert!(sealed.starts_with(PREFIX_V2) && is_sealed(&sealed));
            assert!(k.is_current(&sealed));
            assert_eq!(
                k.open(&sealed, AAD).expect("open").as_slice(),
                msg.as_slice()
            );
        }
        assert_ne!(
            k.seal(b"x", AAD),
            k.seal(b"x", AAD),
            "fresh ephemeral key and iv"
        );
    }

    #[test]
    fn a_sealed_value_is_bound_to_its_record() {
        let k = Keyring::single(MasterKey::generate());
        let sealed = k.seal(b"vm 42's key", AAD);
        assert!(k.open(&sealed, "cf:{c31337}:p:vm:43#private_key").is_err());
        assert!(k.open(&sealed, "cf:{node}:wallet:0xab").is_err());
        assert!(k.open(&sealed, AAD).is_ok());
    }

    #[test]
    fn tampering_with_any_part_fails() {
        let k = Keyring::single(MasterKey::generate());
        let sealed = k.seal(b"ssh private key", AAD);
        let body = sealed.strip_prefix(PREFIX_V2).expect("prefix");
        for part in 1..5 {
            let mut parts: Vec<String> = body.split(':').map(str::to_owned).collect();
            let p = &mut parts[part];
            let at = if part == 1 { 40 } else { p.len() - 1 };
            let c = p.as_bytes()[at];
            let flipped = if c == b'0' { '1' } else { '0' };
            p.replace_range(at..=at, &flipped.to_string());
            let tampered = format!("{PREFIX_V2}{}", parts.join(":"));
            assert!(
                k.open(&tampered, AAD).is_err(),
                "part {part} tampered yet opened"
            );
        }
    }

    #[test]
    fn the_keyring_opens_with_any_key_and_seals_with_the_newest() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let (old_hex, new_hex) = (old.to_hex(), new.to_hex());
        let before = Keyring::single(old);
        let sealed_old = before.seal(b"v", AAD);
        let legacy_form = encrypt_to(&before.newest().public_key(), b"w");
        let ring = Keyring::from_hex_list(&format!("{},{}", new_hex.as_str(), old_hex.as_str()))
            .expect("ring");
        assert_eq!(
            ring.open(&sealed_old, AAD)
                .expect("old key opens")
                .as_slice(),
            b"v"
        );
        assert_eq!(
            ring.open(&legacy_form, "ignored")
                .expect("4-part form")
                .as_slice(),
            b"w"
        );
        assert!(!ring.is_current(&sealed_old));
        let resealed = ring.reseal(&sealed_old, AAD).expect("reseal");
        assert!(ring.is_current(&resealed));
        let only_new = Keyring::from_hex_list(new_hex.as_str()).expect("ring");
        assert_eq!(
            only_new.open(&resealed, AAD).expect("new opens").as_slice(),
            b"v"
        );
        let err = only_new.open(&sealed_old, AAD).expect_err("old key gone");
        assert!(err.to_string().contains("not configured"), "{err}");
    }

    #[test]
    fn wrong_key_and_malformed_values_are_errors() {
        let sealed = Keyring::single(MasterKey::generate()).seal(b"secret", AAD);
        let other = Keyring::single(MasterKey::generate());
        assert!(other.open(&sealed, AAD).is_err());
        let four = encrypt_to(&MasterKey::generate().public_key(), b"secret");
        assert!(other.open(&four, "").is_err());
        for bad in [
            "ecc:",
            "ecc:00:00:00",
            "ecc:zz:00:00:00:00",
            "ecc:04:000000000000000000000000:00000000000000000000000000000000:00",
            &format!("ecc:{}:00:{}:00", "04".repeat(33), "00".repeat(16)),
            "ecc:a:b:c:d:e",
            "ecc:v2:",
            "ecc:v2:deadbeef:00:00:00:00",
        ] {
            assert!(other.open(bad, AAD).is_err(), "{bad}");
        }
        assert!(MasterKey::from_hex("abc").is_err());
        assert!(
            MasterKey::from_hex(&"00".repeat(32)).is_err(),
            "zero is not a key"
        );
        assert!(Keyring::from_hex_list(" , ").is_err());
    }

    #[test]
    fn cached_openings_answer_only_the_same_value_in_the_same_place() {
        let k = Keyring::single(MasterKey::generate());
        let sealed = k.seal(b"key A", AAD);
        assert_eq!(
            k.open_string_cached(&sealed, AAD).expect("open").as_str(),
            "key A"
        );
        assert_eq!(
            k.open_string_cached(&sealed, AAD).expect("cached").as_str(),
            "key A"
        );
        assert!(
            k.open_string_cached(&sealed, "cf:{c31337}:p:vm:43#private_key")
                .is_err()
        );
        let other = k.seal(b"key B", AAD);
        assert_eq!(
            k.open_string_cached(&other, AAD).expect("open").as_str(),
            "key B"
        );
        assert!(k.open_string_cached("ecc:v2:00:00", AAD).is_err());
    }

    #[test]
    fn plaintext_is_read_until_the_store_is_migrated() {
        let k = Keyring::single(MasterKey::generate());
        assert_eq!(
            k.open_string("-----BEGIN OPENSSH PRIVATE KEY-----", AAD)
                .expect("legacy")
                .as_str(),
            "-----BEGIN OPENSSH PRIVATE KEY-----"
        );
        k.set_allow_plaintext(false);
        assert!(k.open("-----BEGIN OPENSSH PRIVATE KEY-----", AAD).is_err());
    }

    /// libsecp256k1's ECDH gives the same shared x coordinate as k256's, so
    /// values sealed by either open with the other.
    #[test]
    fn ecdh_matches_k256() {
        for _ in 0..64 {
            let a = SecretKey::random(&mut rand::rngs::OsRng);
            let b = SecretKey::random(&mut rand::rngs::OsRng);
            let slow =
                k256::ecdh::diffie_hellman(a.to_nonzero_scalar(), b.public_key().as_affine());
            let fast_a = secp256k1::SecretKey::from_byte_array(a.to_bytes().into()).expect("sk");
            let fast =
                secp256k1::ecdh::shared_secret_point(&to_fast_public(&b.public_key()), &fast_a);
            assert_eq!(&fast[..32], &slow.raw_secret_bytes()[..]);
        }
        // A value sealed with k256 opens with libsecp256k1, and back.
        let recipient = key(RECIPIENT);
        let eph = SecretKey::random(&mut rand::rngs::OsRng);
        let k256_sealed = encrypt_with(&recipient.public_key(), &eph, [7; 12], b"cross");
        assert_eq!(
            recipient.open(&k256_sealed, "").expect("opens").as_slice(),
            b"cross"
        );
        let fast_sealed = encrypt_to(&recipient.public_key(), b"back");
        let body = fast_sealed.strip_prefix(PREFIX).expect("prefix");
        let parts: Vec<&str> = body.split(':').collect();
        let epk = PublicKey::from_sec1_bytes(&hex::decode(parts[0]).expect("hex")).expect("point");
        let shared = k256::ecdh::diffie_hellman(
            SecretKey::from_slice(&hex::decode(RECIPIENT).expect("hex"))
                .expect("sk")
                .to_nonzero_scalar(),
            epk.as_affine(),
        );
        let aes = derive_key(
            shared.raw_secret_bytes(),
            &hex::decode(parts[0]).expect("hex"),
        );
        let mut ct = hex::decode(parts[3]).expect("hex");
        ct.extend(hex::decode(parts[2]).expect("hex"));
        let iv: [u8; 12] = hex::decode(parts[1]).expect("hex").try_into().expect("iv");
        let plain = Aes256Gcm::new(aes.as_ref().into())
            .decrypt(&Nonce::from(iv), Payload { msg: &ct, aad: b"" })
            .expect("k256 opens a libsecp256k1 value");
        assert_eq!(plain, b"back");
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
            recipient.open(VECTOR, "").expect("opens").as_slice(),
            b"chainfront"
        );
        let secret = SecretKey::from_slice(&hex::decode(RECIPIENT).expect("hex")).expect("sk");
        assert_eq!(
            decrypt_k256(&secret, VECTOR).expect("opens").as_slice(),
            b"chainfront"
        );
    }

    const VECTOR: &str = "ecc:044646ae5047316b4230d0086c8acec687f00b1cd9d1dc634f6cb358ac0a9a8ffffe77b4dd0a4bfb95851f3b7355c781dd60f8418fc8a65d14907aff47c903a559:000102030405060708090a0b:f03543be18eecd7abed6e7c44896f19e:cb19cdb79d73ccf1b529";
}
