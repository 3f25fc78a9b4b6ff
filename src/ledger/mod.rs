//! The balance ledger: the only code that moves money. Balances are integer
//! USDC base units in Redis; every change is one Lua script ([`scripts`]):
//! credit and reverse (deposits, keyed once per (chain id, tx hash, log
//! index)), and for jobs open (reserve the maximum charge), settle (commit the
//! real cost, refund the rest) and cancel. Each wallet's ledger is an
//! append-only Redis stream with one entry per movement.
//!
//! - [`money`]: `Usd` (base units ↔ `rust_decimal`, exact JSON numbers).
//! - [`deposit`]: the `POST /v1/deposit` fast path (receipt checks).
//! - [`reconcile`]: follows each chain's indexed deposits, credits what is new
//!   and reverses what a reorg removed.
//!
//! Design, invariants and the Redis layout: `docs/ledger.md`.

pub mod deposit;
pub mod money;
pub mod reconcile;
mod scripts;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::LedgerKeys;
use redis::AsyncCommands;
use serde::Serialize;

pub use money::{MAX_UNITS, Usd};

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Redis failed; nothing is known to have changed.
    #[error("state store: {0}")]
    Store(#[from] redis::RedisError),
    /// The amount (or the balance it would make) is above [`MAX_UNITS`].
    #[error("amount too large for the ledger")]
    TooLarge,
    /// A record belongs to another wallet than the caller said.
    #[error("the record belongs to another wallet")]
    WrongWallet,
    /// The script answered something it never answers.
    #[error("unexpected ledger answer: {0}")]
    Unexpected(String),
}

/// Result alias of the ledger.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Who made a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `POST /v1/deposit` fast path.
    Api,
    /// The reconciler, from the indexer's deposits.
    Indexer,
    /// An x402 payment settled by this node.
    X402,
}

impl Source {
    /// Its name in records and entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Indexer => "indexer",
            Source::X402 => "x402",
        }
    }
}

/// An on-chain USDC transfer to the treasury: the unit of crediting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepositRef {
    /// Chain id.
    pub chain_id: u64,
    /// Transaction hash.
    pub tx: B256,
    /// Log index in the block.
    pub log_index: u64,
    /// Block number.
    pub block: u64,
}

impl DepositRef {
    /// The idempotency key shared by every path that credits it.
    pub fn credit_key(&self) -> String {
        LedgerKeys::deposit_credit(self.chain_id, self.tx, self.log_index)
    }

    /// Its member in the chain's watch set and the indexer's deposit id.
    pub fn member(&self) -> String {
        chainfront_indexer::keys::ChainKeys::deposit_id(self.tx, self.log_index)
    }
}

/// What a credit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditOutcome {
    /// Credited now.
    Credited,
    /// Someone (the indexer, another request, another replica) credited it before.
    AlreadyCredited,
    /// The transfer is an x402 payment for a service (a credentials fetch),
    /// not a deposit: never credited.
    NotADeposit,
}

/// A credit's record: `(credited, wallet, amount, block, source)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRecord {
    /// `false` once reversed (or when consumed).
    pub credited: bool,
    /// The key was consumed by an x402 payment for a service: never credited.
    pub consumed: bool,
    /// Who was credited.
    pub wallet: String,
    /// How much.
    pub amount: Usd,
    /// In which block the transfer was.
    pub block: u64,
    /// Who credited it first.
    pub source: String,
}

impl CreditRecord {
    fn parse(v: &str) -> Option<Self> {
        let mut p = v.split('|');
        let (credited, consumed) = match p.next()? {
            "c" => (true, false),
            "r" => (false, false),
            "x" => (false, true),
            _ => return None,
        };
        Some(Self {
            credited,
            consumed,
            wallet: p.next()?.to_owned(),
            amount: Usd(p.next()?.parse().ok()?),
            block: p.next()?.parse().ok()?,
            source: p.next()?.to_owned(),
        })
    }
}

/// A wallet's balance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Spendable now.
    pub available: Usd,
    /// Reserved by jobs that have not finished.
    pub pending: Usd,
    /// Credited deposits minus reversed ones.
    pub deposited: Usd,
    /// Charged by finished jobs.
    pub spent: Usd,
    /// Reversed deposits that had already been spent; paid first from later credits.
    pub owed: Usd,
}

