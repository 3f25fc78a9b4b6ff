//! The provisioning worker and the expiry sweeper, one loop per node.
//!
//! Each pass: reconcile tracked VMs with the index (a transfer schedules a
//! re-key, a purchase reorged away tears its VM down), enqueue VMs the
//! indexer added, lease due jobs and run them, then terminate VMs whose NFT
//! expired. A job generates the VM's SSH key pair first and stores the
//! private key sealed (so a retry reuses the same key), then asks the
//! provider to create the VM (or, once an instance id is recorded, how it is
//! doing). A re-key job does the same with a pending key pair and
//! `Provider::rekey`, and puts the new key in force only once the provider
//! has it. Failures are retried with the one retry policy's backoff up to
//! `provisioning.max_attempts`, then recorded as failed for an operator.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::U256;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::ChainKeys;
use chainfront_indexer::retry::RetryPolicy;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::queue::{Queue, Record, Status};
use super::{
    Instance, Provider, ProvisionRequest, RekeyRequest, label, validate_instance, vm_type,
};
use crate::config::ProvisioningConfig;
use crate::crypto::ecies::Keyring;
use crate::crypto::ssh;
use crate::{Error, Result};

/// How long a leased job stays invisible to other workers.
const LEASE_MS: u64 = 120_000;
/// Jobs leased per pass.
const BATCH: usize = 16;
/// How soon a created-but-not-ready VM is looked at again.
const NOT_READY_DELAY_MS: u64 = 5_000;

/// Runs provisioning for one chain.
pub struct Worker {
    queue: Queue,
    redis: RedisConn,
    provider: Arc<dyn Provider>,
    master: Arc<Keyring>,
    cfg: ProvisioningConfig,
}

