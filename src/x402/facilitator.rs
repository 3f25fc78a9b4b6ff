//! An external x402 facilitator (`x402.facilitator_url`): `POST /verify` and
//! `POST /settle` with `{x402Version, paymentPayload, paymentRequirements}`,
//! as x402.org's and Coinbase's facilitators take them. Its answers are
//! claims, not facts: the node still verifies locally first and checks a
//! reported settlement against the chain before it serves anything.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

/// What `/verify` answered.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyAnswer {
    /// Whether the facilitator accepts the payment.
    pub is_valid: bool,
    /// Its reason code when not.
    #[serde(default)]
    pub invalid_reason: Option<String>,
    /// Its explanation when not.
    #[serde(default)]
    pub invalid_message: Option<String>,
}

/// What `/settle` answered.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleAnswer {
    /// Whether it says it settled.
    pub success: bool,
    /// Its reason code when not.
    #[serde(default)]
    pub error_reason: Option<String>,
    /// Its explanation when not.
    #[serde(default)]
    pub error_message: Option<String>,
    /// The transaction it says it sent.
    #[serde(default)]
    pub transaction: Option<String>,
}

/// A facilitator's HTTP API.
#[derive(Clone)]
pub struct Facilitator {
    base: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Facilitator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry credentials: never printed.
        f.write_str("Facilitator(<url>)")
    }
}

impl Facilitator {
    /// A client for the facilitator at `url` (its `/verify` and `/settle`
    /// are appended), each call bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the facilitator client: {e}"))?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        version: u8,
        payload: &Value,
        requirements: &Value,
    ) -> Result<T, String> {
        let body = json!({
            "x402Version": version,
            "paymentPayload": payload,
            "paymentRequirements": requirements,
        });
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            // Without the URL: reqwest's errors name it.
            .map_err(|e| format!("facilitator {path} unreachable ({})", kind(&e)))?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|e| format!("facilitator {path} answer unreadable ({})", kind(&e)))?;
        serde_json::from_str(&text).map_err(|_| {
            format!(
                "facilitator {path} answered {status} with something that is not an x402 answer"
            )
        })
    }

    /// `POST /verify`.
    pub async fn verify(
        &self,
        version: u8,
        payload: &Value,
        requirements: &Value,
    ) -> Result<VerifyAnswer, String> {
        self.post("/verify", version, payload, requirements).await
    }

    /// `POST /settle`.
    pub async fn settle(
        &self,
        version: u8,
        payload: &Value,
        requirements: &Value,
    ) -> Result<SettleAnswer, String> {
        self.post("/settle", version, payload, requirements).await
    }
}

fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() || e.is_body() {
        "bad body"
    } else {
        "request failed"
    }
}
