//! The running node: connects to the home chain and Redis, checks that the
//! configuration matches what it finds, and serves the API until shut down.

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use chainfront_indexer::chain;
use chainfront_indexer::conn::{self, ConnOptions, RedisConn};
use chainfront_indexer::retry::RetryPolicy;
use chainfront_indexer::rpc::{Rpc, redact_urls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::{Error, Result};

/// How long start-up waits for Redis and the RPC endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A read-only provider for `url`.
pub fn read_provider(url: &str) -> Result<DynProvider> {
    let parsed = url.parse().map_err(|e| {
        Error::chain(format!(
            "invalid RPC URL `{}`: {e}",
            chainfront_indexer::rpc::redact(url)
        ))
    })?;
    Ok(ProviderBuilder::new().connect_http(parsed).erased())
}

/// Opens a reconnecting, multiplexed Redis connection (a cluster
/// connection when `url` lists cluster nodes) with the API's timeouts.
pub async fn connect_redis(url: &str) -> Result<RedisConn> {
    connect_redis_with(url, ConnOptions::default()).await
}

/// Opens a Redis connection with `opts`, within [`CONNECT_TIMEOUT`].
pub async fn connect_redis_with(url: &str, opts: ConnOptions) -> Result<RedisConn> {
    match tokio::time::timeout(CONNECT_TIMEOUT, conn::connect_with(url, opts)).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(Error::Config {
            key: "redis.url".into(),
            message: format!(
                "no Redis answered at {} within {}s",
                redact_url(url),
                CONNECT_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// `url` (one or a comma-separated list of cluster nodes) without
/// credentials, for messages.
fn redact_url(url: &str) -> String {
    url.split(',')
        .map(chainfront_indexer::rpc::redact)
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks Redis is safe to keep chain state in: refuses a `maxmemory-policy`
/// that may evict it (`allkeys-*`), warns on `volatile-*`. Every command that
/// writes or serves state (`run`, `index`, `reindex`) calls it at start.
pub async fn check_redis(conn: &mut RedisConn) -> Result<()> {
    match conn::check_eviction_policy(conn).await {
        Ok(_) => Ok(()),
        Err(e @ chainfront_indexer::Error::UnsafeRedis(_)) => Err(Error::Config {
            key: "redis.url".into(),
            message: e.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The indexer's Redis connection options (`indexer.redis_timeout_ms`).
pub fn indexer_redis_options(config: &Config) -> ConnOptions {
    ConnOptions {
        response_timeout: Duration::from_millis(config.indexer.redis_timeout_ms.max(1)),
        ..ConnOptions::default()
    }
}

/// The API's failover RPC client for the home chain: every configured
/// endpoint in order, `api.rpc_timeout_ms` per call, one quick retry (an API
/// request should fail fast rather than queue behind a sick provider).
pub fn api_rpc(config: &Config, rpc_urls: &[String]) -> Result<Rpc> {
    Rpc::new(
        rpc_urls,
        RetryPolicy {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            max_retries: 1,
        },
        Duration::from_millis(config.api.rpc_timeout_ms.max(1)),
    )
    .map_err(|e| Error::chain(redact_urls(&e.to_string())))
}

/// Connects everything the API needs and checks the chain is the configured one.
pub async fn connect(config: Config) -> Result<AppState> {
    let home = config.home()?;
    let rpc = api_rpc(&config, &home.chain.rpc_urls)?;
    let shown = home
        .chain
        .rpc_urls
        .iter()
        .map(|u| chainfront_indexer::rpc::redact(u))
        .collect::<Vec<_>>()
        .join(", ");
    let key = |f: &str| format!("chains.{}.{f}", home.name);
    let chain_id = tokio::time::timeout(
        CONNECT_TIMEOUT,
        rpc.call("eth_chainId", |p| async move { p.get_chain_id().await }),
    )
    .await
    .map_err(|_| Error::Config {
        key: key("rpc_urls"),
        message: format!(
            "{shown} did not answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ),
    })?
    .map_err(|e| Error::Config {
        key: key("rpc_urls"),
        message: format!("{shown} failed: {}", redact_urls(&e.to_string())),
    })?;
    if chain_id != home.chain.chain_id {
        return Err(Error::Config {
            key: key("chain_id"),
            message: format!(
                "is {}, but {shown} serves chain id {chain_id}",
                home.chain.chain_id
            ),
        });
    }
    let marketplace = home.deployment.vm_marketplace;
    let code = rpc
        .call("eth_getCode", |p| async move {
            p.get_code_at(marketplace).await
        })
        .await
        .map_err(|e| Error::chain(redact_urls(&e.to_string())))?;
    if code.is_empty() {
        return Err(Error::Config {
            key: key("vm_marketplace"),
            message: format!(
                "no contract at {} on chain {chain_id}",
                home.deployment.vm_marketplace
            ),
        });
    }
    let mut redis = connect_redis(&config.redis.url).await?;
    check_redis(&mut redis).await?;
    let keyring = crate::crypto::ecies::Keyring::from_secrets(&config.secrets)?.map(Arc::new);
    if keyring.is_none() {
        warn!(target: "chainfront::node", "no master key (CHAINFRONT_MASTER_KEY): wallet generation and VM provisioning are off");
    }
    let auth = Arc::new(crate::auth::Auth::new(
        &config,
        home.deployment.chain_id,
        redis.clone(),
        rpc.clone(),
    )?);
    let admin_keys = Arc::new(crate::auth::admin::AdminKeys::from_secrets(&config.secrets));
    let compute = if config.compute.enabled {
        let c = &config.compute;
        let ledger =
            crate::ledger::Ledger::new(redis.clone(), Duration::from_millis(c.balance_cache_ms));
        let deposits = crate::ledger::deposit::Deposits::from_config(
            &config,
            Duration::from_millis(c.rpc_timeout_ms),
        )?;
        Some(
            crate::compute::Compute::new(
                &config,
                redis.clone(),
                ledger,
                deposits,
                home.chain.chain_id,
            )
            .await?,
        )
    } else {
        None
    };
    // x402 credits and consumes through the Compute API's ledger (one
    // balance cache), or its own handle on the same keys when that is off.
    let ledger = compute.as_ref().map_or_else(
        || crate::ledger::Ledger::new(redis.clone(), Duration::ZERO),
        |c| c.ledger().clone(),
    );
    let x402 = crate::x402::X402::connect(&config, &home, redis.clone(), rpc.clone(), ledger)
        .await?
        .map(Arc::new);
    let chain_head: Arc<std::sync::atomic::AtomicU64> = Arc::default();
    let chain_time: Arc<std::sync::atomic::AtomicU64> = Arc::default();
    let markets = Arc::new(crate::markets::Markets::new(crate::markets::MarketsParts {
        redis: redis.clone(),
        rpc: rpc.clone(),
        chain_id,
        contracts: crate::markets::Contracts {
            stakes: home.deployment.submission_stakes,
            cbbtc: home.deployment.cbbtc,
            usdc: Some(home.deployment.usdc),
        },
        confirmations: home.chain.confirmations,
        chain_time: chain_time.clone(),
        chain_head: chain_head.clone(),
        auth: auth.clone(),
    }));
    let inflight = Arc::new(tokio::sync::Semaphore::new(
        config.api.max_concurrent_requests.max(1),
    ));
    Ok(AppState::new(crate::api::Shared {
        compute,
        admin_keys,
        auth,
        config: Arc::new(config),
        home: Arc::new(home),
        redis,
        rpc,
        master: keyring,
        metrics: Arc::default(),
        chain_head,
        chain_time,
        read_cache: Arc::default(),
        x402,
        health_cache: Arc::default(),
        inflight,
        markets,
        balance_bodies: Default::default(),
        openapi: std::sync::OnceLock::new(),
    }))
}

/// Logs, once at start, what an operator should know about the API's
/// exposure: the replayable legacy form served on a non-loopback address.
pub fn warn_about_exposure(config: &Config) {
    if config.api.legacy_bearer_auth && !config.api.listen.ip().is_loopback() {
        warn!(
            target: "chainfront::security",
            event = "legacy_bearer_exposed",
            listen = %config.api.listen,
            "api.legacy_bearer_auth is on and the API listens on a non-loopback address: the documented `Bearer <signature>` form never expires, so anyone who sees one request can fetch that VM's key for as long as the signer owns it; turn it off once clients use the timestamped, nonce or sign-in forms, and serve the API behind a TLS proxy"
        );
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener.local_addr().ok();
    info!(target: "chainfront::api", addr = ?addr, "API listening");
    let metrics = match state.config.api.metrics_listen {
        Some(at) => {
            let metrics_listener = TcpListener::bind(at).await.map_err(|source| Error::Io {
                context: format!("binding /metrics to {at} (api.metrics_listen)"),
                source,
            })?;
            info!(target: "chainfront::api", addr = %at, "/metrics listening on its own address");
            let app = api::metrics_router(state.clone());
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(metrics_listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
        std::net::SocketAddr,
    >(api::router(state));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| Error::Io {
            context: "serving the API".into(),
            source,
        });
    if let Some(m) = metrics {
        m.abort();
    }
    served
}

/// Runs one indexer per configured chain until `shutdown`. A chain whose
/// indexer stops on a fatal condition (a reorg deeper than the window,
/// corrupt state, the wrong chain) is recorded in its metrics, so `/health`
/// says `degraded` and why, and logged; the other chains and the API keep
/// running. Transient faults never end an indexer (they are retried inside
/// it). Returns, once every indexer has ended, the first fatal error.
///
/// The indexers share their own Redis connection, with the indexer's
/// explicit response timeout (`indexer.redis_timeout_ms`), opened with
/// retries: a Redis that is down at this point is waited for.
pub async fn run_indexers(
    config: &Config,
    metrics: &crate::metrics::NodeMetrics,
    shutdown: CancellationToken,
) -> Result<()> {
    let specs = config.chain_specs()?;
    let Some(redis) = connect_indexer_redis(config, &shutdown).await else {
        return Ok(());
    };
    let mut tasks = tokio::task::JoinSet::new();
    for spec in specs {
        let (conn, stop) = (redis.clone(), shutdown.clone());
        let metrics = metrics.chain(&spec.name, spec.chain_id);
        tasks.spawn(async move {
            let name = spec.name.clone();
            let result = chain::run(conn, spec, metrics.clone(), stop).await;
            if let Err(e) = &result {
                metrics.set_stopped(e.to_string());
            }
            result.map_err(|e| (name, e))
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let failure = match joined {
            Ok(Ok(())) => continue,
            Ok(Err((name, e))) => format!("indexer for chain `{name}` stopped: {e}"),
            Err(e) => format!("indexer task failed: {e}"),
        };
        error!(target: "chainfront::indexer", error = %failure, "indexer stopped; the API keeps serving what is indexed (/health reports it)");
        first_error.get_or_insert(Error::chain(failure));
    }
    first_error.map_or(Ok(()), Err)
}

/// The indexers' Redis connection, retried with backoff until it opens or
/// `shutdown` (then `None`).
async fn connect_indexer_redis(config: &Config, shutdown: &CancellationToken) -> Option<RedisConn> {
    let policy = chainfront_indexer::retry::RetryPolicy {
        max_retries: usize::MAX,
        ..Default::default()
    };
    let mut delays = policy.delays();
    loop {
        match connect_redis_with(&config.redis.url, indexer_redis_options(config)).await {
            Ok(c) => return Some(c),
            Err(e) => {
                let wait = delays.next().unwrap_or(policy.max_delay);
                warn!(target: "chainfront::indexer", error = %e, retry_in_ms = wait.as_millis() as u64, "cannot connect the indexer to Redis; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Binds the configured address and runs the node (API and, unless disabled,
/// the indexers) until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let listen = config.api.listen;
    warn_about_exposure(&config);
    let state = connect(config).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io {
            context: format!("binding the API to {listen} (api.listen)"),
            source,
        })?;
    run_on(state, listener, shutdown).await
}

/// Runs the API on `listener` and, unless `indexer.enabled` is off, the
/// indexers, until `shutdown` (or an indexer's fatal error).
pub async fn run_on(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let config = state.config.clone();
    let indexers = async {
        if config.indexer.enabled {
            run_indexers(&config, &state.metrics, shutdown.clone()).await
        } else {
            Ok(())
        }
    };
    let head = tokio::spawn(api::vms::track_head(state.clone(), shutdown.clone()));
    let compute_tasks = run_compute(&state, shutdown.clone())?;
    let markets = state.markets.clone();
    let version_stop = shutdown.clone();
    let version = tokio::spawn(async move { markets.watch_version(version_stop).await });
    let provisioning = run_provisioning(&state, shutdown.clone());
    let recorder = run_recorder(&state, shutdown.clone());
    let (api, indexed, provisioned, recorded) = tokio::join!(
        serve(state.clone(), listener, shutdown.clone()),
        indexers,
        provisioning,
        recorder
    );
    head.abort();
    version.abort();
    for t in compute_tasks {
        t.abort();
    }
    indexed.and(provisioned).and(recorded).and(api)
}

/// Runs the Clockchain submission recorder until `shutdown`, when
/// `markets.record` is on, the stakes contract is deployed and an operator
/// key is set (without one, plain-transfer claims wait for a replica that
/// has it).
pub async fn run_recorder(state: &AppState, shutdown: CancellationToken) -> Result<()> {
    let cfg = &state.config.markets;
    if !cfg.record || state.home.deployment.submission_stakes.is_none() {
        return Ok(());
    }
    let Some(key) = &state.config.secrets.operator_key else {
        warn!(target: "chainfront::markets", "no operator key (CHAINFRONT_OPERATOR_KEY): plain-transfer submissions are accepted and queued, but this node does not record them on chain");
        return Ok(());
    };
    let signer = crate::deploy::parse_key(key.expose()).map_err(|_| Error::Config {
        key: "operator_key".into(),
        message: "CHAINFRONT_OPERATOR_KEY is not a 32-byte hex private key".into(),
    })?;
    let rpc = chainfront_indexer::rpc::Rpc::new(
        &state.home.chain.rpc_urls,
        chainfront_indexer::retry::RetryPolicy::default(),
        Duration::from_millis(state.config.indexer.rpc_timeout_ms),
    )?;
    let sender = Arc::new(crate::chain::TxSender::new(
        rpc,
        signer,
        state.home.deployment.chain_id,
        state.redis.clone(),
        crate::chain::SenderConfig {
            receipt_timeout: Duration::from_millis(cfg.record_receipt_timeout_ms),
            ..crate::chain::SenderConfig::default()
        },
    ));
    let recorder = crate::markets::recorder::Recorder::new(
        state.markets.clone(),
        sender,
        crate::markets::recorder::RecorderConfig {
            poll_interval: Duration::from_millis(cfg.record_poll_interval_ms.max(10)),
            max_attempts: cfg.record_max_attempts.max(1),
            retry_base: Duration::from_millis(cfg.record_retry_base_ms.max(1)),
            ..crate::markets::recorder::RecorderConfig::default()
        },
    );
    recorder.run(shutdown).await;
    Ok(())
}

/// Starts the Compute API's job workers and the deposit reconciler, when
/// the Compute API is on.
pub fn run_compute(
    state: &AppState,
    shutdown: CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let Some(compute) = state.compute.clone() else {
        return Ok(Vec::new());
    };
    let followed = state
        .config
        .chain_specs()?
        .into_iter()
        .filter(|s| s.watched.usdc.is_some())
        .map(|s| crate::ledger::reconcile::Followed {
            chain_id: s.chain_id,
            window: s.follow.window,
        })
        .collect();
    let reconciler = crate::ledger::reconcile::Reconciler::new(compute.ledger().clone(), followed);
    let every = Duration::from_millis(state.config.compute.reconcile_interval_ms.max(10));
    Ok(vec![
        tokio::spawn(crate::compute::worker::run(compute, shutdown.clone())),
        tokio::spawn(reconciler.run(every, shutdown)),
    ])
}

/// Runs the provisioning worker and expiry sweeper for the home chain until
/// `shutdown`, when `provisioning.enabled` is on and a master key is set.
pub async fn run_provisioning(state: &AppState, shutdown: CancellationToken) -> Result<()> {
    let cfg = &state.config.provisioning;
    let Some(master) = state.master.clone() else {
        return Ok(());
    };
    if !cfg.enabled {
        return Ok(());
    }
    let provider: Arc<dyn crate::provision::Provider> =
        Arc::from(crate::provision::from_config(&state.config)?);
    info!(target: "chainfront::provision", provider = provider.name(), "provisioning worker started");
    let worker = crate::provision::worker::Worker::new(
        state.redis.clone(),
        chainfront_indexer::keys::ChainKeys::new(state.home.deployment.chain_id),
        provider,
        master,
        cfg.clone(),
    );
    worker.run(shutdown).await;
    Ok(())
}
