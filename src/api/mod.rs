//! The HTTP API: one [`AppState`], one router per surface, merged here.

pub mod admin;
pub mod auth;
pub mod compute;
pub mod error;
pub mod health;
pub mod limits;
pub mod markets;
pub mod openapi;
pub mod vms;
pub mod x402;

use std::sync::Arc;

use axum::Router;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::rpc::Rpc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{Config, HomeChain};

pub use error::ApiError;

/// What every handler can reach: one shared [`Shared`] behind an `Arc`, so
/// the per-request clones axum makes (one per extractor and middleware) are
/// one reference count each. Fields are reached through `Deref`
/// (`state.redis`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    /// The node configuration.
    pub config: Arc<Config>,
    /// The home chain and its contracts.
    pub home: Arc<HomeChain>,
    /// Shared Redis connection (multiplexed, reconnecting).
    pub redis: RedisConn,
    /// Chain reads: the failover `Rpc` (every configured endpoint, a timeout
    /// per call). Error strings from it are for logs (URLs already redacted),
    /// never for clients: answer `ApiError::chain`.
    pub rpc: Rpc,
    /// Master keys for encryption at rest (`None`: wallet generation and
    /// provisioning are off).
    pub master: Option<Arc<crate::crypto::ecies::Keyring>>,
    /// Counters and gauges served at `/metrics`.
    pub metrics: Arc<crate::metrics::NodeMetrics>,
    /// Latest head block seen by this process (0 until known).
    pub chain_head: Arc<std::sync::atomic::AtomicU64>,
    /// Timestamp of that head block (0 until known).
    pub chain_time: Arc<std::sync::atomic::AtomicU64>,
    /// Accepted admin API keys.
    pub admin_keys: Arc<crate::auth::admin::AdminKeys>,
    /// Wallet-signature checks.
    pub auth: Arc<crate::auth::Auth>,
    /// Public read answers, cached briefly.
    pub read_cache: Arc<vms::ReadCache>,
    /// x402 payments (`None` when switched off or the token cannot take them).
    pub x402: Option<Arc<crate::x402::X402>>,
    /// The Compute API (`None` when `compute.enabled` is off).
    pub compute: Option<crate::compute::Compute>,
    /// `/health`'s chain probe, cached for a second.
    pub health_cache: Arc<health::HealthCache>,
    /// Requests in flight (`api.max_concurrent_requests`).
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// Clockchain prediction markets (`/v1/markets`, `/v1/submissions`, ...).
    pub markets: Arc<crate::markets::Markets>,
    /// `GET /v1/balance` answers, reused while a wallet's balance is unchanged.
    pub balance_bodies: compute::BalanceBodies,
    /// The serialized `/openapi.json`, set once by [`router`] (only that
    /// route reads it; an extension layer would add it to every request).
    pub openapi: std::sync::OnceLock<axum::body::Bytes>,
}

/// Largest request body accepted by any route.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route with its description, before the state is attached. Routes
/// are only added with `routes!` (see `openapi`), so each one is documented.
/// Each group sits behind the rate limiter with its [`limits::RouteClass`].
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    use limits::RouteClass;
    let limited = |r: OpenApiRouter<AppState>, class: RouteClass| limits::limit(r, state, class);
    let router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(openapi::openapi_json))
        .merge(health::router());
    let router = if state.config.api.metrics_listen.is_none() {
        router.merge(crate::metrics::router())
    } else {
        router
    };
    router
        .merge(limited(vms::tiers_router(), RouteClass::Tiers))
        .merge(limited(vms::vms_router(), RouteClass::Vms))
        .merge(limited(vms::status_router(), RouteClass::Status))
        .merge(limited(vms::credentials_router(), RouteClass::Credentials))
        .merge(limited(vms::wallet_router(), RouteClass::GenerateWallet))
        .merge(limited(auth::router(), RouteClass::Auth))
        .merge(limited(admin::router(), RouteClass::Admin))
        .merge(limited(compute::router(), RouteClass::Compute))
        .merge(limited(x402::router(), RouteClass::X402))
        .merge(markets::router(state))
}

/// The OpenAPI document of every route (what `/openapi.json` serves).
pub fn openapi_document(state: &AppState) -> utoipa::openapi::OpenApi {
    routes(state).into_openapi()
}

/// The whole API as one service ([`router`]).
pub type Api = error::Guarded<BodyLimit>;

/// The router behind [`MAX_BODY_BYTES`] (axum's `DefaultBodyLimit`, which a
/// route may raise, as the Compute API's do). The limit is an extension
/// inserted into the request, so it is only inserted where it can matter: a
/// body whose size is bounded within the limit (no body, or a declared
/// `Content-Length` hyper reads exactly) cannot carry more, and goes to the
/// router as it is.
#[derive(Clone)]
pub struct BodyLimit {
    plain: Router,
    limited: <axum::extract::DefaultBodyLimit as tower::Layer<Router>>::Service,
}

impl BodyLimit {
    fn new(router: Router) -> Self {
        use tower::Layer;
        Self {
            limited: axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES).layer(router.clone()),
            plain: router,
        }
    }
}

/// Whether `req`'s body could exceed [`MAX_BODY_BYTES`]: its size has no
/// upper bound (chunked) or one past the limit.
fn may_exceed_body_limit(req: &axum::extract::Request) -> bool {
    use axum::body::HttpBody as _;
    req.body()
        .size_hint()
        .upper()
        .is_none_or(|n| n > MAX_BODY_BYTES as u64)
}

impl tower::Service<axum::extract::Request> for BodyLimit {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = <Router as tower::Service<axum::extract::Request>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Either may take the request: both are readied (the router always
        // is).
        std::task::ready!(tower::Service::<axum::extract::Request>::poll_ready(
            &mut self.plain,
            cx
        ))?;
        tower::Service::<axum::extract::Request>::poll_ready(&mut self.limited, cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        if may_exceed_body_limit(&req) {
            self.limited.call(req)
        } else {
            self.plain.call(req)
        }
    }
}

/// The complete API: routes, `{"error"}` bodies for every refusal (axum's
/// own rejections included), the body limit, the request timeout and the
/// concurrency limit.
///
/// The body limit and the guard wrap the router once, as services around
/// it, rather than as `Router::layer`s: those wrap every route in another
/// boxed service, which costs each request a boxed clone and a boxed future
/// per layer.
pub fn router(state: AppState) -> Api {
    use tower::Layer;
    let (router, doc) = routes(&state).split_for_parts();
    // The same state always builds the same document: a second router of
    // this state finds it set.
    let _ = state.openapi.set(openapi::serialize(&doc));
    let guard = error::Guard::new(&state);
    let router = router
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state);
    guard.layer(BodyLimit::new(router))
}

/// `/metrics` alone, for `api.metrics_listen`.
pub fn metrics_router(state: AppState) -> Router {
    let (router, _) = crate::metrics::router().split_for_parts();
    router
        .fallback(unknown_route)
        .layer(axum::middleware::from_fn(error::json_error_bodies))
        .with_state(state)
}

/// The answer for a path no route serves.
pub const UNKNOWN_ROUTE: &str = "no such route";

async fn unknown_route() -> ApiError {
    ApiError::NotFound(UNKNOWN_ROUTE.into())
}

async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed("this route does not take that method".into())
}
