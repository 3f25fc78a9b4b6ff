//! JSON-RPC to the endpoints of one chain, trusting none of them blindly.
//!
//! - Every endpoint's chain id is checked before the endpoint is used; a
//!   wrong-chain endpoint is never asked anything else.
//! - Each endpoint's head is tracked (the head poll asks the preferred one,
//!   the others are probed every [`PROBE_EVERY`]): an endpoint more than
//!   [`STALE_BLOCKS`] behind the best head is left for a fresher one, and the
//!   first-listed healthy endpoint is preferred again as soon as it catches up.
//! - Faults are classified ([`Fault`]): a rate limit (429, `-32005`, or a rate
//!   phrase) rests that endpoint for its `Retry-After` (capped at
//!   [`RETRY_AFTER_CAP`]) while the call goes on at once with another one;
//!   server errors, transport errors, timeouts and answers that fail a
//!   caller's check (see [`crate::verify`]) rest the endpoint with backoff
//!   and fail over; "block not found" answers go to the other endpoints and,
//!   when none has the block, back to the caller as [`Outcome::Missing`];
//!   `eth_getLogs` range errors go back to the caller, which shrinks the
//!   range, and so do timeouts and unrecognised errors of calls the caller
//!   marks splittable.
//! - Calls are closures over one endpoint ([`Link`]), so a caller can send a
//!   JSON-RPC batch (logs and the header that proves them) to one pinned
//!   endpoint and check the answers together ([`Rpc::call_with`]); plain
//!   provider calls go through [`Rpc::call`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy::eips::BlockNumberOrTag;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::transports::{RpcError, TransportErrorKind, TransportResult};
use tracing::{debug, error, warn};

use crate::logs::{self, RangeAdvice};
use crate::retry::RetryPolicy;
use crate::verify::{Header, Rejection};
use crate::{Error, Result};

/// Longest rest a `Retry-After` header imposes on an endpoint.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(30);
/// An endpoint whose head is more than this many blocks below the best head
/// seen is stale: used only when no fresher endpoint is available.
pub const STALE_BLOCKS: u64 = 3;
/// How often the heads of the endpoints not in use are probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// How one failed call is handled.
#[derive(Debug)]
pub enum Fault {
    /// The provider says the `eth_getLogs` range is too large.
    Range(RangeAdvice, String),
    /// Rate limited (with the server's `Retry-After`, if it sent one).
    RateLimited(Option<Duration>, String),
    /// No answer within the timeout.
    Timeout(String),
    /// An error answer nobody recognises (`-32000 upstream error`, ...).
    Server(String),
    /// The connection, the HTTP status or the body was broken.
    Transport(String),
    /// The endpoint does not have the block asked for (yet, or any more).
    Missing(String),
    /// The answer failed a check.
    Rejected(Rejection),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Range(_, m) => write!(f, "range too large: {m}"),
            Fault::RateLimited(after, m) => write!(f, "rate limited ({after:?}): {m}"),
            Fault::Timeout(m) | Fault::Server(m) | Fault::Transport(m) => f.write_str(m),
            Fault::Missing(m) => write!(f, "not available: {m}"),
            Fault::Rejected(r) => write!(f, "{r}"),
        }
    }
}

/// Phrases of "this node does not have that block" answers (geth, Erigon,
/// reth, Nethermind, and the execution-apis range-beyond-head error).
const MISSING_PHRASES: &[&str] = &[
    "not found",
    "unknown block",
    "missing block",
    "beyond current head",
    "after last accepted block",
    "block not available",
];

