//! The `[compute]` configuration section: jobs, pricing overrides and each
//! executor's limits. Loaded with the rest of the config in
//! [`crate::config::Config::load`]; secrets (the LLM API key, the webhook key)
//! come from the environment like every other secret.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// `[compute]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComputeConfig {
    /// Serve the Compute API, run its job workers and the deposit reconciler.
    pub enabled: bool,
    /// Accept the body's bare `wallet` field (or `X-Wallet-Address`) as the
    /// spender, as the Clodds document does. Off by default: anyone could then
    /// spend anyone's balance. Logged as a warning at start when on.
    pub trust_wallet_field: bool,
    /// Jobs one node runs at once.
    pub workers: usize,
    /// How long a running job is leased to its worker (renewed while it runs);
    /// a dead node's jobs come back after this, in ms.
    pub lease_ms: u64,
    /// Runs of one job (a node dying mid-job counts one); then it fails and is refunded.
    pub max_attempts: u32,
    /// How often an idle worker looks at the queue, in ms.
    pub poll_interval_ms: u64,
    /// How long a finished job stays readable, in seconds.
    pub job_ttl_secs: u64,
    /// How long `GET /v1/balance` may answer from this process's cache, in ms
    /// (writes made through this process refresh it at once).
    pub balance_cache_ms: u64,
    /// How often the deposit reconciler compares the ledger with each chain's
    /// indexed deposits, in ms.
    pub reconcile_interval_ms: u64,
    /// Per-request timeout of the deposit fast path's chain reads, in ms.
    pub rpc_timeout_ms: u64,
    /// Price overrides per service (the document's table is the default).
    pub pricing: BTreeMap<String, PriceOverride>,
    /// `storage` service.
    pub storage: StorageConfig,
    /// `web` service.
    pub web: WebConfig,
    /// `llm` service.
    pub llm: LlmConfig,
    /// `code` service.
    pub code: CodeConfig,
    /// Services run by an operator command (JSON request on stdin, JSON answer
    /// on stdout, like the provisioning `command` provider), e.g.
    /// `gpu = ["/usr/local/bin/gpu-job"]`. `trade`, `gpu` and `ml` answer 501
    /// unless mapped here.
    pub commands: BTreeMap<String, Vec<String>>,
    /// Outgoing `callbackUrl` deliveries.
    pub callbacks: CallbackConfig,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            trust_wallet_field: false,
            workers: 64,
            lease_ms: 30_000,
            max_attempts: 3,
            poll_interval_ms: 250,
            job_ttl_secs: 7 * 86_400,
            balance_cache_ms: 250,
            reconcile_interval_ms: 500,
            rpc_timeout_ms: 5_000,
            pricing: BTreeMap::new(),
            storage: StorageConfig::default(),
            web: WebConfig::default(),
            llm: LlmConfig::default(),
            code: CodeConfig::default(),
            commands: BTreeMap::new(),
            callbacks: CallbackConfig::default(),
        }
    }
}

/// One service's price, any field left out keeps the default. Amounts are
/// USD; write them as strings (`"0.000003"`) to keep them exact.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct PriceOverride {
    /// Charged once per job.
    pub base_price: Option<Decimal>,
    /// The unit's name (`token`, `second`, `request`, `mb`, `call`).
    pub unit: Option<String>,
    /// Price of one unit.
    pub price_per_unit: Option<Decimal>,
    /// Smallest charge of a job.
    pub min_charge: Option<Decimal>,
    /// Largest charge of a job (what is reserved when nothing tighter is known).
    pub max_charge: Option<Decimal>,
}

/// `[compute.storage]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Largest object, in bytes.
    pub max_object_bytes: u64,
    /// Largest total per wallet, in bytes.
    pub max_wallet_bytes: u64,
    /// Longest TTL, in seconds (0 = objects may live forever).
    pub max_ttl_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            max_object_bytes: 1 << 20,
            max_wallet_bytes: 16 << 20,
            max_ttl_secs: 30 * 86_400,
        }
    }
}

/// `[compute.web]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Addresses the SSRF guard lets through although they are loopback,
    /// private or link-local: IPs or CIDR ranges (`127.0.0.1/32`, `10.0.0.0/8`).
    pub allow: Vec<String>,
    /// Whole-request time cap, in ms.
    pub timeout_ms: u64,
    /// Largest response body read, in bytes.
    pub max_bytes: u64,
    /// Redirects followed (each one checked again).
    pub max_redirects: u32,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            timeout_ms: 15_000,
            max_bytes: 2 << 20,
            max_redirects: 5,
        }
    }
}

/// `[compute.llm]`. The API key is `CHAINFRONT_LLM_API_KEY`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Base URL of an OpenAI-compatible API (`…/v1`); unset: `llm` answers 501.
    pub base_url: Option<String>,
    /// Model names clients use → the upstream's model names. Only these are accepted.
    pub models: BTreeMap<String, String>,
    /// Upstream time cap, in ms.
    pub timeout_ms: u64,
    /// Output tokens when the request names none.
    pub default_max_tokens: u64,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            models: BTreeMap::new(),
            timeout_ms: 120_000,
            default_max_tokens: 1_024,
        }
    }
}

/// `[compute.code]`: sandboxed execution with bubblewrap.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeConfig {
    /// Offer the `code` service at all.
    pub enabled: bool,
    /// The bubblewrap binary.
    pub bwrap: String,
    /// Interpreter per language (`python`, `javascript`, `bash`); a language
    /// whose interpreter is not found answers 501.
    pub interpreters: BTreeMap<String, String>,
    /// Longest run, in ms (a request may ask for less).
    pub max_timeout_ms: u64,
    /// Largest address space, in MB (a request may ask for less).
    pub max_memory_mb: u64,
    /// Largest stdout and stderr kept, each, in bytes.
    pub max_output_bytes: u64,
    /// Processes the sandbox user may have at once (fork bombs stop here).
    pub max_processes: u64,
    /// Unprivileged uid/gid the sandbox runs as when the node runs as root.
    pub sandbox_uid: u32,
}

impl Default for CodeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bwrap: "bwrap".into(),
            interpreters: [
                ("python", "python3"),
                ("javascript", "node"),
                ("bash", "bash"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            max_timeout_ms: 60_000,
            max_memory_mb: 512,
            max_output_bytes: 64 * 1024,
            max_processes: 64,
            sandbox_uid: 65_534,
        }
    }
}

/// `[compute.callbacks]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackConfig {
    /// Deliveries tried per job.
    pub max_attempts: u32,
    /// First retry delay, in ms (grows exponentially, with jitter).
    pub base_delay_ms: u64,
    /// Per-delivery time cap, in ms.
    pub timeout_ms: u64,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay_ms: 500,
            timeout_ms: 10_000,
        }
    }
}
