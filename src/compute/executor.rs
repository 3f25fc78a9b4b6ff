//! The executor trait every compute service implements, and what a run
//! returns. An executor checks a payload when the job is submitted (so bad
//! input is a 400 and an unavailable service a 501 before any money moves)
//! and runs it later on a worker.

use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use serde_json::Value;

use alloy::primitives::Address;

/// Why a payload is refused at submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Malformed or out-of-bounds input (400).
    #[error("{0}")]
    Invalid(String),
    /// The service, or this part of it, is not available on this node (501).
    #[error("{0}")]
    NotOffered(String),
}

/// What a payload may cost at most, in the service's units (`None`: as
/// much as the service's `maxCharge`).
pub type Bound = Option<Decimal>;

/// Who a job runs for.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// `job_…`.
    pub job_id: String,
    /// The paying wallet (storage namespaces, data queries).
    pub wallet: Address,
    /// 1 on the first run; more when a node died mid-job before.
    pub attempt: u32,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Output {
    /// The `result` answered to the client (the document's shape per service).
    pub result: Value,
    /// Units consumed (tokens, seconds, requests, MB, calls).
    pub units: Decimal,
}

/// A failed run. `units` is what must still be paid for (an LLM stream that
/// delivered part of its answer); usually none.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Shown as the job's `error`.
    pub message: String,
    /// Units consumed before the failure.
    pub units: Decimal,
}

impl Failure {
    /// A failure that costs nothing.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            units: Decimal::ZERO,
        }
    }
}

/// One compute service.
pub trait Executor: Send + Sync {
    /// Checks `payload`; returns the most units it can consume.
    fn check(&self, payload: &Value) -> Result<Bound, Refusal>;

    /// Runs it.
    fn run<'a>(
        &'a self,
        ctx: &'a JobContext,
        payload: &'a Value,
    ) -> BoxFuture<'a, Result<Output, Failure>>;
}

/// Reads a string field.
pub fn str_field<'a>(payload: &'a Value, name: &str) -> Result<Option<&'a str>, Refusal> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Refusal::Invalid(format!("payload.{name} must be a string"))),
    }
}

/// Reads a non-negative integer field.
pub fn u64_field(payload: &Value, name: &str) -> Result<Option<u64>, Refusal> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Refusal::Invalid(format!("payload.{name} must be a non-negative integer"))
        }),
    }
}
