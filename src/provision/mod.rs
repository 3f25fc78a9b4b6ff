//! VM provisioning: a durable queue in Redis fed by indexed `VMPurchased`
//! events ([`queue`]), a worker that creates VMs through a [`Provider`] and a
//! sweeper that terminates expired ones ([`worker`]).
//!
//! Delivery is at-least-once: a job is leased, not removed, while it runs, so a
//! crashed worker's job comes back when the lease ends. Providers therefore
//! make `create` idempotent per token id (the label names the token).

pub mod command;
pub mod dev;
pub mod queue;
pub mod vultr;
pub mod worker;

use alloy::primitives::U256;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ProviderKind};
use crate::{Error, Result};

/// What a provider needs to create one VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProvisionRequest {
    /// NFT token id (decimal).
    pub token_id: String,
    /// Tier 0-7.
    pub tier: u8,
    /// `gcp` (tiers 0-3) or `gpu-external` (tiers 4-7), as ClawCloud names them.
    pub vm_type: String,
    /// Public key to install for `root` (OpenSSH format).
    pub ssh_public_key: String,
    /// Unique label: `chainfront-vm-<token_id>`; providers look it up to stay
    /// idempotent when a job is retried.
    pub label: String,
    /// When the NFT expires (unix seconds).
    pub expires_at: u64,
}

/// A VM as the provider reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Instance {
    /// The provider's id for the VM.
    pub instance_id: String,
    /// SSH host, once known.
    #[serde(default)]
    pub host: Option<String>,
    /// SSH user.
    #[serde(default = "default_username")]
    pub username: String,
    /// Whether it is up and reachable.
    pub ready: bool,
}

fn default_username() -> String {
    "root".into()
}

/// Creates, inspects and deletes VMs. Implementations: [`dev::DevProvider`],
/// [`command::CommandProvider`], [`vultr::VultrProvider`].
pub trait Provider: Send + Sync {
    /// Short name for logs.
    fn name(&self) -> &'static str;
    /// Creates the VM (or finds the one already created for `req.label`).
    fn create<'a>(&'a self, req: &'a ProvisionRequest) -> BoxFuture<'a, Result<Instance>>;
    /// The current state of a created VM.
    fn describe<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<Instance>>;
    /// Deletes the VM; deleting one that is already gone succeeds.
    fn terminate<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// ClawCloud's `type` / `vm_type` of a tier.
pub fn vm_type(tier: u8) -> &'static str {
    if tier <= 3 { "gcp" } else { "gpu-external" }
}

/// The label a VM of `token_id` carries at the provider.
pub fn label(token_id: U256) -> String {
    format!("chainfront-vm-{token_id}")
}

/// The provider the configuration selects.
pub fn from_config(config: &Config) -> Result<Box<dyn Provider>> {
    let p = &config.provisioning;
    Ok(match p.provider {
        ProviderKind::Dev => Box::new(dev::DevProvider),
        ProviderKind::Command => {
            let (program, args) = p.command.split_first().ok_or_else(|| Error::Config {
                key: "provisioning.command".into(),
                message: "must name an executable (and its arguments) when provider = \"command\""
                    .into(),
            })?;
            Box::new(command::CommandProvider::new(
                program.clone(),
                args.to_vec(),
            ))
        }
        ProviderKind::Vultr => {
            let key = config
                .secrets
                .vultr_api_key
                .clone()
                .ok_or_else(|| Error::Config {
                    key: "vultr_api_key".into(),
                    message: "is required when provider = \"vultr\" (set CHAINFRONT_VULTR_API_KEY or CHAINFRONT_VULTR_API_KEY_FILE)".into(),
                })?;
            Box::new(vultr::VultrProvider::new(
                &p.vultr_api_url,
                key,
                p.vultr_region.clone(),
                p.vultr_os_id,
            )?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_map_to_the_documented_vm_types() {
        assert_eq!(vm_type(0), "gcp");
        assert_eq!(vm_type(3), "gcp");
        assert_eq!(vm_type(4), "gpu-external");
        assert_eq!(vm_type(7), "gpu-external");
        assert_eq!(label(U256::from(42)), "chainfront-vm-42");
    }
}
