//! The chain follower: backfill with adaptive `eth_getLogs` ranges up to the
//! reorg window below the target head, then block by block (by hash) inside
//! the window with parent-hash checks, undoing orphaned blocks on a reorg.
//! Blocks are applied strictly in order, each commit atomic (see `store`).
//!
//! No provider answer is committed on trust (see [`crate::verify`]):
//! - a backfill range is one JSON-RPC batch to one endpoint: the logs of
//!   every filter, the headers of the range's last block and of the block
//!   before it, and every log of the last block. The logs are checked
//!   against the range and the headers; the last block's full log list must
//!   account for its bloom (proof that the endpoint's log index has reached
//!   the end of the range) and must agree with the range's logs there. A
//!   range that cannot be proven so (the last block has no logs at all) is
//!   fetched again from another endpoint and committed only if both agree.
//!   The first range must chain from the checkpoint's hash.
//! - a window block whose bloom cannot match our filters has no events, for
//!   certain; any other is fetched whole by hash and must account for its
//!   bloom (an empty answer for a block with logs is "not ready yet", never
//!   "no events"), then filtered here as the node would have.
//! - a missing header is "not available", never "different"; a reorg walk
//!   that finds nothing to undo, or a batch with nothing ready, waits for the
//!   next poll instead of spinning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::B256;
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::apply::Watched;
use crate::contracts::MockUSDC;
use crate::logs::{AdaptiveRange, RangeAdvice, WireLog};
use crate::metrics::IndexerMetrics;
use crate::pace::HeadPace;
use crate::rpc::{CallOpts, Fault, Link, Outcome, Rpc};
use crate::store::{Checkpoint, Commit, Sent, Store, WindowBlock};
use crate::verify::{self, Header, Rejection};
use crate::{Error, Result};

/// Which head the follower chases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadTag {
    /// `latest` minus the confirmation depth.
    #[default]
    Latest,
    /// The node's `safe` block.
    Safe,
    /// The node's `finalized` block.
    Finalized,
}

/// Follower tuning.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// First block that can hold one of our events.
    pub start_block: u64,
    /// Blocks behind `latest` before a block is applied.
    pub confirmations: u64,
    /// Head polling interval while the block time is unknown or the chain is
    /// idle; around an expected block the head is polled more closely (see
    /// [`crate::pace`]).
    pub poll_interval: Duration,
    /// Blocks kept with undo records (reorg depth we can handle).
    pub window: u64,
    /// Largest `eth_getLogs` range in blocks.
    pub max_range: u64,
    /// First `eth_getLogs` range in blocks.
    pub initial_range: u64,
    /// Most logs in one atomic commit during backfill.
    pub max_logs_per_commit: usize,
    /// Ranges fetched ahead of the one being committed during a backfill, so
    /// the RPC node works while Redis commits (bounded: each holds one range
    /// of logs in memory). Blocks are still applied strictly in order.
    pub fetch_ahead: usize,
    /// Head to follow.
    pub head: HeadTag,
    /// WebSocket endpoint: new-head notifications wake the follower at once
    /// (polling stays on as the fallback).
    pub ws_url: Option<String>,
}

impl Default for FollowConfig {
    fn default() -> Self {
        Self {
            start_block: 0,
            confirmations: 0,
            poll_interval: Duration::from_secs(1),
            window: 128,
            max_range: 10_000,
            initial_range: 1_000,
            max_logs_per_commit: 10_000,
            fetch_ahead: 2,
            head: HeadTag::Latest,
            ws_url: None,
        }
    }
}

/// Follows one chain into Redis.
pub struct Follower {
    rpc: Rpc,
    store: Store,
    watched: Watched,
    filters: Arc<Vec<Filter>>,
    cfg: FollowConfig,
    range: AdaptiveRange,
    metrics: Arc<IndexerMetrics>,
    pace: HeadPace,
    /// The last pass stopped below the target (something was not ready).
    behind: bool,
    /// Passes in a row that stopped so: the retry backs off.
    not_ready: u32,
    /// The next window batch, fetched while the one before commits.
    prefetch: Option<Prefetch>,
}

/// Headers and logs of window blocks `from..`, fetched ahead on a task.
struct Prefetch {
    from: u64,
    task: tokio::task::JoinHandle<Result<WindowFetch>>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Window blocks as fetched: headers `n..` as far as they chain from each
/// other, and the whole-block logs of those whose bloom may match (a block
/// missing from the map is not ready on any endpoint).
type WindowFetch = (Vec<Header>, std::collections::HashMap<B256, Vec<Log>>);

/// Headers `n..=m` and the logs of those that chain from each other and may
/// hold events: what one window batch reads from the chain.
async fn fetch_window(rpc: Rpc, filters: Arc<Vec<Filter>>, n: u64, m: u64) -> Result<WindowFetch> {
    let mut headers = fetch_headers(&rpc, n, m).await?;
    // Only a consistent run is worth the logs (the caller checks the first
    // header against the checkpoint).
    if let Some(end) = headers
        .windows(2)
        .position(|w| w[1].parent_hash != w[0].hash)
    {
        headers.truncate(end + 1);
    }
    let logs = matching_block_logs(&rpc, &filters, &headers).await?;
    Ok((headers, logs))
}

/// The whole-block logs of those of `headers` whose bloom may match
/// `filters` ([`fetch_block_logs`]).
async fn matching_block_logs(
    rpc: &Rpc,
    filters: &Arc<Vec<Filter>>,
    headers: &[Header],
) -> Result<std::collections::HashMap<B256, Vec<Log>>> {
    let wanted: Vec<Header> = headers
        .iter()
        .filter(|h| h.may_match(filters))
        .copied()
        .collect();
    fetch_block_logs(rpc, filters, &wanted).await
}

/// The head a pass works towards.
#[derive(Debug, Clone, Copy)]
struct Target {
    number: u64,
    /// The header of block `number`, when the head poll returned it.
    header: Option<Header>,
}

impl Follower {
    /// A follower; nothing happens until [`Follower::run`] or [`Follower::sync`].
    pub fn new(
        rpc: Rpc,
        store: Store,
        watched: Watched,
        cfg: FollowConfig,
        metrics: Arc<IndexerMetrics>,
    ) -> Self {
        let range = AdaptiveRange::new(cfg.initial_range, cfg.max_range);
        let filters = Arc::new(filters(&watched));
        let pace = HeadPace::new(cfg.poll_interval);
        Self {
            rpc,
            store,
            watched,
            filters,
            cfg,
            range,
            metrics,
            pace,
            behind: false,
            not_ready: 0,
            prefetch: None,
        }
    }

