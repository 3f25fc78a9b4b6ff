//! The Compute API's domain: paid jobs. A job is submitted for a proven
//! wallet, its maximum charge is reserved and it is queued in Redis in one
//! ledger script; workers (on any replica) lease it, run its service's
//! [`executor::Executor`], and settle it once — the real cost charged, the
//! rest refunded. Nothing here knows HTTP.
//!
//! - [`pricing`]: the price table; [`job`]: stored and answered jobs;
//! - [`worker`]: the durable queue's consumer (leases, resume after a crash);
//! - [`executors`]: storage, data, web, llm, code, command;
//! - [`ssrf`]: the guard for client-aimed requests; [`webhook`]: signed callbacks.

pub mod config;
pub mod executor;
pub mod executors;
pub mod job;
pub mod pricing;
pub mod ssrf;
pub mod webhook;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::LedgerKeys;
use redis::AsyncCommands;
use serde::Serialize;
use serde_json::Value;

use crate::ledger::{Ledger, LedgerError, NewJob, Opened, Settled, Usd, now_ms};
use executor::{Executor, Refusal};
use job::JobView;
use pricing::Pricing;

/// Every service the document names.
pub const SERVICES: [&str; 8] = [
    "llm", "code", "web", "trade", "data", "storage", "gpu", "ml",
];

/// Why a compute request failed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// No such service (404).
    #[error("unknown service `{0}`; services: llm, code, web, trade, data, storage, gpu, ml")]
    UnknownService(String),
    /// Not available on this node (501).
    #[error("{0}")]
    NotOffered(String),
    /// Bad payload or parameter (400).
    #[error("{0}")]
    Invalid(String),
    /// Balance too low (402); the failed job as recorded.
    #[error("{message}")]
    Insufficient {
        /// `Insufficient balance. Need $X, have $Y`.
        message: String,
        /// The failed job.
        job: Box<JobView>,
    },
    /// No such job (404).
    #[error("job not found")]
    NoJob,
    /// Someone else's job (403).
    #[error("this job belongs to another wallet")]
    NotOwner,
    /// Not cancellable (409).
    #[error("only pending jobs can be cancelled; this job is {0}")]
    NotPending(String),
    /// The state store failed (503).
    #[error("state store unavailable; retry shortly")]
    Store(#[source] redis::RedisError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<redis::RedisError> for ComputeError {
    fn from(e: redis::RedisError) -> Self {
        tracing::error!(target: "chainfront::compute", error = %e, "redis error");
        ComputeError::Store(e)
    }
}

impl From<Refusal> for ComputeError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid(m) => ComputeError::Invalid(m),
            Refusal::NotOffered(m) => ComputeError::NotOffered(m),
        }
    }
}

/// Result alias.
pub type Result<T, E = ComputeError> = std::result::Result<T, E>;

/// One service's usage in a period.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUsage {
    /// Jobs finished.
    pub requests: u64,
    /// Charged.
    pub cost: Usd,
    /// Mean run time, ms.
    pub avg_duration: u64,
}

/// `GET /v1/usage`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// The wallet.
    pub wallet: String,
    /// `day`, `week`, `month` or `all`.
    pub period: String,
    /// Per service.
    pub by_service: BTreeMap<String, ServiceUsage>,
    /// Sum of costs.
    pub total_cost: Usd,
    /// Sum of requests.
    pub total_requests: u64,
}

/// `GET /v1/metrics`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Seconds since this process started.
    pub uptime: u64,
    /// Compute requests (all replicas).
    pub total_requests: u64,
    /// Charged by finished jobs.
    pub total_revenue: Usd,
    /// Pending + processing.
    pub active_jobs: u64,
    /// Jobs per status.
    pub jobs_by_status: BTreeMap<String, u64>,
    /// Requests per service.
    pub requests_by_service: BTreeMap<String, u64>,
}

pub(crate) struct Inner {
    pub(crate) config: config::ComputeConfig,
    pub(crate) ledger: Ledger,
    pub(crate) pricing: Pricing,
    pub(crate) executors: BTreeMap<String, Arc<dyn Executor>>,
    /// Services that answer 501, with the reason.
    pub(crate) unavailable: BTreeMap<String, String>,
    pub(crate) conn: RedisConn,
    pub(crate) notify: tokio::sync::Notify,
    pub(crate) started: Instant,
    pub(crate) secrets: webhook::Secrets,
    pub(crate) guard: ssrf::Guard,
    pub(crate) llm: Option<Arc<executors::llm::Llm>>,
    pub(crate) deposits: crate::ledger::deposit::Deposits,
}

