//! `llm`: an OpenAI-compatible chat-completions upstream chosen by the
//! operator (`compute.llm.base_url`, key in `CHAINFRONT_LLM_API_KEY`), with a
//! model map from the names clients use to the upstream's. Tokens (input +
//! output, as the upstream reports them) are the unit. The result has the
//! document's shape `{content, model, usage: {inputTokens, outputTokens},
//! stopReason}`; [`Llm::stream`] relays a streamed answer as events.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::compute::config::LlmConfig;
use crate::compute::executor::{
    Bound, Executor, Failure, JobContext, Output, Refusal, str_field, u64_field,
};

/// Largest `maxTokens` accepted.
const MAX_OUTPUT_TOKENS: u64 = 128_000;
/// Messages per request at most.
const MAX_MESSAGES: usize = 256;

/// The llm service.
pub struct Llm {
    cfg: LlmConfig,
    base: String,
    api_key: Option<String>,
    client: reqwest::Client,
}

/// One streamed event (the document's SSE `type`s).
#[derive(Debug, Clone)]
pub enum StreamEvent {
    /// A piece of text.
    Text(String),
    /// Token counts.
    Usage {
        /// Prompt tokens.
        input: u64,
        /// Completion tokens.
        output: u64,
    },
    /// The whole answer.
    Done(Value),
    /// It failed.
    Error(String),
}

struct Prepared {
    model: String,
    body: Value,
    bound: Decimal,
}

impl Llm {
    /// `None` with the reason when no upstream is configured.
    pub fn new(cfg: LlmConfig, api_key: Option<String>) -> Result<Self, String> {
        let base = cfg.base_url.clone().ok_or_else(|| {
            "the `llm` service is not offered: no upstream is configured (compute.llm.base_url)"
                .to_owned()
        })?;
        if cfg.models.is_empty() {
            return Err(
                "the `llm` service is not offered: no model is configured (compute.llm.models)"
                    .into(),
            );
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| format!("llm client: {e}"))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            cfg,
            api_key,
            client,
        })
    }

    fn prepare(&self, payload: &Value, stream: bool) -> Result<Prepared, Refusal> {
        let model = str_field(payload, "model")?
            .ok_or_else(|| Refusal::Invalid("payload.model is required".into()))?;
        let upstream_model = self.cfg.models.get(model).ok_or_else(|| {
            Refusal::Invalid(format!(
                "model `{model}` is not offered; available: {}",
                self.cfg
                    .models
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let Some(Value::Array(messages)) = payload.get("messages") else {
            return Err(Refusal::Invalid(
                "payload.messages must be a non-empty array of {role, content}".into(),
            ));
        };
        if messages.is_empty() || messages.len() > MAX_MESSAGES {
            return Err(Refusal::Invalid(format!(
                "payload.messages must hold 1..={MAX_MESSAGES} messages"
            )));
        }
        let mut out = Vec::new();
        let mut input_bytes = 0u64;
        if let Some(system) = str_field(payload, "system")? {
            input_bytes += system.len() as u64;
            out.push(json!({"role": "system", "content": system}));
        }
        for m in messages {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            let content = m.get("content").and_then(Value::as_str);
            if !matches!(role, "user" | "assistant" | "system") || content.is_none() {
                return Err(Refusal::Invalid(
                    "each message needs role (user, assistant or system) and content (a string)"
                        .into(),
                ));
            }
            input_bytes += content.map_or(0, |c| c.len() as u64);
            out.push(json!({"role": role, "content": content}));
        }
        let max_tokens = u64_field(payload, "maxTokens")?.unwrap_or(self.cfg.default_max_tokens);
        if max_tokens == 0 || max_tokens > MAX_OUTPUT_TOKENS {
            return Err(Refusal::Invalid(format!(
                "payload.maxTokens must be 1..={MAX_OUTPUT_TOKENS}"
            )));
        }
        let mut body = json!({
            "model": upstream_model,
            "messages": out,
            "max_tokens": max_tokens,
            "stream": stream,
        });
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(t) = payload.get("temperature").filter(|t| !t.is_null()) {
            let ok = t.as_f64().is_some_and(|v| (0.0..=2.0).contains(&v));
            if !ok {
                return Err(Refusal::Invalid(
                    "payload.temperature must be a number in 0..=2".into(),
                ));
            }
            body["temperature"] = t.clone();
        }
        // A token is at least one byte of text, so prompt tokens ≤ bytes
        // (+ a little per message for the chat template).
        let bound = Decimal::from(input_bytes + 16 * out.len() as u64 + max_tokens);
        Ok(Prepared {
            model: model.to_owned(),
            body,
            bound,
        })
    }

    fn request(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut r = self
            .client
            .post(format!("{}/chat/completions", self.base))
            .json(body);
        if let Some(k) = &self.api_key {
            r = r.bearer_auth(k);
        }
        r
    }

    /// Streams an answer: events go to `events` (a closed receiver — the
    /// client left — does not stop the stream, so the tokens it cost are
    /// still counted); returns the units to charge.
    pub async fn stream(
        &self,
        payload: &Value,
        events: mpsc::UnboundedSender<StreamEvent>,
    ) -> Result<Output, Failure> {
        let p = self
            .prepare(payload, true)
            .map_err(|e| Failure::new(e.to_string()))?;
        let send = |e: StreamEvent| {
            let _ = events.send(e);
        };
        let resp = self
            .request(&p.body)
            .send()
            .await
            .map_err(|_| Failure::new("the model upstream is unreachable"))?;
        if !resp.status().is_success() {
            let msg = format!("the model upstream answered {}", resp.status().as_u16());
            send(StreamEvent::Error(msg.clone()));
            return Err(Failure::new(msg));
        }
        let mut stream = resp.bytes_stream().eventsource();
        let mut content = String::new();
        let (mut input, mut output, mut finish) = (0u64, 0u64, None::<String>);
        let mut failed = None;
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(_) => {
                    failed = Some("the model upstream's stream broke off".to_owned());
                    break;
                }
            };
            if ev.data.trim() == "[DONE]" {
                break;
            }
            let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) else {
                continue;
            };
            if let Some(choice) = chunk["choices"].get(0) {
                if let Some(t) = choice["delta"]["content"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                {
                    content.push_str(t);
                    send(StreamEvent::Text(t.to_owned()));
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    finish = Some(f.to_owned());
                }
            }
            if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
                input = u["prompt_tokens"].as_u64().unwrap_or(input);
                output = u["completion_tokens"].as_u64().unwrap_or(output);
            }
        }
        if output == 0 && !content.is_empty() {
            // No usage from the upstream: count what was streamed, a token
            // per four bytes (rounded up), so streamed text is never free.
            output = (content.len() as u64).div_ceil(4);
        }
        let units = Decimal::from(input + output);
        send(StreamEvent::Usage { input, output });
        if let Some(msg) = failed {
            send(StreamEvent::Error(msg.clone()));
            return Err(Failure {
                message: msg,
                units,
            });
        }
        let result = answer(&content, &p.model, input, output, finish.as_deref());
        send(StreamEvent::Done(result.clone()));
        Ok(Output { result, units })
    }
}