/// One ledger entry (newest first when listed).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// Stream id (`<ms>-<seq>`), increasing.
    pub id: String,
    /// `credit`, `reversal`, `reserve`, `charge` or `refund`.
    pub kind: String,
    /// The amount moved.
    pub amount: Usd,
    /// Deposit key or job id.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Available after the entry.
    pub available: Usd,
    /// Pending after the entry.
    pub pending: Usd,
    /// Unix ms.
    pub timestamp: u64,
    /// Credits: who credited; reversals: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A job to open (see [`Ledger::open_job`]).
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// `job_…`.
    pub job_id: &'a str,
    /// `req_…`.
    pub request_id: &'a str,
    /// Service name.
    pub service: &'a str,
    /// The paying wallet.
    pub wallet: Address,
    /// The maximum charge, reserved now.
    pub reserve: Usd,
    /// Unix ms.
    pub now_ms: u64,
    /// The request's payload (JSON).
    pub payload: &'a str,
    /// Where to POST the result ('' none).
    pub callback: &'a str,
    /// How long a failed record stays, in seconds.
    pub ttl_secs: u64,
    /// `None`: queued for a worker. `Some(lease_until_ms)`: the request runs
    /// it itself (a stream); it is `processing` and leased until then, so a
    /// worker finds it only if this node dies.
    pub run_here: Option<u64>,
}

/// What opening a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Reserved and queued; available after.
    Queued(Usd),
    /// Not enough balance: the job is recorded as failed; what was available.
    Insufficient(Usd),
    /// A job with this id exists already (opened before): nothing changed.
    Exists,
}

/// How a job ends (see [`Ledger::settle_job`]).
#[derive(Debug, Clone)]
pub struct Settlement<'a> {
    /// Job id.
    pub job_id: &'a str,
    /// The paying wallet.
    pub wallet: Address,
    /// `completed` or `failed`.
    pub status: &'a str,
    /// The real cost (capped at the reservation).
    pub cost: Usd,
    /// Result JSON ('' none).
    pub result: &'a str,
    /// Usage JSON ('' none).
    pub usage: &'a str,
    /// Error text ('' none).
    pub error: &'a str,
    /// Run time in ms.
    pub duration_ms: u64,
    /// Unix ms.
    pub now_ms: u64,
    /// How long the finished job stays readable.
    pub ttl_secs: u64,
}

/// What settling did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Settled now, charging this.
    Charged(Usd),
    /// It was already settled (or not in the required status): its status.
    Already(String),
    /// No such job.
    Missing,
}

/// Jobs kept in a wallet's list.
const JOBS_KEPT: u64 = 1_000;
/// Usage day buckets live a little longer than the longest period (month).
const USAGE_DAY_TTL: u64 = 35 * 86_400;
/// Balances cached per process at most.
const CACHE_MAX: usize = 100_000;

/// The ledger. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    conn: RedisConn,
    keys: LedgerKeys,
    scripts: Arc<scripts::Scripts>,
    cache: Arc<BalanceCache>,
}

struct BalanceCache {
    ttl: Duration,
    map: RwLock<HashMap<Address, (Instant, Balance)>>,
}

impl BalanceCache {
    fn get(&self, wallet: &Address) -> Option<Balance> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(wallet)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, b)| *b)
    }

    fn put(&self, wallet: Address, balance: Balance) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(wallet, (Instant::now(), balance));
    }

    fn forget(&self, wallet: &Address) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(wallet);
    }
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn status_of(v: &redis::Value) -> Result<(i64, Vec<String>)> {
    let redis::Value::Array(items) = v else {
        return Err(LedgerError::Unexpected(format!("{v:?}")));
    };
    let mut it = items.iter();
    let code = match it.next() {
        Some(redis::Value::Int(n)) => *n,
        other => return Err(LedgerError::Unexpected(format!("{other:?}"))),
    };
    let rest = it
        .map(|x| match x {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            redis::Value::Int(n) => n.to_string(),
            _ => String::new(),
        })
        .collect();
    Ok((code, rest))
}

