//! One transaction hash, one submission: the claim of a payment transaction
//! in Redis (keys `ChainKeys::submission_claim*`, `docs/state.md`).
//!
//! A claim is made by one Lua script that also checks the index, so it is
//! atomic across concurrent requests and API replicas sharing the Redis: the
//! hash must be neither claimed nor already recorded on chain (`s:payment`),
//! and an original must not exist in the index nor be claimed by another
//! payment. Claims of plain transfers wait in a queue for the recorder,
//! which leases them (a crashed recorder's lease runs out and another picks
//! the claim up); the contract's `PaymentAlreadyUsed` stops a second record
//! of the same payment whatever happens in between.

use std::collections::HashMap;
use std::sync::LazyLock;

use alloy::primitives::{Address, B256, U256};
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::ChainKeys;
use redis::{AsyncCommands, Script};

use super::Result;
use super::index::{MarketId, SubmissionType, parse_market_id};

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStatus {
    /// A plain transfer waiting to be recorded by the operator.
    Pending,
    /// The operator's `recordSubmission` was sent (`record_tx`).
    Sent,
    /// `recordSubmission` succeeded (`submission_id`).
    Recorded,
    /// The payment called `submit` itself: nothing to record.
    Direct,
    /// Recording failed for good (`error`).
    Failed,
}

impl ClaimStatus {
    /// The stored and served name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimStatus::Pending => "pending",
            ClaimStatus::Sent => "sent",
            ClaimStatus::Recorded => "recorded",
            ClaimStatus::Direct => "direct",
            ClaimStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            ClaimStatus::Pending,
            ClaimStatus::Sent,
            ClaimStatus::Recorded,
            ClaimStatus::Direct,
            ClaimStatus::Failed,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// What a claim holds: everything `recordSubmission` needs, and its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Progress.
    pub status: ClaimStatus,
    /// The payment transaction.
    pub payment_tx: B256,
    /// The market.
    pub market_id: MarketId,
    /// The creator (the payment's sender).
    pub creator: Address,
    /// The kind.
    pub kind: SubmissionType,
    /// The prediction (empty for null submissions).
    pub predicted_text: String,
    /// `0x00…00` for ETH, else cbBTC.
    pub stake_token: Address,
    /// Stake in base units.
    pub stake: U256,
    /// The operator's record transaction, once sent.
    pub record_tx: Option<B256>,
    /// The submission id, once known.
    pub submission_id: Option<U256>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Record round: bumped when a record transaction was mined and
    /// reverted, so the next one is a new send (`record:<tx>:<round>`).
    pub round: u32,
    /// Why it failed (last error while retrying, final error once failed).
    pub error: Option<String>,
    /// When it was claimed (unix s).
    pub created_at: u64,
}

impl Claim {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("status", self.status.as_str().to_owned()),
            ("payment_tx", self.payment_tx.to_string()),
            ("market_id", self.market_id.to_string()),
            ("creator", chainfront_indexer::keys::lower(self.creator)),
            ("submission_type", self.kind.as_str().to_owned()),
            ("predicted_text", self.predicted_text.clone()),
            (
                "stake_token",
                chainfront_indexer::keys::lower(self.stake_token),
            ),
            ("stake", self.stake.to_string()),
            ("attempts", self.attempts.to_string()),
            ("round", self.round.to_string()),
            ("created_at", self.created_at.to_string()),
        ];
        if let Some(id) = self.submission_id {
            f.push(("submission_id", id.to_string()));
        }
        if let Some(tx) = self.record_tx {
            f.push(("record_tx", tx.to_string()));
        }
        f
    }

    fn from_hash(h: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| h.get(k).map(String::as_str);
        Some(Claim {
            status: ClaimStatus::parse(get("status")?)?,
            payment_tx: get("payment_tx")?.parse().ok()?,
            market_id: parse_market_id(get("market_id")?)?,
            creator: get("creator")?.parse().ok()?,
            kind: SubmissionType::parse(get("submission_type")?)?,
            predicted_text: get("predicted_text").unwrap_or_default().to_owned(),
            stake_token: get("stake_token")?.parse().ok()?,
            stake: get("stake")?.parse().ok()?,
            record_tx: get("record_tx").and_then(|v| v.parse().ok()),
            submission_id: get("submission_id").and_then(|v| v.parse().ok()),
            attempts: get("attempts").and_then(|v| v.parse().ok()).unwrap_or(0),
            round: get("round").and_then(|v| v.parse().ok()).unwrap_or(0),
            error: get("error").map(str::to_owned),
            created_at: get("created_at").and_then(|v| v.parse().ok()).unwrap_or(0),
        })
    }
}

