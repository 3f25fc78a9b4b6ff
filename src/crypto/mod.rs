//! Cryptography at rest and key generation: ECIES on secp256k1 in ClawCloud's
//! `ecc:` format, SSH key pairs for VMs, agent wallets.

pub mod ecies;
pub mod ssh;
pub mod wallet;
