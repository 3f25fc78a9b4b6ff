//! SSH key pairs for VMs: Ed25519 by default, RSA 4096 where configured (as
//! ClawCloud's document does). The private half is sealed before storage.

use ssh_key::{Algorithm, LineEnding, PrivateKey};
use zeroize::Zeroizing;

use crate::config::SshKeyType;
use crate::{Error, Result};

/// A fresh key pair in OpenSSH encoding.
pub struct SshKeyPair {
    /// `-----BEGIN OPENSSH PRIVATE KEY-----` text. Secret.
    pub private_openssh: Zeroizing<String>,
    /// `ssh-ed25519 AAAA... chainfront` line for `authorized_keys`.
    pub public_openssh: String,
}

/// Generates a key pair of `kind` (RSA 4096 takes seconds: call it off the
/// async runtime).
pub fn generate(kind: SshKeyType) -> Result<SshKeyPair> {
    let mut rng = rand::rngs::OsRng;
    let mut key = match kind {
        SshKeyType::Ed25519 => PrivateKey::random(&mut rng, Algorithm::Ed25519),
        SshKeyType::Rsa4096 => {
            ssh_key::private::RsaKeypair::random(&mut rng, 4096).map(PrivateKey::from)
        }
    }
    .map_err(|e| Error::Crypto(format!("SSH key generation failed: {e}")))?;
    key.set_comment("chainfront");
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::Crypto(format!("SSH key encoding failed: {e}")))?;
    let public_openssh = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::Crypto(format!("SSH key encoding failed: {e}")))?;
    Ok(SshKeyPair {
        private_openssh: Zeroizing::new(private_openssh.to_string()),
        public_openssh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_pairs_round_trip() {
        let pair = generate(SshKeyType::Ed25519).expect("generate");
        let parsed = PrivateKey::from_openssh(pair.private_openssh.as_str()).expect("parses");
        assert_eq!(parsed.algorithm(), Algorithm::Ed25519);
        assert_eq!(
            parsed.public_key().to_openssh().expect("public"),
            pair.public_openssh
        );
        assert!(pair.public_openssh.starts_with("ssh-ed25519 "));
        assert!(pair.public_openssh.ends_with(" chainfront"));
        let other = generate(SshKeyType::Ed25519).expect("generate");
        assert_ne!(other.public_openssh, pair.public_openssh);
    }
}