/// How a job is opened: by a worker (queued) or by its request
/// (`run_here` = lease end), under a fresh id or one the caller chose.
struct Opening<'a> {
    run_here: Option<u64>,
    job_id: Option<&'a str>,
}

/// The Compute service. Cheap to clone.
#[derive(Clone)]
pub struct Compute {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute")
            .field("services", &self.inner.executors.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Compute {
    /// Builds the service with its executors.
    pub async fn new(
        cfg: &crate::config::Config,
        conn: RedisConn,
        ledger: Ledger,
        deposits: crate::ledger::deposit::Deposits,
        home_chain_id: u64,
    ) -> crate::Result<Self> {
        let data = executors::data::DataSources {
            conn: conn.clone(),
            networks: deposits.networks().to_vec(),
            home_chain_id,
        };
        let c = &cfg.compute;
        if c.trust_wallet_field {
            tracing::warn!(target: "chainfront::security", "compute.trust_wallet_field is on: a bare `wallet` field (or X-Wallet-Address) is accepted as the spender, so anyone can spend any wallet's balance; switch it off unless every client is trusted");
        }
        let guard = ssrf::Guard::new(&c.web.allow)?;
        let secrets = webhook::Secrets::new(
            cfg.secrets
                .compute_webhook_key
                .as_ref()
                .map(crate::config::Secret::expose),
            conn.clone(),
        )
        .await?;
        let (executors, unavailable, llm) =
            executors::build(cfg, conn.clone(), guard.clone(), data)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: c.clone(),
                pricing: Pricing::new(&c.pricing),
                ledger,
                executors,
                unavailable,
                conn,
                notify: tokio::sync::Notify::new(),
                started: Instant::now(),
                secrets,
                guard,
                llm,
                deposits,
            }),
        })
    }

    /// The deposit fast path.
    pub fn deposits(&self) -> &crate::ledger::deposit::Deposits {
        &self.inner.deposits
    }

    /// The LLM executor, when offered (for streams).
    pub fn llm(&self) -> Option<Arc<executors::llm::Llm>> {
        self.inner.llm.clone()
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// The price table.
    pub fn pricing(&self) -> &Pricing {
        &self.inner.pricing
    }

    /// Webhook secrets.
    pub fn secrets(&self) -> &webhook::Secrets {
        &self.inner.secrets
    }

    /// The compute configuration.
    pub fn config(&self) -> &config::ComputeConfig {
        &self.inner.config
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.inner.started.elapsed().as_secs()
    }

    /// Checks a payload for `service` and returns the charge to reserve.
    pub fn quote(&self, service: &str, payload: &Value) -> Result<Usd> {
        if !SERVICES.contains(&service) && !self.inner.executors.contains_key(service) {
            return Err(ComputeError::UnknownService(service.to_owned()));
        }
        if let Some(reason) = self.inner.unavailable.get(service) {
            return Err(ComputeError::NotOffered(reason.clone()));
        }
        let exec = self.inner.executors.get(service).ok_or_else(|| {
            ComputeError::NotOffered(format!(
                "the `{service}` service is not offered by this node"
            ))
        })?;
        let price = self.inner.pricing.get(service).ok_or_else(|| {
            ComputeError::NotOffered(format!("no price is configured for `{service}`"))
        })?;
        if !payload.is_object() {
            return Err(ComputeError::Invalid(
                "payload must be a JSON object".into(),
            ));
        }
        let bound = exec.check(payload)?;
        Ok(bound.map_or_else(|| price.max(), |units| price.cost(units)))
    }

    /// Checks a submission (service, payload, `callbackUrl`) without
    /// opening it, and returns the charge it reserves: what a job paid per
    /// call with x402 costs.
    pub fn check_submission(
        &self,
        service: &str,
        payload: &Value,
        callback: Option<&str>,
    ) -> Result<Usd> {
        let reserve = self.quote(service, payload)?;
        if let Some(cb) = callback {
            let url = reqwest::Url::parse(cb)
                .map_err(|e| ComputeError::Invalid(format!("callbackUrl is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ComputeError::Invalid(
                    "callbackUrl must be http or https".into(),
                ));
            }
        }
        Ok(reserve)
    }

    /// Submits a job: reserves its maximum charge and queues it.
    pub async fn submit(
        &self,
        wallet: Address,
        service: &str,
        payload: &Value,
        callback: Option<&str>,
    ) -> Result<JobView> {
        self.submit_as(wallet, service, payload, callback, None)
            .await
    }

    /// [`Compute::submit`] under a job id the caller chose (`job_…`, from
    /// [`job::new_id`]), once: submitting the same id again answers the job
    /// opened the first time and reserves nothing more. A job paid per call
    /// with x402 keeps its id with the payment, so a resumed payment never
    /// opens a second job.
    pub async fn submit_as(
        &self,
        wallet: Address,
        service: &str,
        payload: &Value,
        callback: Option<&str>,
        job_id: Option<&str>,
    ) -> Result<JobView> {
        let reserve = self.check_submission(service, payload, callback)?;
        let (view, opened) = self
            .open(
                wallet,
                service,
                payload,
                callback,
                reserve,
                Opening {
                    run_here: None,
                    job_id,
                },
            )
            .await?;
        match opened {
            Opened::Queued(_) => {
                self.inner.notify.notify_one();
                Ok(view)
            }
            Opened::Exists => Ok(view),
            Opened::Insufficient(_) => Err(ComputeError::Insufficient {
                message: view.error.clone().unwrap_or_default(),
                job: Box::new(view),
            }),
        }
    }

    /// Opens a job the caller runs itself (an SSE stream): reserved, marked
    /// processing, leased; [`Compute::finish_here`] settles it.
    pub async fn open_here(
        &self,
        wallet: Address,
        service: &str,
        payload: &Value,
    ) -> Result<JobView> {
        let reserve = self.quote(service, payload)?;
        let lease = now_ms() + self.inner.config.lease_ms;
        let (view, opened) = self
            .open(
                wallet,
                service,
                payload,
                None,
                reserve,
                Opening {
                    run_here: Some(lease),
                    job_id: None,
                },
            )
            .await?;
        match opened {
            Opened::Queued(_) | Opened::Exists => Ok(view),
            Opened::Insufficient(_) => Err(ComputeError::Insufficient {
                message: view.error.clone().unwrap_or_default(),
                job: Box::new(view),
            }),
        }
    }

    async fn open(
        &self,
        wallet: Address,
        service: &str,
        payload: &Value,
        callback: Option<&str>,
        reserve: Usd,
        how: Opening<'_>,
    ) -> Result<(JobView, Opened)> {
        let Opening { run_here, job_id } = how;
        let job_id = job_id.map_or_else(|| job::new_id("job_"), str::to_owned);
        let request_id = job::new_id("req_");
        let now = now_ms();
        let payload_text = payload.to_string();
        let opened = self
            .inner
            .ledger
            .open_job(&NewJob {
                job_id: &job_id,
                request_id: &request_id,
                service,
                wallet,
                reserve,
                now_ms: now,
                payload: &payload_text,
                callback: callback.unwrap_or(""),
                ttl_secs: self.inner.config.job_ttl_secs,
                run_here,
            })
            .await?;
        let (status, error, cost) = match opened {
            Opened::Exists => {
                let view = self.job(&job_id).await?.ok_or(ComputeError::NoJob)?;
                return Ok((view, opened));
            }
            Opened::Queued(_) => (
                if run_here.is_some() {
                    "processing"
                } else {
                    "pending"
                },
                None,
                reserve,
            ),
            Opened::Insufficient(have) => {
                ("failed", Some(job::insufficient(reserve, have)), Usd::ZERO)
            }
        };
        Ok((
            JobView {
                id: request_id,
                job_id,
                service: service.to_owned(),
                status: status.into(),
                result: None,
                error,
                cost,
                usage: None,
                timestamp: now,
                wallet: chainfront_indexer::keys::lower(wallet),
            },
            opened,
        ))
    }

    /// Settles a job this process ran itself (see [`Compute::open_here`]).
    pub async fn finish_here(
        &self,
        view: &JobView,
        wallet: Address,
        outcome: std::result::Result<executor::Output, executor::Failure>,
        duration: Duration,
    ) -> Result<Settled> {
        worker::settle(
            self,
            &view.job_id,
            view.service.as_str(),
            wallet,
            outcome,
            duration,
        )
        .await
    }

    /// Renews the lease of a job this process runs itself.
    pub async fn renew_here(&self, job_id: &str) -> Result<()> {
        let mut c = self.inner.conn.clone();
        let _: i64 = redis::cmd("ZADD")
            .arg(LedgerKeys.queue())
            .arg("XX")
            .arg(now_ms() + self.inner.config.lease_ms)
            .arg(job_id)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// The executor of a service, for callers that run it themselves.
    pub fn executor(&self, service: &str) -> Option<Arc<dyn Executor>> {
        self.inner.executors.get(service).cloned()
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Option<JobView>> {
        if !job::is_job_id(id) {
            return Ok(None);
        }
        let mut c = self.inner.conn.clone();
        let h: HashMap<String, String> = c.hgetall(LedgerKeys.job(id)).await?;
        Ok(JobView::from_hash(&h))
    }

    /// A wallet's newest jobs.
    pub async fn jobs(&self, wallet: Address, limit: usize) -> Result<Vec<JobView>> {
        let mut c = self.inner.conn.clone();
        let ids: Vec<String> = c
            .zrevrange(
                LedgerKeys.wallet_jobs(wallet),
                0,
                limit.saturating_sub(1) as isize,
            )
            .await?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(LedgerKeys.job(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut c).await?;
        Ok(hashes.iter().filter_map(JobView::from_hash).collect())
    }

    /// Cancels a pending job of `wallet`, refunding it.
    pub async fn cancel(&self, id: &str, wallet: Address) -> Result<()> {
        if !job::is_job_id(id) {
            return Err(ComputeError::NoJob);
        }
        match self.inner.ledger.cancel_job(id, wallet).await {
            Ok(Settled::Charged(_)) => Ok(()),
            Ok(Settled::Already(status)) => Err(ComputeError::NotPending(status)),
            Ok(Settled::Missing) => Err(ComputeError::NoJob),
            Err(LedgerError::WrongWallet) => Err(ComputeError::NotOwner),
            Err(e) => Err(e.into()),
        }
    }

    /// A wallet's usage over `period` (`day`, `week`, `month`, `all`).
    pub async fn usage(&self, wallet: Address, period: &str) -> Result<Usage> {
        let days = match period {
            "day" => Some(1u64),
            "week" => Some(7),
            "month" => Some(30),
            "all" => None,
            other => {
                return Err(ComputeError::Invalid(format!(
                    "period must be day, week, month or all (got `{other}`)"
                )));
            }
        };
        let k = LedgerKeys;
        let keys: Vec<String> = match days {
            None => vec![k.usage_all(wallet)],
            Some(n) => {
                let today = now_ms() / 86_400_000;
                (0..n)
                    .map(|i| k.usage_day(wallet, today.saturating_sub(i)))
                    .collect()
            }
        };
        let mut c = self.inner.conn.clone();
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.hgetall(key);
        }
        let hashes: Vec<HashMap<String, u64>> = pipe.query_async(&mut c).await?;
        let mut sums: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for h in &hashes {
            for (field, v) in h {
                let Some((svc, what)) = field.rsplit_once(':') else {
                    continue;
                };
                let e = sums.entry(svc.to_owned()).or_default();
                match what {
                    "n" => e.0 += v,
                    "cost" => e.1 += v,
                    "ms" => e.2 += v,
                    _ => {}
                }
            }
        }
        let by_service: BTreeMap<String, ServiceUsage> = sums
            .into_iter()
            .map(|(svc, (n, cost, ms))| {
                (
                    svc,
                    ServiceUsage {
                        requests: n,
                        cost: Usd(cost),
                        avg_duration: ms.checked_div(n).unwrap_or(0),
                    },
                )
            })
            .collect();
        Ok(Usage {
            wallet: chainfront_indexer::keys::lower(wallet),
            period: period.to_owned(),
            total_cost: Usd(by_service.values().map(|s| s.cost.0).sum()),
            total_requests: by_service.values().map(|s| s.requests).sum(),
            by_service,
        })
    }

    /// Node-wide figures.
    pub async fn metrics(&self) -> Result<Metrics> {
        let mut c = self.inner.conn.clone();
        let stats: HashMap<String, i64> = c.hgetall(LedgerKeys.stats()).await?;
        let get = |k: &str| u64::try_from(stats.get(k).copied().unwrap_or(0)).unwrap_or(0);
        let jobs_by_status: BTreeMap<String, u64> =
            ["pending", "processing", "completed", "failed"]
                .into_iter()
                .map(|s| (s.to_owned(), get(&format!("jobs:{s}"))))
                .collect();
        let requests_by_service = stats
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("req:")
                    .map(|s| (s.to_owned(), u64::try_from(*v).unwrap_or(0)))
            })
            .collect();
        Ok(Metrics {
            uptime: self.uptime_secs(),
            total_requests: get("requests"),
            total_revenue: Usd(get("revenue")),
            active_jobs: jobs_by_status["pending"] + jobs_by_status["processing"],
            jobs_by_status,
            requests_by_service,
        })
    }

    /// Pending + processing jobs (all replicas).
    pub async fn active_jobs(&self) -> Result<u64> {
        Ok(self.metrics().await?.active_jobs)
    }
}
