//! The Compute API's domain: paid jobs.
pub mod config;