    /// Starts fetching window blocks `n..=min(target, n + WINDOW_BATCH - 1)`
    /// on a task, for the next [`Follower::window_batch`] to use.
    fn prefetch_window(&mut self, n: u64, target: u64) {
        if n > target {
            return;
        }
        let m = target.min(n + WINDOW_BATCH - 1);
        let task = tokio::spawn(fetch_window(self.rpc.clone(), self.filters.clone(), n, m));
        self.prefetch = Some(Prefetch { from: n, task });
    }

    /// Follows until `shutdown`; each pass catches up to the head, then waits
    /// for the next block (see [`crate::pace`]) or a WebSocket new head. RPC
    /// outages are waited out; a deep reorg, lost leadership or corrupt state
    /// ends the loop with an error.
    pub async fn run(&mut self, shutdown: CancellationToken) -> Result<()> {
        let wake = Arc::new(Notify::new());
        let heads = self.cfg.ws_url.clone().map(|url| {
            let stop = shutdown.child_token();
            let retry = crate::retry::RetryPolicy {
                max_retries: usize::MAX,
                ..Default::default()
            };
            let task = tokio::spawn(new_heads(url, wake.clone(), retry, stop.clone()));
            (task, stop.drop_guard())
        });
        let result = self.run_loop(&shutdown, &wake).await;
        if let Some((task, _guard)) = heads {
            task.abort();
        }
        result
    }

    async fn run_loop(&mut self, shutdown: &CancellationToken, wake: &Notify) -> Result<()> {
        // Consecutive failed passes back off (a Redis or RPC outage is
        // waited out without hammering it); a good pass resets the delays.
        let retry = crate::retry::RetryPolicy {
            min_delay: self.cfg.poll_interval,
            max_delay: self.cfg.poll_interval.max(Duration::from_secs(5)),
            max_retries: usize::MAX,
        };
        let mut delays = retry.delays();
        loop {
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.sync() => r,
            };
            if !self.behind {
                self.not_ready = 0;
            }
            if pass.is_ok() {
                delays = retry.delays();
            }
            let wait = match pass {
                // Something was not ready yet (a block the log index has not
                // caught up with): look again soon, backing off while it
                // stays so.
                Ok(_) if self.behind => {
                    self.not_ready = self.not_ready.saturating_add(1);
                    let factor = 1u32 << self.not_ready.min(8).saturating_sub(1);
                    (self.pace.step() * factor).min(self.cfg.poll_interval)
                }
                Ok(_) => self.pace.next_poll(SystemTime::now()),
                Err(e) if e.is_fatal() || matches!(e, Error::Fenced | Error::WipePending) => {
                    return Err(e);
                }
                Err(e) => {
                    let wait = delays.next().unwrap_or(retry.max_delay);
                    warn!(target: "chainfront::indexer", error = %crate::rpc::redact_urls(&e.to_string()), retry_in_ms = wait.as_millis() as u64, "pass failed; retrying");
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
            }
        }
    }

    /// Checks that every RPC endpoint serves `expected`; endpoints that serve
    /// another chain are never used (see [`Rpc::check_chain`]).
    pub async fn check_chain(&self, expected: u64) -> Result<()> {
        self.rpc.check_chain(expected).await
    }

