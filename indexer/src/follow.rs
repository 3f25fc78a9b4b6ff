//! The chain follower: backfill with adaptive `eth_getLogs` ranges up to the
//! reorg window below the target head, then block by block (by hash) inside
//! the window with parent-hash checks, undoing orphaned blocks on a reorg.
//! Blocks are applied strictly in order, each commit atomic (see `store`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::apply::Watched;
use crate::contracts::MockUSDC;
use crate::logs::{AdaptiveRange, WireLog};
use crate::metrics::IndexerMetrics;
use crate::rpc::{LogsOutcome, Rpc};
use crate::store::{Checkpoint, Commit, Store, WindowBlock};
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
    /// Head polling interval.
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
            max_logs_per_commit: 5_000,
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
    cfg: FollowConfig,
    range: AdaptiveRange,
    metrics: Arc<IndexerMetrics>,
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
        Self {
            rpc,
            store,
            watched,
            cfg,
            range,
            metrics,
        }
    }

    /// Follows until `shutdown`; each pass catches up to the head, then waits
    /// one poll interval. RPC outages are waited out; a deep reorg, lost
    /// leadership or corrupt state ends the loop with an error.
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
        loop {
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.sync() => r,
            };
            match pass {
                Ok(_) => {}
                Err(
                    e @ (Error::ReorgTooDeep { .. }
                    | Error::Fenced
                    | Error::Corrupt(_)
                    | Error::WrongChain { .. }),
                ) => {
                    return Err(e);
                }
                Err(e) => {
                    warn!(target: "chainfront::indexer", error = %crate::rpc::redact_urls(&e.to_string()), "pass failed; retrying after the poll interval")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                _ = wake.notified() => {}
            }
        }
    }

    /// Checks that the RPC serves `expected`.
    pub async fn check_chain(&self, expected: u64) -> Result<()> {
        let actual = self
            .rpc
            .call("eth_chainId", |p| async move { p.get_chain_id().await })
            .await?;
        if actual != expected {
            return Err(Error::WrongChain { expected, actual });
        }
        Ok(())
    }

    /// One pass: applies every block up to the current target. Returns the
    /// checkpoint reached.
    pub async fn sync(&mut self) -> Result<Option<u64>> {
        let target = self.target().await?;
        let mut checkpoint_verified = false;
        loop {
            let cp = self.store.checkpoint().await?;
            let next = cp.map_or(self.cfg.start_block, |c| c.number + 1);
            if next > target {
                // At (or past) the head, compare the block at the head's height
                // with ours: the tip may have been replaced by a block of the
                // same height, or the chain may have become shorter (a reorg
                // that did not make the chain longer), which no parent hash
                // reveals until the chain grows past us. A provider that is
                // merely behind serves our own block there: no reorg.
                if let Some(cp) = cp {
                    let ours = if cp.number == target {
                        Some(cp.hash)
                    } else {
                        self.store.block_hash(target).await?
                    };
                    if let Some(ours) = ours
                        && self.header(target).await?.is_some_and(|(h, _)| h != ours)
                    {
                        self.reorg(cp).await?;
                        continue;
                    }
                }
                // A lagging provider may report a head below our checkpoint:
                // nothing to do, and no reason to suspect a reorg.
                return Ok(cp.map(|c| c.number));
            }
            let deep_end = target.saturating_sub(self.cfg.window);
            if next <= deep_end {
                // The chain moved more than a window since our checkpoint:
                // backfill skips the parent-hash check of window mode, so make
                // sure the checkpoint itself is still canonical first.
                if let Some(cp) = cp
                    && !checkpoint_verified
                {
                    checkpoint_verified = true;
                    let canonical = self.header(cp.number).await?.map(|(h, _)| h);
                    if canonical != Some(cp.hash) {
                        self.reorg(cp).await?;
                        continue;
                    }
                }
                self.backfill(next, deep_end).await?;
                continue;
            }
            match self.window_batch(next, target, cp).await? {
                Step::Applied | Step::Reverted => continue,
                Step::NotYet => return Ok(cp.map(|c| c.number)),
            }
        }
    }

    async fn target(&self) -> Result<u64> {
        let head = match self.cfg.head {
            HeadTag::Latest => {
                let latest = self
                    .rpc
                    .call(
                        "eth_blockNumber",
                        |p| async move { p.get_block_number().await },
                    )
                    .await?;
                self.metrics.head_block.store(latest, Ordering::Relaxed);
                latest.saturating_sub(self.cfg.confirmations)
            }
            tag => {
                let t = if tag == HeadTag::Safe {
                    BlockNumberOrTag::Safe
                } else {
                    BlockNumberOrTag::Finalized
                };
                let block = self
                    .rpc
                    .call("eth_getBlockByNumber", |p| async move {
                        p.get_block_by_number(t).await
                    })
                    .await?;
                let n = block.map(|b| b.header.number).unwrap_or_default();
                self.metrics.head_block.store(n, Ordering::Relaxed);
                n
            }
        };
        Ok(head)
    }

    /// Applies `from..=to` (all below the window) in ranges, without undo
    /// records. The next range is fetched while the current one commits (one
    /// request in flight ahead); commits stay strictly in block order.
    async fn backfill(&mut self, from: u64, to: u64) -> Result<()> {
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
            let logs = match outcome? {
                LogsOutcome::Ok(logs) => logs,
                LogsOutcome::Range(advice, message) => {
                    if !self.range.failed(a, b - a + 1, advice) {
                        return Err(Error::Unsplittable { block: a, message });
                    }
                    debug!(target: "chainfront::indexer", from = a, to = b, next_size = self.range.size(), "range too large; splitting");
                    // Everything scheduled after `a` used the old size: refetch.
                    inflight.abort_all();
                    scheduled = a;
                    continue;
                }
            };
            self.range.succeeded(b - a + 1, logs.len(), took);
            // Keep the RPC node busy while this range commits.
            self.top_up(&mut inflight, &mut scheduled, to);
            self.commit_range(b, logs).await?;
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

    /// Fetches `from..=to` on a task, returning the range, how long the fetch
    /// took and its outcome.
    fn spawn_fetch(&self, from: u64, to: u64) -> tokio::task::JoinHandle<FetchResult> {
        let rpc = self.rpc.clone();
        let filters: Vec<Filter> = self
            .filters()
            .into_iter()
            .map(|f| f.from_block(from).to_block(to))
            .collect();
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = fetch_logs(&rpc, filters).await;
            (from, to, started.elapsed(), outcome)
        })
    }

    /// Commits logs of blocks up to `to`, in chunks ending at block boundaries
    /// so no commit exceeds `max_logs_per_commit` logs.
    async fn commit_range(&mut self, to: u64, logs: Vec<Log>) -> Result<()> {
        let mut start = 0;
        while logs.len() - start > self.cfg.max_logs_per_commit {
            // End the chunk after the last log of the block that crosses the limit.
            let mut end = start + self.cfg.max_logs_per_commit;
            let block = logs[end - 1].block_number;
            while end < logs.len() && logs[end].block_number == block {
                end += 1;
            }
            let last = &logs[end - 1];
            let (Some(n), Some(h)) = (last.block_number, last.block_hash) else {
                return Err(Error::Rpc("a log without block number or hash".into()));
            };
            self.commit_logs(&logs[start..end], n, h).await?;
            start = end;
        }
        let hash = match logs.last() {
            Some(l) if l.block_number == Some(to) => l.block_hash,
            _ => None,
        };
        let hash = match hash {
            Some(h) => h,
            None => {
                self.header(to)
                    .await?
                    .ok_or_else(|| Error::Rpc(format!("block {to} not found")))?
                    .0
            }
        };
        self.commit_logs(&logs[start..], to, hash).await
    }

    /// Commits backfilled logs (below the window: no undo record).
    async fn commit_logs(&mut self, logs: &[Log], to: u64, to_hash: B256) -> Result<()> {
        let ops = self.watched.ops_for_logs(logs);
        let events = logs.len() as u64;
        self.store
            .commit(Commit {
                to,
                to_hash,
                ops,
                undo: false,
            })
            .await?;
        self.committed(to, events);
        Ok(())
    }

    /// Metrics after a commit that ended at `block` with `events` events.
    fn committed(&self, block: u64, events: u64) {
        self.metrics.indexed_block.store(block, Ordering::Relaxed);
        self.metrics
            .events_applied
            .fetch_add(events, Ordering::Relaxed);
    }

    /// Blocks `n..=last` inside the window (one when following the head, up
    /// to [`WINDOW_BATCH`] when catching up): their headers are fetched
    /// concurrently and must chain from the checkpoint by parent hash (a
    /// first block that is not the checkpoint's child is a reorg); their logs
    /// are fetched by block hash, [`WINDOW_FETCHES`] at a time, and the blocks
    /// commit together in one atomic step with an undo record each.
    async fn window_batch(&mut self, n: u64, last: u64, cp: Option<Checkpoint>) -> Result<Step> {
        use futures_util::{StreamExt, TryStreamExt};
        let m = last.min(n + WINDOW_BATCH - 1);
        let rpc = self.rpc.clone();
        let headers: Vec<Option<(B256, B256)>> = futures_util::stream::iter(n..=m)
            .map(|k| header(&rpc, k))
            .buffered(WINDOW_FETCHES)
            .try_collect()
            .await?;
        let mut chain = Vec::with_capacity(headers.len());
        let mut parent = cp.map(|c| c.hash);
        for (k, h) in (n..=m).zip(headers) {
            let Some((hash, p)) = h else { break };
            if parent.is_some_and(|expected| expected != p) {
                if let Some(cp) = cp
                    && k == n
                {
                    // Not the child of our checkpoint: a reorg.
                    self.reorg(cp).await?;
                    return Ok(Step::Reverted);
                }
                // The chain moved while we asked: apply the consistent part.
                break;
            }
            chain.push((k, hash));
            parent = Some(hash);
        }
        if chain.is_empty() {
            return Ok(Step::NotYet);
        }
        let filters = self.filters();
        let mut logs = futures_util::stream::iter(chain.clone())
            .map(|(_, hash)| {
                let (rpc, filters) = (rpc.clone(), filters.clone());
                tokio::spawn(async move { fetch_block(&rpc, filters, hash).await })
            })
            .buffered(WINDOW_FETCHES);
        // Blocks whose logs arrived, committed together (bounded by
        // `max_logs_per_commit`) with one undo record each.
        let mut ready: Vec<WindowBlock> = Vec::new();
        let mut ready_logs = 0;
        let mut step = Step::Applied;
        for (k, hash) in chain {
            let fetched = logs
                .next()
                .await
                .ok_or_else(|| Error::Rpc("log fetch stream ended early".into()))?
                .map_err(|e| Error::Rpc(format!("log fetch task failed: {e}")))??;
            let Some(block_logs) = fetched else {
                // Replaced between the header and the logs: commit what came
                // before it, then start over from there.
                step = Step::Reverted;
                break;
            };
            if !ready.is_empty() && ready_logs + block_logs.len() > self.cfg.max_logs_per_commit {
                self.commit_window(std::mem::take(&mut ready), ready_logs)
                    .await?;
                ready_logs = 0;
            }
            ready_logs += block_logs.len();
            ready.push(WindowBlock {
                number: k,
                hash,
                ops: self.watched.ops_for_logs(&block_logs),
            });
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
    /// to the last block whose hash still matches and undo everything above.
    async fn reorg(&mut self, cp: Checkpoint) -> Result<()> {
        let mut k = cp.number;
        loop {
            let stored = self.store.block_hash(k).await?;
            let Some(stored) = stored else {
                return Err(Error::ReorgTooDeep {
                    block: k,
                    window: self.cfg.window,
                });
            };
            let canonical = self.header(k).await?.map(|(h, _)| h);
            if canonical == Some(stored) {
                break;
            }
            if k == 0 || k < self.cfg.start_block || cp.number - k >= self.cfg.window {
                return Err(Error::ReorgTooDeep {
                    block: k,
                    window: self.cfg.window,
                });
            }
            k -= 1;
        }
        let depth = cp.number - k;
        info!(target: "chainfront::indexer", from = cp.number, fork = k, depth, "reorg: undoing orphaned blocks");
        self.store.revert_to(k).await?;
        self.metrics.reorgs.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .max_reorg_depth
            .fetch_max(depth, Ordering::Relaxed);
        self.metrics.indexed_block.store(k, Ordering::Relaxed);
        Ok(())
    }

    /// (hash, parent hash) of block `n`, `None` if the node does not have it yet.
    async fn header(&self, n: u64) -> Result<Option<(B256, B256)>> {
        header(&self.rpc, n).await
    }

    fn filters(&self) -> Vec<Filter> {
        let mut filters = Vec::new();
        let contracts = self.watched.contract_addresses();
        if !contracts.is_empty() {
            filters.push(Filter::new().address(contracts));
        }
        if let (Some(usdc), Some(treasury)) = (self.watched.usdc, self.watched.treasury) {
            filters.push(
                Filter::new()
                    .address(usdc)
                    .event_signature(MockUSDC::Transfer::SIGNATURE_HASH)
                    .topic2(treasury.into_word()),
            );
        }
        filters
    }
}

/// (hash, parent hash) of block `n`, `None` if the node does not have it yet.
async fn header(rpc: &Rpc, n: u64) -> Result<Option<(B256, B256)>> {
    let block = rpc
        .call("eth_getBlockByNumber", |p| async move {
            p.get_block_by_number(BlockNumberOrTag::Number(n)).await
        })
        .await?;
    Ok(block.map(|b| (b.header.hash, b.header.parent_hash)))
}

/// Logs of one block by hash (exactly that block's, whatever the node's
/// canonical chain is now); `None` if the node no longer has that block.
async fn fetch_block(rpc: &Rpc, filters: Vec<Filter>, hash: B256) -> Result<Option<Vec<Log>>> {
    let filters = filters.into_iter().map(|f| f.at_block_hash(hash)).collect();
    match fetch_logs(rpc, filters).await {
        Ok(LogsOutcome::Ok(logs)) => Ok(Some(logs)),
        Ok(LogsOutcome::Range(_, msg)) => {
            Err(Error::Rpc(format!("single-block query rejected: {msg}")))
        }
        Err(Error::Rpc(msg)) if msg.contains("not found") || msg.contains("unknown block") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Most blocks one [`Follower::window_batch`] fetches headers for.
const WINDOW_BATCH: u64 = 32;

/// Concurrent requests of a window batch.
const WINDOW_FETCHES: usize = 8;

/// A range fetch's (from, to, duration, outcome).
type FetchResult = (u64, u64, Duration, Result<LogsOutcome<Vec<Log>>>);

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

/// Logs of every filter, merged in chain order; `removed` logs dropped.
async fn fetch_logs(rpc: &Rpc, filters: Vec<Filter>) -> Result<LogsOutcome<Vec<Log>>> {
    let calls = filters.iter().map(|f| {
        rpc.call_logs("eth_getLogs", move |p| async move {
            p.raw_request::<_, Vec<WireLog>>("eth_getLogs".into(), (f,))
                .await
        })
    });
    let results = futures_util::future::join_all(calls).await;
    let mut all = Vec::new();
    for r in results {
        match r? {
            LogsOutcome::Ok(logs) => all.extend(logs.into_iter().map(Log::from)),
            LogsOutcome::Range(a, m) => return Ok(LogsOutcome::Range(a, m)),
        }
    }
    // Logs flagged `removed` belong to an orphaned block: never applied.
    all.retain(|l| !l.removed);
    all.sort_by_key(|l| (l.block_number, l.log_index));
    all.dedup_by_key(|l| (l.block_number, l.log_index));
    Ok(LogsOutcome::Ok(all))
}

/// Subscribes to new heads over WebSocket and wakes the follower on each;
/// reconnects with the retry policy's backoff until `stop`.
async fn new_heads(
    url: String,
    wake: Arc<Notify>,
    retry: crate::retry::RetryPolicy,
    stop: CancellationToken,
) {
    use alloy::providers::{ProviderBuilder, WsConnect};
    use futures_util::StreamExt;
    let mut delays = retry.delays();
    loop {
        let connected = ProviderBuilder::new()
            .connect_ws(WsConnect::new(url.clone()))
            .await;
        match connected {
            Ok(provider) => match provider.subscribe_blocks().await {
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
    Applied,
    Reverted,
    NotYet,
}
