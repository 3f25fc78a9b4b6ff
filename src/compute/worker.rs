//! The durable job queue's consumer. Jobs live in Redis (`queue`: a sorted
//! set scored by due time); a worker *leases* a batch by moving their scores
//! to `now + lease` and marking them `processing` in one script, renews the
//! leases of what it runs, and settles each job through the ledger, which
//! settles a job once. A node killed mid-job leaves its jobs leased: when the
//! lease ends any worker takes them again (a new attempt) — after
//! `max_attempts` runs the job fails and is refunded. So no job is lost and
//! none is charged twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use chainfront_indexer::keys::LedgerKeys;
use chainfront_indexer::retry::RetryPolicy;
use rust_decimal::Decimal;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::executor::{Failure, JobContext, Output};
use super::pricing::Num;
use super::{Compute, Result};
use crate::ledger::{Settled, Settlement, Usd, now_ms};

/// Leases up to ARGV[3] due jobs. KEYS: queue, stats. ARGV: now ms, lease
/// until ms, count, job key prefix (every job key is in the `{ledger}` slot).
/// Returns per job: id, attempts, service, wallet, payload, callback, mode.
const CLAIM_LUA: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local jk = ARGV[4] .. id
  local f = redis.call('HMGET', jk, 'status', 'service', 'wallet', 'payload', 'callback', 'mode')
  if f[1] == 'pending' or f[1] == 'processing' then
    local att = redis.call('HINCRBY', jk, 'attempts', 1)
    if f[1] == 'pending' then
      redis.call('HSET', jk, 'status', 'processing', 'started', ARGV[1])
      redis.call('HINCRBY', KEYS[2], 'jobs:pending', -1)
      redis.call('HINCRBY', KEYS[2], 'jobs:processing', 1)
    end
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    out[#out + 1] = id
    out[#out + 1] = tostring(att)
    for i = 2, 6 do out[#out + 1] = f[i] or '' end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
";

/// A leased job.
#[derive(Debug, Clone)]
struct Claimed {
    id: String,
    attempts: u32,
    service: String,
    wallet: String,
    payload: String,
    callback: String,
    mode: String,
}

/// Jobs leased per claim at most.
const CLAIM_BATCH: usize = 256;
/// A run's time cap beyond which the worker gives up on an executor.
const RUN_CAP: Duration = Duration::from_secs(600);

/// Runs workers until `shutdown`.
pub async fn run(compute: Compute, shutdown: CancellationToken) {
    let cfg = compute.inner.config.clone();
    let sem = Arc::new(Semaphore::new(cfg.workers.max(1)));
    let inflight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let claim = redis::Script::new(CLAIM_LUA);
    let renewer = tokio::spawn(renew_leases(
        compute.clone(),
        inflight.clone(),
        shutdown.clone(),
    ));
    tracing::info!(target: "chainfront::compute", workers = cfg.workers, "compute workers started");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let free = sem.available_permits().min(CLAIM_BATCH);
        if free == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                p = sem.clone().acquire_owned() => drop(p),
            }
            continue;
        }
        let now = now_ms();
        let mut conn = compute.inner.conn.clone();
        let claimed: redis::RedisResult<Vec<String>> = claim
            .key(LedgerKeys.queue())
            .key(LedgerKeys.stats())
            .arg(now)
            .arg(now + cfg.lease_ms)
            .arg(free)
            .arg(LedgerKeys.job_prefix())
            .invoke_async(&mut conn)
            .await;
        let jobs = match claimed {
            Ok(flat) => parse_claimed(&flat),
            Err(e) => {
                tracing::warn!(target: "chainfront::compute", error = %e, "claiming jobs failed; retrying");
                Vec::new()
            }
        };
        if jobs.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = compute.inner.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(cfg.poll_interval_ms)) => {}
            }
            continue;
        }
        for job in jobs {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            {
                let mut set = inflight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                set.insert(job.id.clone());
            }
            let (compute, inflight) = (compute.clone(), inflight.clone());
            tokio::spawn(async move {
                let id = job.id.clone();
                run_one(&compute, job).await;
                inflight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&id);
                drop(permit);
            });
        }
    }
    renewer.abort();
}

fn parse_claimed(flat: &[String]) -> Vec<Claimed> {
    flat.chunks(7)
        .filter_map(|c| match c {
            [id, att, service, wallet, payload, callback, mode] => Some(Claimed {
                id: id.clone(),
                attempts: att.parse().unwrap_or(1),
                service: service.clone(),
                wallet: wallet.clone(),
                payload: payload.clone(),
                callback: callback.clone(),
                mode: mode.clone(),
            }),
            _ => None,
        })
        .collect()
}

async fn renew_leases(
    compute: Compute,
    inflight: Arc<Mutex<HashSet<String>>>,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis((compute.inner.config.lease_ms / 3).max(50));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let ids: Vec<String> = inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        if ids.is_empty() {
            continue;
        }
        let until = now_ms() + compute.inner.config.lease_ms;
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(LedgerKeys.queue()).arg("XX");
        for id in &ids {
            cmd.arg(until).arg(id);
        }
        let mut conn = compute.inner.conn.clone();
        if let Err(e) = cmd.query_async::<i64>(&mut conn).await {
            tracing::warn!(target: "chainfront::compute", error = %e, "renewing job leases failed");
        }
    }
}

