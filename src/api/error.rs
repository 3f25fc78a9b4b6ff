//! The only place an error becomes a status code and an `{"error": ...}` body.
//! 5xx answers carry a generic message; the cause is logged, not sent. Two
//! middlewares live here too: [`json_error_bodies`] gives axum's own
//! rejections (malformed JSON 400, wrong content type 415, unknown or
//! mistyped fields 422, body too large 413, bad path or query 400) the same
//! `{"error"}` shape, and [`Guard`] applies the request timeout and the
//! concurrency limit (and the same `{"error"}` rewrite) in one layer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{Semaphore, TryAcquireError};

use super::AppState;

/// Largest error body of axum's that is re-wrapped as `{"error"}`.
const MAX_REWRAPPED_BODY: usize = 4 * 1024;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or invalid credentials (signature, token, key).
    #[error("{0}")]
    Unauthorized(String),
    /// 402: payment required or balance too low.
    #[error("{0}")]
    PaymentRequired(String),
    /// 403: authenticated, but not allowed (not the owner, expired, banned).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 413: body too large.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429: over a rate limit; retry after this many seconds.
    #[error("{message}")]
    TooManyRequests {
        /// What was exceeded.
        message: String,
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// 501: the node does not offer this (a service, a language, a data type).
    #[error("{0}")]
    NotImplemented(String),
    /// 402 with a body beyond `error` (the Compute API's failed job).
    #[error("{message}")]
    PaymentRequiredWith {
        /// The `error` text.
        message: String,
        /// The JSON body (it carries `error` itself).
        body: Vec<u8>,
    },
    /// 503: a dependency (Redis, RPC) is down.
    #[error("{0}")]
    Unavailable(String),
    /// 402 of an x402 route: the requirements travel as headers and body.
    #[error("{}", .0.message)]
    X402(Box<crate::x402::Challenge>),
    /// A refusal whose `error` string is documented by a seed (clients
    /// compare it exactly): `{"error": error, "detail": detail}`.
    #[error("{error}: {detail}")]
    Documented {
        /// Its status code.
        status: StatusCode,
        /// The documented string, exactly.
        error: &'static str,
        /// What exactly was wrong, for a human.
        detail: String,
    },
    /// 500: our own fault.
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl ApiError {
    /// A 500 from any displayable cause (logged, never sent).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(crate::Error::Internal(cause.to_string()))
    }

    /// A 503 for a failed chain read: the client hears only
    /// [`crate::auth::CHAIN_UNAVAILABLE`]; the cause is logged with every URL
    /// in it redacted (provider API keys live in URLs).
    pub fn chain(cause: impl std::fmt::Display) -> Self {
        tracing::error!(
            target: "chainfront::api",
            error = %chainfront_indexer::rpc::redact_urls(&cause.to_string()),
            "chain read failed"
        );
        ApiError::Unavailable(crate::auth::CHAIN_UNAVAILABLE.into())
    }
}