fn units(s: Option<&String>) -> Usd {
    Usd(s.and_then(|v| v.parse().ok()).unwrap_or(0))
}

impl Ledger {
    /// A ledger on `conn`; `balance_cache` is how long [`Ledger::balance_cached`] may answer from memory.
    pub fn new(conn: RedisConn, balance_cache: Duration) -> Self {
        Self {
            conn,
            keys: LedgerKeys,
            scripts: Arc::new(scripts::Scripts::new()),
            cache: Arc::new(BalanceCache {
                ttl: balance_cache,
                map: RwLock::default(),
            }),
        }
    }

    /// The Redis connection (for readers of ledger-owned keys elsewhere in the node).
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Credits `amount` to `wallet` for deposit `dep`, once: whoever comes
    /// first (the fast path, the reconciler, x402, on any replica) credits
    /// it, everyone else learns it was already credited.
    pub async fn credit_deposit(
        &self,
        dep: &DepositRef,
        wallet: Address,
        amount: Usd,
        source: Source,
    ) -> Result<CreditOutcome> {
        // A transfer this node's relayer signed as an x402 payment for a
        // service is never a deposit. The relayer records the transaction
        // before broadcasting it, so this holds before the transfer can be
        // mined, let alone indexed or proven; after settlement the key is
        // also consumed below (`CONSUME`), for good.
        if source != Source::X402
            && crate::x402::sent_for_a_service(&self.conn, dep.chain_id, dep.tx).await?
        {
            return Ok(CreditOutcome::NotADeposit);
        }
        let k = &self.keys;
        let mut conn = self.conn.clone();
        let v: redis::Value = self
            .scripts
            .credit
            .key(k.credits())
            .key(k.balance(wallet))
            .key(k.entries(wallet))
            .key(k.watch(dep.chain_id))
            .arg(dep.credit_key())
            .arg(chainfront_indexer::keys::lower(wallet))
            .arg(amount.0)
            .arg(dep.block)
            .arg(source.as_str())
            .arg(dep.member())
            .arg(now_ms())
            .arg(MAX_UNITS)
            .invoke_async(&mut conn)
            .await?;
        self.cache.forget(&wallet);
        let (code, rest) = status_of(&v)?;
        match code {
            1 => {
                tracing::info!(target: "chainfront::ledger", wallet = %wallet, amount = %amount, key = %dep.credit_key(), source = source.as_str(), "deposit credited");
                Ok(CreditOutcome::Credited)
            }
            0 if rest.first().is_some_and(|r| r.starts_with("x|")) => {
                Ok(CreditOutcome::NotADeposit)
            }
            0 => Ok(CreditOutcome::AlreadyCredited),
            -1 => Err(LedgerError::TooLarge),
            n => Err(LedgerError::Unexpected(n.to_string())),
        }
    }

    /// Reverses deposit `dep`'s credit (the chain no longer has it), once.
    /// Returns whether anything was reversed.
    pub async fn reverse_deposit(
        &self,
        dep: &DepositRef,
        wallet: Address,
        reason: &str,
    ) -> Result<bool> {
        let k = &self.keys;
        let mut conn = self.conn.clone();
        let v: redis::Value = self
            .scripts
            .reverse
            .key(k.credits())
            .key(k.balance(wallet))
            .key(k.entries(wallet))
            .key(k.watch(dep.chain_id))
            .arg(dep.credit_key())
            .arg(chainfront_indexer::keys::lower(wallet))
            .arg(dep.member())
            .arg(now_ms())
            .arg(reason)
            .invoke_async(&mut conn)
            .await?;
        self.cache.forget(&wallet);
        match status_of(&v)? {
            (1, rest) => {
                tracing::warn!(target: "chainfront::ledger", wallet = %wallet, key = %dep.credit_key(), taken = rest.first().map(String::as_str).unwrap_or(""), owed = rest.get(1).map(String::as_str).unwrap_or(""), reason, "deposit reversed");
                Ok(true)
            }
            (0, _) => Ok(false),
            (-2, _) => Err(LedgerError::WrongWallet),
            (n, _) => Err(LedgerError::Unexpected(n.to_string())),
        }
    }