impl From<RpcError<TransportErrorKind>> for Fault {
    fn from(err: RpcError<TransportErrorKind>) -> Self {
        match err {
            RpcError::ErrorResp(payload) => {
                // Providers echo URLs (with keys) in their messages.
                let msg = redact_urls(&payload.message);
                let lower = msg.to_ascii_lowercase();
                if let Some(advice) = logs::classify(Some(payload.code), &msg) {
                    return Fault::Range(advice, msg);
                }
                if logs::is_rate_limit(payload.code, &lower) {
                    return Fault::RateLimited(None, msg);
                }
                if MISSING_PHRASES.iter().any(|p| lower.contains(p)) {
                    return Fault::Missing(msg);
                }
                Fault::Server(format!("{} {msg}", payload.code))
            }
            RpcError::NullResp => Fault::Missing("null answer".into()),
            RpcError::Transport(TransportErrorKind::HttpErrorWithRetryAfter {
                error,
                retry_after,
            }) if error.status == 429 => Fault::RateLimited(Some(retry_after), "HTTP 429".into()),
            RpcError::Transport(TransportErrorKind::HttpError(e)) if e.status == 429 => {
                Fault::RateLimited(None, "HTTP 429".into())
            }
            other => Fault::Transport(redact_urls(&other.to_string())),
        }
    }
}

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct RpcStats {
    /// HTTP requests sent (a JSON-RPC batch is one).
    pub requests: AtomicU64,
    /// Calls that failed (any reason).
    pub errors: AtomicU64,
    /// Retries that went to another endpoint than the failed attempt.
    pub failovers: AtomicU64,
    /// Rate-limit answers.
    pub rate_limited: AtomicU64,
    /// Answers that failed a check (inconsistent or incomplete).
    pub rejected: AtomicU64,
    /// The highest head any endpoint reported.
    pub highest_head: AtomicU64,
    /// When the highest head last went up (ms since the Unix epoch).
    pub head_advanced_ms: AtomicU64,
}

impl RpcStats {
    /// How long ago the highest head went up (zero before the first head).
    pub fn head_age(&self) -> Duration {
        let at = self.head_advanced_ms.load(Ordering::Relaxed);
        if at == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(unix_ms().saturating_sub(at))
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a call returned.
#[derive(Debug)]
pub enum Outcome<T> {
    /// The answer, and which endpoint gave it.
    Ok(T, usize),
    /// The range asked for is too large (or, for a splittable call, it timed
    /// out or failed in a way nobody recognises): ask for less.
    Range(RangeAdvice, String),
    /// No endpoint has the block asked for.
    Missing(String),
}

/// How a call is made.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOpts {
    /// Range errors come back as [`Outcome::Range`] instead of failing over.
    pub ranges: bool,
    /// Timeouts and unrecognised errors come back as [`Outcome::Range`] too
    /// (after resting the endpoint), so the caller asks for less.
    pub splittable: bool,
    /// An endpoint not to ask (a second opinion).
    pub avoid: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChainCheck {
    #[default]
    Unchecked,
    Ok,
    Wrong(u64),
}

#[derive(Debug, Default)]
struct Health {
    chain: ChainCheck,
    head: Option<u64>,
    resting_until: Option<Instant>,
    faults: u32,
}

struct Endpoint {
    label: String,
    link: Link,
    health: Mutex<Health>,
}

/// One endpoint, as a call sees it: its JSON-RPC client (for batches) and a
/// provider over the same connection pool.
#[derive(Clone)]
pub struct Link {
    /// The raw JSON-RPC client.
    pub client: RpcClient,
    /// An alloy provider on the same client.
    pub provider: DynProvider,
}

impl Endpoint {
    fn health(&self) -> MutexGuard<'_, Health> {
        // The lock guards plain data and is never held across an await.
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Inner {
    endpoints: Vec<Endpoint>,
    policy: RetryPolicy,
    timeout: Duration,
    /// The chain every endpoint must serve (0: not checked).
    expected_chain: AtomicU64,
    last_probe: Mutex<Option<Instant>>,
}

/// The endpoints of one chain.
#[derive(Clone)]
pub struct Rpc {
    inner: Arc<Inner>,
    /// Shared counters.
    pub stats: Arc<RpcStats>,
}

impl Rpc {
    /// Endpoints in order of preference.
    pub fn new(urls: &[String], policy: RetryPolicy, timeout: Duration) -> Result<Self> {
        let mut endpoints = Vec::with_capacity(urls.len());
        for url in urls {
            let parsed = url
                .parse()
                .map_err(|e| Error::Rpc(format!("invalid RPC URL `{}`: {e}", redact(url))))?;
            let client = RpcClient::new_http(parsed);
            let provider = ProviderBuilder::new()
                .connect_client(client.clone())
                .erased();
            endpoints.push(Endpoint {
                label: redact(url),
                link: Link { client, provider },
                health: Mutex::default(),
            });
        }
        if endpoints.is_empty() {
            return Err(Error::Rpc("no RPC URL configured".into()));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints,
                policy,
                timeout,
                expected_chain: AtomicU64::new(0),
                last_probe: Mutex::default(),
            }),
            stats: Arc::default(),
        })
    }