/// The outcome of [`Claims::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This request owns the hash now.
    Claimed,
    /// The hash is claimed or recorded already.
    Used,
    /// An original exists or is claimed by another payment.
    OriginalExists,
}

/// KEYS: claim, payment (indexed), market (indexed), original marker, queue.
/// ARGV: payment tx, queue? (1/0), check original? (1/0), due ms, then the
/// claim's field/value pairs. Returns 'ok', 'used' or 'original'.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 'used'
end
if ARGV[3] == '1' then
  local orig = redis.call('HGET', KEYS[3], 'original_submission')
  if orig and orig ~= '' then return 'original' end
  if not redis.call('SET', KEYS[4], ARGV[1], 'NX') then return 'original' end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if ARGV[2] == '1' then redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1]) end
return 'ok'
",
    )
});

/// Leases up to ARGV[3] due claims: pushes their score to now + lease.
static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
end
return due
",
    )
});

/// KEYS: claim, original marker, queue. ARGV: payment tx. Deletes the
/// claim, its original marker (if it holds this payment) and its queue entry.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
",
    )
});

/// The submission claims of one chain.
#[derive(Clone)]
pub struct Claims {
    redis: RedisConn,
    keys: ChainKeys,
}

impl Claims {
    /// Claims of the chain `keys` belong to.
    pub fn new(redis: RedisConn, keys: ChainKeys) -> Self {
        Self { redis, keys }
    }

    /// Whether the hash is claimed or recorded already (a cheap early check;
    /// [`Claims::claim`] decides).
    pub async fn is_used(&self, tx: B256) -> Result<bool> {
        let mut c = self.redis.clone();
        let n: u64 = redis::cmd("EXISTS")
            .arg(self.keys.submission_claim(tx))
            .arg(self.keys.payment(tx))
            .query_async(&mut c)
            .await?;
        Ok(n > 0)
    }

    /// Claims `claim.payment_tx` atomically (see the module docs). Plain
    /// transfers (`Pending`) are queued for recording, due at `now_ms`.
    pub async fn claim(&self, claim: &Claim, now_ms: u64) -> Result<ClaimOutcome> {
        let tx = claim.payment_tx;
        let queue = claim.status == ClaimStatus::Pending;
        let check_original = queue && claim.kind == SubmissionType::Original;
        let mut script = CLAIM.prepare_invoke();
        script
            .key(self.keys.submission_claim(tx))
            .key(self.keys.payment(tx))
            .key(self.keys.market(claim.market_id))
            .key(self.keys.original_pending(claim.market_id))
            .key(self.keys.submission_claim_queue())
            .arg(tx.to_string())
            .arg(if queue { "1" } else { "0" })
            .arg(if check_original { "1" } else { "0" })
            .arg(now_ms);
        for (k, v) in claim.fields() {
            script.arg(k).arg(v);
        }
        let mut c = self.redis.clone();
        let answer: String = script.invoke_async(&mut c).await?;
        Ok(match answer.as_str() {
            "ok" => ClaimOutcome::Claimed,
            "original" => ClaimOutcome::OriginalExists,
            _ => ClaimOutcome::Used,
        })
    }

    /// The claim of `tx`, if any.
    pub async fn get(&self, tx: B256) -> Result<Option<Claim>> {
        let mut c = self.redis.clone();
        let h: HashMap<String, String> = c.hgetall(self.keys.submission_claim(tx)).await?;
        Ok(Claim::from_hash(&h))
    }

