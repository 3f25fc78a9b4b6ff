//! Clockchain prediction markets, served from the indexed `SubmissionStakes`
//! state: market and submission reads, the platform fee, and the submission
//! rules of `POST /v1/submissions` (signature, payment transaction, one
//! submission per transaction hash, recording plain transfers on chain).
//! Nothing here knows HTTP: `api::markets` parses requests, calls
//! [`Markets`] and maps [`MarketsError`] in `api::error`.
//!
//! - [`fees`]: currencies, strict amount parsing, the fee in exact decimals;
//! - [`index`]: reads of the indexed markets, submissions and settings;
//! - [`view`]: the documented answer shapes;
//! - [`submit`]: the request's rules, its signature and the claim;
//! - [`payment`]: what the payment transaction proves on chain;
//! - [`claims`]: the atomic one-hash-one-submission claim in Redis;
//! - [`recorder`]: records plain transfers with the operator's key through
//!   the one transaction sender (`crate::chain`).

pub mod claims;
pub mod fees;
pub mod index;
pub mod payment;
pub mod recorder;
pub mod submit;
pub mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::ChainKeys;

use crate::auth::Auth;
use claims::Claims;
use index::Index;

/// Why a markets request failed. `api::error` maps each to a status code;
/// the documented Clockchain error strings open the messages.
#[derive(Debug, thiserror::Error)]
pub enum MarketsError {
    /// A required body field is absent or null.
    #[error("Missing required field: {0}")]
    MissingField(&'static str),
    /// A field is present but malformed (the message names it).
    #[error("{0}")]
    InvalidField(String),
    /// `submission_type` is not `original`, `competitor` or `null`.
    #[error("Invalid submission type: must be \"original\", \"competitor\" or \"null\"")]
    InvalidSubmissionType,
    /// A malformed market id in a path.
    #[error("Invalid market_id: expected a UUID such as 123e4567-e89b-12d3-a456-426614174000")]
    MalformedMarketId,
    /// A malformed submission id in a path.
    #[error("Invalid submission id: expected a submission number or a 0x transaction hash")]
    MalformedSubmissionId,
    /// No such market in the index.
    #[error("Market not found")]
    MarketNotFound,
    /// No such submission in the index.
    #[error("Submission not found")]
    SubmissionNotFound,
    /// The market is not accepting submissions.
    #[error("{0}")]
    MarketNotOpen(String),
    /// An original exists (or is being recorded) already.
    #[error("Market already has original")]
    OriginalExists,
    /// Competitor and null submissions need an original first.
    #[error(
        "Market has no original submission yet: competitor and null submissions require an existing original"
    )]
    OriginalRequired,
    /// The signature is not `creator_wallet`'s over the documented message.
    #[error("Invalid signature: {0}")]
    InvalidSignature(String),
    /// The payment transaction does not satisfy a rule (not found, pending,
    /// unconfirmed, reverted, from another wallet, to another address, not
    /// matching the request).
    #[error("{0}")]
    Transaction(String),
    /// The transaction pays less than stake + fee.
    #[error("Transaction amount insufficient: {0}")]
    InsufficientAmount(String),
    /// The transaction hash was used for a submission already.
    #[error("Transaction hash already used: each transaction can pay for one submission only")]
    HashUsed,
    /// A recording failed for good (shown by the status route).
    #[error("Submission could not be recorded: {0}")]
    RecordFailed(String),
    /// The markets contract is not deployed on this node's chain.
    #[error("prediction markets are not deployed on this node (no submission_stakes contract)")]
    NotDeployed,
    /// Redis or the chain could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for MarketsError {
    fn from(e: redis::RedisError) -> Self {
        tracing::error!(target: "chainfront::markets", error = %e, "redis error");
        MarketsError::Unavailable("state store unavailable; retry shortly".into())
    }
}

impl From<fees::AmountError> for MarketsError {
    fn from(e: fees::AmountError) -> Self {
        MarketsError::InvalidField(e.to_string())
    }
}

/// Result alias of this module.
pub type Result<T, E = MarketsError> = std::result::Result<T, E>;

/// The contracts a markets node deals with.
#[derive(Debug, Clone, Copy)]
pub struct Contracts {
    /// `SubmissionStakes`: where stakes are paid and recorded (`None` when not
    /// deployed on this chain).
    pub stakes: Option<Address>,
    /// The cbBTC token (BTC stakes).
    pub cbbtc: Option<Address>,
    /// USDC (a stake token the contract also allows for direct submits).
    pub usdc: Option<Address>,
}

