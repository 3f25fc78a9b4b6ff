//! The indexer's counters and gauges, shared with `/health` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::rpc::RpcStats;

/// Live figures of one chain's follower.
#[derive(Debug, Default)]
pub struct IndexerMetrics {
    /// Latest head seen from the RPC.
    pub head_block: AtomicU64,
    /// Last block committed to Redis.
    pub indexed_block: AtomicU64,
    /// Logs applied since start.
    pub events_applied: AtomicU64,
    /// Reorgs handled since start.
    pub reorgs: AtomicU64,
    /// Deepest reorg handled since start.
    pub max_reorg_depth: AtomicU64,
    /// RPC errors, failovers and 429s of this chain's endpoints.
    pub rpc: Arc<RpcStats>,
    /// Why this chain's indexer stopped, once it has (a fatal condition:
    /// a reorg deeper than the window, corrupt state, the wrong chain).
    stopped: Mutex<Option<String>>,
}

impl IndexerMetrics {
    /// Records that the indexer stopped for `reason` (the API keeps serving
    /// what is indexed and `/health` says why).
    pub fn set_stopped(&self, reason: String) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    /// Why the indexer stopped, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Blocks between the head and what is indexed.
    pub fn lag(&self) -> u64 {
        self.head_block
            .load(Ordering::Relaxed)
            .saturating_sub(self.indexed_block.load(Ordering::Relaxed))
    }
}
