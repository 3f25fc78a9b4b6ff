//! Configuration: defaults, then a TOML file from `config/`, then `CHAINFRONT_*`
//! environment variables (nested keys joined by `__`, e.g.
//! `CHAINFRONT_CHAINS__BASE__RPC_URLS='["https://a", "https://b"]'`), resolved in
//! [`Config::load`] and nowhere else. Secrets never come from a TOML file: each
//! is read from its own environment variable or from the file that variable's
//! `_FILE` twin names.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, ChainId};
use chainfront_indexer::apply::Watched;
use chainfront_indexer::chain::ChainSpec;
use chainfront_indexer::deployment::Deployment;
use chainfront_indexer::follow::{FollowConfig, HeadTag};
use chainfront_indexer::keys::ChainKeys;
use chainfront_indexer::retry::RetryPolicy;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Prefix of every environment variable chainfront reads.
pub const ENV_PREFIX: &str = "CHAINFRONT_";

/// Environment variables under [`ENV_PREFIX`] that are not config keys.
const NON_KEY_VARS: &[&str] = &["config"];

/// The secrets, by config name. Each is read from `CHAINFRONT_<NAME>` or from
/// the file named by `CHAINFRONT_<NAME>_FILE`.
pub const SECRET_NAMES: &[&str] = &[
    "deployer_key",
    "jwt_secret",
    "admin_key_hash",
    "master_key",
    "vultr_api_key",
    "llm_api_key",
    "compute_webhook_key",
    "operator_key",
    "relayer_key",
];

/// The whole node configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name (key in `chains`) of the chain that carries the VM marketplace and
    /// the submission stakes.
    pub home_chain: String,
    /// HTTP API settings.
    #[serde(default)]
    pub api: ApiConfig,
    /// Redis connection.
    #[serde(default)]
    pub redis: RedisConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Indexer settings.
    #[serde(default)]
    pub indexer: IndexerConfig,
    /// Per-IP, per-route rate limits and automatic bans.
    #[serde(default)]
    pub rate_limits: RateLimitConfig,
    /// Wallet-signature and JWT authentication.
    #[serde(default)]
    pub auth: AuthConfig,
    /// VM provisioning.
    #[serde(default)]
    pub provisioning: ProvisioningConfig,
    /// The Compute API: jobs, pricing, executors.
    #[serde(default)]
    pub compute: crate::compute::config::ComputeConfig,
    /// x402 payments (the relayer key is `CHAINFRONT_RELAYER_KEY`).
    #[serde(default)]
    pub x402: X402Config,
    /// Clockchain markets: recording plain-transfer submissions.
    #[serde(default)]
    pub markets: MarketsConfig,
    /// Every chain followed, by name.
    pub chains: BTreeMap<String, ChainConfig>,
    /// Secrets, never serialised and never read from TOML.
    #[serde(skip)]
    pub secrets: Secrets,
}

/// HTTP API settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address the API listens on. TLS is the reverse proxy's job: production
    /// configs listen on 127.0.0.1 behind it.
    pub listen: SocketAddr,
    /// The URL clients reach this node at (`https://api.example.com`): the
    /// domain and URI every sign-in (EIP-4361) and signed request must name.
    /// Default: `http://<listen>`.
    pub public_url: Option<String>,
    /// Peers (IPs or CIDR ranges, e.g. `10.0.0.0/8`) whose `X-Forwarded-For`
    /// is believed.
    pub trusted_proxies: Vec<crate::api::limits::IpCidr>,
    /// Accept ClawCloud's documented bearer form (a signature of
    /// `ClawCloud Access Request: {tokenId}`), which never expires and names
    /// no domain. Off by default; `config/local.toml` turns it on for
    /// documented clients on a test chain.
    pub legacy_bearer_auth: bool,
    /// Timeout of one chain read made by the API (`ownerOf`, `eth_getCode`,
    /// EIP-1271), in ms; the failover `Rpc` moves to the next endpoint after it.
    pub rpc_timeout_ms: u64,
    /// Longest a request may take before it is answered 503, in ms.
    pub request_timeout_ms: u64,
    /// Requests served at once; more wait (up to the request timeout).
    pub max_concurrent_requests: usize,
    /// Serve `/metrics` on this separate (internal) address instead of the
    /// public listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Keep a sealed escrow copy of each generated agent wallet for this many
    /// seconds. Unset (the default): no copy is kept at all.
    pub wallet_escrow_ttl_secs: Option<u64>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            trusted_proxies: Vec::new(),
            legacy_bearer_auth: false,
            rpc_timeout_ms: 2_000,
            request_timeout_ms: 15_000,
            max_concurrent_requests: 1_024,
            metrics_listen: None,
            wallet_escrow_ttl_secs: None,
        }
    }
}

impl ApiConfig {
    /// [`ApiConfig::public_url`], or `http://<listen>`, without a trailing `/`.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }
}