fn stop_reason(finish: Option<&str>) -> &str {
    match finish {
        Some("stop") | None => "end_turn",
        Some("length") => "max_tokens",
        Some("content_filter") => "content_filter",
        Some("tool_calls") => "tool_use",
        Some(other) => other,
    }
}

fn answer(content: &str, model: &str, input: u64, output: u64, finish: Option<&str>) -> Value {
    json!({
        "content": content,
        "model": model,
        "usage": {"inputTokens": input, "outputTokens": output},
        "stopReason": stop_reason(finish),
    })
}

impl Executor for Llm {
    fn check(&self, payload: &Value) -> Result<Bound, Refusal> {
        Ok(Some(self.prepare(payload, false)?.bound))
    }

    fn run<'a>(
        &'a self,
        _ctx: &'a JobContext,
        payload: &'a Value,
    ) -> BoxFuture<'a, Result<Output, Failure>> {
        async move {
            let p = self
                .prepare(payload, false)
                .map_err(|e| Failure::new(e.to_string()))?;
            let resp = self
                .request(&p.body)
                .send()
                .await
                .map_err(|_| Failure::new("the model upstream is unreachable"))?;
            let status = resp.status();
            let body: Value = resp.json().await.map_err(|_| {
                Failure::new("the model upstream answered something other than JSON")
            })?;
            if !status.is_success() {
                return Err(Failure::new(format!(
                    "the model upstream answered {}",
                    status.as_u16()
                )));
            }
            let choice = &body["choices"][0];
            let content = choice["message"]["content"].as_str().unwrap_or("");
            let input = body["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
            let output = body["usage"]["completion_tokens"]
                .as_u64()
                .unwrap_or_else(|| (content.len() as u64).div_ceil(4));
            Ok(Output {
                result: answer(
                    content,
                    &p.model,
                    input,
                    output,
                    choice["finish_reason"].as_str(),
                ),
                units: Decimal::from(input + output),
            })
        }
        .boxed()
    }
}