    /// Marks deposit `dep` — `payer`'s transfer of `amount` — as consumed
    /// by an x402 payment for a service (`note`, e.g. the route): it is never
    /// credited by any path. A credit made under the key before (possible
    /// only for an external facilitator's settlement, which the node learns
    /// of after it is mined) is reversed. Returns whether it was consumed now.
    pub async fn consume_deposit(
        &self,
        dep: &DepositRef,
        payer: Address,
        amount: Usd,
        note: &str,
    ) -> Result<bool> {
        let k = &self.keys;
        let mut conn = self.conn.clone();
        let v: redis::Value = self
            .scripts
            .consume
            .key(k.credits())
            .key(k.balance(payer))
            .key(k.entries(payer))
            .key(k.watch(dep.chain_id))
            .arg(dep.credit_key())
            .arg(chainfront_indexer::keys::lower(payer))
            .arg(amount.0)
            .arg(dep.block)
            .arg(note)
            .arg(dep.member())
            .arg(now_ms())
            .arg("an x402 payment for a service, not a deposit")
            .invoke_async(&mut conn)
            .await?;
        self.cache.forget(&payer);
        match status_of(&v)? {
            (1, rest) => {
                let taken = rest.first().map(String::as_str).unwrap_or("0");
                let owed = rest.get(1).map(String::as_str).unwrap_or("0");
                if taken != "0" || owed != "0" {
                    tracing::warn!(target: "chainfront::ledger", wallet = %payer, key = %dep.credit_key(), taken, owed, "an x402 payment had been credited as a deposit; reversed");
                }
                Ok(true)
            }
            (0, _) => Ok(false),
            (-2, _) => Err(LedgerError::WrongWallet),
            (n, _) => Err(LedgerError::Unexpected(format!("consume {n}"))),
        }
    }

