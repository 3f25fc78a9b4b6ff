//! One authorization, one settlement, one served request: the claim on an
//! EIP-3009 authorization, keyed by (chain id, token, payer, nonce), in Redis
//! so every replica sees it.
//!
//! A claim moves `settling` → `settled` → `served`; a settlement whose fate is
//! unknown is `unknown`, and one that was settled but whose request then
//! failed is `unserved`. A definite failure (refused before anything was
//! sent, or reverted) deletes the claim, so the payer can fix and retry.
//! The first request takes the claim with one Lua script; a request with the
//! same payload may take over an `unknown` or `unserved` claim, or a
//! `settling` one whose holder's lease ran out (a crashed replica), and then
//! resumes the settlement instead of starting another.

use std::collections::HashMap;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::ChainKeys;
use redis::AsyncCommands;

/// KEYS: claim. ARGV: payload hash, idempotency hash, request hash, now
/// (ms), lease (ms), ttl (s). Returns {'won'} | {'resume', state} | {'busy', state}.
const CLAIM_LUA: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
local now = tonumber(ARGV[4])
if not state then
  redis.call('HSET', KEYS[1], 'state', 'settling', 'payload', ARGV[1], 'idem', ARGV[2],
    'req', ARGV[3], 'lease', now + tonumber(ARGV[5]), 'created', now)
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  return {'won'}
end
local payload = redis.call('HGET', KEYS[1], 'payload')
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease') or '0')
local abandoned = (state == 'settling' or state == 'settled') and lease < now
if payload == ARGV[1] and (state == 'unknown' or state == 'unserved' or abandoned) then
  redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[5]), 'idem', ARGV[2], 'req', ARGV[3])
  return {'resume', state}
end
return {'busy', state}
";

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A request is settling it now.
    Settling,
    /// Sent; the outcome was not known when its request gave up.
    Unknown,
    /// Settled on chain; its request is being served.
    Settled,
    /// Settled and served.
    Served,
    /// Settled, but its request failed before an answer: the same payment
    /// may be sent again to be served without a second transfer.
    Unserved,
}

impl State {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "settling" => State::Settling,
            "unknown" => State::Unknown,
            "settled" => State::Settled,
            "served" => State::Served,
            "unserved" => State::Unserved,
            _ => return None,
        })
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Settling => "settling",
            State::Unknown => "unknown",
            State::Settled => "settled",
            State::Served => "served",
            State::Unserved => "unserved",
        }
    }
}

/// What taking the claim gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// First: settle it.
    Won,
    /// The same payment, left `unknown` / `unserved` / abandoned: resume.
    Resume(State),
    /// Held by another request (or done): the fields as stored.
    Busy(State, HashMap<String, String>),
}

/// The claim store of one chain.
#[derive(Clone)]
pub struct Claims {
    redis: RedisConn,
    keys: ChainKeys,
    script: redis::Script,
}

/// The fingerprints a claim compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Hash of the payment header as decoded (its JSON).
    pub payload: String,
    /// Hash of the client's `Idempotency-Key`, empty without one.
    pub idempotency: String,
    /// Hash of the request (method, path, query, body).
    pub request: String,
}

impl Claims {
    /// Claims on `keys`' chain.
    pub fn new(redis: RedisConn, keys: ChainKeys) -> Self {
        Self {
            redis,
            keys,
            script: redis::Script::new(CLAIM_LUA),
        }
    }

    /// The key of one authorization's claim.
    pub fn key(&self, token: Address, payer: Address, nonce: B256) -> String {
        self.keys.x402_claim(token, payer, nonce)
    }

    /// Takes (or finds) the claim `key` for a request with `fp`.
    pub async fn take(
        &self,
        key: &str,
        fp: &Fingerprint,
        lease: Duration,
        ttl: Duration,
    ) -> redis::RedisResult<Taken> {
        let mut c = self.redis.clone();
        let answer: Vec<String> = self
            .script
            .key(key)
            .arg(&fp.payload)
            .arg(&fp.idempotency)
            .arg(&fp.request)
            .arg(now_ms())
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .arg(ttl.as_secs().max(1))
            .invoke_async(&mut c)
            .await?;
        let state = answer
            .get(1)
            .and_then(|s| State::parse(s))
            .unwrap_or(State::Settling);
        Ok(match answer.first().map(String::as_str) {
            Some("won") => Taken::Won,
            Some("resume") => Taken::Resume(state),
            _ => {
                let fields: HashMap<String, String> = c.hgetall(key).await?;
                Taken::Busy(state, fields)
            }
        })
    }

    /// When (unix seconds) the payment with hash `payload` claimed `key`,
    /// if it is that payment's claim.
    pub async fn claimed_at(&self, key: &str, payload: &str) -> redis::RedisResult<Option<u64>> {
        let mut c = self.redis.clone();
        let (stored, created): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(key)
            .arg("payload")
            .arg("created")
            .query_async(&mut c)
            .await?;
        Ok(match (stored, created) {
            (Some(p), Some(ms)) if p == payload => Some(ms / 1000),
            _ => None,
        })
    }

    /// The stored fields (empty once deleted or expired).
    pub async fn fields(&self, key: &str) -> redis::RedisResult<HashMap<String, String>> {
        let mut c = self.redis.clone();
        c.hgetall(key).await
    }

    /// Moves the claim to `state` with `fields`.
    pub async fn set(
        &self,
        key: &str,
        state: State,
        fields: &[(&str, String)],
    ) -> redis::RedisResult<()> {
        let mut c = self.redis.clone();
        let mut all: Vec<(&str, String)> = vec![("state", state.as_str().to_owned())];
        all.extend(fields.iter().cloned());
        c.hset_multiple(key, &all).await
    }

    /// Sets `field` unless it is set, and returns its value.
    pub async fn set_once(
        &self,
        key: &str,
        field: &str,
        value: &str,
    ) -> redis::RedisResult<String> {
        let mut c = self.redis.clone();
        let (_, stored): (bool, Option<String>) = redis::pipe()
            .atomic()
            .hset_nx(key, field, value)
            .hget(key, field)
            .query_async(&mut c)
            .await?;
        Ok(stored.unwrap_or_else(|| value.to_owned()))
    }

    /// Drops the claim (a definite failure: nothing happened on chain).
    pub async fn release(&self, key: &str) -> redis::RedisResult<()> {
        let mut c = self.redis.clone();
        c.del(key).await
    }

    /// Records a settled payment's `Transfer` log as an x402 payment, so the
    /// deposit path never credits it.
    pub async fn record_payment(
        &self,
        tx: B256,
        log_index: u64,
        value: &serde_json::Value,
    ) -> redis::RedisResult<()> {
        let mut c = self.redis.clone();
        c.hset(
            self.keys.x402_payments(),
            ChainKeys::deposit_id(tx, log_index),
            value.to_string(),
        )
        .await
    }

    /// The x402 payment recorded for a deposit id, if any.
    pub async fn payment(&self, tx: B256, log_index: u64) -> redis::RedisResult<Option<String>> {
        let mut c = self.redis.clone();
        c.hget(
            self.keys.x402_payments(),
            ChainKeys::deposit_id(tx, log_index),
        )
        .await
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