    /// One pass: applies every block up to the current target. Returns the
    /// checkpoint reached.
    pub async fn sync(&mut self) -> Result<Option<u64>> {
        self.behind = false;
        // Blocks prefetched by an earlier pass that ended early are old news.
        self.prefetch = None;
        let Some(target) = self.target().await? else {
            // No head yet (a `null` safe or finalized block of a node that is
            // syncing): nothing to do, and certainly not "target 0".
            debug!(target: "chainfront::indexer", head = ?self.cfg.head, "the node has no such head yet");
            return Ok(self.store.checkpoint().await?.map(|c| c.number));
        };
        let mut checkpoint_verified = false;
        loop {
            let cp = self.store.checkpoint().await?;
            let next = cp.map_or(self.cfg.start_block, |c| c.number + 1);
            if next > target.number {
                // At (or past) the head, compare the block at the head's height
                // with ours: the tip may have been replaced by a block of the
                // same height, or the chain may have become shorter (a reorg
                // that did not make the chain longer), which no parent hash
                // reveals until the chain grows past us. A provider that is
                // merely behind serves our own block there: no reorg; one that
                // does not have the block says nothing.
                if let Some(cp) = cp {
                    let ours = if cp.number == target.number {
                        Some(cp.hash)
                    } else {
                        self.store.block_hash(target.number).await?
                    };
                    if let Some(ours) = ours {
                        let theirs = match target.header {
                            Some(h) => Some(h),
                            None => self.rpc.header(target.number).await?,
                        };
                        if theirs.is_some_and(|h| h.hash != ours) {
                            if self.reorg(cp).await? == 0 {
                                // Providers disagree about the tip: wait
                                // for the next poll, do not spin.
                                return Ok(Some(cp.number));
                            }
                            continue;
                        }
                    }
                }
                return Ok(cp.map(|c| c.number));
            }
            let deep_end = target.number.saturating_sub(self.cfg.window);
            if next <= deep_end {
                // The chain moved more than a window since our checkpoint:
                // backfill skips the parent-hash check of window mode, so make
                // sure the checkpoint itself is still canonical first.
                if let Some(cp) = cp
                    && !checkpoint_verified
                {
                    checkpoint_verified = true;
                    let Some(canonical) = self.rpc.header(cp.number).await? else {
                        return Err(Error::Rpc(format!(
                            "block {} (the checkpoint) is not available from any endpoint",
                            cp.number
                        )));
                    };
                    if canonical.hash != cp.hash {
                        if self.reorg(cp).await? == 0 {
                            return Ok(Some(cp.number));
                        }
                        continue;
                    }
                }
                self.backfill(next, deep_end, cp.map(|c| c.hash), target.number)
                    .await?;
                continue;
            }
            match self.window_batch(next, target, cp).await? {
                Step::Applied => continue,
                Step::NotYet => {
                    self.behind = true;
                    let cp = self.store.checkpoint().await?;
                    return Ok(cp.map(|c| c.number));
                }
            }
        }
    }

    /// The block to catch up to, `None` while the node has no such head.
    async fn target(&mut self) -> Result<Option<Target>> {
        let tag = match self.cfg.head {
            HeadTag::Latest => BlockNumberOrTag::Latest,
            HeadTag::Safe => BlockNumberOrTag::Safe,
            HeadTag::Finalized => BlockNumberOrTag::Finalized,
        };
        let sent = SystemTime::now();
        let Some(head) = self.rpc.head(tag).await? else {
            return Ok(None);
        };
        self.pace
            .observe(head.number, head.timestamp, sent, SystemTime::now());
        // Lag is measured against the highest head any endpoint reported, so
        // a stuck endpoint shows as a growing lag, not as none.
        self.metrics
            .head_block
            .store(self.rpc.highest_head(), Ordering::Relaxed);
        let confirmations = if self.cfg.head == HeadTag::Latest {
            self.cfg.confirmations
        } else {
            0
        };
        Ok(Some(Target {
            number: head.number.saturating_sub(confirmations),
            header: (confirmations == 0).then_some(head),
        }))
    }

    /// Applies `from..=to` (all below the window) in ranges, without undo
    /// records. The next ranges are fetched while the current one commits;
    /// commits stay strictly in block order. `prev` is the hash of block
    /// `from - 1` (the checkpoint), which the first range must chain from.
    /// `head`: the pass's target, whose window blocks follow `to`.
    async fn backfill(&mut self, from: u64, to: u64, prev: Option<B256>, head: u64) -> Result<()> {
        // The last commit sent, not yet answered: while Redis runs it the
        // next one is prepared (and the next ranges fetched).
        let mut pending = None;
        let res = self
            .backfill_ranges(from, to, prev, head, &mut pending)
            .await;
        if let Some((sent, block, events)) = pending {
            let settled = self.store.settle(sent).await;
            if settled.is_ok() {
                self.committed(block, events);
            }
            // The first error is the one to report; a commit refused after
            // it leaves the store re-reading Redis anyway.
            return res.and(settled);
        }
        res
    }

    async fn backfill_ranges(
        &mut self,
        from: u64,
        to: u64,
        mut prev: Option<B256>,
        head: u64,
        pending: &mut Option<(Sent, u64, u64)>,
    ) -> Result<()> {
        // Next block to schedule a fetch for; fetches complete in any order
        // but are committed in the order they were scheduled.
        let mut scheduled = from;
        let mut inflight = Inflight::default();
        loop {
            self.top_up(&mut inflight, &mut scheduled, to);
            let Some(task) = inflight.0.pop_front() else {
                return Ok(());
            };
            let (a, b, took, outcome) = task
                .await
                .map_err(|e| Error::Rpc(format!("log fetch task failed: {e}")))?;
            let answer = match outcome? {
                Outcome::Ok(answer, _) => answer,
                Outcome::Range(advice, message) => {
                    if !self.range.failed(a, b - a + 1, advice) {
                        return Err(match advice {
                            RangeAdvice::Unsure => Error::Rpc(format!(
                                "eth_getLogs {a}..={b} keeps failing: {message}"
                            )),
                            _ => Error::Unsplittable { block: a, message },
                        });
                    }
                    debug!(target: "chainfront::indexer", from = a, to = b, next_size = self.range.size(), ?advice, "asking for a smaller range");
                    // Everything scheduled after `a` used the old size: refetch.
                    inflight.abort_all();
                    scheduled = a;
                    continue;
                }
                Outcome::Missing(message) => {
                    return Err(Error::Rpc(format!(
                        "blocks {a}..={b} not available from any endpoint: {message}"
                    )));
                }
            };
            if let (Some(expected), Some(got)) = (prev, answer.prev_hash)
                && expected != got
            {
                return Err(Error::Rpc(format!(
                    "blocks {a}..={b} do not chain from the checkpoint (block {} is {got}, not {expected})",
                    a - 1
                )));
            }
            self.range.succeeded(b - a + 1, answer.events, took);
            // Keep the RPC node busy while this range commits.
            self.top_up(&mut inflight, &mut scheduled, to);
            if scheduled > to && inflight.0.is_empty() {
                // The last range: the window's first batch is fetched while
                // it commits (no earlier: a prefetch never spans more than
                // a commit or two, as a batch's own fetch-then-commit).
                self.prefetch_window(to + 1, head);
            }
            for Chunk { commit, events } in answer.chunks {
                let block = commit.to;
                let sent = self.store.start_commit(commit).await?;
                if let Some((before, block, events)) = pending.replace((sent, block, events)) {
                    self.store.settle(before).await?;
                    self.committed(block, events);
                }
            }
            prev = Some(answer.to_hash);
        }
    }