impl From<crate::x402::X402Error> for ApiError {
    fn from(e: crate::x402::X402Error) -> Self {
        use crate::x402::X402Error as E;
        match e {
            E::Required(c) => ApiError::X402(c),
            E::BadRequest(m) => ApiError::BadRequest(m),
            E::Conflict(m) => ApiError::Conflict(m),
            E::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        tracing::error!(target: "chainfront::api", error = %e, "redis error");
        ApiError::Unavailable("state store unavailable; retry shortly".into())
    }
}

impl From<crate::vms::CredentialsError> for ApiError {
    fn from(e: crate::vms::CredentialsError) -> Self {
        use crate::vms::CredentialsError as E;
        match e {
            E::NotFound(_) => ApiError::NotFound(e.to_string()),
            E::Expired { .. } | E::Terminated(_) => ApiError::Forbidden(e.to_string()),
            E::BadRequest(m) => ApiError::BadRequest(m.into()),
            E::Auth(a) => a.into(),
            E::Chain(cause) => ApiError::chain(cause),
            E::Store(r) => r.into(),
            E::Internal(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::X402(c) = self {
            return x402_response(*c);
        }
        let (status, message) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.clone()),
            ApiError::PaymentRequired(m) => (StatusCode::PAYMENT_REQUIRED, m.clone()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            ApiError::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, m.clone()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            ApiError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m.clone()),
            ApiError::TooManyRequests { message, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, message.clone())
            }
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
            ApiError::X402(c) => (StatusCode::PAYMENT_REQUIRED, c.message.clone()),
            ApiError::NotImplemented(m) => (StatusCode::NOT_IMPLEMENTED, m.clone()),
            ApiError::PaymentRequiredWith { body, .. } => {
                return (
                    StatusCode::PAYMENT_REQUIRED,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.clone(),
                )
                    .into_response();
            }
            ApiError::Documented {
                status,
                error,
                detail,
            } => {
                return (*status, Json(json!({ "error": error, "detail": detail })))
                    .into_response();
            }
            ApiError::Internal(cause) => {
                tracing::error!(target: "chainfront::api", error = %cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = &self
            && let Ok(v) = HeaderValue::from_str(&retry_after.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// 402 with `PAYMENT-REQUIRED` (x402 v2), the v1 requirements as the JSON
/// body (its `error` is the usual `{"error"}`), and after a failed settlement
/// the failure as `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`.
fn x402_response(c: crate::x402::Challenge) -> Response {
    let mut response = (StatusCode::PAYMENT_REQUIRED, Json(c.body)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&c.payment_required) {
        headers.insert(crate::x402::proto::PAYMENT_REQUIRED, v);
    }
    if let Some((name, value)) = c.payment_response
        && let Ok(v) = HeaderValue::from_str(&value)
    {
        headers.insert(name, v);
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(crate::x402::EXPOSED_HEADERS),
    );
    response
}

/// Whether [`json_error_body`] would rewrite `response`: an error status
/// without a JSON content type. Reads only the status on a success.
fn needs_json_body(response: &Response) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    !response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Every error answer that is not already JSON (axum's own extractor
/// rejections, the body limit) becomes `{"error": "<its text>"}` with the
/// same status. Answers that are not errors, or already JSON, pass as they
/// are (no work beyond reading the status and content type).
pub async fn json_error_body(response: Response) -> Response {
    if !needs_json_body(&response) {
        return response;
    }
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REWRAPPED_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// Middleware: every error answer becomes `{"error"}` JSON
/// ([`json_error_body`]); for `/metrics` on its own address.
pub async fn json_error_bodies(req: Request, next: Next) -> Response {
    json_error_body(next.run(req).await).await
}

/// The outermost layer of the API router, in one tower service (no
/// per-request boxing of the inner router as `from_fn` does):
/// at most `api.max_concurrent_requests` requests at once (more wait for a
/// slot), each answered within `api.request_timeout_ms` or with a 503, and
/// every error answer as `{"error"}` JSON ([`json_error_body`]).
#[derive(Clone)]
pub struct Guard {
    inflight: Arc<Semaphore>,
    limit: Duration,
}

impl Guard {
    /// The limits of `state`'s configuration.
    pub fn new(state: &AppState) -> Self {
        Self::with(
            state.inflight.clone(),
            Duration::from_millis(state.config.api.request_timeout_ms.max(1)),
        )
    }

    /// At most `inflight`'s permits at once, each within `limit`.
    pub fn with(inflight: Arc<Semaphore>, limit: Duration) -> Self {
        Self { inflight, limit }
    }
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service of [`Guard`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

impl<S> tower::Service<Request> for Guarded<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Guarding<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Guarding<S::Future> {
        let limit = self.guard.limit;
        // Uncontended, a slot is taken without building a wait, and the
        // route runs in this future itself (no box), called on the service
        // `poll_ready` readied.
        match self.guard.inflight.clone().try_acquire_owned() {
            Ok(slot) => Guarding::Running {
                route: self.inner.call(req),
                slot: Some(slot),
                limit,
                timer: None,
            },
            Err(TryAcquireError::Closed) => Guarding::Ready {
                response: Some(shutting_down()),
            },
            Err(TryAcquireError::NoPermits) => {
                let started = tokio::time::Instant::now();
                let inflight = self.guard.inflight.clone();
                // The call waits, so it goes to a clone, readied when the
                // slot is taken.
                let mut inner = self.inner.clone();
                let wait = async move {
                    let work = async move {
                        let _slot = match inflight.acquire_owned().await {
                            Ok(slot) => slot,
                            Err(_) => return shutting_down(),
                        };
                        let ready = match tower::ServiceExt::ready(&mut inner).await {
                            Ok(ready) => ready,
                            Err(never) => match never {},
                        };
                        match ready.call(req).await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    };
                    let response = match tokio::time::timeout_at(started + limit, work).await {
                        Ok(response) => response,
                        Err(_) => timed_out(limit),
                    };
                    json_error_body(response).await
                };
                Guarding::Boxed {
                    rest: Box::pin(wait),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Guarded`]. The usual request takes its slot at once
    /// and runs the route inside this future; the timeout's timer is only
    /// armed if the route does not answer on its first poll (a cached read
    /// never needs one, nor reads the clock), with the deadline counted
    /// from the end of that poll. A request that has to wait for a slot
    /// (its deadline counted from its arrival), and an error answer whose
    /// body is rewritten, continue in a boxed future.
    /// `Running` holds the route's future, its slot (freed as soon as the
    /// route answers), the timeout and the timer.
    #[project = GuardingProj]
    #[allow(missing_docs)]
    pub enum Guarding<F> {
        /// The route is running, holding its slot.
        Running {
            #[pin]
            route: F,
            slot: Option<tokio::sync::OwnedSemaphorePermit>,
            limit: Duration,
            #[pin]
            timer: Option<tokio::time::Sleep>,
        },
        /// Waiting for a slot, or rewriting an error body.
        Boxed {
            rest: Pin<Box<dyn Future<Output = Response> + Send>>,
        },
        /// Answered.
        Ready {
            response: Option<Response>,
        },
    }
}

impl<F> Future for Guarding<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match self.as_mut().project() {
            GuardingProj::Running {
                route,
                slot,
                limit,
                mut timer,
            } => match route.poll(cx) {
                Poll::Ready(Ok(response)) => {
                    // The slot is free once the route has answered.
                    slot.take();
                    response
                }
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => {
                    if timer.is_none() {
                        timer.set(Some(tokio::time::sleep(*limit)));
                    }
                    let Some(sleep) = timer.as_pin_mut() else {
                        return Poll::Pending;
                    };
                    if sleep.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let limit = *limit;
                    // Dropping the route's future here cancels it and frees
                    // its slot.
                    self.set(Guarding::Ready { response: None });
                    return Poll::Ready(Ok(timed_out(limit)));
                }
            },
            GuardingProj::Boxed { rest } => return rest.as_mut().poll(cx).map(Ok),
            GuardingProj::Ready { response } => {
                return Poll::Ready(Ok(response.take().unwrap_or_else(shutting_down)));
            }
        };
        if !needs_json_body(&response) {
            self.set(Guarding::Ready { response: None });
            return Poll::Ready(Ok(response));
        }
        self.set(Guarding::Boxed {
            rest: Box::pin(json_error_body(response)),
        });
        self.poll(cx)
    }
}

fn timed_out(limit: Duration) -> Response {
    tracing::warn!(target: "chainfront::api", timeout_ms = limit.as_millis() as u64, "request timed out");
    ApiError::Unavailable("request timed out; retry shortly".into()).into_response()
}

fn shutting_down() -> Response {
    ApiError::Unavailable("server is shutting down".into()).into_response()
}

// ---- Clockchain markets (owned by the markets surface) ----

impl From<crate::markets::MarketsError> for ApiError {
    fn from(e: crate::markets::MarketsError) -> Self {
        use crate::markets::MarketsError as E;
        let documented = |error: &'static str, detail: String| ApiError::Documented {
            status: StatusCode::BAD_REQUEST,
            error,
            detail,
        };
        let message = e.to_string();
        match e {
            E::MissingField(field) => {
                documented("Missing required field", format!("`{field}` is required"))
            }
            E::InvalidSubmissionType => documented(
                "Invalid submission type",
                "submission_type must be \"original\", \"competitor\" or \"null\"".into(),
            ),
            E::InvalidSignature(why) => documented("Invalid signature", why),
            E::InsufficientAmount(why) => documented("Transaction amount insufficient", why),
            E::MarketNotFound | E::SubmissionNotFound => ApiError::NotFound(message),
            E::HashUsed | E::RecordFailed(_) => ApiError::Conflict(message),
            E::NotDeployed | E::Unavailable(_) => ApiError::Unavailable(message),
            E::InvalidField(_)
            | E::MalformedMarketId
            | E::MalformedSubmissionId
            | E::MarketNotOpen(_)
            | E::OriginalExists
            | E::OriginalRequired
            | E::Transaction(_) => ApiError::BadRequest(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, Service, ServiceExt};

    fn get() -> Request {
        Request::builder()
            .uri("/")
            .body(Body::empty())
            .expect("request")
    }

    async fn json_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("a JSON body")
    }

    /// A route slower than the request timeout is answered 503 with the
    /// `{"error"}` body, without waiting for the route.
    #[tokio::test]
    async fn a_slow_route_is_cut_off_with_a_json_503() {
        let slow = tower::service_fn(|_req: Request| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok::<_, Infallible>(StatusCode::OK.into_response())
        });
        let guard = Guard::with(Arc::new(Semaphore::new(4)), Duration::from_millis(50));
        let response =
            tokio::time::timeout(Duration::from_secs(60), guard.layer(slow).oneshot(get()))
                .await
                .expect("the guard answers long before the route would")
                .expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            json_of(response).await["error"],
            "request timed out; retry shortly"
        );
    }

    /// With one slot, a second request reaches the route only after the
    /// first has been answered.
    #[tokio::test]
    async fn requests_beyond_the_limit_wait_for_a_slot() {
        let entered = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let route = {
            let (entered, release) = (entered.clone(), release.clone());
            tower::service_fn(move |_req: Request| {
                let (entered, release) = (entered.clone(), release.clone());
                async move {
                    if entered.fetch_add(1, Ordering::SeqCst) == 0 {
                        release.notified().await;
                    }
                    Ok::<_, Infallible>(StatusCode::OK.into_response())
                }
            })
        };
        let svc = Guard::with(Arc::new(Semaphore::new(1)), Duration::from_secs(600)).layer(route);
        let first = tokio::spawn(svc.clone().oneshot(get()));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while entered.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "first never ran");
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn(svc.clone().oneshot(get()));
        // The second is parked on the semaphore: it cannot enter however
        // long it is given.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            entered.load(Ordering::SeqCst),
            1,
            "the limit let a second request in"
        );
        assert!(!second.is_finished());
        release.notify_one();
        let a = first.await.expect("task").expect("infallible");
        let b = tokio::time::timeout(Duration::from_secs(60), second)
            .await
            .expect("the second gets the slot")
            .expect("task")
            .expect("infallible");
        assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
        assert_eq!(entered.load(Ordering::SeqCst), 2);
    }

    /// Plain-text refusals (axum's own) become `{"error"}`; successes and
    /// JSON errors pass untouched.
    #[tokio::test]
    async fn plain_errors_become_json_and_the_rest_pass() {
        let route = tower::service_fn(|req: Request| async move {
            let r = match req.uri().path() {
                "/plain" => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "wrong content type").into_response()
                }
                "/json" => ApiError::Conflict("taken".into()).into_response(),
                _ => (StatusCode::OK, "fine").into_response(),
            };
            Ok::<_, Infallible>(r)
        });
        let mut svc =
            Guard::with(Arc::new(Semaphore::new(4)), Duration::from_secs(600)).layer(route);
        let call = |path: &str| {
            Request::builder()
                .uri(path)
                .body(Body::empty())
                .expect("request")
        };
        let r = svc
            .ready()
            .await
            .expect("ready")
            .call(call("/plain"))
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(json_of(r).await, json!({"error": "wrong content type"}));
        let r = svc
            .ready()
            .await
            .expect("ready")
            .call(call("/json"))
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(json_of(r).await, json!({"error": "taken"}));
        let r = svc
            .ready()
            .await
            .expect("ready")
            .call(call("/ok"))
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 64).await.expect("body");
        assert_eq!(&body[..], b"fine");
    }

    /// A route that is not ready at once (its timer armed on the first
    /// `Pending`) still has its plain-text refusal rewritten, and one that
    /// answers in time is not cut off.
    #[tokio::test]
    async fn a_route_that_waits_first_is_served_and_rewritten() {
        let route = tower::service_fn(|req: Request| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = if req.uri().path() == "/plain" {
                (StatusCode::BAD_REQUEST, "bad query").into_response()
            } else {
                (StatusCode::OK, "late but fine").into_response()
            };
            Ok::<_, Infallible>(r)
        });
        let guard = Guard::with(Arc::new(Semaphore::new(4)), Duration::from_secs(600));
        let svc = guard.layer(route);
        let r = svc
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/plain")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json_of(r).await, json!({"error": "bad query"}));
        let r = svc.oneshot(get()).await.expect("infallible");
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 64).await.expect("body");
        assert_eq!(&body[..], b"late but fine");
    }

    /// The timeout counts from the request's arrival: time spent waiting
    /// for a slot is part of it, and a request that never gets one is
    /// answered 503 `{"error"}` in time.
    #[tokio::test]
    async fn waiting_for_a_slot_counts_towards_the_timeout() {
        let inflight = Arc::new(Semaphore::new(1));
        let held = inflight.clone().try_acquire_owned().expect("the only slot");
        let route = tower::service_fn(|_req: Request| async {
            Ok::<_, Infallible>(StatusCode::OK.into_response())
        });
        let svc = Guard::with(inflight, Duration::from_millis(50)).layer(route);
        let response = tokio::time::timeout(Duration::from_secs(60), svc.oneshot(get()))
            .await
            .expect("the guard answers long before the slot is freed")
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            json_of(response).await["error"],
            "request timed out; retry shortly"
        );
        drop(held);
    }
}
