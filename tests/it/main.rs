//! Integration tests: one binary, a module per topic. Each test starts its own
//! anvil and redis-server through `harness` (free ports, temp dirs, killed on
//! drop), deploys the real contracts and signs with real keys.

mod abi;
mod admin;
mod auth;
mod chain;
mod cli;
mod compute;
mod contracts;
mod crash;
mod deposits;
mod fault_proxy;
mod fidelity;
mod follow_edges;
mod harness;
mod health;
mod indexer;
mod limits;
mod markets;
mod openapi;
mod provision;
mod redis_cluster;
mod reorgs;
mod rpc_faults;
mod security;
mod seed;
mod store;
mod supervision;
mod truth;
mod vms;
mod x402;