    /// Schedules fetches from `scheduled` on until `fetch_ahead` are in flight.
    fn top_up(&self, inflight: &mut Inflight, scheduled: &mut u64, to: u64) {
        while inflight.0.len() < self.cfg.fetch_ahead.max(1) && *scheduled <= to {
            let (a, b) = self.range.next(*scheduled, to);
            inflight.0.push_back(self.spawn_fetch(a, b));
            *scheduled = b + 1;
        }
    }

    /// Fetches `from..=to` on a task and turns the checked answer into its
    /// commits there (so building the ops of one range overlaps the commit
    /// of the one before), returning the range, how long the fetch took and
    /// its outcome.
    fn spawn_fetch(&self, from: u64, to: u64) -> tokio::task::JoinHandle<FetchResult> {
        let rpc = self.rpc.clone();
        let filters = self.filters.clone();
        let watched = self.watched.clone();
        let max_logs = self.cfg.max_logs_per_commit;
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = fetch_range(&rpc, &filters, from, to).await;
            let took = started.elapsed();
            let prepared = outcome.and_then(|o| match o {
                Outcome::Ok(answer, endpoint) => Ok(Outcome::Ok(
                    prepare(&watched, max_logs, to, answer)?,
                    endpoint,
                )),
                Outcome::Range(advice, message) => Ok(Outcome::Range(advice, message)),
                Outcome::Missing(message) => Ok(Outcome::Missing(message)),
            });
            (from, to, took, prepared)
        })
    }

    /// Metrics after a commit that ended at `block` with `events` events.
    fn committed(&self, block: u64, events: u64) {
        self.metrics.indexed_block.store(block, Ordering::Relaxed);
        self.metrics
            .events_applied
            .fetch_add(events, Ordering::Relaxed);
    }

    /// Blocks `n..` inside the window up to `target` (one when following the
    /// head, up to [`WINDOW_BATCH`] when catching up): their headers must
    /// chain from the checkpoint by parent hash (a first block that is not
    /// the checkpoint's child is a reorg); the logs of each block whose bloom
    /// may match are fetched whole by hash and checked against its header;
    /// the blocks up to the first one that is not ready commit together in
    /// one atomic step with an undo record each.
    async fn window_batch(
        &mut self,
        n: u64,
        target: Target,
        cp: Option<Checkpoint>,
    ) -> Result<Step> {
        let m = target.number.min(n + WINDOW_BATCH - 1);
        // Blocks fetched while the batch before committed (never older than
        // that commit: anything they say is checked below as a fresh answer
        // would be).
        let prefetched = match self.prefetch.take() {
            Some(mut p) if p.from == n => match (&mut p.task).await {
                Ok(Ok(fetched)) if !fetched.0.is_empty() => Some(fetched),
                _ => None,
            },
            _ => None,
        };
        let fresh = prefetched.is_none();
        let (headers, mut fetched) = match prefetched {
            Some(fetched) => fetched,
            None => {
                // The head poll's header saves a request, unless the last
                // pass could not use it (its logs unknown by that hash): then
                // ask by number.
                let headers = match target.header {
                    Some(h) if n == m && h.number == n && self.not_ready == 0 => vec![h],
                    _ => fetch_headers(&self.rpc, n, m).await?,
                };
                (headers, std::collections::HashMap::new())
            }
        };

        let mut chain: Vec<Header> = Vec::with_capacity(headers.len());
        let mut parent = cp.map(|c| c.hash);
        for h in headers {
            if parent.is_some_and(|expected| expected != h.parent_hash) {
                if let Some(cp) = cp
                    && chain.is_empty()
                {
                    // Not the child of our checkpoint: a reorg.
                    return Ok(if self.reorg(cp).await? > 0 {
                        Step::Applied
                    } else {
                        Step::NotYet
                    });
                }
                // The chain moved while we asked: apply the consistent part.
                break;
            }
            parent = Some(h.hash);
            chain.push(h);
        }
        if chain.is_empty() {
            return Ok(Step::NotYet);
        }
        if fresh {
            fetched = matching_block_logs(&self.rpc, &self.filters, &chain).await?;
        }
        // Blocks whose logs are known, committed together (bounded by
        // `max_logs_per_commit`) with one undo record each.
        let mut ready: Vec<WindowBlock> = Vec::new();
        let mut ready_logs = 0;
        let mut step = Step::Applied;
        for h in chain {
            let block_logs = if h.may_match(&self.filters) {
                match fetched.remove(&h.hash) {
                    Some(logs) => logs,
                    None => {
                        // Not ready on any endpoint: commit what came before.
                        step = Step::NotYet;
                        break;
                    }
                }
            } else {
                Vec::new()
            };
            if !ready.is_empty() && ready_logs + block_logs.len() > self.cfg.max_logs_per_commit {
                self.commit_window(std::mem::take(&mut ready), ready_logs)
                    .await?;
                ready_logs = 0;
            }
            ready_logs += block_logs.len();
            ready.push(WindowBlock {
                number: h.number,
                hash: h.hash,
                ops: self.watched.ops_for_logs(&block_logs),
            });
        }
        let Some(last) = ready.last().map(|b| b.number) else {
            return Ok(Step::NotYet);
        };
        if matches!(step, Step::Applied) {
            // Catching up: the next batch is fetched while this one commits.
            self.prefetch_window(last + 1, target.number);
        }
        self.commit_window(ready, ready_logs).await?;
        Ok(step)
    }

    async fn commit_window(&mut self, blocks: Vec<WindowBlock>, events: usize) -> Result<()> {
        let Some(last) = blocks.last().map(|b| b.number) else {
            return Ok(());
        };
        self.store.commit_window(blocks).await?;
        self.committed(last, events as u64);
        Ok(())
    }

    /// Our checkpoint is not the parent of the canonical next block: walk back
    /// to the last block whose hash still matches and undo everything above
    /// (back to "no checkpoint" when even the start block was replaced).
    ///
    /// A block no endpoint has is unknown, never "different": it is undone
    /// only when a block below it is proven replaced (a chain that became
    /// shorter and then grew on another branch), since its parent is then
    /// orphaned too. Returns how many blocks were undone: 0 when no block is
    /// proven replaced (providers disagreed about the tip, or lack blocks);
    /// the caller then waits for the next poll instead of spinning. Running
    /// out of undo records is [`Error::ReorgTooDeep`] only with a replaced
    /// block proven; without, it is a retryable RPC error.
    async fn reorg(&mut self, cp: Checkpoint) -> Result<u64> {
        let window = self.cfg.window;
        let too_deep = |block| Error::ReorgTooDeep { block, window };
        let unknown = |k: u64| {
            Error::Rpc(format!(
                "blocks {k}..={} are not available from any endpoint; cannot tell whether they were replaced",
                cp.number
            ))
        };
        let mut replaced = false;
        let mut k = cp.number;
        let fork = loop {
            let Some(stored) = self.store.block_hash(k).await? else {
                return Err(if replaced { too_deep(k) } else { unknown(k) });
            };
            match self.rpc.header(k).await? {
                Some(canonical) if canonical.hash == stored => {
                    if !replaced {
                        debug!(target: "chainfront::indexer", block = cp.number, "no block proven replaced; waiting");
                        return Ok(0);
                    }
                    break Some(k);
                }
                Some(_) => replaced = true,
                None => {}
            }
            if cp.number - k >= window {
                return Err(if replaced { too_deep(k) } else { unknown(k) });
            }
            if k <= self.cfg.start_block {
                if !replaced {
                    return Err(unknown(k));
                }
                // Every block we hold was replaced.
                break None;
            }
            k -= 1;
        };
        let (revert_to, depth) = match fork {
            Some(k) => (k, cp.number - k),
            None => match self.cfg.start_block.checked_sub(1) {
                Some(before) => (before, cp.number - before),
                None => return Err(too_deep(0)),
            },
        };
        info!(target: "chainfront::indexer", from = cp.number, fork = revert_to, depth, "reorg: undoing orphaned blocks");
        self.store.revert_to(revert_to).await?;
        self.metrics.reorgs.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .max_reorg_depth
            .fetch_max(depth, Ordering::Relaxed);
        self.metrics
            .indexed_block
            .store(revert_to, Ordering::Relaxed);
        Ok(depth)
    }
}

