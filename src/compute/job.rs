//! A job as stored (a Redis hash written by the ledger's scripts and the
//! queue) and as answered (the document's JSON).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::ledger::Usd;

/// The documented job answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// Request id (`req_…`).
    pub id: String,
    /// Job id (`job_…`).
    pub job_id: String,
    /// Service.
    pub service: String,
    /// `pending`, `processing`, `completed` or `failed`.
    pub status: String,
    /// The service's result, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Box<RawValue>>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Charged (final), or reserved while it runs.
    pub cost: Usd,
    /// Units, unit type, duration and the charge's breakdown, once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Box<RawValue>>,
    /// Submission time, unix ms.
    pub timestamp: u64,
    /// The paying wallet.
    #[serde(skip)]
    pub wallet: String,
}

/// The message the document gives for a short balance.
pub fn insufficient(need: Usd, have: Usd) -> String {
    format!("Insufficient balance. Need ${need}, have ${have}")
}

impl JobView {
    /// From the job hash (`None` if empty: no such job).
    pub fn from_hash(h: &HashMap<String, String>) -> Option<Self> {
        let id = h.get("id")?.clone();
        let get = |k: &str| h.get(k).filter(|v| !v.is_empty());
        let units = |k: &str| Usd(get(k).and_then(|v| v.parse().ok()).unwrap_or(0));
        let raw = |k: &str| get(k).and_then(|v| RawValue::from_string(v.clone()).ok());
        let status = get("status").cloned().unwrap_or_else(|| "pending".into());
        let finished = status == "completed" || status == "failed";
        let error = match get("error").map(String::as_str) {
            Some("insufficient") => Some(insufficient(units("need"), units("have"))),
            Some("cancelled") => {
                Some("Job cancelled by its owner; the reservation was refunded".into())
            }
            Some(e) => Some(e.to_owned()),
            None => None,
        };
        Some(Self {
            id: get("req").cloned().unwrap_or_default(),
            job_id: id,
            service: get("service").cloned().unwrap_or_default(),
            cost: if finished {
                units("cost")
            } else {
                units("reserved")
            },
            result: raw("result"),
            usage: raw("usage"),
            error,
            timestamp: get("created").and_then(|v| v.parse().ok()).unwrap_or(0),
            wallet: get("wallet").cloned().unwrap_or_default(),
            status,
        })
    }

    /// Serialized.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A random id with a prefix (`job_` + 32 hex digits).
pub fn new_id(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

/// Whether `s` could be a job id (so a lookup key is never built from junk).
pub fn is_job_id(s: &str) -> bool {
    s.strip_prefix("job_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}
