//! The provisioning queue and records in Redis (keys from
//! `ChainKeys::provision*`, documented in `docs/state.md`).
//!
//! A job is a token id in a sorted set scored by when it is due. Workers
//! *lease* due jobs by pushing their score into the future (one Lua step), so
//! a worker that dies mid-job loses nothing: the lease runs out and another
//! worker picks the job up. Enqueueing is idempotent per token id.

use std::collections::HashMap;

use alloy::primitives::U256;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::ChainKeys;
use redis::{AsyncCommands, Script};

use crate::Result;

/// Where a VM's provisioning stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for a worker.
    Queued,
    /// Created at the provider, not reachable yet (or being retried).
    Provisioning,
    /// Up; credentials can be served.
    Running,
    /// Gave up after the attempt limit; an operator can retry it.
    Failed,
    /// The NFT expired; the VM was terminated by the sweeper.
    Expired,
    /// The VM was deleted for another reason (e.g. its purchase was reorged away).
    Terminated,
    /// Its NFT changed hands: a new key pair is being installed; the old key
    /// is already erased.
    Rekeying,
}

impl Status {
    /// The stored and served name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Provisioning => "provisioning",
            Status::Running => "running",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Terminated => "terminated",
            Status::Rekeying => "rekeying",
        }
    }

    /// Parses a stored name; unknown names read as queued.
    pub fn parse(s: &str) -> Status {
        match s {
            "provisioning" => Status::Provisioning,
            "running" => Status::Running,
            "failed" => Status::Failed,
            "expired" => Status::Expired,
            "terminated" => Status::Terminated,
            "rekeying" => Status::Rekeying,
            _ => Status::Queued,
        }
    }
}

/// One VM's provisioning record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Status name (see [`Status`]).
    pub status: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Provider instance id.
    pub instance_id: Option<String>,
    /// SSH host.
    pub host: Option<String>,
    /// SSH user.
    pub username: Option<String>,
    /// ECIES-sealed private key; empty once erased by one-time delivery.
    pub private_key: Option<String>,
    /// OpenSSH public key installed on the VM.
    pub public_key: Option<String>,
    /// The private key was delivered once and erased.
    pub key_delivered: bool,
    /// Last change (ISO 8601).
    pub updated_at: Option<String>,
    /// The purchase transaction this record (and its VM) belongs to.
    pub purchase_tx: Option<String>,
    /// The owner (lower-case address) the current key pair was made for:
    /// only this owner is ever served the key.
    pub key_owner: Option<String>,
    /// While re-keying: the owner the new key is for.
    pub rekey_for: Option<String>,
    /// While re-keying: the new sealed private key, not yet in force.
    pub pending_private_key: Option<String>,
    /// While re-keying: the new public key.
    pub pending_public_key: Option<String>,
    /// While re-keying: the provider accepted the new key.
    pub rekey_requested: bool,
}

impl Record {
    /// From `HGETALL`; `None` when the hash does not exist.
    pub fn from_hash(h: &HashMap<String, String>) -> Option<Record> {
        if h.is_empty() {
            return None;
        }
        let get = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        Some(Record {
            status: get("status"),
            attempts: h.get("attempts").and_then(|v| v.parse().ok()).unwrap_or(0),
            last_error: get("last_error"),
            instance_id: get("instance_id"),
            host: get("host"),
            username: get("username"),
            private_key: get("private_key"),
            public_key: get("public_key"),
            key_delivered: h.get("key_delivered").is_some_and(|v| v == "1"),
            updated_at: get("updated_at"),
            purchase_tx: get("purchase_tx"),
            key_owner: get("key_owner"),
            rekey_for: get("rekey_for"),
            pending_private_key: get("pending_private_key"),
            pending_public_key: get("pending_public_key"),
            rekey_requested: h.get("rekey_requested").is_some_and(|v| v == "1"),
        })
    }

    /// The parsed status (queued when unset).
    pub fn status(&self) -> Status {
        Status::parse(self.status.as_deref().unwrap_or("queued"))
    }
}

