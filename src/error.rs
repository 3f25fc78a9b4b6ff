//! The `chainfront` crate's one error type. The API maps it to status codes in
//! `api::error`; the CLI prints it.

/// Everything that can go wrong in the node outside the indexer crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration key is missing or invalid.
    #[error("config: `{key}` {message}")]
    Config {
        /// Dotted key, e.g. `chains.base.rpc_urls`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// An error from the indexer crate (deployment files, bindings, state).
    #[error(transparent)]
    Indexer(#[from] chainfront_indexer::Error),
    /// A JSON-RPC call or transaction failed.
    #[error("chain: {0}")]
    Chain(String),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A local child process (anvil, redis-server) could not be run.
    #[error("process `{program}`: {message}")]
    Process {
        /// The program.
        program: String,
        /// What went wrong.
        message: String,
    },
    /// Encryption, decryption or key handling failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// A VM provider (cloud API, command) failed.
    #[error("provider: {0}")]
    Provider(String),
    /// An invariant of our own broke.
    #[error("internal: {0}")]
    Internal(String),
    /// An I/O error with context.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Turns a figment extraction error into a config error that names the key.
    pub(crate) fn from_figment(err: figment::Error) -> Self {
        let leaf = match &err.kind {
            figment::error::Kind::MissingField(f) => Some(f.to_string()),
            figment::error::Kind::UnknownField(f, _) => Some(f.clone()),
            _ => None,
        };
        let mut parts = err.path.clone();
        parts.extend(leaf);
        let key = if parts.is_empty() {
            "config".to_owned()
        } else {
            parts.join(".")
        };
        let message = match &err.kind {
            figment::error::Kind::MissingField(_) => "is required but not set".to_owned(),
            figment::error::Kind::UnknownField(_, expected) => {
                format!(
                    "is not a known key (expected one of: {})",
                    expected.join(", ")
                )
            }
            kind => format!("is invalid: {kind}"),
        };
        Error::Config { key, message }
    }

    /// Wraps any displayable chain-side error.
    pub fn chain(err: impl std::fmt::Display) -> Self {
        Error::Chain(err.to_string())
    }
}

/// Result alias for the `chainfront` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
