//! The indexer crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the indexer crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A deployment file could not be read or written.
    #[error("deployment file {path}: {source}")]
    DeploymentIo {
        /// The file in question.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A deployment file is not valid JSON of the expected shape.
    #[error("deployment file {path} is malformed: {source}")]
    DeploymentFormat {
        /// The file in question.
        path: PathBuf,
        /// What serde said.
        source: serde_json::Error,
    },
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Every RPC endpoint failed (after retries and failover).
    #[error("rpc: {0}")]
    Rpc(String),
    /// A provider keeps rejecting even a single-block `eth_getLogs`.
    #[error("eth_getLogs cannot be split below one block at {block}: {message}")]
    Unsplittable {
        /// The block.
        block: u64,
        /// The provider's message.
        message: String,
    },
    /// Stored indexer state is not what this version wrote.
    #[error("corrupt indexer state: {0}")]
    Corrupt(String),
    /// A reorg reached below the blocks we keep undo records for.
    #[error(
        "reorg deeper than the {window}-block window (no undo record for block {block}); stopping instead of guessing: run `chainfront reindex`"
    )]
    ReorgTooDeep {
        /// The block that has no undo record.
        block: u64,
        /// The configured window.
        window: u64,
    },
    /// Another process took over as leader; this one must stop writing.
    #[error("lost the leader lock: another indexer writes this chain now")]
    Fenced,
    /// The checkpoint in Redis is not the one this commit builds on (Redis
    /// lost writes in a restart, or state was changed behind our back); the
    /// follower re-reads it and resumes from there.
    #[error("the checkpoint moved under this indexer; resuming from Redis's")]
    StaleCheckpoint,
    /// A `chainfront reindex` wipe was interrupted: its tombstone is still
    /// in Redis, so the state is partly deleted. Nothing commits until the
    /// wipe is finished (every start does that first).
    #[error(
        "an interrupted reindex left this chain's state half deleted; finishing the wipe first"
    )]
    WipePending,
    /// Redis is set up in a way that can lose indexer state silently.
    #[error("unsafe Redis configuration: {0}")]
    UnsafeRedis(String),
    /// The RPC serves another chain than configured.
    #[error("RPC serves chain id {actual}, expected {expected}")]
    WrongChain {
        /// Configured.
        expected: u64,
        /// Served.
        actual: u64,
    },
}

impl Error {
    /// Whether the indexer must stop on this error instead of retrying: the
    /// state or the chain is not what it can safely continue from (a reorg
    /// deeper than the window, corrupt state, the wrong chain, a Redis that
    /// may evict state). Everything else (RPC and Redis faults, a moved
    /// checkpoint, lost leadership) is retried or waited out.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::ReorgTooDeep { .. }
                | Error::Corrupt(_)
                | Error::WrongChain { .. }
                | Error::UnsafeRedis(_)
                | Error::DeploymentIo { .. }
                | Error::DeploymentFormat { .. }
        )
    }
}

/// Result alias for the indexer crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
