//! Agent wallets from `POST /agents/generate-wallet`: a fresh secp256k1 key.

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use zeroize::Zeroizing;

/// A new wallet; the private key is shown to the caller once.
pub struct AgentWallet {
    /// Checksummable address.
    pub address: Address,
    /// `0x` + 64 hex digits. Secret.
    pub private_key: Zeroizing<String>,
}

impl AgentWallet {
    /// A fresh random wallet.
    pub fn generate() -> Self {
        let signer = PrivateKeySigner::random();
        Self {
            address: signer.address(),
            private_key: Zeroizing::new(format!("0x{}", hex::encode(signer.to_bytes()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_controls_the_address() {
        let w = AgentWallet::generate();
        let signer: PrivateKeySigner = w.private_key.parse().expect("key parses");
        assert_eq!(signer.address(), w.address);
        assert_ne!(AgentWallet::generate().address, w.address);
    }
}