/// Redis connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` URL of one server, or a comma-separated list
    /// of Redis Cluster nodes (`redis://a:7000,redis://b:7001`; a single URL
    /// of a cluster-mode server is used as the cluster's seed too).
    pub url: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for production log shippers.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,chainfront=debug`. `RUST_LOG`
    /// wins when set.
    pub filter: String,
    /// Also write the security stream (auth failures, rate-limit violations,
    /// bans, admin actions) as JSON lines to this file, rotated at 5 MB with
    /// 5 files kept.
    pub security_file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".into(),
            security_file: None,
        }
    }
}

/// One followed chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// EIP-155 chain id; checked against every RPC endpoint.
    pub chain_id: ChainId,
    /// JSON-RPC endpoints, tried in order with failover.
    pub rpc_urls: Vec<String>,
    /// Optional WebSocket endpoint for new-head subscriptions.
    #[serde(default)]
    pub ws_url: Option<String>,
    /// Blocks behind head before an event counts (0 is fine on anvil).
    #[serde(default)]
    pub confirmations: u64,
    /// Head polling interval in milliseconds while the block time is not
    /// known or the chain is idle; once learnt, the head is polled around
    /// each expected block instead.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// A deployment file (written by `chainfront deploy` / `dev`) that supplies
    /// any contract address or start block not set here.
    #[serde(default)]
    pub deployment_file: Option<PathBuf>,
    /// First block to index.
    #[serde(default)]
    pub start_block: Option<u64>,
    /// USDC token on this chain.
    #[serde(default)]
    pub usdc: Option<Address>,
    /// Wrapped-BTC stake token on this chain.
    #[serde(default)]
    pub cbbtc: Option<Address>,
    /// Where payments and deposits go.
    #[serde(default)]
    pub treasury: Option<Address>,
    /// The VM marketplace (home chain only).
    #[serde(default)]
    pub vm_marketplace: Option<Address>,
    /// The submission stakes contract (home chain only).
    #[serde(default)]
    pub submission_stakes: Option<Address>,
    /// Blocks kept with undo records: the deepest reorg handled.
    #[serde(default = "default_reorg_window")]
    pub reorg_window: u64,
    /// Largest `eth_getLogs` range, in blocks.
    #[serde(default = "default_max_log_range")]
    pub max_log_range: u64,
    /// Head to follow: `latest` (minus `confirmations`), `safe` or `finalized`.
    #[serde(default)]
    pub head: HeadConfig,
}

/// Which head a chain's indexer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeadConfig {
    /// `latest` minus `confirmations`.
    #[default]
    Latest,
    /// The node's `safe` block.
    Safe,
    /// The node's `finalized` block.
    Finalized,
}

fn default_reorg_window() -> u64 {
    128
}

fn default_max_log_range() -> u64 {
    10_000
}

/// One limit: `requests` per `window_secs` per client IP (IPv6 by /64),
/// optionally `wallet_requests` per `window_secs` per signed-in wallet, and a
/// global ceiling of `global_per_sec` over every client of the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Requests allowed per IP in one window (the burst).
    pub requests: u32,
    /// Window length in seconds.
    pub window_secs: u64,
    /// Requests allowed per wallet in one window, where the handler knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_requests: Option<u32>,
    /// Requests per second over all clients of the route (bounds the keys an
    /// address-rotating client can create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_per_sec: Option<u32>,
}

impl Limit {
    /// `requests` per `window_secs`, with an optional global ceiling.
    pub const fn per(requests: u32, window_secs: u64) -> Self {
        Self {
            requests,
            window_secs,
            wallet_requests: None,
            global_per_sec: None,
        }
    }

    /// The same with a global ceiling.
    pub const fn global(self, per_sec: u32) -> Self {
        Self {
            global_per_sec: Some(per_sec),
            ..self
        }
    }

    /// The same with a per-wallet limit.
    pub const fn wallet(self, requests: u32) -> Self {
        Self {
            wallet_requests: Some(requests),
            ..self
        }
    }
}

/// Rate limits (ClawCloud v1.3.0 defaults) and the auto-ban policy. State
/// lives in Redis so several API replicas share it. Each route class (see
/// `api::limits::RouteClass`) is a key: `rate_limits.<class>.requests`, ...
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Switch every limit off (benchmarks, trusted deployments).
    pub enabled: bool,
    /// Violations (429s, refused admin keys) within `ban_window_secs` that ban an IP.
    pub ban_threshold: u32,
    /// Window over which violations are counted.
    pub ban_window_secs: u64,
    /// How long an automatic ban lasts.
    pub ban_secs: u64,
    /// The limit of each route class, by its name.
    #[serde(flatten)]
    pub routes: BTreeMap<String, Limit>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ban_threshold: 10,
            ban_window_secs: 3_600,
            ban_secs: 3_600,
            routes: crate::api::limits::RouteClass::ALL
                .iter()
                .map(|c| (c.name().to_owned(), c.default_limit()))
                .collect(),
        }
    }
}

/// Authentication settings. The secret for JWTs is `CHAINFRONT_JWT_SECRET`
/// (at least 32 bytes; the node refuses to start without it, except under
/// `chainfront dev`, which draws one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How old (or how far ahead) a timestamped signature or a sign-in
    /// message's Issued At may be, in seconds.
    pub signature_max_age_secs: u64,
    /// How long a server nonce stays valid, in seconds.
    pub nonce_ttl_secs: u64,
    /// Lifetime of a sign-in JWT, in seconds.
    pub jwt_ttl_secs: u64,
    /// Gas given to a contract wallet's EIP-1271 `isValidSignature` call.
    pub eip1271_gas: u64,
    /// How long "is this address a contract" answers are cached, in seconds.
    pub code_cache_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            signature_max_age_secs: 300,
            nonce_ttl_secs: 300,
            jwt_ttl_secs: 3_600,
            eip1271_gas: 200_000,
            code_cache_secs: 60,
        }
    }
}

/// Which provider creates VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Local stand-in used by `chainfront dev`: answers at once with a local host.
    #[default]
    Dev,
    /// An operator-configured executable (JSON on stdin, JSON on stdout).
    Command,
    /// Vultr API v2 (tiers 0-3).
    Vultr,
}

/// SSH key type generated per VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SshKeyType {
    /// Ed25519 (default).
    #[default]
    Ed25519,
    /// RSA 4096, as ClawCloud documents.
    Rsa4096,
}

/// VM provisioning settings. The Vultr key is `CHAINFRONT_VULTR_API_KEY`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// Run the provisioning worker and expiry sweeper inside `chainfront run`.
    pub enabled: bool,
    /// Which provider creates VMs.
    pub provider: ProviderKind,
    /// `command` provider: the executable and its arguments.
    pub command: Vec<String>,
    /// `command` provider: environment variables passed through to it (by
    /// name) besides `PATH`, `HOME`, `LANG` and `TMPDIR`; the node's own
    /// environment (with its secrets) is never inherited.
    pub command_env: Vec<String>,
    /// `vultr` provider: API base URL.
    pub vultr_api_url: String,
    /// `vultr` provider: region.
    pub vultr_region: String,
    /// `vultr` provider: OS id.
    pub vultr_os_id: u32,
    /// `vultr` provider: firewall group every instance joins (make one that
    /// allows only SSH).
    pub vultr_firewall_group_id: Option<String>,
    /// SSH key type generated per VM.
    pub ssh_key_type: SshKeyType,
    /// Erase the private key after its first successful delivery.
    pub one_time_delivery: bool,
    /// Attempts before a provisioning is left to an operator.
    pub max_attempts: u32,
    /// First retry delay in ms (doubles per attempt, with jitter).
    pub retry_base_ms: u64,
    /// How often the worker looks for due jobs and expired VMs, in ms.
    pub poll_interval_ms: u64,
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            provider: ProviderKind::Dev,
            command: Vec::new(),
            command_env: Vec::new(),
            vultr_api_url: "https://api.vultr.com/v2".into(),
            vultr_region: "ewr".into(),
            vultr_os_id: 2136,
            vultr_firewall_group_id: None,
            ssh_key_type: SshKeyType::Ed25519,
            one_time_delivery: false,
            max_attempts: 5,
            retry_base_ms: 2_000,
            poll_interval_ms: 500,
        }
    }
}

/// Clockchain markets. The operator key that records plain-transfer
/// submissions on chain is `CHAINFRONT_OPERATOR_KEY`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketsConfig {
    /// Run the submission recorder inside `chainfront run` (needs the
    /// operator key; without it claims wait for a replica that has one).
    pub record: bool,
    /// How often the recorder looks at its queue when not woken, in ms.
    pub record_poll_interval_ms: u64,
    /// Attempts (transient failures) before a submission is given up.
    pub record_max_attempts: u32,
    /// First retry delay in ms (doubles per attempt, capped at a minute).
    pub record_retry_base_ms: u64,
    /// How long to wait for a record transaction's receipt per attempt, in ms.
    pub record_receipt_timeout_ms: u64,
}

impl Default for MarketsConfig {
    fn default() -> Self {
        Self {
            record: true,
            record_poll_interval_ms: 500,
            record_max_attempts: 20,
            record_retry_base_ms: 1_000,
            record_receipt_timeout_ms: 60_000,
        }
    }
}

/// x402 payments: how paid routes are priced, verified and settled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct X402Config {
    /// Serve the paid `/x402/*` routes.
    pub enabled: bool,
    /// Settle through this external facilitator (`POST {url}/verify`,
    /// `POST {url}/settle`) instead of the node's relayer. Its answers are
    /// checked against the chain.
    pub facilitator_url: Option<String>,
    /// Blocks on top of a settlement before the paid request is served.
    pub confirmations: u64,
    /// How long a request waits for its settlement to be mined before it is
    /// answered `settlement_pending` (the same payment sent again resumes it).
    /// Must leave room within `api.request_timeout_ms` (checked at start).
    pub settle_timeout_secs: u64,
    /// `maxTimeoutSeconds` offered to clients: how long an authorization may
    /// stay valid.
    pub max_timeout_seconds: u64,
    /// Public base URL of the API (`https://api.example.com`), used in the
    /// `resource` of 402 answers; without it the request's `Host` is used.
    pub public_url: Option<String>,
    /// The v1 network name for the home chain; by default the name the v1
    /// clients use for it (`base`, `base-sepolia`, …) or, for chains they do
    /// not know (anvil), the CAIP-2 id.
    pub v1_network: Option<String>,
    /// Gas allowed to a contract wallet's EIP-1271 `isValidSignature`.
    pub eip1271_gas: u64,
    /// How often a settlement's receipt is polled, in ms (each pending
    /// settlement costs one RPC call per poll).
    pub poll_interval_ms: u64,
    /// Prices, in USDC.
    pub prices: X402Prices,
}

/// Time a paid request needs besides waiting for its settlement (checks,
/// simulation, the handler), within `api.request_timeout_ms`.
const X402_REQUEST_SLACK_MS: u64 = 3_000;

impl Default for X402Config {
    fn default() -> Self {
        Self {
            enabled: true,
            facilitator_url: None,
            confirmations: 0,
            settle_timeout_secs: 10,
            max_timeout_seconds: 300,
            public_url: None,
            v1_network: None,
            eip1271_gas: 100_000,
            poll_interval_ms: 200,
            prices: X402Prices::default(),
        }
    }
}

/// Prices of the paid routes, in USDC (decimal strings in TOML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct X402Prices {
    /// One `GET /x402/vm-credentials/:tokenId`.
    #[serde(with = "usdc_amount")]
    pub vm_credentials: rust_decimal::Decimal,
    /// Credits bought by `POST /x402/purchase-compute` without an amount.
    #[serde(with = "usdc_amount")]
    pub credits_default: rust_decimal::Decimal,
    /// Smallest credit purchase.
    #[serde(with = "usdc_amount")]
    pub credits_min: rust_decimal::Decimal,
    /// Largest credit purchase.
    #[serde(with = "usdc_amount")]
    pub credits_max: rust_decimal::Decimal,
}

impl Default for X402Prices {
    fn default() -> Self {
        use rust_decimal::Decimal;
        Self {
            vm_credentials: Decimal::new(1, 2),
            credits_default: Decimal::new(1, 0),
            credits_min: Decimal::new(10, 2),
            credits_max: Decimal::new(1_000, 0),
        }
    }
}

/// USDC amounts: a decimal string in TOML (a number from the environment is
/// read through its decimal text, never as a float).
mod usdc_amount {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let text = match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "expected a USDC amount like \"0.01\", got {other}"
                )));
            }
        };
        let v: Decimal = text
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a USDC amount")))?;
        if v.is_sign_negative() || v.normalize().scale() > 6 {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is not a USDC amount (non-negative, at most 6 decimals)"
            )));
        }
        Ok(v)
    }
}

/// Indexer settings shared by every chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexerConfig {
    /// Run the indexer inside `chainfront run`.
    pub enabled: bool,
    /// Leader lock time-to-live in ms: how long a dead leader blocks its standby.
    pub leader_ttl_ms: u64,
    /// Per-request RPC timeout in ms.
    pub rpc_timeout_ms: u64,
    /// How long the indexer waits for one Redis answer, in ms (a commit
    /// script of a large range included). A commit that times out may still
    /// have landed: the next pass re-reads the checkpoint, and the
    /// checkpoint check makes a replay a no-op.
    pub redis_timeout_ms: u64,
    /// `eth_getLogs` ranges fetched ahead of the one being committed during a
    /// backfill (each holds up to one range of logs in memory).
    pub fetch_ahead: usize,
    /// Most logs in one atomic commit: a larger range is committed in
    /// chunks ending at block boundaries.
    pub max_logs_per_commit: usize,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            leader_ttl_ms: 5_000,
            rpc_timeout_ms: 10_000,
            redis_timeout_ms: 10_000,
            fetch_ahead: 2,
            max_logs_per_commit: 10_000,
        }
    }
}

fn default_poll_interval_ms() -> u64 {
    1_000
}

impl ChainConfig {
    /// The poll interval as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// A secret value; its `Debug` never shows it and its memory is wiped when
/// it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(zeroize::Zeroizing::new(value.into()))
    }

    /// The value itself. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Secrets, each optional until a command needs it.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Private key (hex) that `deploy` signs with.
    pub deployer_key: Option<Secret>,
    /// HMAC secret for the API's JWTs.
    pub jwt_secret: Option<Secret>,
    /// SHA-256 (hex) of the admin API key.
    pub admin_key_hash: Option<Secret>,
    /// Master key for encryption at rest.
    pub master_key: Option<Secret>,
    /// Vultr API key for the `vultr` provider.
    pub vultr_api_key: Option<Secret>,
    /// API key of the Compute API's LLM upstream.
    pub llm_api_key: Option<Secret>,
    /// Key the per-wallet callback signing secrets are derived from.
    pub compute_webhook_key: Option<Secret>,
    /// Private key (hex) of the stakes contract's operator: records
    /// transfer-then-POST submissions on chain.
    pub operator_key: Option<Secret>,
    /// Private key (hex) that relays EIP-3009 authorizations (x402
    /// settlement, gas-free purchases); it pays the gas.
    pub relayer_key: Option<Secret>,
    /// The file `admin_key_hash` came from, if any: re-read when it changes,
    /// so admin keys rotate without a restart.
    pub admin_key_hash_file: Option<PathBuf>,
}

impl Secrets {
    /// Reads every secret from `vars` (the process environment in production).
    pub fn from_env(vars: &BTreeMap<String, String>) -> Result<Self> {
        let read = |name: &str| -> Result<Option<Secret>> {
            let var = format!("{ENV_PREFIX}{}", name.to_uppercase());
            let file_var = format!("{var}_FILE");
            match (vars.get(&var), vars.get(&file_var)) {
                (Some(_), Some(_)) => Err(Error::Config {
                    key: name.into(),
                    message: format!("set either {var} or {file_var}, not both"),
                }),
                (Some(v), None) => Ok(Some(Secret::new(v.trim()))),
                (None, Some(path)) => {
                    let v = std::fs::read_to_string(path).map_err(|e| Error::Config {
                        key: name.into(),
                        message: format!("cannot read {file_var}={path}: {e}"),
                    })?;
                    Ok(Some(Secret::new(v.trim())))
                }
                (None, None) => Ok(None),
            }
        };
        Ok(Self {
            deployer_key: read("deployer_key")?,
            jwt_secret: read("jwt_secret")?,
            admin_key_hash: read("admin_key_hash")?,
            master_key: read("master_key")?,
            vultr_api_key: read("vultr_api_key")?,
            llm_api_key: read("llm_api_key")?,
            compute_webhook_key: read("compute_webhook_key")?,
            operator_key: read("operator_key")?,
            relayer_key: read("relayer_key")?,
            admin_key_hash_file: vars
                .get(&format!("{ENV_PREFIX}ADMIN_KEY_HASH_FILE"))
                .map(PathBuf::from),
        })
    }
}

/// The home chain's contracts, fully resolved.
#[derive(Debug, Clone)]
pub struct HomeChain {
    /// Name of the chain in `chains`.
    pub name: String,
    /// Its settings.
    pub chain: ChainConfig,
    /// Its contracts.
    pub deployment: Deployment,
}

impl Config {
    /// Loads defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_with_env(file, &vars)
    }

    /// Like [`Config::load`] with an explicit environment, so precedence can be
    /// tested without touching the process's.
    pub fn load_with_env(file: Option<&Path>, vars: &BTreeMap<String, String>) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Defaults::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::Config {
                    key: "config".into(),
                    message: format!("config file {} does not exist", path.display()),
                });
            }
            let toml_layer = Figment::from(Toml::file_exact(path));
            for name in SECRET_NAMES {
                if toml_layer.find_value(name).is_ok() {
                    return Err(Error::Config {
                        key: (*name).into(),
                        message: format!(
                            "secrets are not read from config files ({}); set {ENV_PREFIX}{} or {ENV_PREFIX}{}_FILE",
                            path.display(),
                            name.to_uppercase(),
                            name.to_uppercase()
                        ),
                    });
                }
            }
            figment = figment.merge(toml_layer);
        }
        figment = figment.merge(env_provider(vars));
        let mut config: Config = figment.extract().map_err(Error::from_figment)?;
        config.secrets = Secrets::from_env(vars)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked without a network.
    pub fn validate(&self) -> Result<()> {
        if !self.chains.contains_key(&self.home_chain) {
            return Err(Error::Config {
                key: "home_chain".into(),
                message: format!(
                    "names chain `{}`, but no [chains.{}] section is configured (have: {})",
                    self.home_chain,
                    self.home_chain,
                    self.chains.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        for (name, chain) in &self.chains {
            let key = |field: &str| format!("chains.{name}.{field}");
            if chain.chain_id == 0 {
                return Err(Error::Config {
                    key: key("chain_id"),
                    message: "must be a non-zero EIP-155 chain id".into(),
                });
            }
            if chain.rpc_urls.is_empty() {
                return Err(Error::Config {
                    key: key("rpc_urls"),
                    message: "needs at least one JSON-RPC URL".into(),
                });
            }
            for url in &chain.rpc_urls {
                check_url(&key("rpc_urls"), url, &["http", "https"])?;
            }
            if let Some(ws) = &chain.ws_url {
                check_url(&key("ws_url"), ws, &["ws", "wss"])?;
            }
            if chain.reorg_window == 0 {
                return Err(Error::Config {
                    key: key("reorg_window"),
                    message: "must be at least 1".into(),
                });
            }
            if chain.max_log_range == 0 {
                return Err(Error::Config {
                    key: key("max_log_range"),
                    message: "must be at least 1".into(),
                });
            }
            if chain.poll_interval_ms == 0 {
                return Err(Error::Config {
                    key: key("poll_interval_ms"),
                    message: "must be at least 1".into(),
                });
            }
        }
        // One server, or a comma-separated list of Redis Cluster nodes.
        for node in self.redis.url.split(',').map(str::trim) {
            check_url(
                "redis.url",
                node,
                &["redis", "rediss", "redis+unix", "unix"],
            )?;
        }
        if let Some(url) = &self.x402.facilitator_url {
            check_url("x402.facilitator_url", url, &["http", "https"])?;
        }
        let p = &self.x402.prices;
        if p.credits_min > p.credits_max
            || p.credits_default < p.credits_min
            || p.credits_default > p.credits_max
        {
            return Err(Error::Config {
                key: "x402.prices".into(),
                message: "needs credits_min <= credits_default <= credits_max".into(),
            });
        }
        if self.x402.max_timeout_seconds == 0
            || self.x402.settle_timeout_secs == 0
            || self.x402.poll_interval_ms == 0
        {
            return Err(Error::Config {
                key: "x402.max_timeout_seconds".into(),
                message:
                    "max_timeout_seconds, settle_timeout_secs and poll_interval_ms must be at least 1"
                        .into(),
            });
        }
        if self.x402.enabled
            && self.x402.settle_timeout_secs.saturating_mul(1_000) + X402_REQUEST_SLACK_MS
                > self.api.request_timeout_ms
        {
            return Err(Error::Config {
                key: "x402.settle_timeout_secs".into(),
                message: format!(
                    "is {} s, which leaves less than {} s of api.request_timeout_ms ({} ms) for the rest of a paid request; a request cut off there answers 503 while its settlement goes on",
                    self.x402.settle_timeout_secs,
                    X402_REQUEST_SLACK_MS / 1_000,
                    self.api.request_timeout_ms
                ),
            });
        }
        if let Some(url) = &self.api.public_url {
            check_url("api.public_url", url, &["http", "https"])?;
        }
        for name in self.rate_limits.routes.keys() {
            if crate::api::limits::RouteClass::from_name(name).is_none() {
                return Err(Error::Config {
                    key: format!("rate_limits.{name}"),
                    message: format!(
                        "is not a known route class (expected one of: {})",
                        crate::api::limits::RouteClass::ALL
                            .iter()
                            .map(|c| c.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        if let Some(hash) = &self.secrets.admin_key_hash
            && let Err(message) = crate::auth::admin::parse_hashes(hash.expose())
        {
            return Err(Error::Config {
                key: "admin_key_hash".into(),
                message,
            });
        }
        Ok(())
    }

    /// The home chain with its contracts resolved from config and, for anything
    /// config leaves unset, its deployment file.
    pub fn home(&self) -> Result<HomeChain> {
        let name = self.home_chain.clone();
        let chain = self
            .chains
            .get(&name)
            .cloned()
            .ok_or_else(|| Error::Config {
                key: "home_chain".into(),
                message: format!("no [chains.{name}] section"),
            })?;
        let from_file = match &chain.deployment_file {
            Some(path) if path.exists() => Some(Deployment::read(path)?),
            _ => None,
        };
        if let Some(d) = &from_file
            && d.chain_id != chain.chain_id
        {
            return Err(Error::Config {
                key: format!("chains.{name}.deployment_file"),
                message: format!(
                    "deployment is for chain id {}, but chains.{name}.chain_id is {}",
                    d.chain_id, chain.chain_id
                ),
            });
        }
        let missing = |field: &str| {
            Error::Config {
            key: format!("chains.{name}.{field}"),
            message: match &chain.deployment_file {
                Some(p) => format!(
                    "is not set and the deployment file {} does not exist (run `chainfront deploy` or `chainfront dev`)",
                    p.display()
                ),
                None => "is not set (set it, or point deployment_file at the output of `chainfront deploy`)".into(),
            },
        }
        };
        let f = from_file.as_ref();
        let deployment = Deployment {
            chain_id: chain.chain_id,
            start_block: chain.start_block.or(f.map(|d| d.start_block)).unwrap_or(0),
            usdc: chain
                .usdc
                .or(f.map(|d| d.usdc))
                .ok_or_else(|| missing("usdc"))?,
            cbbtc: chain.cbbtc.or(f.and_then(|d| d.cbbtc)),
            vm_marketplace: chain
                .vm_marketplace
                .or(f.map(|d| d.vm_marketplace))
                .ok_or_else(|| missing("vm_marketplace"))?,
            submission_stakes: chain
                .submission_stakes
                .or(f.and_then(|d| d.submission_stakes)),
            treasury: chain
                .treasury
                .or(f.map(|d| d.treasury))
                .ok_or_else(|| missing("treasury"))?,
            deployer: f.and_then(|d| d.deployer),
        };
        Ok(HomeChain {
            name,
            chain,
            deployment,
        })
    }

    /// One indexer spec per followed chain: the home chain with its contracts
    /// and deposits, every other chain with a USDC address for deposits to the
    /// treasury (the home treasury unless the chain sets its own).
    // `..FollowConfig::default()` stays although every field is set today:
    // a follower setting added later takes its default here.
    #[allow(clippy::needless_update)]
    pub fn chain_specs(&self) -> Result<Vec<ChainSpec>> {
        let home = self.home()?;
        let mut specs = Vec::new();
        for (name, chain) in &self.chains {
            let is_home = *name == home.name;
            let watched = if is_home {
                let d = &home.deployment;
                Watched {
                    keys: ChainKeys::new(chain.chain_id),
                    vm_marketplace: Some(d.vm_marketplace),
                    submission_stakes: d.submission_stakes,
                    usdc: Some(d.usdc),
                    treasury: Some(d.treasury),
                }
            } else {
                let Some(usdc) = chain.usdc else { continue };
                Watched {
                    keys: ChainKeys::new(chain.chain_id),
                    vm_marketplace: None,
                    submission_stakes: None,
                    usdc: Some(usdc),
                    treasury: Some(chain.treasury.unwrap_or(home.deployment.treasury)),
                }
            };
            let start_block = if is_home {
                home.deployment.start_block
            } else {
                chain.start_block.unwrap_or(0)
            };
            specs.push(ChainSpec {
                name: name.clone(),
                chain_id: chain.chain_id,
                rpc_urls: chain.rpc_urls.clone(),
                rpc_timeout: Duration::from_millis(self.indexer.rpc_timeout_ms),
                retry: RetryPolicy::default(),
                watched,
                follow: FollowConfig {
                    start_block,
                    confirmations: chain.confirmations,
                    poll_interval: chain.poll_interval(),
                    window: chain.reorg_window,
                    max_range: chain.max_log_range,
                    // Start small and grow while responses stay small, so memory is bounded
                    // by the response size, not by how dense the first range is.
                    initial_range: chain.max_log_range.min(100),
                    ws_url: chain.ws_url.clone(),
                    fetch_ahead: self.indexer.fetch_ahead.max(1),
                    max_logs_per_commit: self.indexer.max_logs_per_commit.max(1),
                    head: match chain.head {
                        HeadConfig::Latest => HeadTag::Latest,
                        HeadConfig::Safe => HeadTag::Safe,
                        HeadConfig::Finalized => HeadTag::Finalized,
                    },
                    ..FollowConfig::default()
                },
                leader_ttl: Duration::from_millis(self.indexer.leader_ttl_ms),
            });
        }
        Ok(specs)
    }

    /// The configuration as TOML, secrets shown only as set / unset and every
    /// URL without its credentials, path or query (RPC API keys often live
    /// there).
    pub fn to_redacted_toml(&self) -> String {
        let mut out = toml_string(self);
        out.push_str("\n# secrets (from the environment or *_FILE)\n");
        let s = &self.secrets;
        for (name, set) in [
            ("deployer_key", s.deployer_key.is_some()),
            ("jwt_secret", s.jwt_secret.is_some()),
            ("admin_key_hash", s.admin_key_hash.is_some()),
            ("master_key", s.master_key.is_some()),
            ("vultr_api_key", s.vultr_api_key.is_some()),
            ("operator_key", s.operator_key.is_some()),
            ("relayer_key", s.relayer_key.is_some()),
        ] {
            out.push_str(&format!(
                "# {name}: {}\n",
                if set { "set" } else { "unset" }
            ));
        }
        out
    }
}

fn toml_string(config: &Config) -> String {
    // Serialising plain data to JSON cannot fail; TOML is built from it by hand
    // to avoid another dependency just for `config check`.
    let mut value = serde_json::to_value(config).unwrap_or_default();
    redact_urls_in(&mut value);
    let mut out = String::new();
    render_toml(&mut out, "", &value);
    out
}

/// Every string in `value` with its URLs reduced to scheme, host and port.
fn redact_urls_in(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => *s = chainfront_indexer::rpc::redact_urls(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_urls_in),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_urls_in),
        _ => {}
    }
}

fn render_toml(out: &mut String, prefix: &str, value: &serde_json::Value) {
    let Some(map) = value.as_object() else { return };
    for (k, v) in map {
        if !v.is_object() && !v.is_null() {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    for (k, v) in map {
        if v.is_object() {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.as_object()
                .is_some_and(|m| m.values().any(|x| !x.is_object() && !x.is_null()))
            {
                out.push_str(&format!("\n[{path}]\n"));
            }
            render_toml(out, &path, v);
        }
    }
}

fn env_provider(vars: &BTreeMap<String, String>) -> impl figment::Provider {
    // The same rules as figment's `Env::prefixed(..).split("__")` (lower-cased
    // keys, `__` nests, values parsed as TOML-like literals), but fed from `vars`
    // rather than the process environment so precedence is testable.
    let mut dict = figment::value::Dict::new();
    for (k, v) in vars {
        let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = rest.to_lowercase();
        if NON_KEY_VARS.contains(&key.as_str())
            || SECRET_NAMES
                .iter()
                .any(|s| key == *s || key == format!("{s}_file"))
        {
            continue;
        }
        let value: figment::value::Value = v.parse().unwrap_or_else(|_| v.clone().into());
        insert_path(&mut dict, &key.split("__").collect::<Vec<_>>(), value);
    }
    Serialized::defaults(dict)
}

fn insert_path(dict: &mut figment::value::Dict, path: &[&str], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry((*head).to_owned())
                .or_insert_with(|| figment::value::Dict::new().into());
            if let figment::value::Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = figment::value::Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = inner.into();
            }
        }
    }
}

fn check_url(key: &str, url: &str, schemes: &[&str]) -> Result<()> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some(s) if schemes.contains(&s) && url.len() > s.len() + 3 => Ok(()),
        _ => Err(Error::Config {
            key: key.into(),
            message: format!(
                "`{url}` is not a valid URL (expected {})",
                schemes.join(" or ")
            ),
        }),
    }
}

/// Defaults for keys that have one; everything else must come from a file or env.
#[derive(Serialize, Default)]
struct Defaults {
    api: ApiConfig,
    redis: RedisConfig,
    log: LogConfig,
    indexer: IndexerConfig,
    rate_limits: RateLimitConfig,
    auth: AuthConfig,
    provisioning: ProvisioningConfig,
    compute: crate::compute::config::ComputeConfig,
    markets: MarketsConfig,
    x402: X402Config,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }

    const MINIMAL: &str = r#"
home_chain = "local"
[chains.local]
chain_id = 31337
rpc_urls = ["http://127.0.0.1:8545"]
"#;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            &format!("{MINIMAL}\n[api]\nlisten = \"0.0.0.0:9000\"\n"),
        );
        let c = Config::load_with_env(Some(&file), &env(&[])).expect("load");
        assert_eq!(c.api.listen.port(), 9000, "file beats default");
        assert_eq!(c.redis.url, "redis://127.0.0.1:6379", "default kept");
        assert_eq!(c.chains["local"].poll_interval_ms, 1000);

        let c = Config::load_with_env(
            Some(&file),
            &env(&[
                ("CHAINFRONT_API__LISTEN", "127.0.0.1:7000"),
                (
                    "CHAINFRONT_CHAINS__LOCAL__RPC_URLS",
                    "[\"http://a:1\", \"http://b:2\"]",
                ),
                ("CHAINFRONT_CHAINS__LOCAL__CONFIRMATIONS", "12"),
                ("CHAINFRONT_REDIS__URL", "redis://10.0.0.1:6380"),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .expect("load");
        assert_eq!(c.api.listen.port(), 7000, "env beats file");
        assert_eq!(c.chains["local"].rpc_urls, vec!["http://a:1", "http://b:2"]);
        assert_eq!(c.chains["local"].confirmations, 12);
        assert_eq!(c.redis.url, "redis://10.0.0.1:6380");
    }

    #[test]
    fn an_x402_settlement_must_fit_in_the_request_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "c.toml", MINIMAL);
        let load = |pairs: &[(&str, &str)]| Config::load_with_env(Some(&file), &env(pairs));
        let c = load(&[]).expect("defaults fit");
        assert_eq!(c.x402.settle_timeout_secs, 10);
        let e = load(&[("CHAINFRONT_X402__SETTLE_TIMEOUT_SECS", "13")])
            .expect_err("13 s + slack > 15 s");
        assert!(e.to_string().contains("x402.settle_timeout_secs"), "{e}");
        load(&[
            ("CHAINFRONT_X402__SETTLE_TIMEOUT_SECS", "30"),
            ("CHAINFRONT_API__REQUEST_TIMEOUT_MS", "40000"),
        ])
        .expect("a longer request timeout makes room");
        load(&[
            ("CHAINFRONT_X402__SETTLE_TIMEOUT_SECS", "30"),
            ("CHAINFRONT_X402__ENABLED", "false"),
        ])
        .expect("x402 off: not checked");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "c.toml", MINIMAL);
        let cases = [
            ("CHAINFRONT_CHAINS__LOCAL__CHAIN_ID", "abc", "chain_id"),
            (
                "CHAINFRONT_CHAINS__LOCAL__RPC_URLS",
                "[\"ftp://x\"]",
                "chains.local.rpc_urls",
            ),
            ("CHAINFRONT_CHAINS__LOCAL__USDC", "0x1234", "usdc"),
            ("CHAINFRONT_HOME_CHAIN", "base", "home_chain"),
            ("CHAINFRONT_API__LISTEN", "not-an-addr", "listen"),
            ("CHAINFRONT_ADMIN_KEY_HASH", "abc", "admin_key_hash"),
            ("CHAINFRONT_API__LISTN", "1", "listn"),
        ];
        for (var, value, key) in cases {
            let err = Config::load_with_env(Some(&file), &env(&[(var, value)]))
                .expect_err(var)
                .to_string();
            assert!(
                err.contains(key),
                "{var}={value}: `{err}` should name `{key}`"
            );
        }
    }

    #[test]
    fn secrets_come_only_from_env_or_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            &format!("jwt_secret = \"oops\"\n{MINIMAL}"),
        );
        let err = Config::load_with_env(Some(&file), &env(&[])).expect_err("secret in toml");
        assert!(err.to_string().contains("CHAINFRONT_JWT_SECRET"), "{err}");

        let file = write(dir.path(), "ok.toml", MINIMAL);
        let key_file = write(dir.path(), "jwt", "from-file\n");
        let c = Config::load_with_env(
            Some(&file),
            &env(&[
                ("CHAINFRONT_DEPLOYER_KEY", "0xabc"),
                (
                    "CHAINFRONT_JWT_SECRET_FILE",
                    key_file.to_str().expect("utf8"),
                ),
            ]),
        )
        .expect("load");
        assert_eq!(
            c.secrets.deployer_key.as_ref().map(Secret::expose),
            Some("0xabc")
        );
        assert_eq!(
            c.secrets.jwt_secret.as_ref().map(Secret::expose),
            Some("from-file")
        );
        let shown = format!("{:?}\n{}", c, c.to_redacted_toml());
        assert!(
            !shown.contains("0xabc") && !shown.contains("from-file"),
            "{shown}"
        );
    }

    #[test]
    fn config_check_output_has_no_url_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "c.toml", MINIMAL);
        let c = Config::load_with_env(
            Some(&file),
            &env(&[
                (
                    "CHAINFRONT_CHAINS__LOCAL__RPC_URLS",
                    "[\"https://user:hunter2@rpc.example/v2/APIKEY123?key=QUERYKEY\"]",
                ),
                (
                    "CHAINFRONT_REDIS__URL",
                    "redis://:redispass@10.0.0.1:6379/0",
                ),
                ("CHAINFRONT_VULTR_API_KEY", "VULTRKEY"),
            ]),
        )
        .expect("load");
        let shown = c.to_redacted_toml();
        for secret in ["hunter2", "APIKEY123", "QUERYKEY", "redispass", "VULTRKEY"] {
            assert!(!shown.contains(secret), "{secret} in:\n{shown}");
        }
        assert!(shown.contains("https://rpc.example"), "{shown}");
        assert!(shown.contains("# vultr_api_key: set"), "{shown}");
    }

    #[test]
    fn home_chain_merges_the_deployment_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dep_path = dir.path().join("deployment.json");
        let file = write(
            dir.path(),
            "c.toml",
            &format!(
                "{MINIMAL}deployment_file = \"{}\"\ntreasury = \"0x{}\"\n",
                dep_path.display(),
                "44".repeat(20)
            ),
        );
        let c = Config::load_with_env(Some(&file), &env(&[])).expect("load");
        let err = c.home().expect_err("no deployment yet").to_string();
        assert!(
            err.contains("chains.local.usdc") && err.contains("chainfront dev"),
            "{err}"
        );

        Deployment {
            chain_id: 31337,
            start_block: 5,
            usdc: Address::repeat_byte(1),
            cbbtc: None,
            vm_marketplace: Address::repeat_byte(2),
            submission_stakes: None,
            treasury: Address::repeat_byte(3),
            deployer: None,
        }
        .write(&dep_path)
        .expect("write deployment");
        let home = c.home().expect("resolved");
        assert_eq!(home.deployment.vm_marketplace, Address::repeat_byte(2));
        assert_eq!(home.deployment.start_block, 5);
        assert_eq!(
            home.deployment.treasury,
            Address::repeat_byte(0x44),
            "config beats file"
        );

        let c = Config::load_with_env(
            Some(&file),
            &env(&[("CHAINFRONT_CHAINS__LOCAL__CHAIN_ID", "1")]),
        )
        .expect("load");
        let err = c.home().expect_err("chain id mismatch").to_string();
        assert!(
            err.contains("deployment_file") && err.contains("31337"),
            "{err}"
        );
    }

    #[test]
    fn shipped_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in ["local.toml", "base-sepolia.toml", "base-mainnet.toml"] {
            let c = Config::load_with_env(Some(&root.join(name)), &env(&[])).expect(name);
            assert!(c.chains.contains_key(&c.home_chain), "{name}");
        }
        for name in ["base-sepolia.toml", "base-mainnet.toml"] {
            let c = Config::load_with_env(Some(&root.join(name)), &env(&[])).expect(name);
            assert!(
                !c.api.legacy_bearer_auth,
                "{name}: the replayable form is off"
            );
            assert!(
                c.api.listen.ip().is_loopback(),
                "{name}: behind a TLS proxy"
            );
        }
        let local =
            Config::load_with_env(Some(&root.join("local.toml")), &env(&[])).expect("local");
        assert!(
            local.api.legacy_bearer_auth,
            "documented clients work on a test chain"
        );
        assert!(!ApiConfig::default().legacy_bearer_auth, "off by default");
        let mainnet = root.join("base-mainnet.toml");
        let c = Config::load_with_env(Some(&mainnet), &env(&[])).expect("mainnet");
        let err = c
            .home()
            .expect_err("the operator's treasury is not shipped")
            .to_string();
        assert!(err.contains("chains.base.treasury"), "{err}");
        let treasury = format!("0x{}", "ab".repeat(20));
        let c = Config::load_with_env(
            Some(&mainnet),
            &env(&[("CHAINFRONT_CHAINS__BASE__TREASURY", &treasury)]),
        )
        .expect("mainnet");
        let home = c.home().expect("mainnet addresses are all configured");
        assert_eq!(home.deployment.chain_id, 8453);
        // Money on Base follows the safe head, not a depth on the unsafe chain.
        assert_eq!(home.chain.head, HeadConfig::Safe);
        let base = c
            .chain_specs()
            .expect("specs")
            .into_iter()
            .find(|s| s.chain_id == 8453)
            .expect("base");
        assert_eq!(base.follow.head, HeadTag::Safe);
        assert_eq!(
            home.deployment.usdc.to_string(),
            "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
        );
        assert_eq!(
            home.deployment.vm_marketplace.to_string(),
            "0xF708741D37C420518852c6A15aB658066951c852"
        );
    }
}
