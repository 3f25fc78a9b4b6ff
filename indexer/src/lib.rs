//! chainfront's chain side: contract bindings generated from `abi/`, the
//! deployment description shared by every command, and the indexer that turns
//! logs into Redis state exactly once and reorg-safe.
//!
//! - [`rpc`]: endpoints judged and failed over; [`retry`]: the one backoff
//!   policy; [`verify`]: what a provider's answer must satisfy;
//!   [`pace`]: when to poll the head.
//! - [`logs`]: adaptive `eth_getLogs` ranges.
//! - [`follow`]: backfill + live loop; reorgs are found by parent hash and
//!   undone through [`store`], the one atomic Redis commit.
//! - [`apply`]: event → state change; [`keys`]: the key schema.
//! - [`leader`]: one writer per chain; [`digest`]: a hash of the state.

pub mod apply;
pub mod chain;
pub mod conn;
pub mod contracts;
pub mod deployment;
pub mod digest;
mod error;
pub mod follow;
pub mod keys;
pub mod leader;
pub mod logs;
pub mod metrics;
pub mod pace;
pub mod retry;
pub mod rpc;
pub mod store;
pub mod verify;

pub use error::{Error, Result};
