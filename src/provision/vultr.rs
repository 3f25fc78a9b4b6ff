//! The `vultr` provider: Vultr API v2 for tiers 0-3 (the vCPU/RAM sizes of
//! ClawCloud's table). Idempotent per token: `create` first looks for an
//! instance labelled exactly `chainfront-vm-<token_id>` and reuses it.
//!
//! Instances get cloud-init `user_data` that authorizes the VM's key and
//! turns SSH password login off. A re-key after an NFT transfer
//! ([`Provider::rekey`]) **reinstalls** the instance with new `user_data`
//! naming only the new owner's key (`PATCH /instances/{id}` with
//! `user_data`, then `POST /instances/{id}/reinstall`): Vultr has no call
//! that swaps the key of a running instance, and the seller had root, so a
//! fresh disk is also the only way to be sure they left nothing behind. The
//! new owner gets a clean machine on the same IP; the worker polls until it
//! is running again.

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Instance, Provider, ProvisionRequest, RekeyRequest};
use crate::config::Secret;
use crate::{Error, Result};

/// Vultr plan per tier (tiers 4-7 are GPUs, not sold through Vultr here).
pub const PLANS: [&str; 4] = ["vc2-1c-1gb", "vc2-1c-2gb", "vc2-2c-4gb", "vc2-4c-8gb"];

/// A Vultr API v2 client.
pub struct VultrProvider {
    http: reqwest::Client,
    base: String,
    key: Secret,
    region: String,
    os_id: u32,
    firewall_group: Option<String>,
}

#[derive(Debug, Deserialize)]
struct VultrInstance {
    id: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    main_ip: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    power_status: String,
}

impl From<VultrInstance> for Instance {
    fn from(v: VultrInstance) -> Self {
        let has_ip = !v.main_ip.is_empty() && v.main_ip != "0.0.0.0";
        Instance {
            ready: has_ip && v.status == "active" && v.power_status == "running",
            host: has_ip.then_some(v.main_ip),
            instance_id: v.id,
            username: "root".into(),
        }
    }
}