    /// Number of endpoints.
    pub fn endpoints(&self) -> usize {
        self.inner.endpoints.len()
    }

    /// The log label (no credentials) of endpoint `i`.
    pub fn label(&self, i: usize) -> &str {
        &self.inner.endpoints[i].label
    }

    /// Checks every endpoint's chain id against `expected`; from now on an
    /// endpoint is used only once it has answered `expected` (endpoints that
    /// cannot be reached now are checked before their first use). Fails
    /// with [`Error::WrongChain`] when no endpoint serves `expected` and one
    /// serves another chain, and with [`Error::Rpc`] when none answered through the retry policy.
    pub async fn check_chain(&self, expected: u64) -> Result<()> {
        self.inner.expected_chain.store(expected, Ordering::Relaxed);
        // Nobody answering is transient: retried with the policy's backoff
        // (a wrong chain is certain and returned at once).
        let mut delays = self.inner.policy.delays();
        loop {
            match self.check_chain_once(expected).await {
                Err(Error::Rpc(msg)) => match delays.next() {
                    Some(d) => {
                        warn!(target: "chainfront::rpc", error = %msg, retry_in = ?d, "chain id check failed");
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(Error::Rpc(msg)),
                },
                other => return other,
            }
        }
    }

    async fn check_chain_once(&self, expected: u64) -> Result<()> {
        let checks = (0..self.endpoints()).map(|i| self.check_endpoint_chain(i));
        let results = futures_util::future::join_all(checks).await;
        let mut wrong = None;
        let mut ok = false;
        for r in results {
            match r {
                Ok(ChainCheck::Ok) => ok = true,
                Ok(ChainCheck::Wrong(actual)) => wrong = Some(actual),
                Ok(ChainCheck::Unchecked) | Err(_) => {}
            }
        }
        match (ok, wrong) {
            (true, _) => Ok(()),
            (false, Some(actual)) => Err(Error::WrongChain { expected, actual }),
            (false, None) => Err(Error::Rpc("no RPC endpoint answered eth_chainId".into())),
        }
    }

    /// Asks endpoint `i` for its chain id (once) and records the verdict.
    async fn check_endpoint_chain(&self, i: usize) -> std::result::Result<ChainCheck, Fault> {
        let expected = self.inner.expected_chain.load(Ordering::Relaxed);
        let ep = &self.inner.endpoints[i];
        let known = ep.health().chain;
        if expected == 0 || known != ChainCheck::Unchecked {
            return Ok(if expected == 0 { ChainCheck::Ok } else { known });
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let asked = tokio::time::timeout(
            self.inner.timeout,
            ep.link
                .client
                .request_noparams::<alloy::primitives::U64>("eth_chainId"),
        )
        .await;
        let actual = match asked {
            Ok(Ok(id)) => id.to::<u64>(),
            Ok(Err(e)) => return Err(Fault::from(e)),
            Err(_) => return Err(Fault::Timeout("eth_chainId timed out".into())),
        };
        let verdict = if actual == expected {
            ChainCheck::Ok
        } else {
            error!(target: "chainfront::rpc", endpoint = %ep.label, expected, actual, "RPC endpoint serves another chain; it will not be used");
            ChainCheck::Wrong(actual)
        };
        ep.health().chain = verdict;
        Ok(verdict)
    }

    /// The head block (`latest`, `safe` or `finalized`) of the preferred
    /// endpoint; `None` if it has none (a `null` `safe` block of a syncing
    /// node). Records the endpoint's head and, now and then, probes the
    /// other endpoints' heads in the background.
    pub async fn head(&self, tag: BlockNumberOrTag) -> Result<Option<Header>> {
        let outcome = self
            .call_with(
                "eth_getBlockByNumber",
                CallOpts::default(),
                move |l: Link| async move {
                    l.client
                        .request::<_, Option<Header>>("eth_getBlockByNumber", (tag, false))
                        .await
                        .map_err(Fault::from)
                },
            )
            .await?;
        match outcome {
            Outcome::Ok(head, i) => {
                if let Some(h) = &head {
                    self.observe_head(i, h.number);
                }
                self.maybe_probe(tag, i);
                Ok(head)
            }
            Outcome::Missing(_) | Outcome::Range(..) => Ok(None),
        }
    }

    /// The header of block `n`; `None` when no endpoint has it.
    pub async fn header(&self, n: u64) -> Result<Option<Header>> {
        let outcome = self
            .call_with(
                "eth_getBlockByNumber",
                CallOpts::default(),
                move |l: Link| async move {
                    let h = l
                        .client
                        .request::<_, Option<Header>>(
                            "eth_getBlockByNumber",
                            (BlockNumberOrTag::Number(n), false),
                        )
                        .await
                        .map_err(Fault::from)?;
                    match h {
                        None => Err(Fault::Missing(format!("block {n}"))),
                        Some(h) if h.number != n => Err(Fault::Rejected(Rejection::Inconsistent(
                            format!("block {} in the answer for block {n}", h.number),
                        ))),
                        Some(h) => Ok(h),
                    }
                },
            )
            .await?;
        Ok(match outcome {
            Outcome::Ok(h, _) => Some(h),
            Outcome::Missing(_) | Outcome::Range(..) => None,
        })
    }

    /// The highest head any endpoint serving the right chain reported.
    pub fn highest_head(&self) -> u64 {
        self.stats.highest_head.load(Ordering::Relaxed)
    }

    fn observe_head(&self, i: usize, number: u64) {
        self.inner.endpoints[i].health().head = Some(number);
        let before = self.stats.highest_head.fetch_max(number, Ordering::Relaxed);
        if number > before {
            self.stats
                .head_advanced_ms
                .store(unix_ms(), Ordering::Relaxed);
        }
    }

    /// Probes the heads of the endpoints other than `used`, in the
    /// background, at most every [`PROBE_EVERY`].
    fn maybe_probe(&self, tag: BlockNumberOrTag, used: usize) {
        if self.endpoints() < 2 {
            return;
        }
        {
            let mut last = self
                .inner
                .last_probe
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let rpc = self.clone();
        tokio::spawn(async move {
            let probes = (0..rpc.endpoints()).filter(|i| *i != used).map(|i| {
                let rpc = rpc.clone();
                async move {
                    let ep = &rpc.inner.endpoints[i];
                    // A resting endpoint (rate limited, failing) is left alone.
                    if ep.health().resting_until.is_some_and(|t| t > Instant::now()) {
                        return;
                    }
                    if !matches!(rpc.check_endpoint_chain(i).await, Ok(ChainCheck::Ok)) {
                        return;
                    }
                    rpc.stats.requests.fetch_add(1, Ordering::Relaxed);
                    let asked = tokio::time::timeout(
                        rpc.inner.timeout,
                        ep.link.client
                            .request::<_, Option<Header>>("eth_getBlockByNumber", (tag, false)),
                    )
                    .await;
                    match asked {
                        Ok(Ok(Some(h))) => rpc.observe_head(i, h.number),
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => debug!(target: "chainfront::rpc", endpoint = %ep.label, error = %e, "head probe failed"),
                        Err(_) => debug!(target: "chainfront::rpc", endpoint = %ep.label, "head probe timed out"),
                    }
                }
            });
            futures_util::future::join_all(probes).await;
        });
    }

    /// Runs `f` with a provider of the best endpoint, with retries and
    /// failover; "not available" answers from every endpoint are an error.
    pub async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        let outcome = self
            .call_with(what, CallOpts::default(), |l: Link| {
                let asked = f(l.provider);
                async move { asked.await.map_err(Fault::from) }
            })
            .await?;
        match outcome {
            Outcome::Ok(v, _) => Ok(v),
            Outcome::Missing(m) | Outcome::Range(_, m) => Err(Error::Rpc(format!("{what}: {m}"))),
        }
    }

    /// [`Rpc::call`] for a lookup that may answer `null` (a transaction, a
    /// receipt): one endpoint's `null` (it lags, or has not seen the
    /// transaction yet) sends the call on to the others, and the answer is
    /// `None` only when every endpoint has none.
    pub async fn call_found<T, F, Fut>(&self, what: &'static str, f: F) -> Result<Option<T>>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<Option<T>>>,
    {
        let outcome = self
            .call_with(what, CallOpts::default(), |l: Link| {
                let asked = f(l.provider);
                async move {
                    match asked.await {
                        Ok(Some(v)) => Ok(v),
                        Ok(None) => Err(Fault::Missing(format!("{what}: null"))),
                        Err(e) => Err(Fault::from(e)),
                    }
                }
            })
            .await?;
        match outcome {
            Outcome::Ok(v, _) => Ok(Some(v)),
            Outcome::Missing(_) => Ok(None),
            Outcome::Range(_, m) => Err(Error::Rpc(format!("{what}: {m}"))),
        }
    }

    /// Runs `f` against the best endpoint, with retries and failover (see the
    /// module documentation for how each [`Fault`] is handled).
    pub async fn call_with<T, F, Fut>(
        &self,
        what: &'static str,
        opts: CallOpts,
        f: F,
    ) -> Result<Outcome<T>>
    where
        F: Fn(Link) -> Fut,
        Fut: Future<Output = std::result::Result<T, Fault>>,
    {
        let n = self.endpoints();
        let budget = self.inner.policy.max_retries + n;
        let mut attempts = 0usize;
        let mut missing = vec![false; n];
        let mut previous: Option<usize> = None;
        let mut last_fault = String::new();
        loop {
            let Some((i, wait)) = self.pick(opts.avoid, &missing) else {
                if missing.iter().any(|m| *m) {
                    return Ok(Outcome::Missing(last_fault));
                }
                return Err(self.no_endpoint(what));
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if previous.is_some_and(|p| p != i) {
                self.stats.failovers.fetch_add(1, Ordering::Relaxed);
            }
            previous = Some(i);
            let ep = &self.inner.endpoints[i];
            let fault = match self.check_endpoint_chain(i).await {
                Ok(ChainCheck::Ok | ChainCheck::Unchecked) => {
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    match tokio::time::timeout(self.inner.timeout, f(ep.link.clone())).await {
                        Ok(Ok(v)) => {
                            let mut h = ep.health();
                            h.faults = 0;
                            h.resting_until = None;
                            return Ok(Outcome::Ok(v, i));
                        }
                        Ok(Err(fault)) => fault,
                        Err(_) => {
                            Fault::Timeout(format!("timed out after {:?}", self.inner.timeout))
                        }
                    }
                }
                // Never used again; not an attempt.
                Ok(ChainCheck::Wrong(_)) => continue,
                Err(fault) => fault,
            };
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            last_fault = format!("{fault}");
            match fault {
                Fault::Range(advice, msg) if opts.ranges => {
                    return Ok(Outcome::Range(advice, msg));
                }
                Fault::Missing(msg) => {
                    debug!(target: "chainfront::rpc", endpoint = %ep.label, what, error = %msg, "not available on this endpoint");
                    missing[i] = true;
                    // Another endpoint may have it; asking costs no backoff.
                    continue;
                }
                Fault::RateLimited(after, msg) => {
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    let after = after.map(|a| a.min(RETRY_AFTER_CAP));
                    warn!(target: "chainfront::rpc", endpoint = %ep.label, what, retry_after = ?after, error = %msg, "rate limited");
                    self.rest(i, after);
                }
                Fault::Rejected(rejection) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    warn!(target: "chainfront::rpc", endpoint = %ep.label, what, error = %rejection, "answer rejected");
                    self.rest(i, None);
                }
                fault @ (Fault::Timeout(_) | Fault::Server(_)) if opts.splittable => {
                    warn!(target: "chainfront::rpc", endpoint = %ep.label, what, error = %fault, "range fetch failed; asking for less");
                    self.rest(i, None);
                    return Ok(Outcome::Range(RangeAdvice::Unsure, fault.to_string()));
                }
                fault => {
                    warn!(target: "chainfront::rpc", endpoint = %ep.label, what, error = %fault, "RPC call failed");
                    self.rest(i, None);
                }
            }
            attempts += 1;
            if attempts > budget {
                return Err(Error::Rpc(format!(
                    "{what}: every endpoint failed after {attempts} attempts (last: {last_fault})"
                )));
            }
        }
    }

    fn no_endpoint(&self, what: &str) -> Error {
        let expected = self.inner.expected_chain.load(Ordering::Relaxed);
        let wrong = self
            .inner
            .endpoints
            .iter()
            .find_map(|e| match e.health().chain {
                ChainCheck::Wrong(actual) => Some(actual),
                _ => None,
            });
        match wrong {
            Some(actual) if expected != 0 => Error::WrongChain { expected, actual },
            _ => Error::Rpc(format!("{what}: no RPC endpoint left to ask")),
        }
    }

    /// Rests endpoint `i` after a fault: backoff by its consecutive faults,
    /// or the server's (capped) `Retry-After` if longer.
    fn rest(&self, i: usize, at_least: Option<Duration>) {
        let mut h = self.inner.endpoints[i].health();
        let backoff = self.inner.policy.delay(h.faults);
        h.faults = h.faults.saturating_add(1);
        let rest = at_least.map_or(backoff, |a| a.max(backoff));
        h.resting_until = Some(Instant::now() + rest);
    }

    /// The endpoint to ask next and how long to wait first: endpoints that
    /// are not resting before resting ones, fresh ones before stale ones,
    /// then in configured order. Wrong-chain endpoints, `avoid` and the ones
    /// that lack the block are never picked.
    fn pick(&self, avoid: Option<usize>, missing: &[bool]) -> Option<(usize, Duration)> {
        let now = Instant::now();
        let best = self
            .inner
            .endpoints
            .iter()
            .filter_map(|e| e.health().head)
            .max();
        self.inner
            .endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != avoid && !missing[*i])
            .filter_map(|(i, e)| {
                let h = e.health();
                if matches!(h.chain, ChainCheck::Wrong(_)) {
                    return None;
                }
                let wait = h
                    .resting_until
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                let stale = matches!((h.head, best), (Some(x), Some(b)) if x + STALE_BLOCKS < b);
                Some((i, wait, stale))
            })
            .min_by_key(|(i, wait, stale)| (!wait.is_zero(), *stale, *wait, *i))
            .map(|(i, wait, _)| (i, wait))
    }
}

/// Every URL inside `text` (an error message, a config value) reduced to
/// scheme, host and port: no user info, path or query, where providers put
/// API keys. reqwest's errors end with `for url (...)`, and providers echo
/// URLs in their bodies, so every RPC error string goes through this before
/// it is logged or returned.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let head = &rest[..at];
        let scheme_len = head
            .bytes()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            .count();
        let scheme_start = at - scheme_len;
        let tail = &rest[at + 3..];
        let url_len = tail
            .find(|c: char| {
                c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '<' | '>' | ',' | '`')
            })
            .unwrap_or(tail.len());
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact(&rest[scheme_start..at + 3 + url_len]));
        rest = &tail[url_len..];
    }
    out.push_str(rest);
    out
}