/// Moves every indexed VM not seen before into the queue. Returns the new ids.
const ENQUEUE: &str = r"
local new = redis.call('SDIFF', KEYS[1], KEYS[2])
for _, id in ipairs(new) do
  redis.call('SADD', KEYS[2], id)
  redis.call('ZADD', KEYS[3], 'NX', ARGV[1], id)
end
return new
";

/// Leases up to ARGV[3] due jobs: pushes their score to now + lease.
const LEASE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
end
return due
";

/// The provisioning queue of one chain.
#[derive(Clone)]
pub struct Queue {
    redis: RedisConn,
    keys: ChainKeys,
}

impl Queue {
    /// The queue of the chain `keys` belong to.
    pub fn new(redis: RedisConn, keys: ChainKeys) -> Self {
        Self { redis, keys }
    }

    /// The key builder.
    pub fn keys(&self) -> &ChainKeys {
        &self.keys
    }

    /// Enqueues every indexed VM not enqueued before (idempotent per token id).
    pub async fn enqueue_new(&self, now_ms: u64) -> Result<Vec<U256>> {
        let mut c = self.redis.clone();
        let ids: Vec<String> = Script::new(ENQUEUE)
            .key(self.keys.vms())
            .key(self.keys.provision_seen())
            .key(self.keys.provision_queue())
            .arg(now_ms)
            .invoke_async(&mut c)
            .await?;
        let ids: Vec<U256> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HSETNX")
                    .arg(self.keys.provision(*id))
                    .arg("status")
                    .arg(Status::Queued.as_str())
                    .ignore();
            }
            let () = pipe.query_async(&mut c).await?;
        }
        Ok(ids)
    }

    /// Leases up to `limit` due jobs for `lease_ms`.
    pub async fn lease(&self, now_ms: u64, lease_ms: u64, limit: usize) -> Result<Vec<U256>> {
        let mut c = self.redis.clone();
        let ids: Vec<String> = Script::new(LEASE)
            .key(self.keys.provision_queue())
            .arg(now_ms)
            .arg(lease_ms)
            .arg(limit)
            .invoke_async(&mut c)
            .await?;
        Ok(ids.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Makes a job due again at `due_ms`.
    pub async fn requeue(&self, id: U256, due_ms: u64) -> Result<()> {
        let mut c = self.redis.clone();
        let _: () = c
            .zadd(self.keys.provision_queue(), id.to_string(), due_ms)
            .await?;
        Ok(())
    }

    /// Removes a finished job.
    pub async fn done(&self, id: U256) -> Result<()> {
        let mut c = self.redis.clone();
        let _: () = c.zrem(self.keys.provision_queue(), id.to_string()).await?;
        Ok(())
    }

    /// A VM's record.
    pub async fn record(&self, id: U256) -> Result<Option<Record>> {
        let mut c = self.redis.clone();
        let h: HashMap<String, String> = c.hgetall(self.keys.provision(id)).await?;
        Ok(Record::from_hash(&h))
    }

    /// Sets fields of a VM's record (and `updated_at`).
    pub async fn update(&self, id: U256, fields: &[(&str, String)]) -> Result<()> {
        let mut c = self.redis.clone();
        let mut all: Vec<(&str, String)> = fields.to_vec();
        all.push(("updated_at", crate::time::now_iso8601()));
        let _: () = c.hset_multiple(self.keys.provision(id), &all).await?;
        Ok(())
    }

    /// Counts one failed attempt; returns the new count.
    pub async fn count_attempt(&self, id: U256, error: &str) -> Result<u32> {
        let mut c = self.redis.clone();
        let n: u32 = c.hincr(self.keys.provision(id), "attempts", 1).await?;
        self.update(id, &[("last_error", error.to_owned())]).await?;
        Ok(n)
    }

    /// Gives up on a job: status failed, listed for operators.
    pub async fn fail(&self, id: U256, error: &str) -> Result<()> {
        self.update(
            id,
            &[
                ("status", Status::Failed.as_str().into()),
                ("last_error", error.to_owned()),
            ],
        )
        .await?;
        let mut c = self.redis.clone();
        let _: () = c.sadd(self.keys.provision_failed(), id.to_string()).await?;
        self.done(id).await
    }

    /// Token ids whose provisioning failed.
    pub async fn failed(&self) -> Result<Vec<U256>> {
        let mut c = self.redis.clone();
        let ids: Vec<String> = c.smembers(self.keys.provision_failed()).await?;
        let mut ids: Vec<U256> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        ids.sort();
        Ok(ids)
    }

    /// Operator retry of a failed job: attempts reset, due now. `false` when
    /// the token's provisioning is not failed.
    pub async fn retry(&self, id: U256, now_ms: u64) -> Result<bool> {
        let mut c = self.redis.clone();
        let removed: u32 = c.srem(self.keys.provision_failed(), id.to_string()).await?;
        if removed == 0 {
            return Ok(false);
        }
        // A failed re-key goes back to re-keying, not to a fresh provisioning.
        let rekeying = self
            .record(id)
            .await?
            .is_some_and(|r| r.rekey_for.is_some());
        let status = if rekeying {
            Status::Rekeying
        } else {
            Status::Queued
        };
        self.update(
            id,
            &[("status", status.as_str().into()), ("attempts", "0".into())],
        )
        .await?;
        self.requeue(id, now_ms).await?;
        Ok(true)
    }

    /// Removes fields of a VM's record.
    pub async fn clear(&self, id: U256, fields: &[&str]) -> Result<()> {
        let mut c = self.redis.clone();
        let _: () = c.hdel(self.keys.provision(id), fields).await?;
        Ok(())
    }

    /// Drops a VM's record and forgets it was enqueued, so the token id is
    /// provisioned afresh if a purchase of it is indexed again (after a reorg).
    pub async fn forget(&self, id: U256) -> Result<()> {
        let mut c = self.redis.clone();
        let member = id.to_string();
        let () = redis::pipe()
            .del(self.keys.provision(id))
            .ignore()
            .srem(self.keys.provision_seen(), &member)
            .ignore()
            .zrem(self.keys.provision_expiry(), &member)
            .ignore()
            .zrem(self.keys.provision_queue(), &member)
            .ignore()
            .srem(self.keys.provision_failed(), &member)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Every tracked (running or re-keying) VM with its indexed VM hash and
    /// its record, in one round trip.
    pub async fn tracked(&self) -> Result<Vec<(U256, HashMap<String, String>, Record)>> {
        let mut c = self.redis.clone();
        let ids: Vec<String> = c.zrange(self.keys.provision_expiry(), 0, -1).await?;
        let ids: Vec<U256> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.vm(*id))
                .hgetall(self.keys.provision(*id));
        }
        let rows: Vec<HashMap<String, String>> = pipe.query_async(&mut c).await?;
        Ok(ids
            .into_iter()
            .zip(rows.chunks(2))
            .filter_map(|(id, pair)| {
                let [vm, rec] = pair else { return None };
                Some((id, vm.clone(), Record::from_hash(rec)?))
            })
            .collect())
    }

    /// Remembers a running VM's expiry for the sweeper.
    pub async fn track_expiry(&self, id: U256, expires_at: u64) -> Result<()> {
        let mut c = self.redis.clone();
        let _: () = c
            .zadd(self.keys.provision_expiry(), id.to_string(), expires_at)
            .await?;
        Ok(())
    }

    /// Running VMs whose recorded expiry is at or before `now`.
    pub async fn expired(&self, now: u64, limit: usize) -> Result<Vec<U256>> {
        let mut c = self.redis.clone();
        let ids: Vec<String> = c
            .zrangebyscore_limit(self.keys.provision_expiry(), "-inf", now, 0, limit as isize)
            .await?;
        Ok(ids.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Stops tracking a VM's expiry.
    pub async fn untrack_expiry(&self, id: U256) -> Result<()> {
        let mut c = self.redis.clone();
        let _: () = c.zrem(self.keys.provision_expiry(), id.to_string()).await?;
        Ok(())
    }
}