/// The `eth_getLogs` filters of what `watched` follows.
fn filters(watched: &Watched) -> Vec<Filter> {
    let mut filters = Vec::new();
    let contracts = watched.contract_addresses();
    if !contracts.is_empty() {
        filters.push(Filter::new().address(contracts));
    }
    if let (Some(usdc), Some(treasury)) = (watched.usdc, watched.treasury) {
        filters.push(
            Filter::new()
                .address(usdc)
                .event_signature(MockUSDC::Transfer::SIGNATURE_HASH)
                .topic2(treasury.into_word()),
        );
    }
    filters
}

/// A backfill range's checked answer.
#[derive(Debug)]
struct RangeAnswer {
    /// Every matching log of the range, in chain order.
    logs: Vec<Log>,
    /// Hash of the range's last block.
    to_hash: B256,
    /// Hash of the block before the range (none for a range from block 0).
    prev_hash: Option<B256>,
    /// Whether the answer is shown complete (see [`fetch_range`]).
    proven: bool,
}

/// Fetches and checks `from..=to` (see the module documentation); a range
/// that cannot be proven complete is fetched from a second endpoint too and
/// used only if both agree. With one endpoint configured it is used as it
/// is; with more, a range no second endpoint confirms is an error (the pass
/// is retried), never committed.
async fn fetch_range(
    rpc: &Rpc,
    filters: &Arc<Vec<Filter>>,
    from: u64,
    to: u64,
) -> Result<Outcome<RangeAnswer>> {
    let first = range_batch(rpc, filters, from, to, None).await?;
    let Outcome::Ok(answer, endpoint) = first else {
        return Ok(first);
    };
    if answer.proven || rpc.endpoints() < 2 {
        return Ok(Outcome::Ok(answer, endpoint));
    }
    match range_batch(rpc, filters, from, to, Some(endpoint)).await {
        Ok(Outcome::Ok(second, other)) => {
            if second.to_hash != answer.to_hash || !same_logs(&second.logs, &answer.logs) {
                rpc.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Rpc(format!(
                    "endpoints {} and {} disagree about blocks {from}..={to}",
                    rpc.label(endpoint),
                    rpc.label(other)
                )));
            }
            Ok(Outcome::Ok(answer, endpoint))
        }
        // Unknown is not "complete": the pass fails (retryable) and the range
        // is asked again at the next one.
        Ok(_) | Err(_) => {
            warn!(target: "chainfront::indexer", from, to, "no second endpoint could confirm a range whose last block has no logs; not committed, asked again later");
            Err(Error::Rpc(format!(
                "blocks {from}..={to} end on a block without logs and no second endpoint confirmed them"
            )))
        }
    }
}