/// Block timestamps, fetched once per block and kept in memory. Blocks a
/// reorg could still replace are re-read after [`RECENT_BLOCK_TTL`].
#[derive(Default)]
pub struct BlockTimes(RwLock<HashMap<u64, (u64, Option<Instant>)>>);

/// How long the timestamp of a block near the head is trusted.
const RECENT_BLOCK_TTL: Duration = Duration::from_secs(60);
/// Entries before the cache is cleared.
const BLOCK_TIMES_MAX: usize = 100_000;
/// Blocks below the head after which a timestamp is kept for good.
const FINAL_DEPTH: u64 = 256;
/// Longest wait for one chain read.
pub(crate) const CHAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The markets domain of one node: everything the routes call.
pub struct Markets {
    index: Index,
    claims: Claims,
    rpc: chainfront_indexer::rpc::Rpc,
    keys: ChainKeys,
    contracts: Contracts,
    confirmations: u64,
    chain_time: Arc<AtomicU64>,
    chain_head: Arc<AtomicU64>,
    block_times: BlockTimes,
    settings: RwLock<Option<(coarsetime::Instant, index::StakeSettings)>>,
    /// `calculate_fees` answers per request body, at the rate they were
    /// computed at.
    fee_bodies: view::FeeBodies,
    version: RwLock<Option<(coarsetime::Instant, Arc<str>)>>,
    auth: Arc<Auth>,
    /// Wakes the recorder when a plain transfer is claimed.
    pub(crate) recorder_wake: tokio::sync::Notify,
}

/// The clock of the per-request cache checks ([`SETTINGS_TTL`],
/// [`VERSION_TTL`]): the kernel's coarse monotonic clock (a few milliseconds'
/// resolution, a fraction of the cost of a precise read, which showed in
/// `calculate_fees`' throughput).
fn coarse_now() -> coarsetime::Instant {
    coarsetime::Instant::now_without_cache_update()
}

/// How long the indexed fee is reused by `calculate_fees`.
const SETTINGS_TTL: coarsetime::Duration = coarsetime::Duration::from_secs(1);
/// How long a read of the index version is trusted. [`Markets::watch_version`]
/// re-reads it every [`VERSION_POLL`], so requests normally never wait for it.
const VERSION_TTL: coarsetime::Duration = coarsetime::Duration::from_millis(100);
/// How often [`Markets::watch_version`] re-reads the index version.
const VERSION_POLL: Duration = Duration::from_millis(20);

impl std::fmt::Debug for Markets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Markets")
            .field("chain_id", &self.keys.chain_id())
            .field("contracts", &self.contracts)
            .field("confirmations", &self.confirmations)
            .finish_non_exhaustive()
    }
}

/// What [`Markets::new`] needs.
pub struct MarketsParts {
    /// Redis.
    pub redis: RedisConn,
    /// Chain reads: the API's failover RPC client (payments' transactions
    /// and receipts, block headers for market and submission times, the
    /// head when the head tracker has not reported yet).
    pub rpc: chainfront_indexer::rpc::Rpc,
    /// The home chain's id.
    pub chain_id: u64,
    /// The contracts.
    pub contracts: Contracts,
    /// Blocks a payment must be below the head.
    pub confirmations: u64,
    /// Head block timestamp, kept fresh by the API's head tracker (0 until known).
    pub chain_time: Arc<AtomicU64>,
    /// Head block number (0 until known).
    pub chain_head: Arc<AtomicU64>,
    /// Signature checks.
    pub auth: Arc<Auth>,
}

impl Markets {
    /// The markets domain over these parts.
    pub fn new(p: MarketsParts) -> Self {
        let keys = ChainKeys::new(p.chain_id);
        Self {
            index: Index::new(p.redis.clone(), keys.clone()),
            claims: Claims::new(p.redis, keys.clone()),
            rpc: p.rpc,
            keys,
            contracts: p.contracts,
            confirmations: p.confirmations,
            chain_time: p.chain_time,
            chain_head: p.chain_head,
            block_times: BlockTimes::default(),
            settings: RwLock::new(None),
            fee_bodies: view::FeeBodies::default(),
            version: RwLock::new(None),
            auth: p.auth,
            recorder_wake: tokio::sync::Notify::new(),
        }
    }

    /// The indexed state.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The submission claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The contracts.
    pub fn contracts(&self) -> Contracts {
        self.contracts
    }

