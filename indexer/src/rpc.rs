//! JSON-RPC with several endpoints per chain: failover on transport faults,
//! backoff from [`crate::retry`] (honouring `Retry-After` on 429), a timeout per
//! request, and a log line on every failover. `eth_getLogs` range errors are
//! handed back to the caller, which splits the range instead of retrying.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::transports::{RpcError, TransportErrorKind, TransportResult};
use tracing::warn;

use crate::logs::{self, RangeAdvice};
use crate::retry::RetryPolicy;
use crate::{Error, Result};

/// How one failed call is handled.
#[derive(Debug)]
enum Fault {
    /// The provider says the `eth_getLogs` range is too large.
    Range(RangeAdvice, String),
    /// Rate limited: wait (at least this long, if the server said) and retry.
    RateLimited(Option<Duration>),
    /// The endpoint is broken for now: fail over.
    Endpoint(String),
    /// The request itself is wrong: no retry helps.
    Fatal(String),
}

fn classify(err: &RpcError<TransportErrorKind>) -> Fault {
    match err {
        RpcError::ErrorResp(payload) => {
            let msg = redact_urls(&payload.message);
            let lower = msg.to_ascii_lowercase();
            if let Some(advice) = logs::classify(Some(payload.code), &msg) {
                return Fault::Range(advice, msg);
            }
            if lower.contains("rate limit")
                || lower.contains("too many requests")
                || payload.code == 429
            {
                return Fault::RateLimited(None);
            }
            // Internal errors and "header not found"-style lag are the node's
            // fault, not the request's.
            if payload.code == -32603
                || lower.contains("not found")
                || lower.contains("unavailable")
            {
                return Fault::Endpoint(msg);
            }
            Fault::Fatal(msg)
        }
        RpcError::Transport(TransportErrorKind::HttpErrorWithRetryAfter { error, retry_after })
            if error.status == 429 =>
        {
            Fault::RateLimited(Some(*retry_after))
        }
        RpcError::Transport(TransportErrorKind::HttpError(e)) if e.status == 429 => {
            Fault::RateLimited(None)
        }
        other => Fault::Endpoint(redact_urls(&other.to_string())),
    }
}

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct RpcStats {
    /// Calls that failed (any reason).
    pub errors: AtomicU64,
    /// Switches to another endpoint.
    pub failovers: AtomicU64,
    /// 429 answers.
    pub rate_limited: AtomicU64,
}

/// The endpoints of one chain.
#[derive(Clone)]
pub struct Rpc {
    endpoints: Arc<Vec<(String, DynProvider)>>,
    active: Arc<AtomicUsize>,
    policy: RetryPolicy,
    timeout: Duration,
    /// Shared counters.
    pub stats: Arc<RpcStats>,
}

/// The outcome of an `eth_getLogs` call.
#[derive(Debug)]
pub enum LogsOutcome<T> {
    /// It worked.
    Ok(T),
    /// The range is too large; here is what the provider said.
    Range(RangeAdvice, String),
}

impl Rpc {
    /// Endpoints in failover order.
    pub fn new(urls: &[String], policy: RetryPolicy, timeout: Duration) -> Result<Self> {
        let mut endpoints = Vec::with_capacity(urls.len());
        for url in urls {
            let parsed = url
                .parse()
                .map_err(|e| Error::Rpc(format!("invalid RPC URL `{url}`: {e}")))?;
            endpoints.push((
                redact(url),
                ProviderBuilder::new().connect_http(parsed).erased(),
            ));
        }
        if endpoints.is_empty() {
            return Err(Error::Rpc("no RPC URL configured".into()));
        }
        Ok(Self {
            endpoints: Arc::new(endpoints),
            active: Arc::new(AtomicUsize::new(0)),
            policy,
            timeout,
            stats: Arc::default(),
        })
    }

    /// The provider currently in use (for callers that need no retry).
    pub fn provider(&self) -> DynProvider {
        self.endpoints[self.active.load(Ordering::Relaxed) % self.endpoints.len()]
            .1
            .clone()
    }

    /// Runs `f` with retries and failover.
    pub async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        match self.call_inner(what, &f, false).await? {
            LogsOutcome::Ok(v) => Ok(v),
            LogsOutcome::Range(_, msg) => Err(Error::Rpc(format!("{what}: {msg}"))),
        }
    }

    /// Like [`Rpc::call`], but range errors come back as [`LogsOutcome::Range`].
    pub async fn call_logs<T, F, Fut>(&self, what: &'static str, f: F) -> Result<LogsOutcome<T>>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        self.call_inner(what, &f, true).await
    }

    async fn call_inner<T, F, Fut>(
        &self,
        what: &'static str,
        f: &F,
        ranges: bool,
    ) -> Result<LogsOutcome<T>>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        let mut delays = self.policy.delays();
        let n = self.endpoints.len();
        let mut failed_in_a_row = 0usize;
        loop {
            let idx = self.active.load(Ordering::Relaxed) % n;
            let (label, provider) = &self.endpoints[idx];
            let outcome = tokio::time::timeout(self.timeout, f(provider.clone())).await;
            let fault = match outcome {
                Ok(Ok(v)) => return Ok(LogsOutcome::Ok(v)),
                Ok(Err(e)) => classify(&e),
                Err(_) => Fault::Endpoint(format!("timed out after {:?}", self.timeout)),
            };
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            let wait = match fault {
                Fault::Range(advice, msg) if ranges => return Ok(LogsOutcome::Range(advice, msg)),
                Fault::Range(_, msg) | Fault::Fatal(msg) => {
                    return Err(Error::Rpc(format!("{what} via {label}: {msg}")));
                }
                Fault::RateLimited(after) => {
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    warn!(target: "chainfront::rpc", endpoint = %label, what, "rate limited");
                    if n > 1 {
                        self.fail_over(idx, label, "rate limited");
                    }
                    failed_in_a_row += 1;
                    after
                }
                Fault::Endpoint(msg) => {
                    warn!(target: "chainfront::rpc", endpoint = %label, what, error = %msg, "RPC call failed");
                    failed_in_a_row += 1;
                    if n > 1 {
                        self.fail_over(idx, label, &msg);
                        // Try every endpoint once before backing off.
                        if !failed_in_a_row.is_multiple_of(n) {
                            continue;
                        }
                    }
                    None
                }
            };
            let Some(delay) = delays.next() else {
                return Err(Error::Rpc(format!(
                    "{what}: every endpoint failed after retries"
                )));
            };
            tokio::time::sleep(wait.map_or(delay, |w| w.max(delay))).await;
        }
    }

    fn fail_over(&self, from: usize, label: &str, reason: &str) {
        let n = self.endpoints.len();
        let to = (from + 1) % n;
        if self
            .active
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.stats.failovers.fetch_add(1, Ordering::Relaxed);
            warn!(
                target: "chainfront::rpc",
                from = %label,
                to = %self.endpoints[to].0,
                reason,
                "RPC failover"
            );
        }
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
    }
}
