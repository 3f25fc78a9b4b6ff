//! chainfront: a node that follows chainfront's contracts on Base (VM NFTs
//! bought with USDC, USDC deposits to a treasury, prediction-market stakes),
//! keeps the chain-derived state in Redis and serves it over a REST API that
//! verifies wallet signatures. This crate holds the API, configuration, the
//! local dev stack and the CLI's commands; the chain follower lives in
//! `chainfront-indexer`.

pub mod api;
pub mod auth;
pub mod chain;
pub mod cli;
pub mod compute;
pub mod config;
pub mod crypto;
pub mod deploy;
pub mod devnet;
mod error;
pub mod ledger;
pub mod markets;
pub mod metrics;
pub mod node;
pub mod provision;
pub mod telemetry;
pub mod time;
pub mod toolchain;
pub mod vms;
pub mod x402;

pub use error::{Error, Result};