fn same_logs(a: &[Log], b: &[Log]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (x.block_hash, x.log_index, x.transaction_hash)
                == (y.block_hash, y.log_index, y.transaction_hash)
        })
}

/// One JSON-RPC batch for `from..=to` to one endpoint (not `avoid`): the logs
/// of every filter, the headers of `to` and `from - 1`, and every log of
/// block `to`.
async fn range_batch(
    rpc: &Rpc,
    filters: &Arc<Vec<Filter>>,
    from: u64,
    to: u64,
    avoid: Option<usize>,
) -> Result<Outcome<RangeAnswer>> {
    let opts = CallOpts {
        ranges: true,
        splittable: to > from,
        avoid,
    };
    rpc.call_with("eth_getLogs", opts, |link: Link| {
        let filters = filters.clone();
        async move {
            let mut batch = link.client.new_batch();
            let mut waiters = Vec::with_capacity(filters.len());
            for f in filters.iter() {
                let f = f.clone().from_block(from).to_block(to);
                waiters.push(batch.add_call::<_, Vec<WireLog>>("eth_getLogs", &(f,))?);
            }
            let last = batch.add_call::<_, Option<Header>>(
                "eth_getBlockByNumber",
                &(BlockNumberOrTag::Number(to), false),
            )?;
            let before = match from.checked_sub(1) {
                Some(p) => Some(batch.add_call::<_, Option<Header>>(
                    "eth_getBlockByNumber",
                    &(BlockNumberOrTag::Number(p), false),
                )?),
                None => None,
            };
            let whole = batch.add_call::<_, Vec<WireLog>>(
                "eth_getLogs",
                &(Filter::new().from_block(to).to_block(to),),
            )?;
            batch.send().await?;
            let mut answers = Vec::with_capacity(waiters.len());
            for w in waiters {
                answers.push(w.await?.into_iter().map(Log::from).collect());
            }
            let last = last
                .await?
                .ok_or_else(|| Fault::Missing(format!("block {to}")))?;
            let prev_hash = match before {
                Some(w) => Some(
                    w.await?
                        .ok_or_else(|| Fault::Missing(format!("block {}", from - 1)))?
                        .hash,
                ),
                None => None,
            };
            if last.number != to {
                return Err(Fault::Rejected(Rejection::Inconsistent(format!(
                    "block {} in the answer for block {to}",
                    last.number
                ))));
            }
            let known = BTreeMap::from([(to, last.hash)]);
            let logs = verify::range_logs(answers, from, to, &known).map_err(Fault::Rejected)?;
            let proven = match whole.await {
                Ok(all) if !last.logs_bloom.is_zero() => {
                    let all = verify::block_logs(all.into_iter().map(Log::from).collect(), &last, &filters)
                        .map_err(Fault::Rejected)?;
                    let ours = all.iter().filter(|l| verify::matches_any(&filters, l));
                    let in_range = logs.iter().filter(|l| l.block_number == Some(to));
                    if !ours.eq(in_range) {
                        return Err(Fault::Rejected(Rejection::Incomplete(format!(
                            "the range's logs of block {to} differ from the block's own"
                        ))));
                    }
                    true
                }
                Ok(_) => false,
                // The block's whole log list may be too large for this
                // provider: the range stays unproven.
                Err(e) => {
                    debug!(target: "chainfront::indexer", block = to, error = %e, "could not fetch a block's whole log list");
                    false
                }
            };
            Ok(RangeAnswer {
                logs,
                to_hash: last.hash,
                prev_hash,
                proven,
            })
        }
    })
    .await
}

/// Most calls in one JSON-RPC batch (providers cap batch sizes).
const BATCH_CALLS: usize = 10;

