//! The HTTP API: one [`AppState`], one router per surface, merged here.

pub mod auth;
pub mod error;
mod health;
pub mod ratelimit;
pub mod vms;

use std::sync::Arc;

use alloy::providers::DynProvider;
use axum::Router;
use redis::aio::ConnectionManager;

use crate::config::{Config, HomeChain};

pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The node configuration.
    pub config: Arc<Config>,
    /// The home chain and its contracts.
    pub home: Arc<HomeChain>,
    /// Shared Redis connection (multiplexed, reconnecting).
    pub redis: ConnectionManager,
    /// Read-only chain access.
    pub chain: DynProvider,
    /// Master key for encryption at rest (`None`: wallet generation and
    /// provisioning are off).
    pub master: Option<Arc<crate::crypto::ecies::MasterKey>>,
    /// Counters and gauges served at `/metrics`.
    pub metrics: Arc<crate::metrics::NodeMetrics>,
    /// Latest head block seen by this process (0 until known).
    pub chain_head: Arc<std::sync::atomic::AtomicU64>,
    /// Timestamp of that head block (0 until known).
    pub chain_time: Arc<std::sync::atomic::AtomicU64>,
    /// Wallet-signature checks.
    pub auth: Arc<crate::auth::Auth>,
    /// Public read answers, cached briefly.
    pub read_cache: Arc<vms::ReadCache>,
}

/// Largest request body accepted by any route.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The complete router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(crate::metrics::router())
        .merge(vms::tiers_router())
        .merge(vms::vms_router())
        .merge(vms::status_router())
        .merge(vms::credentials_router())
        .merge(vms::wallet_router())
        .merge(auth::router())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