/// The associated data a VM's sealed private key is bound to: its record's
/// key and field, so a sealed key moved to another record does not open.
pub fn key_aad(keys: &ChainKeys, id: U256) -> String {
    format!("{}#private_key", keys.provision(id))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Worker {
    /// A worker for the chain of `keys`.
    pub fn new(
        redis: RedisConn,
        keys: ChainKeys,
        provider: Arc<dyn Provider>,
        master: Arc<Keyring>,
        cfg: ProvisioningConfig,
    ) -> Self {
        Self {
            queue: Queue::new(redis.clone(), keys),
            redis,
            provider,
            master,
            cfg,
        }
    }

    /// The queue this worker drains.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Runs passes until `shutdown`. Errors of one pass are logged and the
    /// next pass tries again.
    pub async fn run(&self, shutdown: CancellationToken) {
        let interval = Duration::from_millis(self.cfg.poll_interval_ms.max(10));
        loop {
            if let Err(e) = self.pass().await {
                warn!(target: "chainfront::provision", error = %e, "provisioning pass failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass: enqueue, provision what is due, sweep what expired.
    pub async fn pass(&self) -> Result<()> {
        self.pass_at(now_ms()).await
    }

    /// [`Worker::pass`] as if the time were `now` (unix ms) for due jobs and
    /// expiry; lets tests and chains with warped time drive the sweeper.
    pub async fn pass_at(&self, now: u64) -> Result<()> {
        self.reconcile(now).await?;
        for id in self.queue.enqueue_new(now).await? {
            info!(target: "chainfront::provision", token_id = %id, "VM purchase queued for provisioning");
        }
        for id in self.queue.lease(now, LEASE_MS, BATCH).await? {
            self.job(id, now).await?;
        }
        self.sweep(now / 1000).await
    }

    async fn vm(&self, id: U256) -> Result<HashMap<String, String>> {
        let mut c = self.redis.clone();
        Ok(c.hgetall(self.queue.keys().vm(id)).await?)
    }

    /// Compares every tracked VM with the index: a purchase reorged away
    /// (or replaced by another purchase of the same token id) tears its VM
    /// down; a new owner schedules a re-key. Records from before these fields
    /// existed adopt the indexed purchase and owner.
    async fn reconcile(&self, now: u64) -> Result<()> {
        for (id, vm, rec) in self.queue.tracked().await? {
            let purchase = vm.get("purchase_tx").cloned();
            let owner = vm.get("owner").cloned();
            if vm.is_empty()
                || rec
                    .purchase_tx
                    .as_ref()
                    .is_some_and(|tx| Some(tx) != purchase.as_ref())
            {
                self.tear_down(id, &rec, "its purchase is no longer on the chain")
                    .await?;
                continue;
            }
            if rec.status() != Status::Running {
                continue;
            }
            let mut adopt = Vec::new();
            if rec.purchase_tx.is_none()
                && let Some(tx) = &purchase
            {
                adopt.push(("purchase_tx", tx.clone()));
            }
            match (&rec.key_owner, &owner) {
                (None, Some(o)) => adopt.push(("key_owner", o.clone())),
                (Some(k), Some(o)) if k != o => {
                    // Erase the old key at once: from now on nobody is served
                    // it, and the new owner waits (202) for their own.
                    self.queue
                        .update(
                            id,
                            &[
                                ("status", Status::Rekeying.as_str().into()),
                                ("rekey_for", o.clone()),
                                ("attempts", "0".into()),
                            ],
                        )
                        .await?;
                    self.queue.clear(id, &["private_key"]).await?;
                    self.queue.requeue(id, now).await?;
                    info!(target: "chainfront::provision", token_id = %id, "VM changed hands: re-keying");
                }
                _ => {}
            }
            if !adopt.is_empty() {
                self.queue.update(id, &adopt).await?;
            }
        }
        Ok(())
    }

    /// Terminates the VM of a record whose purchase is gone and forgets the
    /// record, so a later purchase of the same token id starts afresh.
    async fn tear_down(&self, id: U256, rec: &Record, why: &str) -> Result<()> {
        if let Some(instance) = &rec.instance_id
            && let Err(e) = self.provider.terminate(instance).await
        {
            warn!(target: "chainfront::provision", token_id = %id, error = %e, "terminating a reorged-away VM failed; will retry");
            return Ok(());
        }
        self.queue.forget(id).await?;
        info!(target: "chainfront::provision", token_id = %id, reason = why, "VM torn down");
        Ok(())
    }

    /// Runs one leased job; provider failures are recorded, not returned.
    async fn job(&self, id: U256, now: u64) -> Result<()> {
        let vm = self.vm(id).await?;
        let rec = self.queue.record(id).await?.unwrap_or_default();
        let purchase = vm.get("purchase_tx").cloned();
        if vm.is_empty()
            || rec
                .purchase_tx
                .as_ref()
                .is_some_and(|tx| Some(tx) != purchase.as_ref())
        {
            // The purchase was reorged away (perhaps re-mined for someone
            // else) before or while we got to it.
            return self
                .tear_down(id, &rec, "its purchase is no longer on the chain")
                .await;
        }
        if rec.purchase_tx.is_none()
            && let Some(tx) = &purchase
        {
            self.queue
                .update(id, &[("purchase_tx", tx.clone())])
                .await?;
        }
        let field = |k: &str| vm.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (tier, expires_at) = (field("tier") as u8, field("expires_at"));
        if expires_at <= now / 1000 {
            self.queue
                .update(id, &[("status", Status::Expired.as_str().into())])
                .await?;
            return self.queue.done(id).await;
        }
        if rec.status() == Status::Rekeying {
            return match self.rekey(id, &rec).await {
                Ok(true) => self.queue.done(id).await,
                Ok(false) => self.queue.requeue(id, now_ms() + NOT_READY_DELAY_MS).await,
                Err(e) => self.failed_attempt(id, &e.to_string()).await,
            };
        }
        let owner = vm.get("owner").cloned().unwrap_or_default();
        match self.attempt(id, tier, expires_at, &owner).await {
            Ok(instance) if instance.ready => {
                if let Err(e) = validate_instance(&instance) {
                    return self.failed_attempt(id, &e.to_string()).await;
                }
                let mut fields = vec![
                    ("status", Status::Running.as_str().to_owned()),
                    ("instance_id", instance.instance_id.clone()),
                    ("username", instance.username.clone()),
                    ("vm_type", vm_type(tier).to_owned()),
                    ("provider", self.provider.name().to_owned()),
                ];
                if let Some(h) = &instance.host {
                    fields.push(("host", h.clone()));
                }
                self.queue.update(id, &fields).await?;
                self.queue.track_expiry(id, expires_at).await?;
                self.queue.done(id).await?;
                info!(target: "chainfront::provision", token_id = %id, provider = self.provider.name(), instance = %instance.instance_id, "VM running");
                Ok(())
            }
            Ok(instance) => {
                self.queue
                    .update(
                        id,
                        &[
                            ("status", Status::Provisioning.as_str().into()),
                            ("instance_id", instance.instance_id),
                        ],
                    )
                    .await?;
                self.queue.requeue(id, now_ms() + NOT_READY_DELAY_MS).await
            }
            Err(e) => self.failed_attempt(id, &e.to_string()).await,
        }
    }

    /// One step of a re-key: a pending key pair (kept across retries), the
    /// provider told once, then — when the VM is ready — the new key put in
    /// force for the new owner. `Ok(true)` when done.
    async fn rekey(&self, id: U256, rec: &Record) -> Result<bool> {
        let instance_id = rec
            .instance_id
            .clone()
            .ok_or_else(|| Error::Internal(format!("VM #{id} is re-keying without an instance")))?;
        let aad = key_aad(self.queue.keys(), id);
        let (sealed, public) = match (&rec.pending_private_key, &rec.pending_public_key) {
            (Some(s), Some(p)) => (s.clone(), p.clone()),
            _ => {
                let pair = self.generate_pair().await?;
                let sealed = self.master.seal(pair.private_openssh.as_bytes(), &aad);
                self.queue
                    .update(
                        id,
                        &[
                            ("pending_private_key", sealed.clone()),
                            ("pending_public_key", pair.public_openssh.clone()),
                        ],
                    )
                    .await?;
                (sealed, pair.public_openssh)
            }
        };
        let instance = if rec.rekey_requested {
            self.provider.describe(&instance_id).await?
        } else {
            let req = RekeyRequest {
                token_id: id.to_string(),
                label: label(id),
                ssh_public_key: public.clone(),
                previous_public_key: rec.public_key.clone(),
            };
            let instance = self.provider.rekey(&instance_id, &req).await?;
            self.queue
                .update(id, &[("rekey_requested", "1".into())])
                .await?;
            instance
        };
        if !instance.ready {
            return Ok(false);
        }
        validate_instance(&instance)?;
        let mut fields = vec![
            ("private_key", sealed),
            ("public_key", public),
            ("key_owner", rec.rekey_for.clone().unwrap_or_default()),
            ("key_delivered", "0".to_owned()),
            ("status", Status::Running.as_str().to_owned()),
            ("username", instance.username.clone()),
        ];
        if let Some(h) = &instance.host {
            fields.push(("host", h.clone()));
        }
        self.queue.update(id, &fields).await?;
        self.queue
            .clear(
                id,
                &[
                    "pending_private_key",
                    "pending_public_key",
                    "rekey_requested",
                    "rekey_for",
                ],
            )
            .await?;
        info!(target: "chainfront::provision", token_id = %id, "VM re-keyed for its new owner");
        Ok(true)
    }

    async fn generate_pair(&self) -> Result<ssh::SshKeyPair> {
        let kind = self.cfg.ssh_key_type;
        tokio::task::spawn_blocking(move || ssh::generate(kind))
            .await
            .map_err(|e| Error::Internal(format!("key generation task: {e}")))?
    }

    async fn attempt(&self, id: U256, tier: u8, expires_at: u64, owner: &str) -> Result<Instance> {
        let record = self.queue.record(id).await?.unwrap_or_default();
        if let Some(instance) = &record.instance_id {
            return self.provider.describe(instance).await;
        }
        let public_key = match &record.public_key {
            Some(k) => k.clone(),
            None => {
                let pair = self.generate_pair().await?;
                let sealed = self.master.seal(
                    pair.private_openssh.as_bytes(),
                    &key_aad(self.queue.keys(), id),
                );
                self.queue
                    .update(
                        id,
                        &[
                            ("private_key", sealed),
                            ("public_key", pair.public_openssh.clone()),
                            ("key_owner", owner.to_owned()),
                            ("status", Status::Provisioning.as_str().into()),
                        ],
                    )
                    .await?;
                pair.public_openssh
            }
        };
        let req = ProvisionRequest {
            token_id: id.to_string(),
            tier,
            vm_type: vm_type(tier).into(),
            ssh_public_key: public_key,
            label: label(id),
            expires_at,
        };
        let instance = self.provider.create(&req).await?;
        // Recorded at once: a retry asks about this instance instead of
        // creating a second one.
        self.queue
            .update(id, &[("instance_id", instance.instance_id.clone())])
            .await?;
        Ok(instance)
    }

    async fn failed_attempt(&self, id: U256, error: &str) -> Result<()> {
        let attempts = self.queue.count_attempt(id, error).await?;
        if attempts >= self.cfg.max_attempts {
            warn!(target: "chainfront::provision", token_id = %id, attempts, error, "provisioning failed; giving up until an operator retries");
            return self.queue.fail(id, error).await;
        }
        let delay = self
            .retry_policy()
            .delays()
            .nth(attempts.saturating_sub(1) as usize)
            .unwrap_or(Duration::from_millis(self.cfg.retry_base_ms));
        warn!(target: "chainfront::provision", token_id = %id, attempts, retry_in_ms = delay.as_millis() as u64, error, "provisioning attempt failed; will retry");
        self.queue
            .requeue(id, now_ms() + delay.as_millis() as u64)
            .await
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(self.cfg.retry_base_ms),
            max_delay: Duration::from_secs(600),
            max_retries: self.cfg.max_attempts as usize,
        }
    }

    /// Terminates VMs whose NFT expired (unless it was extended meanwhile).
    async fn sweep(&self, now: u64) -> Result<()> {
        for id in self.queue.expired(now, BATCH).await? {
            let vm = self.vm(id).await?;
            let expires_at = vm
                .get("expires_at")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if !vm.is_empty() && expires_at > now {
                // Extended: track the new expiry instead.
                self.queue.track_expiry(id, expires_at).await?;
                continue;
            }
            let record = self.queue.record(id).await?.unwrap_or_default();
            if let Some(instance) = &record.instance_id
                && let Err(e) = self.provider.terminate(instance).await
            {
                warn!(target: "chainfront::provision", token_id = %id, error = %e, "terminating an expired VM failed; will retry");
                continue;
            }
            let status = if vm.is_empty() {
                Status::Terminated
            } else {
                Status::Expired
            };
            self.queue
                .update(id, &[("status", status.as_str().into())])
                .await?;
            // Nothing left to log in to: the keys go too.
            self.queue
                .clear(id, &["private_key", "pending_private_key"])
                .await?;
            self.queue.untrack_expiry(id).await?;
            info!(target: "chainfront::provision", token_id = %id, "expired VM terminated");
        }
        Ok(())
    }
}