impl VultrProvider {
    /// A client for `base` (e.g. `https://api.vultr.com/v2`).
    pub fn new(base: &str, key: Secret, region: String, os_id: u32) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Provider(format!("vultr: HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            region,
            os_id,
            firewall_group: None,
        })
    }

    /// Instances join this firewall group (`provisioning.vultr_firewall_group_id`).
    pub fn with_firewall_group(mut self, group: Option<String>) -> Self {
        self.firewall_group = group;
        self
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(self.key.expose());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Provider(format!("vultr {method} {path}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    async fn expect_ok(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, value) = self.send(method.clone(), path, body).await?;
        if status.is_success() {
            return Ok(value);
        }
        let detail = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        Err(Error::Provider(format!(
            "vultr {method} {path}: {status}: {detail}"
        )))
    }

    fn parse<T: for<'de> Deserialize<'de>>(value: Value, what: &str) -> Result<T> {
        serde_json::from_value(value)
            .map_err(|e| Error::Provider(format!("vultr: unexpected {what} answer: {e}")))
    }

    async fn create_inner(&self, req: &ProvisionRequest) -> Result<Instance> {
        let plan = PLANS.get(usize::from(req.tier)).ok_or_else(|| {
            Error::Provider(format!(
                "vultr sells tiers 0-3; tier {} needs another provider",
                req.tier
            ))
        })?;
        #[derive(Deserialize)]
        struct List {
            instances: Vec<VultrInstance>,
        }
        let existing: List = Self::parse(
            self.expect_ok(
                Method::GET,
                &format!("/instances?label={}", req.label),
                None,
            )
            .await?,
            "instance list",
        )?;
        // Only an exact label match is ours: a loose filter must never make
        // token N adopt (and later terminate) another token's instance.
        if let Some(found) = existing
            .instances
            .into_iter()
            .find(|i| i.label == req.label)
        {
            return Ok(found.into());
        }
        #[derive(Deserialize)]
        struct KeyId {
            id: String,
        }
        #[derive(Deserialize)]
        struct SshKey {
            ssh_key: KeyId,
        }
        let key: SshKey = Self::parse(
            self.expect_ok(
                Method::POST,
                "/ssh-keys",
                Some(json!({ "name": req.label, "ssh_key": req.ssh_public_key })),
            )
            .await?,
            "ssh-key",
        )?;
        #[derive(Deserialize)]
        struct One {
            instance: VultrInstance,
        }
        let mut body = json!({
            "region": self.region,
            "plan": plan,
            "os_id": self.os_id,
            "label": req.label,
            "hostname": req.label,
            "sshkey_id": [key.ssh_key.id],
            "user_data": user_data(&req.ssh_public_key),
            "backups": "disabled",
        });
        if let Some(group) = &self.firewall_group {
            body["firewall_group_id"] = Value::String(group.clone());
        }
        let created: One = Self::parse(
            self.expect_ok(Method::POST, "/instances", Some(body))
                .await?,
            "instance",
        )?;
        Ok(created.instance.into())
    }

    async fn describe_inner(&self, id: &str) -> Result<Instance> {
        #[derive(Deserialize)]
        struct One {
            instance: VultrInstance,
        }
        let one: One = Self::parse(
            self.expect_ok(Method::GET, &format!("/instances/{id}"), None)
                .await?,
            "instance",
        )?;
        Ok(one.instance.into())
    }

    async fn rekey_inner(&self, id: &str, req: &RekeyRequest) -> Result<Instance> {
        self.expect_ok(
            Method::PATCH,
            &format!("/instances/{id}"),
            Some(json!({ "user_data": user_data(&req.ssh_public_key) })),
        )
        .await?;
        self.expect_ok(
            Method::POST,
            &format!("/instances/{id}/reinstall"),
            Some(json!({ "hostname": req.label })),
        )
        .await?;
        // Reinstalling: not ready until `describe` says running again.
        let mut instance = self.describe_inner(id).await?;
        instance.ready = false;
        Ok(instance)
    }

    async fn terminate_inner(&self, id: &str) -> Result<()> {
        let path = format!("/instances/{id}");
        let (status, value) = self.send(Method::DELETE, &path, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(Error::Provider(format!(
            "vultr DELETE {path}: {status}: {value}"
        )))
    }
}

impl Provider for VultrProvider {
    fn name(&self) -> &'static str {
        "vultr"
    }

    fn create<'a>(&'a self, req: &'a ProvisionRequest) -> BoxFuture<'a, Result<Instance>> {
        self.create_inner(req).boxed()
    }

    fn describe<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<Instance>> {
        self.describe_inner(instance_id).boxed()
    }

    fn terminate<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<()>> {
        self.terminate_inner(instance_id).boxed()
    }

    fn rekey<'a>(
        &'a self,
        instance_id: &'a str,
        req: &'a RekeyRequest,
    ) -> BoxFuture<'a, Result<Instance>> {
        self.rekey_inner(instance_id, req).boxed()
    }
}

/// Base64 cloud-init config: `key` is root's only authorized key and SSH
/// password login is off.
fn user_data(key: &str) -> String {
    use base64::Engine;
    let config = format!(
        "#cloud-config\nssh_pwauth: false\ndisable_root: false\nssh_deletekeys: true\nruncmd:\n  - [sh, -c, 'mkdir -p /root/.ssh && printf \"%s\\n\" \"$0\" > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys', '{}']\n",
        key.replace('\'', "")
    );
    base64::engine::general_purpose::STANDARD.encode(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_authorizes_only_the_given_key() {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD
            .decode(user_data("ssh-ed25519 AAAAC3 chainfront"))
            .expect("base64");
        let text = String::from_utf8(text).expect("utf8");
        assert!(text.starts_with("#cloud-config\n"));
        assert!(text.contains("ssh_pwauth: false"));
        assert!(text.contains("'ssh-ed25519 AAAAC3 chainfront'"));
        assert!(
            text.contains("> /root/.ssh/authorized_keys"),
            "replaced, not appended"
        );
    }
}