/// The URL without credentials or path (API keys often live there), for logs.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?']).next().unwrap_or(rest);
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}")
        }
        None => "<rpc>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::rpc::json_rpc::ErrorPayload;

    #[test]
    fn logged_urls_carry_no_secrets() {
        assert_eq!(
            redact("https://base-mainnet.g.example.com/v2/SECRETKEY"),
            "https://base-mainnet.g.example.com"
        );
        assert_eq!(
            redact("https://user:pass@node.example:8545/x?key=1"),
            "https://node.example:8545"
        );
        assert_eq!(redact("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
    }

    #[test]
    fn urls_inside_messages_are_redacted() {
        let msg = "error sending request for url (https://user:pw@rpc.example:8545/v2/KEY?x=1): connection refused; also see http://a.example/SECRET.";
        let out = redact_urls(msg);
        assert_eq!(
            out,
            "error sending request for url (https://rpc.example:8545): connection refused; also see http://a.example"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(redact_urls("x ://odd/path y"), "x ://odd y");
        // Classified faults carry no key either.
        let f = Fault::from(RpcError::ErrorResp(ErrorPayload {
            code: -32000,
            message: "upstream https://node.example/v3/SECRETKEY failed"
                .to_owned()
                .into(),
            data: None,
        }));
        assert!(!f.to_string().contains("SECRETKEY"), "{f}");
    }

    fn answer(code: i64, message: &str) -> Fault {
        Fault::from(RpcError::ErrorResp(ErrorPayload {
            code,
            message: message.to_owned().into(),
            data: None,
        }))
    }

    #[test]
    fn faults_are_classified_by_what_providers_really_say() {
        // Infura's rate limit uses -32005, the code of "limit exceeded".
        assert!(matches!(
            answer(-32005, "project ID request rate exceeded"),
            Fault::RateLimited(..)
        ));
        assert!(matches!(
            answer(-32005, "limit exceeded"),
            Fault::RateLimited(..)
        ));
        assert!(matches!(
            answer(-32005, "query returned more than 10000 results"),
            Fault::Range(RangeAdvice::Split, _)
        ));
        assert!(matches!(
            answer(-32000, "header not found"),
            Fault::Missing(_)
        ));
        assert!(matches!(answer(-32000, "unknown block"), Fault::Missing(_)));
        assert!(matches!(
            answer(-32602, "block range extends beyond current head block"),
            Fault::Missing(_)
        ));
        assert!(matches!(answer(-32000, "upstream error"), Fault::Server(_)));
        assert!(matches!(answer(-32603, "internal error"), Fault::Server(_)));
    }

    async fn dead_rpc(n: usize) -> Rpc {
        // Ports nobody listens on: every call is a transport fault.
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 9 + i))
            .collect();
        Rpc::new(
            &urls,
            RetryPolicy {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
                max_retries: 2,
            },
            Duration::from_millis(200),
        )
        .expect("rpc")
    }

    #[tokio::test]
    async fn a_rate_limited_endpoint_rests_while_the_next_one_is_asked_at_once() {
        let rpc = dead_rpc(2).await;
        rpc.rest(0, Some(Duration::from_secs(600).min(RETRY_AFTER_CAP)));
        let (i, wait) = rpc.pick(None, &[false, false]).expect("pick");
        assert_eq!((i, wait), (1, Duration::ZERO));
        // Both resting: the sooner one, after its rest (never 600 s).
        rpc.rest(1, None);
        let (i, wait) = rpc.pick(None, &[false, false]).expect("pick");
        assert_eq!(i, 1);
        assert!(wait <= Duration::from_millis(2), "{wait:?}");
    }

    #[tokio::test]
    async fn stale_and_wrong_chain_endpoints_are_passed_over_and_the_first_is_preferred_again() {
        let rpc = dead_rpc(3).await;
        rpc.observe_head(0, 100);
        rpc.observe_head(1, 110);
        rpc.observe_head(2, 109);
        assert_eq!(
            rpc.pick(None, &[false; 3]).map(|p| p.0),
            Some(1),
            "0 is stale"
        );
        rpc.inner.endpoints[1].health().chain = ChainCheck::Wrong(1);
        assert_eq!(rpc.pick(None, &[false; 3]).map(|p| p.0), Some(2));
        rpc.observe_head(0, 110);
        assert_eq!(
            rpc.pick(None, &[false; 3]).map(|p| p.0),
            Some(0),
            "fail-back"
        );
        assert_eq!(rpc.pick(Some(0), &[false; 3]).map(|p| p.0), Some(2));
        assert_eq!(rpc.highest_head(), 110);
    }

    #[tokio::test]
    async fn calls_give_up_after_the_budget_with_the_last_fault() {
        let rpc = dead_rpc(2).await;
        let err = rpc.header(1).await.expect_err("nothing listens");
        assert!(err.to_string().contains("every endpoint failed"), "{err}");
        assert!(rpc.stats.failovers.load(Ordering::Relaxed) > 0);
    }
}
