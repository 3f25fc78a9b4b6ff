//! `web`: one HTTP request through the SSRF guard, with an optional
//! CSS-selector `extract` (the `scraper` crate: html5ever + selectors, the
//! parser of the Servo project). One request is one unit. JavaScript
//! rendering is not offered (501).

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use crate::compute::config::WebConfig;
use crate::compute::executor::{Bound, Executor, Failure, JobContext, Output, Refusal, str_field};
use crate::compute::ssrf::{Guard, Limits};

/// Headers a client may not set.
const FORBIDDEN_HEADERS: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "proxy-authorization",
    "te",
    "trailer",
];
/// Selectors per request at most.
const MAX_SELECTORS: usize = 32;
/// Request body at most (bytes).
const MAX_REQUEST_BODY: usize = 64 * 1024;

/// The web service.
pub struct Web {
    guard: Guard,
    cfg: WebConfig,
}

impl Web {
    /// With the node's guard and limits.
    pub fn new(guard: Guard, cfg: WebConfig) -> Self {
        Self { guard, cfg }
    }
}

struct Request {
    url: String,
    method: reqwest::Method,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    extract: Vec<(String, scraper::Selector)>,
}

fn parse(payload: &Value) -> Result<Request, Refusal> {
    let url = str_field(payload, "url")?
        .ok_or_else(|| Refusal::Invalid("payload.url is required".into()))?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Refusal::Invalid(format!("payload.url is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Refusal::Invalid("payload.url must be http or https".into()));
    }
    if payload.get("javascript").and_then(Value::as_bool) == Some(true) {
        return Err(Refusal::NotOffered(
            "JavaScript rendering (payload.javascript = true) is not offered by this node; send javascript: false".into(),
        ));
    }
    let method = match str_field(payload, "method")?
        .unwrap_or("GET")
        .to_ascii_uppercase()
        .as_str()
    {
        "GET" => reqwest::Method::GET,
        "HEAD" => reqwest::Method::HEAD,
        "POST" => reqwest::Method::POST,
        "PUT" => reqwest::Method::PUT,
        "DELETE" => reqwest::Method::DELETE,
        "PATCH" => reqwest::Method::PATCH,
        other => {
            return Err(Refusal::Invalid(format!(
                "payload.method `{other}` is not supported"
            )));
        }
    };
    let mut headers = Vec::new();
    match payload.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Some(v) = v.as_str() else {
                    return Err(Refusal::Invalid(format!(
                        "payload.headers.{k} must be a string"
                    )));
                };
                let name = k.to_ascii_lowercase();
                if FORBIDDEN_HEADERS.contains(&name.as_str())
                    || reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(v).is_err()
                {
                    return Err(Refusal::Invalid(format!(
                        "payload.headers.{k} is not allowed"
                    )));
                }
                headers.push((name, v.to_owned()));
            }
        }
        Some(_) => return Err(Refusal::Invalid("payload.headers must be an object".into())),
    }
    let body = match payload.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone().into_bytes()),
        Some(other) => Some(other.to_string().into_bytes()),
    };
    if body.as_ref().is_some_and(|b| b.len() > MAX_REQUEST_BODY) {
        return Err(Refusal::Invalid(format!(
            "payload.body is larger than {MAX_REQUEST_BODY} bytes"
        )));
    }
    let mut extract = Vec::new();
    match payload.get("extract") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if m.len() > MAX_SELECTORS {
                return Err(Refusal::Invalid(format!(
                    "payload.extract has more than {MAX_SELECTORS} selectors"
                )));
            }
            for (name, sel) in m {
                let Some(text) = sel.as_str() else {
                    return Err(Refusal::Invalid(format!(
                        "payload.extract.{name} must be a CSS selector string"
                    )));
                };
                let selector = scraper::Selector::parse(text).map_err(|_| {
                    Refusal::Invalid(format!(
                        "payload.extract.{name}: `{text}` is not a valid CSS selector"
                    ))
                })?;
                extract.push((name.clone(), selector));
            }
        }
        Some(_) => {
            return Err(Refusal::Invalid(
                "payload.extract must be an object of name → CSS selector".into(),
            ));
        }
    }
    Ok(Request {
        url: url.to_owned(),
        method,
        headers,
        body,
        extract,
    })
}

impl Executor for Web {
    fn check(&self, payload: &Value) -> Result<Bound, Refusal> {
        parse(payload)?;
        Ok(Some(Decimal::ONE))
    }

    fn run<'a>(
        &'a self,
        _ctx: &'a JobContext,
        payload: &'a Value,
    ) -> BoxFuture<'a, Result<Output, Failure>> {
        async move {
            let r = parse(payload).map_err(|e| Failure::new(e.to_string()))?;
            let limits = Limits {
                timeout: Duration::from_millis(self.cfg.timeout_ms),
                max_bytes: self.cfg.max_bytes,
                max_redirects: self.cfg.max_redirects,
            };
            let fetched = self
                .guard
                .fetch(r.method, &r.url, &r.headers, r.body, limits)
                .await
                .map_err(|e| Failure::new(format!("fetch failed: {e}")))?;
            let content_type = fetched
                .headers
                .iter()
                .find(|(k, _)| k == "content-type")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&fetched.body).into_owned();
            let mut result = json!({
                "url": fetched.url,
                "status": fetched.status.as_u16(),
                "contentType": content_type,
                "size": fetched.body.len(),
                "content": text,
            });
            if !r.extract.is_empty() {
                // Parsing is CPU work: off the async threads.
                let extract = r.extract;
                let extracted = tokio::task::spawn_blocking(move || {
                    let doc = scraper::Html::parse_document(&text);
                    let mut out = Map::new();
                    for (name, sel) in &extract {
                        let v = doc
                            .select(sel)
                            .next()
                            .map(|e| Value::String(e.text().collect::<String>().trim().to_owned()))
                            .unwrap_or(Value::Null);
                        out.insert(name.clone(), v);
                    }
                    out
                })
                .await
                .map_err(|_| Failure::new("extraction failed"))?;
                result["extracted"] = Value::Object(extracted);
            }
            Ok(Output {
                result,
                units: Decimal::ONE,
            })
        }
        .boxed()
    }
}