/// Headers `n..=m`, as far as available consecutively (empty if block `n`
/// is not available anywhere). Batches go out concurrently.
async fn fetch_headers(rpc: &Rpc, n: u64, m: u64) -> Result<Vec<Header>> {
    let batches = (n..=m)
        .step_by(BATCH_CALLS)
        .map(|a| header_batch(rpc.clone(), a, m.min(a + BATCH_CALLS as u64 - 1)));
    let answers = futures_util::future::join_all(batches).await;
    let mut out = Vec::with_capacity((m - n + 1) as usize);
    for chunk in answers {
        let chunk = chunk?;
        let full = chunk.len() == BATCH_CALLS;
        out.extend(chunk);
        if !full {
            break;
        }
    }
    Ok(out)
}

/// One batch of headers `a..=b`: the available prefix.
async fn header_batch(rpc: Rpc, a: u64, b: u64) -> Result<Vec<Header>> {
    let outcome = rpc
        .call_with(
            "eth_getBlockByNumber",
            CallOpts::default(),
            |link: Link| async move {
                let mut batch = link.client.new_batch();
                let mut waiters = Vec::new();
                for k in a..=b {
                    waiters.push(batch.add_call::<_, Option<Header>>(
                        "eth_getBlockByNumber",
                        &(BlockNumberOrTag::Number(k), false),
                    )?);
                }
                batch.send().await?;
                let mut headers = Vec::new();
                for (k, w) in (a..=b).zip(waiters) {
                    let Some(h) = w.await? else { break };
                    if h.number != k {
                        return Err(Fault::Rejected(Rejection::Inconsistent(format!(
                            "block {} in the answer for block {k}",
                            h.number
                        ))));
                    }
                    headers.push(h);
                }
                if headers.is_empty() {
                    return Err(Fault::Missing(format!("block {a}")));
                }
                Ok(headers)
            },
        )
        .await?;
    Ok(match outcome {
        Outcome::Ok(h, _) => h,
        Outcome::Missing(_) | Outcome::Range(..) => Vec::new(),
    })
}

/// Every log of each block in `headers`, by hash, checked against its header
/// and filtered by `filters` as the node would; a block that is not ready on
/// any endpoint (and every block after it) is left out.
async fn fetch_block_logs(
    rpc: &Rpc,
    filters: &Arc<Vec<Filter>>,
    headers: &[Header],
) -> Result<std::collections::HashMap<B256, Vec<Log>>> {
    let batches = headers
        .chunks(BATCH_CALLS)
        .map(|chunk| block_logs_batch(rpc.clone(), filters.clone(), chunk.to_vec()));
    let answers = futures_util::future::join_all(batches).await;
    let mut out = std::collections::HashMap::new();
    for (chunk, got) in headers.chunks(BATCH_CALLS).zip(answers) {
        let got = got?;
        let complete = got.len() == chunk.len();
        out.extend(got);
        if !complete {
            break;
        }
    }
    Ok(out)
}

/// One batch of whole-block log lists; the ready prefix of `headers`.
async fn block_logs_batch(
    rpc: Rpc,
    filters: Arc<Vec<Filter>>,
    headers: Vec<Header>,
) -> Result<Vec<(B256, Vec<Log>)>> {
    let opts = CallOpts {
        ranges: true,
        ..CallOpts::default()
    };
    let outcome = rpc
        .call_with("eth_getLogs", opts, |link: Link| {
            let filters = filters.clone();
            let headers = &headers;
            async move {
                let mut batch = link.client.new_batch();
                let mut waiters = Vec::new();
                for h in headers {
                    waiters.push(batch.add_call::<_, Vec<WireLog>>(
                        "eth_getLogs",
                        &(Filter::new().at_block_hash(h.hash),),
                    )?);
                }
                batch.send().await?;
                let mut ready = Vec::new();
                for (h, w) in headers.iter().zip(waiters) {
                    let checked = match w.await {
                        Ok(all) => verify::block_logs(all.into_iter().map(Log::from).collect(), h, &filters)
                            .map_err(Fault::Rejected),
                        Err(e) => Err(Fault::from(e)),
                    };
                    match checked {
                        Ok(all) => ready.push((
                            h.hash,
                            all.into_iter()
                                .filter(|l| verify::matches_any(&filters, l))
                                .collect(),
                        )),
                        // Nothing usable: let the RPC layer ask elsewhere.
                        Err(fault) if ready.is_empty() => return Err(fault),
                        Err(fault) => {
                            debug!(target: "chainfront::indexer", block = h.number, error = %fault, "block logs not ready");
                            break;
                        }
                    }
                }
                Ok(ready)
            }
        })
        .await?;
    match outcome {
        Outcome::Ok(ready, _) => Ok(ready),
        Outcome::Missing(_) => Ok(Vec::new()),
        Outcome::Range(_, message) => {
            // A provider that will not return one block's whole log list:
            // ask for the filtered logs by hash instead (checked against the
            // header, but nothing then shows them complete).
            warn!(target: "chainfront::indexer", error = %message, "whole-block log lists refused; using filtered logs for the window");
            filtered_block_logs(&rpc, &filters, &headers).await
        }
    }
}