    /// The credit records of these idempotency keys.
    pub async fn credit_records(&self, keys: &[String]) -> Result<Vec<Option<CreditRecord>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.credits())
            .arg(keys)
            .query_async(&mut conn)
            .await?;
        Ok(raw
            .into_iter()
            .map(|v| v.as_deref().and_then(CreditRecord::parse))
            .collect())
    }

    /// A wallet's balance, read from Redis.
    pub async fn balance(&self, wallet: Address) -> Result<Balance> {
        let mut conn = self.conn.clone();
        let v: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.balance(wallet))
            .arg(&["avail", "pend", "dep", "spent", "debt"])
            .query_async(&mut conn)
            .await?;
        let u = |i: usize| units(v.get(i).and_then(Option::as_ref));
        let b = Balance {
            available: u(0),
            pending: u(1),
            deposited: u(2),
            spent: u(3),
            owed: u(4),
        };
        self.cache.put(wallet, b);
        Ok(b)
    }

    /// A wallet's balance, from this process's short cache when fresh (writes
    /// through this ledger drop the wallet's entry at once).
    pub async fn balance_cached(&self, wallet: Address) -> Result<Balance> {
        match self.cache.get(&wallet) {
            Some(b) => Ok(b),
            None => self.balance(wallet).await,
        }
    }

    /// The wallet's newest ledger entries, newest first.
    pub async fn entries(&self, wallet: Address, count: usize) -> Result<Vec<Entry>> {
        let mut conn = self.conn.clone();
        let raw: redis::streams::StreamRangeReply = conn
            .xrevrange_count(self.keys.entries(wallet), "+", "-", count)
            .await?;
        Ok(raw
            .ids
            .into_iter()
            .map(|e| {
                let get = |f: &str| -> Option<String> { e.get(f) };
                let usd = |f: &str| Usd(get(f).and_then(|v| v.parse().ok()).unwrap_or(0));
                Entry {
                    kind: get("kind").unwrap_or_default(),
                    amount: usd("amount"),
                    reference: get("ref").unwrap_or_default(),
                    available: usd("available"),
                    pending: usd("pending"),
                    timestamp: get("ts").and_then(|v| v.parse().ok()).unwrap_or(0),
                    note: get("source").or_else(|| get("reason")),
                    id: e.id,
                }
            })
            .collect())
    }

    /// Reserves the job's maximum charge and queues it, in one step; when
    /// the balance is short the job is recorded as failed instead.
    pub async fn open_job(&self, job: &NewJob<'_>) -> Result<Opened> {
        let k = &self.keys;
        let mut conn = self.conn.clone();
        let v: redis::Value = self
            .scripts
            .open_job
            .key(k.balance(job.wallet))
            .key(k.entries(job.wallet))
            .key(k.job(job.job_id))
            .key(k.wallet_jobs(job.wallet))
            .key(k.queue())
            .key(k.stats())
            .arg(job.job_id)
            .arg(job.request_id)
            .arg(job.service)
            .arg(chainfront_indexer::keys::lower(job.wallet))
            .arg(job.reserve.0)
            .arg(job.now_ms)
            .arg(job.payload)
            .arg(job.callback)
            .arg(job.ttl_secs.max(1))
            .arg(JOBS_KEPT)
            .arg(job.run_here.unwrap_or(job.now_ms))
            .arg(if job.run_here.is_some() {
                "processing"
            } else {
                "pending"
            })
            .arg(if job.run_here.is_some() { "here" } else { "" })
            .invoke_async(&mut conn)
            .await?;
        self.cache.forget(&job.wallet);
        let (code, rest) = status_of(&v)?;
        let amount = units(rest.first());
        match code {
            1 => Ok(Opened::Queued(amount)),
            0 => Ok(Opened::Insufficient(amount)),
            -1 => Ok(Opened::Exists),
            n => Err(LedgerError::Unexpected(format!("open_job {n}"))),
        }
    }

    /// Settles an open job: charges its cost (never more than reserved),
    /// refunds the rest, records the outcome and the wallet's usage. Once.
    pub async fn settle_job(&self, s: &Settlement<'_>) -> Result<Settled> {
        self.settle(s, "", "", true).await
    }

    /// Cancels `wallet`'s job if it is still pending: refunds it whole.
    pub async fn cancel_job(&self, job_id: &str, wallet: Address) -> Result<Settled> {
        let now = now_ms();
        let s = Settlement {
            job_id,
            wallet,
            status: "failed",
            cost: Usd::ZERO,
            result: "",
            usage: "",
            error: "cancelled",
            duration_ms: 0,
            now_ms: now,
            ttl_secs: 7 * 86_400,
        };
        let wallet_text = chainfront_indexer::keys::lower(wallet);
        self.settle(&s, "pending", &wallet_text, false).await
    }

    async fn settle(
        &self,
        s: &Settlement<'_>,
        require: &str,
        owner: &str,
        count_usage: bool,
    ) -> Result<Settled> {
        let k = &self.keys;
        let day = s.now_ms / 86_400_000;
        let mut conn = self.conn.clone();
        let v: redis::Value = self
            .scripts
            .settle
            .key(k.job(s.job_id))
            .key(k.balance(s.wallet))
            .key(k.entries(s.wallet))
            .key(k.queue())
            .key(k.stats())
            .key(k.usage_day(s.wallet, day))
            .key(k.usage_all(s.wallet))
            .arg(s.job_id)
            .arg(s.status)
            .arg(s.cost.0)
            .arg(s.now_ms)
            .arg(s.result)
            .arg(s.usage)
            .arg(s.error)
            .arg(s.duration_ms)
            .arg(s.ttl_secs.max(1))
            .arg(require)
            .arg(owner)
            .arg(USAGE_DAY_TTL)
            .arg(if count_usage { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        self.cache.forget(&s.wallet);
        match status_of(&v)? {
            (1, rest) => Ok(Settled::Charged(units(rest.first()))),
            (0, rest) => Ok(Settled::Already(
                rest.into_iter().next().unwrap_or_default(),
            )),
            (-1, _) => Ok(Settled::Missing),
            (-2, _) => Err(LedgerError::WrongWallet),
            (n, _) => Err(LedgerError::Unexpected(format!("settle {n}"))),
        }
    }
}
