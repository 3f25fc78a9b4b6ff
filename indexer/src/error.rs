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
    /// The RPC serves another chain than configured.
    #[error("RPC serves chain id {actual}, expected {expected}")]
    WrongChain {
        /// Configured.
        expected: u64,
        /// Served.
        actual: u64,
    },
}

/// Result alias for the indexer crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