/// Filtered logs by block hash, each checked against its block's header.
async fn filtered_block_logs(
    rpc: &Rpc,
    filters: &Arc<Vec<Filter>>,
    headers: &[Header],
) -> Result<Vec<(B256, Vec<Log>)>> {
    let mut out = Vec::new();
    for h in headers {
        let h = *h;
        let outcome = rpc
            .call_with("eth_getLogs", CallOpts::default(), |link: Link| {
                let filters = filters.clone();
                async move {
                    let mut batch = link.client.new_batch();
                    let mut waiters = Vec::new();
                    for f in filters.iter() {
                        waiters.push(batch.add_call::<_, Vec<WireLog>>(
                            "eth_getLogs",
                            &(f.clone().at_block_hash(h.hash),),
                        )?);
                    }
                    batch.send().await?;
                    let mut answers = Vec::new();
                    for w in waiters {
                        answers.push(w.await?.into_iter().map(Log::from).collect());
                    }
                    let known = BTreeMap::from([(h.number, h.hash)]);
                    verify::range_logs(answers, h.number, h.number, &known).map_err(Fault::Rejected)
                }
            })
            .await?;
        match outcome {
            Outcome::Ok(logs, _) => out.push((h.hash, logs)),
            Outcome::Missing(_) | Outcome::Range(..) => break,
        }
    }
    Ok(out)
}

/// Most blocks one [`Follower::window_batch`] works on.
const WINDOW_BATCH: u64 = 32;

/// A range fetch's (from, to, duration, outcome).
type FetchResult = (u64, u64, Duration, Result<Outcome<PreparedRange>>);

/// A checked backfill range cut into its commits (below the window: no undo
/// records).
#[derive(Debug)]
struct PreparedRange {
    /// Hash of the range's last block.
    to_hash: B256,
    /// Hash of the block before the range (none for a range from block 0).
    prev_hash: Option<B256>,
    /// Logs in the range.
    events: usize,
    /// The commits, in block order.
    chunks: Vec<Chunk>,
}

/// One backfill commit and how many events it applies.
#[derive(Debug)]
struct Chunk {
    commit: Commit,
    events: u64,
}

/// The commits of the checked range ending at block `to`: its logs in
/// chunks of about `max_logs` ending at block boundaries (a chunk ends after
/// the block that crosses the limit), each chunk's ops built from whole
/// blocks (every log of a transaction together, as the deposit exclusion
/// needs).
fn prepare(
    watched: &Watched,
    max_logs: usize,
    to: u64,
    answer: RangeAnswer,
) -> Result<PreparedRange> {
    let logs = answer.logs;
    let mut chunks = Vec::new();
    let mut start = 0;
    let chunk = |logs: &[Log], to: u64, to_hash: B256| Chunk {
        commit: Commit {
            to,
            to_hash,
            ops: watched.ops_for_logs(logs),
            undo: false,
        },
        events: logs.len() as u64,
    };
    while logs.len() - start > max_logs {
        // End the chunk after the last log of the block that crosses the limit.
        let mut end = start + max_logs;
        let block = logs[end - 1].block_number;
        while end < logs.len() && logs[end].block_number == block {
            end += 1;
        }
        if end == logs.len() {
            break;
        }
        let last = &logs[end - 1];
        let (Some(n), Some(h)) = (last.block_number, last.block_hash) else {
            return Err(Error::Rpc("a log without block number or hash".into()));
        };
        chunks.push(chunk(&logs[start..end], n, h));
        start = end;
    }
    chunks.push(chunk(&logs[start..], to, answer.to_hash));
    Ok(PreparedRange {
        to_hash: answer.to_hash,
        prev_hash: answer.prev_hash,
        events: logs.len(),
        chunks,
    })
}

/// Log fetches in flight, oldest first; aborted when dropped (an error or a
/// stop mid-backfill leaves no fetch running).
#[derive(Default)]
struct Inflight(std::collections::VecDeque<tokio::task::JoinHandle<FetchResult>>);

impl Inflight {
    fn abort_all(&mut self) {
        for t in self.0.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// Subscribes to new heads over WebSocket and wakes the follower on each;
/// reconnects with the retry policy's backoff until `stop`. The
/// notifications only wake the follower: what it applies still comes from
/// the checked HTTP endpoints.
async fn new_heads(
    url: String,
    wake: Arc<Notify>,
    retry: crate::retry::RetryPolicy,
    stop: CancellationToken,
) {
    use alloy::providers::{Provider, ProviderBuilder, WsConnect};
    // Notifications are read as plain JSON: only their arrival matters, so a
    // provider that leaves out header fields cannot break the subscription.
    use futures_util::StreamExt;
    let mut delays = retry.delays();
    loop {
        let connected = ProviderBuilder::new()
            .connect_ws(WsConnect::new(url.clone()))
            .await;
        match connected {
            Ok(provider) => match provider
                .subscribe::<_, serde_json::Value>(("newHeads",))
                .await
            {
                Ok(sub) => {
                    info!(target: "chainfront::indexer", "subscribed to new heads over WebSocket");
                    delays = retry.delays();
                    let mut stream = sub.into_stream();
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            next = stream.next() => match next {
                                Some(_) => wake.notify_one(),
                                None => break,
                            },
                        }
                    }
                    warn!(target: "chainfront::indexer", "WebSocket head subscription ended; reconnecting");
                }
                Err(e) => {
                    warn!(target: "chainfront::indexer", error = %crate::rpc::redact_urls(&e.to_string()), "eth_subscribe newHeads failed; polling only until reconnected");
                }
            },
            Err(e) => {
                warn!(target: "chainfront::indexer", error = %crate::rpc::redact_urls(&e.to_string()), "WebSocket connect failed; polling only until reconnected");
            }
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

enum Step {
    /// Blocks were applied or reverted: go on.
    Applied,
    /// Nothing more is ready: wait for the next poll.
    NotYet,
}
