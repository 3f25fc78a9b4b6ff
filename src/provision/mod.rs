//! VM provisioning: a durable queue in Redis fed by indexed `VMPurchased`
//! events ([`queue`]), a worker that creates VMs through a [`Provider`] and a
//! sweeper that terminates expired ones ([`worker`]).
//!
//! Delivery is at-least-once: a job is leased, not removed, while it runs, so a
//! crashed worker's job comes back when the lease ends. Providers therefore
//! make `create` idempotent per token id (the label names the token).
//!
//! A VM's SSH key belongs to the owner it was made for (`key_owner` in the
//! record). When an indexed `Transfer` gives a running VM to someone else,
//! the worker re-keys it: a new key pair, the provider replaces the VM's
//! authorized key ([`Provider::rekey`]), the old sealed key is erased at once,
//! and `/credentials` answers 202 to the new owner until the new key is in
//! place. A record also remembers the purchase transaction it was made for,
//! so a token id whose purchase was reorged out and re-mined for another
//! buyer never inherits the old VM.

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

/// What a provider needs to replace a VM's authorized key after a transfer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RekeyRequest {
    /// NFT token id (decimal).
    pub token_id: String,
    /// The VM's label (`chainfront-vm-<token_id>`).
    pub label: String,
    /// The new owner's public key (OpenSSH): the only key to authorize.
    pub ssh_public_key: String,
    /// The key being replaced (OpenSSH), to remove.
    pub previous_public_key: Option<String>,
}

/// Checks what a provider says about where to log in before it is stored or
/// shown in `instructions` (a shell line agents run): the host is an IP
/// address or a DNS name, the user a plain Unix name.
pub fn validate_instance(instance: &Instance) -> Result<()> {
    if let Some(host) = &instance.host
        && !valid_host(host)
    {
        return Err(Error::Provider(
            "provider returned a host that is neither an IP address nor a DNS name".into(),
        ));
    }
    if !valid_username(&instance.username) {
        return Err(Error::Provider(
            "provider returned a username that is not [a-z_][a-z0-9_-]{0,31}".into(),
        ));
    }
    Ok(())
}

fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    host.len() <= 253
        && !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_username(user: &str) -> bool {
    let mut bytes = user.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && user.len() <= 32
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
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
    /// Makes `req.ssh_public_key` the VM's only authorized key (the previous
    /// owner's key no longer opens it). Idempotent: a retried call with the
    /// same request must not fail because the first one worked. Returns the
    /// instance; `ready: false` while the provider is still at it (the
    /// worker then polls `describe`).
    fn rekey<'a>(
        &'a self,
        instance_id: &'a str,
        req: &'a RekeyRequest,
    ) -> BoxFuture<'a, Result<Instance>>;
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
        ProviderKind::Dev => Box::new(dev::DevProvider::default()),
        ProviderKind::Command => {
            let (program, args) = p.command.split_first().ok_or_else(|| Error::Config {
                key: "provisioning.command".into(),
                message: "must name an executable (and its arguments) when provider = \"command\""
                    .into(),
            })?;
            Box::new(
                command::CommandProvider::new(program.clone(), args.to_vec())
                    .with_env(p.command_env.clone()),
            )
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
            Box::new(
                vultr::VultrProvider::new(
                    &p.vultr_api_url,
                    key,
                    p.vultr_region.clone(),
                    p.vultr_os_id,
                )?
                .with_firewall_group(p.vultr_firewall_group_id.clone()),
            )
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

    #[test]
    fn provider_hosts_and_users_are_validated() {
        let ok = |host: &str, user: &str| {
            validate_instance(&Instance {
                instance_id: "i".into(),
                host: Some(host.into()),
                username: user.into(),
                ready: true,
            })
            .is_ok()
        };
        assert!(ok("203.0.113.9", "root"));
        assert!(ok("2001:db8::1", "ubuntu"));
        assert!(ok("vm-42.example.com", "_svc-1"));
        for (host, user) in [
            ("1.2.3.4; rm -rf ~", "root"),
            ("$(curl evil)", "root"),
            ("host name", "root"),
            ("-oProxyCommand=x", "root"),
            ("ok.example", "root; id"),
            ("ok.example", "Root"),
            ("ok.example", ""),
            ("ok.example", &"a".repeat(33)),
        ] {
            assert!(!ok(host, user), "{host} / {user}");
        }
    }
}