async fn run_one(compute: &Compute, job: Claimed) {
    let started = Instant::now();
    let Ok(wallet) = job.wallet.parse::<Address>() else {
        tracing::error!(target: "chainfront::compute", job = %job.id, "job without a valid wallet; left in the queue");
        return;
    };
    let max = compute.inner.config.max_attempts.max(1);
    let outcome = if job.mode == "here" {
        Err(Failure::new(
            "the node serving this stream stopped before it finished; the reservation was refunded",
        ))
    } else if job.attempts > max {
        Err(Failure::new(format!(
            "the node running this job stopped {} times; the job was abandoned and refunded",
            job.attempts - 1
        )))
    } else {
        match (
            compute.inner.executors.get(&job.service),
            serde_json::from_str::<Value>(&job.payload),
        ) {
            (Some(exec), Ok(payload)) => {
                if job.attempts > 1 {
                    tracing::info!(target: "chainfront::compute", job = %job.id, attempt = job.attempts, "resuming a job a stopped node left");
                }
                let ctx = JobContext {
                    job_id: job.id.clone(),
                    wallet,
                    attempt: job.attempts,
                };
                match tokio::time::timeout(RUN_CAP, exec.run(&ctx, &payload)).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure::new("the job ran out of time")),
                }
            }
            (None, _) => Err(Failure::new(format!(
                "the `{}` service is not offered by this node",
                job.service
            ))),
            (_, Err(_)) => Err(Failure::new("stored payload is not JSON")),
        }
    };
    match settle(
        compute,
        &job.id,
        &job.service,
        wallet,
        outcome,
        started.elapsed(),
    )
    .await
    {
        Ok(Settled::Charged(_)) => {
            if !job.callback.is_empty() {
                let c = compute.clone();
                let (id, url) = (job.id.clone(), job.callback.clone());
                tokio::spawn(async move { deliver_callback(&c, &id, wallet, &url).await });
            }
        }
        Ok(_) => {}
        Err(e) => {
            // The lease ends and the job comes back: it is settled then.
            tracing::warn!(target: "chainfront::compute", job = %job.id, error = %e, "settling failed; the job will be retried");
        }
    }
}

/// Settles a job with its outcome: cost from the price table, usage JSON
/// with the exact breakdown, once.
pub(crate) async fn settle(
    compute: &Compute,
    job_id: &str,
    service: &str,
    wallet: Address,
    outcome: std::result::Result<Output, Failure>,
    duration: Duration,
) -> Result<Settled> {
    let price = compute.inner.pricing.get(service);
    let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let (status, units, result, error) = match &outcome {
        Ok(o) => ("completed", o.units, o.result.to_string(), String::new()),
        Err(f) => ("failed", f.units, String::new(), f.message.clone()),
    };
    let (cost, usage) = match price {
        Some(p) if status == "completed" || units > Decimal::ZERO => {
            let (base, used, total) = p.breakdown(units);
            let usage = UsageJson {
                units: Num(units),
                unit_type: &p.unit,
                duration_ms,
                breakdown: Breakdown {
                    base: Num(base),
                    usage: Num(used),
                    total,
                },
            };
            (total, serde_json::to_string(&usage).unwrap_or_default())
        }
        _ => (Usd::ZERO, String::new()),
    };
    let s = Settlement {
        job_id,
        wallet,
        status,
        cost,
        result: &result,
        usage: &usage,
        error: &error,
        duration_ms,
        now_ms: now_ms(),
        ttl_secs: compute.inner.config.job_ttl_secs,
    };
    Ok(compute.inner.ledger.settle_job(&s).await?)
}

/// The job's `usage` (typed, so its numbers are written exactly).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageJson<'a> {
    units: Num,
    unit_type: &'a str,
    duration_ms: u64,
    breakdown: Breakdown,
}

#[derive(serde::Serialize)]
struct Breakdown {
    base: Num,
    usage: Num,
    total: Usd,
}

/// POSTs the final job JSON to its callback URL, signed, with retries.
async fn deliver_callback(compute: &Compute, job_id: &str, wallet: Address, url: &str) {
    let Ok(Some(view)) = compute.job(job_id).await else {
        return;
    };
    let body = view.to_json();
    let secret = match compute.inner.secrets.secret(wallet).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(target: "chainfront::compute", job = %job_id, error = %e, "no webhook secret; callback not sent");
            return;
        }
    };
    let signature = super::webhook::sign(secret.as_bytes(), &body);
    let cfg = &compute.inner.config.callbacks;
    let limits = super::ssrf::Limits {
        timeout: Duration::from_millis(cfg.timeout_ms),
        max_bytes: 64 * 1024,
        max_redirects: 0,
    };
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (super::webhook::SIGNATURE_HEADER.to_owned(), signature),
    ];
    let policy = RetryPolicy {
        min_delay: Duration::from_millis(cfg.base_delay_ms.max(1)),
        max_delay: Duration::from_secs(60),
        max_retries: cfg.max_attempts.saturating_sub(1) as usize,
    };
    let mut delays = policy.delays();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let r = compute
            .inner
            .guard
            .fetch(
                reqwest::Method::POST,
                url,
                &headers,
                Some(body.clone()),
                limits,
            )
            .await;
        let why = match r {
            Ok(f) if f.status.is_success() => {
                tracing::debug!(target: "chainfront::compute", job = %job_id, attempt, "callback delivered");
                return;
            }
            Ok(f) => format!("answered {}", f.status.as_u16()),
            Err(super::ssrf::GuardError::Blocked(..) | super::ssrf::GuardError::BadUrl(_)) => {
                tracing::warn!(target: "chainfront::compute", job = %job_id, "callback URL refused by the SSRF guard");
                return;
            }
            Err(e) => e.to_string(),
        };
        match delays.next() {
            Some(d) => {
                tracing::debug!(target: "chainfront::compute", job = %job_id, attempt, reason = %why, "callback failed; retrying");
                tokio::time::sleep(d).await;
            }
            None => {
                tracing::warn!(target: "chainfront::compute", job = %job_id, attempts = attempt, reason = %why, "callback not delivered");
                return;
            }
        }
    }
}
