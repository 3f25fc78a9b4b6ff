//! The HTTP API: one [`AppState`], one router per surface, merged here.

pub mod error;
mod health;

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
}

/// The complete router.
pub fn router(state: AppState) -> Router {
    Router::new().merge(health::router()).with_state(state)
}
