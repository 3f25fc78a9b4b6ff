//! Writing to the chain: the one transaction sender every transaction the
//! node signs goes through (the operator's `recordSubmission`, the x402
//! relayer's `transferWithAuthorization`, gas-free VM purchases).
//!
//! Reads go through the indexer's failover [`chainfront_indexer::rpc::Rpc`];
//! so do the sender's own calls (nonce, fees, gas estimate, broadcast,
//! receipt), so a broken endpoint is left the same way everywhere.

pub mod sender;

pub use sender::{SendError, SenderConfig, TxRecord, TxSender};
