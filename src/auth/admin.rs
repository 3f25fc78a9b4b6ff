//! The admin API key. Only SHA-256 hashes of keys are configured
//! (`CHAINFRONT_ADMIN_KEY_HASH`, or a file named by `..._FILE`), several at
//! once (comma- or newline-separated) so a new key can be added before the old
//! one is removed. A file is re-read when it changes: keys rotate without a
//! restart, and emptying or deleting it revokes every key at once (a file
//! that does not parse keeps the previous keys, so a half-written file does
//! not lock operators out). Presented keys are hashed and compared in
//! constant time.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secrets;

/// Parses the configured hash list; the error names what is wrong.
pub fn parse_hashes(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut out = Vec::new();
    for part in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let h = part.trim_start_matches("0x");
        let bytes = hex::decode(h)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                "must be hex SHA-256 hashes of admin API keys (64 hex digits each, comma- or newline-separated)"
                    .to_owned()
            })?;
        out.push(bytes);
    }
    if out.is_empty() {
        return Err("is empty; give at least one hex SHA-256 hash".into());
    }
    Ok(out)
}

/// The accepted admin keys.
pub struct AdminKeys {
    hashes: Mutex<(Option<SystemTime>, Vec<[u8; 32]>)>,
    file: Option<PathBuf>,
}

/// Why an admin request was refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminAuthError {
    /// No hash configured.
    #[error("admin API is disabled: no CHAINFRONT_ADMIN_KEY_HASH is configured")]
    Disabled,
    /// No key in the request.
    #[error("missing admin key (X-Admin-Key header)")]
    Missing,
    /// Not one of the configured keys.
    #[error("invalid admin key")]
    Invalid,
}

impl AdminKeys {
    /// From the node's secrets.
    pub fn from_secrets(secrets: &Secrets) -> Self {
        let hashes = secrets
            .admin_key_hash
            .as_ref()
            .and_then(|h| parse_hashes(h.expose()).ok())
            .unwrap_or_default();
        let mtime = secrets
            .admin_key_hash_file
            .as_ref()
            .and_then(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
        Self {
            hashes: Mutex::new((mtime, hashes)),
            file: secrets.admin_key_hash_file.clone(),
        }
    }

    /// The current hashes, re-reading the file if it changed.
    fn current(&self) -> Vec<[u8; 32]> {
        let mut guard = self
            .hashes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(file) = &self.file {
            let mtime = std::fs::metadata(file).and_then(|m| m.modified()).ok();
            if mtime != guard.0 {
                match std::fs::read_to_string(file) {
                    Ok(text) => match parse_hashes(&text) {
                        Ok(h) => *guard = (mtime, h),
                        // Emptied on purpose (to kill a leaked key): the
                        // admin API is off until a key is added again.
                        Err(_) if text.trim().is_empty() => {
                            tracing::warn!(target: "chainfront::security", event = "admin_keys_removed", "admin key hash file is empty: admin API disabled");
                            *guard = (mtime, Vec::new());
                        }
                        // A half-written or broken file keeps the previous keys.
                        Err(_) => {
                            tracing::warn!(target: "chainfront::security", event = "admin_keys_unreadable", "admin key hash file does not parse; keeping the previous keys")
                        }
                    },
                    // Deleted: likewise off.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        tracing::warn!(target: "chainfront::security", event = "admin_keys_removed", "admin key hash file is gone: admin API disabled");
                        *guard = (mtime, Vec::new());
                    }
                    Err(_) => {
                        tracing::warn!(target: "chainfront::security", event = "admin_keys_unreadable", "admin key hash file unreadable; keeping the previous keys")
                    }
                }
            }
        }
        guard.1.clone()
    }

    /// Checks the key in `X-Admin-Key` (or `Authorization: Bearer`).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AdminAuthError> {
        let hashes = self.current();
        if hashes.is_empty() {
            return Err(AdminAuthError::Disabled);
        }
        let presented = headers
            .get("x-admin-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AdminAuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare against every hash, without stopping early.
        let mut ok = subtle::Choice::from(0u8);
        for h in &hashes {
            ok |= h.ct_eq(&digest);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(AdminAuthError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    #[test]
    fn keys_check_and_rotate_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("admin.sha256");
        std::fs::write(&file, hash("key-1")).expect("write");
        let secrets = Secrets {
            admin_key_hash: Some(crate::config::Secret::new(hash("key-1"))),
            admin_key_hash_file: Some(file.clone()),
            ..Secrets::default()
        };
        let keys = AdminKeys::from_secrets(&secrets);
        let with = |k: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-admin-key", k.parse().expect("header"));
            h
        };
        assert_eq!(keys.check(&with("key-1")), Ok(()));
        assert_eq!(keys.check(&with("key-2")), Err(AdminAuthError::Invalid));
        assert_eq!(keys.check(&HeaderMap::new()), Err(AdminAuthError::Missing));
        // Roll over: both, then only the new one. The mtime must change.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, format!("{}\n{}\n", hash("key-1"), hash("key-2"))).expect("write");
        assert_eq!(keys.check(&with("key-2")), Ok(()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, hash("key-2")).expect("write");
        assert_eq!(keys.check(&with("key-1")), Err(AdminAuthError::Invalid));
        assert_eq!(keys.check(&with("key-2")), Ok(()));
        // A broken file keeps the keys; an emptied or deleted one revokes them.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, "not-a-hash").expect("write");
        assert_eq!(keys.check(&with("key-2")), Ok(()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, "\n").expect("write");
        assert_eq!(keys.check(&with("key-2")), Err(AdminAuthError::Disabled));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, hash("key-2")).expect("write");
        assert_eq!(keys.check(&with("key-2")), Ok(()));
        std::fs::remove_file(&file).expect("rm");
        assert_eq!(keys.check(&with("key-2")), Err(AdminAuthError::Disabled));
        let none = AdminKeys::from_secrets(&Secrets::default());
        assert_eq!(none.check(&with("key-1")), Err(AdminAuthError::Disabled));
        assert!(parse_hashes("abc").is_err());
    }
}