    /// Leases up to `limit` due claims for `lease_ms`.
    pub async fn lease(&self, now_ms: u64, lease_ms: u64, limit: usize) -> Result<Vec<B256>> {
        let mut c = self.redis.clone();
        let due: Vec<String> = LEASE
            .key(self.keys.submission_claim_queue())
            .arg(now_ms)
            .arg(lease_ms)
            .arg(limit)
            .invoke_async(&mut c)
            .await?;
        Ok(due.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Makes a queued claim due again at `due_ms`, noting the error.
    pub async fn retry_later(&self, tx: B256, due_ms: u64, error: &str) -> Result<()> {
        let mut c = self.redis.clone();
        let () = redis::pipe()
            .hset(self.keys.submission_claim(tx), "error", error)
            .ignore()
            .hincr(self.keys.submission_claim(tx), "attempts", 1)
            .ignore()
            .zadd(self.keys.submission_claim_queue(), tx.to_string(), due_ms)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Makes a queued claim due again at `due_ms` (no attempt counted).
    pub async fn requeue(&self, tx: B256, due_ms: u64) -> Result<()> {
        let mut c = self.redis.clone();
        let _: () = c
            .zadd(self.keys.submission_claim_queue(), tx.to_string(), due_ms)
            .await?;
        Ok(())
    }

    /// Takes a hash out of the queue (its claim needs no recording).
    pub async fn dequeue(&self, tx: B256) -> Result<()> {
        let mut c = self.redis.clone();
        let _: () = c
            .zrem(self.keys.submission_claim_queue(), tx.to_string())
            .await?;
        Ok(())
    }

    /// The next record transaction for this claim is a new send.
    pub async fn next_round(&self, tx: B256) -> Result<()> {
        let mut c = self.redis.clone();
        let _: () = c.hincr(self.keys.submission_claim(tx), "round", 1).await?;
        Ok(())
    }

    /// The operator's record transaction was sent (kept so a restart waits
    /// for it instead of sending another).
    pub async fn mark_sent(&self, tx: B256, record_tx: B256) -> Result<()> {
        let mut c = self.redis.clone();
        let () = c
            .hset_multiple(
                self.keys.submission_claim(tx),
                &[
                    ("status", ClaimStatus::Sent.as_str().to_owned()),
                    ("record_tx", record_tx.to_string()),
                ],
            )
            .await?;
        Ok(())
    }

    /// Recorded on chain: leaves the queue, frees the original marker.
    pub async fn mark_recorded(
        &self,
        claim: &Claim,
        submission_id: Option<U256>,
        record_tx: Option<B256>,
    ) -> Result<()> {
        let tx = claim.payment_tx;
        let mut fields = vec![("status", ClaimStatus::Recorded.as_str().to_owned())];
        fields.extend(submission_id.map(|id| ("submission_id", id.to_string())));
        fields.extend(record_tx.map(|t| ("record_tx", t.to_string())));
        let mut c = self.redis.clone();
        let () = redis::pipe()
            .hset_multiple(self.keys.submission_claim(tx), &fields)
            .ignore()
            .hdel(self.keys.submission_claim(tx), "error")
            .ignore()
            .zrem(self.keys.submission_claim_queue(), tx.to_string())
            .ignore()
            .query_async(&mut c)
            .await?;
        self.free_original(claim).await
    }

    /// Failed for good: leaves the queue, frees the original marker. The
    /// hash stays claimed (its payment is spent on this attempt).
    pub async fn mark_failed(&self, claim: &Claim, error: &str) -> Result<()> {
        let tx = claim.payment_tx;
        let mut c = self.redis.clone();
        let () = redis::pipe()
            .hset_multiple(
                self.keys.submission_claim(tx),
                &[("status", ClaimStatus::Failed.as_str()), ("error", error)],
            )
            .ignore()
            .zrem(self.keys.submission_claim_queue(), tx.to_string())
            .ignore()
            .query_async(&mut c)
            .await?;
        self.free_original(claim).await
    }

    async fn free_original(&self, claim: &Claim) -> Result<()> {
        let key = self.keys.original_pending(claim.market_id);
        let mut c = self.redis.clone();
        let holder: Option<String> = c.get(&key).await?;
        if holder.as_deref() == Some(claim.payment_tx.to_string().as_str()) {
            let () = c.del(&key).await?;
        }
        Ok(())
    }

    /// Forgets a claim whose payment left the chain (a reorg): the hash can
    /// be used again once its transaction is mined again.
    pub async fn release(&self, claim: &Claim) -> Result<()> {
        let tx = claim.payment_tx;
        let mut c = self.redis.clone();
        let _: i64 = RELEASE
            .key(self.keys.submission_claim(tx))
            .key(self.keys.original_pending(claim.market_id))
            .key(self.keys.submission_claim_queue())
            .arg(tx.to_string())
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Claims still waiting to be recorded (for operators and tests).
    pub async fn queued(&self) -> Result<u64> {
        let mut c = self.redis.clone();
        Ok(c.zcard(self.keys.submission_claim_queue()).await?)
    }
}