    /// Where Clockchain clients pay stakes: the `SubmissionStakes` contract,
    /// which escrows the stake and forwards the fee to the fee treasury when
    /// the submission is recorded (see `docs/markets.md`).
    pub fn treasury(&self) -> Option<Address> {
        self.contracts.stakes
    }

    fn stakes(&self) -> Result<Address> {
        self.contracts.stakes.ok_or(MarketsError::NotDeployed)
    }

    /// The head block's timestamp: what market status is judged by, as the
    /// contract judges it (not the wall clock).
    pub async fn chain_now(&self) -> Result<u64> {
        let known = self.chain_time.load(Ordering::Relaxed);
        if known > 0 {
            return Ok(known);
        }
        let head = tokio::time::timeout(
            CHAIN_TIMEOUT,
            self.rpc.head(alloy::eips::BlockNumberOrTag::Latest),
        )
        .await;
        match head {
            Ok(Ok(Some(h))) => {
                self.chain_head.store(h.number, Ordering::Relaxed);
                self.chain_time.store(h.timestamp, Ordering::Relaxed);
                Ok(h.timestamp)
            }
            _ => Err(MarketsError::Unavailable(
                "the chain did not answer; retry shortly".into(),
            )),
        }
    }

    /// The index version (the checkpoint's block hash) that cached answers
    /// are keyed by, read from memory: at most [`VERSION_TTL`] old, re-read
    /// from Redis when older (no watcher running). Routes that just served
    /// newer indexed data call [`Markets::refresh_version`], so a client that
    /// saw its submission recorded never gets an older list from this node.
    /// Shared, so a cached read costs a reference count, not a copy.
    pub async fn index_version(&self) -> Result<Arc<str>> {
        if let Some((at, v)) = self
            .version
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            && coarse_now().duration_since(*at) < VERSION_TTL
        {
            return Ok(v.clone());
        }
        self.refresh_version().await
    }

    /// Re-reads the index version from Redis.
    pub async fn refresh_version(&self) -> Result<Arc<str>> {
        let v: Arc<str> = self.index.version().await?.into();
        *self
            .version
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((coarse_now(), v.clone()));
        Ok(v)
    }

    /// Keeps the index version fresh until `shutdown` (one `HGET` every
    /// [`VERSION_POLL`], instead of one per request).
    pub async fn watch_version(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            if let Err(e) = self.refresh_version().await {
                tracing::debug!(target: "chainfront::markets", error = %e, "index version not refreshed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(VERSION_POLL) => {}
            }
        }
    }

    /// The indexed fee settings, reused for [`SETTINGS_TTL`] (fee quotes
    /// are hot; a submission's payment check reads them fresh).
    pub async fn settings_cached(&self) -> Result<index::StakeSettings> {
        if let Some((at, s)) = self
            .settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            && coarse_now().duration_since(*at) < SETTINGS_TTL
        {
            return Ok(s.clone());
        }
        let fresh = self.index.settings().await?;
        *self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((coarse_now(), fresh.clone()));
        Ok(fresh)
    }

    /// Timestamps of these blocks (missing where the chain did not answer).
    pub async fn block_times(&self, blocks: &[u64]) -> HashMap<u64, u64> {
        let head = self.chain_head.load(Ordering::Relaxed);
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self
                .block_times
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for b in blocks {
                match cache.get(b) {
                    Some((t, None)) => {
                        found.insert(*b, *t);
                    }
                    Some((t, Some(at))) if at.elapsed() < RECENT_BLOCK_TTL => {
                        found.insert(*b, *t);
                    }
                    _ if !missing.contains(b) => missing.push(*b),
                    _ => {}
                }
            }
        }
        if missing.is_empty() {
            return found;
        }
        // Through the failover client, with the indexer's minimal header (a
        // provider that leaves out a field nobody reads, e.g. `mixHash`,
        // still gives the time; an answer for another block is refused).
        let fetched = futures_util::future::join_all(missing.iter().map(|&b| async move {
            match tokio::time::timeout(CHAIN_TIMEOUT, self.rpc.header(b)).await {
                Ok(Ok(Some(h))) => Some((b, h.timestamp)),
                _ => None,
            }
        }))
        .await;
        let mut cache = self
            .block_times
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= BLOCK_TIMES_MAX {
            cache.clear();
        }
        for (b, t) in fetched.into_iter().flatten() {
            let fresh = (head == 0 || head.saturating_sub(b) < FINAL_DEPTH).then(Instant::now);
            cache.insert(b, (t, fresh));
            found.insert(b, t);
        }
        found
    }
}
