//! Rate limits and automatic bans (ClawCloud v1.3.0), kept in Redis so several
//! API replicas share one exact count.
//!
//! - **Who**: the client IP, IPv6 grouped by /64 (every VPS has a /64, so
//!   per-address buckets would be 2^64 fresh ones) and IPv4-mapped IPv6 read
//!   as IPv4; behind `api.trusted_proxies` (IPs or CIDR ranges) the
//!   right-most `X-Forwarded-For` entry that is not a trusted proxy. Walking
//!   right to left stops at the first entry that does not parse (`unknown`,
//!   garbage) and keeps the last hop it trusted, so nothing a client wrote
//!   left of an unparseable entry is believed. `ip:port` and `[v6]:port`
//!   entries (Azure) parse.
//! - **How**: GCRA (the generic cell rate algorithm, as `redis-cell` and
//!   `governor` implement it) in one Lua script per request: a bucket holds
//!   `requests` and refills evenly over `window_secs`, so there is no shared
//!   window edge where every client's count resets at once and no double
//!   burst across it. The script also checks the ban and counts refusals
//!   towards the auto-ban. Each route class also has a global ceiling
//!   (`global_per_sec`) over all clients, which bounds the keys an
//!   address-rotating client can create; and, where a handler knows the
//!   wallet, a per-wallet bucket ([`check_wallet`]).
//! - **Answers**: `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//!   `X-RateLimit-Reset` (unix seconds when the bucket is full again) on
//!   every answer of a limited route; over the limit 429 with `Retry-After`;
//!   a banned client 403 on every limited route. Failed admin-key attempts
//!   count towards the ban like 429s ([`record_violation`]).
//! - **Redis down**: routes that hand out or guard secrets (`/credentials`,
//!   `/auth/*`, `/agents/*`, `/admin/*`, `/x402/*`) fail closed with 503; public reads
//!   are let through (and it is logged), so a Redis blip does not take the
//!   read API down.
//!
//! A new surface adds its route class in one place: a variant of
//! [`RouteClass`] with its name, default limit and whether it fails closed.
//! Operators override any class with `rate_limits.<name>.requests`,
//! `.window_secs`, `.wallet_requests`, `.global_per_sec`.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use alloy::primitives::Address;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use chainfront_indexer::keys::NodeKeys;
use redis::Script;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::config::{Limit, RateLimitConfig};

/// The limited route groups. To add one: a variant here, its entry in
/// [`RouteClass::ALL`], and its arms in `name`, `default_limit` and
/// `fail_closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `GET /tiers`.
    Tiers,
    /// `GET /credentials/:tokenId`.
    Credentials,
    /// `GET /vms/:address`.
    Vms,
    /// `GET /status/:tokenId`.
    Status,
    /// `POST /agents/generate-wallet`.
    GenerateWallet,
    /// `/admin/*`.
    Admin,
    /// `/auth/*` and `/v1/auth/*`.
    Auth,
    /// `/x402/*`.
    X402,
    /// Clockchain `GET /v1/markets` (and one market, its resolution).
    Markets,
    /// Clockchain `GET /v1/markets/{id}/submissions`.
    MarketSubmissions,
    /// Clockchain `GET /v1/submissions/{id}`.
    SubmissionStatus,
    /// Clockchain `POST /v1/calculate_fees`.
    CalculateFees,
    /// Clockchain `POST /v1/submissions` (also per wallet, see [`enforce_wallet`]).
    Submissions,
    /// The Compute API (`/v1/compute`, `/v1/jobs`, `/v1/balance`, ...): per IP,
    /// and per proven wallet on the routes that act for a wallet.
    Compute,
}

impl RouteClass {
    /// Every class (config keys and defaults come from here).
    pub const ALL: &'static [RouteClass] = &[
        RouteClass::Tiers,
        RouteClass::Credentials,
        RouteClass::Vms,
        RouteClass::Status,
        RouteClass::GenerateWallet,
        RouteClass::Admin,
        RouteClass::Auth,
        RouteClass::X402,
        RouteClass::Markets,
        RouteClass::MarketSubmissions,
        RouteClass::SubmissionStatus,
        RouteClass::CalculateFees,
        RouteClass::Submissions,
        RouteClass::Compute,
    ];

    /// Name used in config keys, Redis keys and logs.
    pub fn name(self) -> &'static str {
        match self {
            RouteClass::Tiers => "tiers",
            RouteClass::Credentials => "credentials",
            RouteClass::Vms => "vms",
            RouteClass::Status => "status",
            RouteClass::GenerateWallet => "generate_wallet",
            RouteClass::Admin => "admin",
            RouteClass::Auth => "auth",
            RouteClass::X402 => "x402",
            RouteClass::Markets => "markets",
            RouteClass::MarketSubmissions => "market_submissions",
            RouteClass::SubmissionStatus => "submission_status",
            RouteClass::CalculateFees => "calculate_fees",
            RouteClass::Submissions => "submissions",
            RouteClass::Compute => "compute",
        }
    }

    /// The class of a config key.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// ClawCloud's documented per-IP limits, plus a global ceiling.
    pub fn default_limit(self) -> Limit {
        match self {
            RouteClass::Tiers => Limit::per(100, 60).global(2_000),
            RouteClass::Credentials => Limit::per(30, 3_600).global(500),
            RouteClass::Vms => Limit::per(30, 60).global(1_000),
            RouteClass::Status => Limit::per(100, 60).global(2_000),
            RouteClass::GenerateWallet => Limit::per(3, 60).global(20),
            RouteClass::Admin => Limit::per(20, 60).global(50),
            RouteClass::Auth => Limit::per(30, 60).global(500),
            // Paid routes: each settlement is chain work for the relayer.
            RouteClass::X402 => Limit::per(60, 60).global(500),
            // Clockchain's documented limits: 60/min reads and fee quotes,
            // 10/min submissions, per IP and per wallet.
            RouteClass::Markets
            | RouteClass::MarketSubmissions
            | RouteClass::SubmissionStatus
            | RouteClass::CalculateFees => Limit::per(60, 60).wallet(60).global(2_000),
            RouteClass::Submissions => Limit::per(10, 60).wallet(10).global(200),
            // The Clodds document: 100/min per IP, 60/min per wallet. The
            // global ceiling sits above the job rate one node sustains.
            RouteClass::Compute => Limit::per(100, 60).wallet(60).global(20_000),
        }
    }

    /// Whether requests are refused (503) when the limiter's Redis fails:
    /// routes that hand out or guard secrets.
    pub fn fail_closed(self) -> bool {
        match self {
            RouteClass::Credentials
            | RouteClass::GenerateWallet
            | RouteClass::Admin
            | RouteClass::Auth
            | RouteClass::X402 => true,
            RouteClass::Tiers
            | RouteClass::Vms
            | RouteClass::Status
            | RouteClass::Markets
            | RouteClass::MarketSubmissions
            | RouteClass::SubmissionStatus
            | RouteClass::CalculateFees
            | RouteClass::Submissions
            | RouteClass::Compute => false,
        }
    }

    /// Its configured limit (or the default).
    pub fn limit(self, cfg: &RateLimitConfig) -> Limit {
        cfg.routes
            .get(self.name())
            .copied()
            .unwrap_or_else(|| self.default_limit())
    }
}

/// An IP address or CIDR range (`10.0.0.0/8`, `2001:db8::/32`, `10.0.0.1`),
/// as `api.trusted_proxies` lists them. IPv4-mapped IPv6 addresses match
/// their IPv4 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

impl IpCidr {
    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not an IP address or CIDR range");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let addr = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for IpCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpCidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpCidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The client IP a request is counted under ([`client_ip`] of the socket
/// peer and `X-Forwarded-For`). An extractor: handlers that need it (such as
/// `/admin`) work it out from the request, so the requests that do not need
/// it pay nothing for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The client IP of a request with these parts.
    pub fn of(extensions: &axum::http::Extensions, headers: &HeaderMap, state: &AppState) -> Self {
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Self(client_ip(peer, headers, &state.config.api.trusted_proxies))
    }
}

impl axum::extract::FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Infallible> {
        Ok(Self::of(&parts.extensions, &parts.headers, state))
    }
}

/// `routes` behind [`RateLimit`] for `class` — or as they are when
/// `rate_limits.enabled` is off: then no layer is added at all (the
/// configuration does not change while the node runs), so an unlimited
/// route pays no per-request cost for the limiter.
pub fn limit(
    routes: utoipa_axum::router::OpenApiRouter<AppState>,
    state: &AppState,
    class: RouteClass,
) -> utoipa_axum::router::OpenApiRouter<AppState> {
    if state.config.rate_limits.enabled {
        routes.route_layer(RateLimit::new(state, class))
    } else {
        routes
    }
}

/// One `X-Forwarded-For` entry: an IP, `ip:port` or `[v6]:port`.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = e.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    e.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|v6| v6.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The client's IP: the socket peer, or — only when the peer is a trusted
/// proxy — the right-most `X-Forwarded-For` entry that is not itself trusted.
/// An entry that does not parse ends the walk: the last trusted hop is used.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpCidr]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded(entry) else {
            return client;
        };
        let ip = ip.to_canonical();
        client = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    client
}

/// The bucket an IP is counted in: an IPv4 address, or an IPv6 /64 prefix
/// (`2001:db8:1:2::/64`).
pub fn bucket(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", Ipv6Addr::from(prefix))
        }
    }
}

/// KEYS: ban, bucket, violations. ARGV: burst, period ms, ban threshold, ban
/// window s, ban s. GCRA on Redis's clock. Returns {state, a, b}: state 1
/// allowed (a = remaining, b = ms until full), 0 refused (a = ms until the
/// next request is allowed, b = ms until full), -1 banned (a = ban seconds
/// left), -2 this refusal triggered a ban (a = ban seconds).
const LIMIT_LUA: &str = r"
local banned = redis.call('TTL', KEYS[1])
if banned > 0 then return {-1, banned, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / burst
local tat = tonumber(redis.call('GET', KEYS[2]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now then
  local v = redis.call('INCR', KEYS[3])
  if v == 1 then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
  if v >= tonumber(ARGV[3]) then
    redis.call('SET', KEYS[1], 'auto', 'EX', ARGV[5])
    return {-2, tonumber(ARGV[5]), 0}
  end
  return {0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[2], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
return {1, math.floor((period - (new_tat - now)) / interval), math.ceil(new_tat - now)}
";

/// KEYS: bucket. ARGV: burst, period ms. GCRA without bans (global ceilings
/// and wallets). Returns {state, a, b} as [`LIMIT_LUA`] (states 1 and 0).
const BUCKET_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now then return {0, math.ceil(allow_at - now), math.ceil(tat - now)} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
return {1, math.floor((period - (new_tat - now)) / interval), math.ceil(new_tat - now)}
";

/// KEYS: ban, violations. ARGV: ban threshold, ban window s, ban s. Counts
/// one violation; returns 1 when it triggered a ban.
const VIOLATION_LUA: &str = r"
local v = redis.call('INCR', KEYS[2])
if v == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
if v >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], 'auto', 'EX', ARGV[3])
  return 1
end
return 0
";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a bucket said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// The limit (`X-RateLimit-Limit`).
    pub limit: u64,
    /// Requests left (`X-RateLimit-Remaining`).
    pub remaining: u64,
    /// Unix seconds when the bucket is full again (`X-RateLimit-Reset`).
    pub reset: u64,
}

impl RateInfo {
    /// Sets the `X-RateLimit-*` headers on `response`.
    pub fn apply(&self, response: &mut Response) {
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
    }
}

fn too_many(class: RouteClass, limit: &Limit, who: &str, retry_ms: i64) -> ApiError {
    let retry_after = (retry_ms.max(0) as u64).div_ceil(1000).max(1);
    ApiError::TooManyRequests {
        message: format!(
            "rate limit exceeded: {} requests per {} s per {who} on {}; retry after {retry_after} s",
            limit.requests,
            limit.window_secs.max(1),
            class.name()
        ),
        retry_after,
    }
}

fn limiter_down(class: RouteClass, e: &redis::RedisError) -> Option<Response> {
    if class.fail_closed() {
        tracing::error!(target: "chainfront::api", error = %e, route = class.name(), "rate limiter unavailable; refusing (this route fails closed)");
        Some(
            ApiError::Unavailable("rate limiter unavailable; retry shortly".into()).into_response(),
        )
    } else {
        tracing::warn!(target: "chainfront::api", error = %e, route = class.name(), "rate limiter unavailable; letting the request through");
        None
    }
}

/// The per-route-group layer: enforces `class`'s limits for the request's
/// [`ClientIp`] ([`enforce`]). Only [`limit`] builds it, and only with
/// `rate_limits.enabled` on (off, no layer is added at all).
#[derive(Clone)]
pub struct RateLimit {
    state: AppState,
    class: RouteClass,
}

impl RateLimit {
    /// `class`'s limits from `state`'s configuration.
    fn new(state: &AppState, class: RouteClass) -> Self {
        Self {
            state: state.clone(),
            class,
        }
    }
}

impl<S> tower::Layer<S> for RateLimit {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            limit: self.clone(),
        }
    }
}

/// The service of [`RateLimit`].
#[derive(Clone)]
pub struct Limited<S> {
    inner: S,
    limit: RateLimit,
}

impl<S> tower::Service<Request> for Limited<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> <Self as tower::Service<Request>>::Future {
        let state = &self.limit.state;
        // The clone is not yet ready; the one `poll_ready` readied is used.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let ClientIp(ip) = ClientIp::of(req.extensions(), req.headers(), state);
        let (state, class) = (state.clone(), self.limit.class);
        Box::pin(async move { Ok(enforce(state, class, ip, req, inner).await) })
    }
}

/// Runs `inner` on `req`.
async fn run<S>(mut inner: S, req: Request) -> Response
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    match inner.call(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Enforces `class`'s limits for `ip` (limits on), then runs `inner`.
async fn enforce<S>(
    state: AppState,
    class: RouteClass,
    ip: IpAddr,
    req: Request,
    inner: S,
) -> Response
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    let cfg = &state.config.rate_limits;
    let limit = class.limit(cfg);
    let who = bucket(ip);
    let keys = NodeKeys;
    let period_ms = limit.window_secs.max(1).saturating_mul(1000);
    let burst = limit.requests.max(1);
    // EVAL (not EVALSHA) so the pipeline needs no NOSCRIPT retry: one round
    // trip for the client's bucket and the route's global ceiling. On a
    // Redis Cluster the two live in different slots (`{ip:..}`, `{rl:..}`),
    // which one pipeline cannot span: there they go as two concurrent calls.
    let mut pipe = redis::pipe();
    pipe.cmd("EVAL")
        .arg(LIMIT_LUA)
        .arg(3)
        .arg(keys.ip_ban(&who))
        .arg(keys.ip_rate(&who, class.name()))
        .arg(keys.ip_violations(&who))
        .arg(burst)
        .arg(period_ms)
        .arg(cfg.ban_threshold.max(1))
        .arg(cfg.ban_window_secs.max(1))
        .arg(cfg.ban_secs.max(1));
    if let Some(global) = limit.global_per_sec {
        pipe.cmd("EVAL")
            .arg(BUCKET_LUA)
            .arg(1)
            .arg(keys.route_rate(class.name()))
            .arg(global.max(1))
            .arg(1000);
    }
    let mut conn = state.redis.clone();
    let result: redis::RedisResult<Vec<(i64, i64, i64)>> = if conn.is_cluster() {
        futures_util::future::try_join_all(pipe.cmd_iter().map(|cmd| {
            let mut c = conn.clone();
            let cmd = cmd.clone();
            async move { cmd.query_async::<(i64, i64, i64)>(&mut c).await }
        }))
        .await
    } else {
        pipe.query_async(&mut conn).await
    };
    let answers = match result {
        Ok(a) => a,
        Err(e) => {
            return match limiter_down(class, &e) {
                Some(refusal) => refusal,
                None => run(inner, req).await,
            };
        }
    };
    let now = unix_now();
    let (state_ip, a, b) = answers.first().copied().unwrap_or((1, 0, 0));
    if state_ip < 0 {
        let until = crate::time::iso8601((now + a.max(0) as u64) as i64).unwrap_or_default();
        if state_ip == -2 {
            tracing::warn!(target: "chainfront::security", event = "ban", ip = %who, route = class.name(), until = %until, "client banned after repeated rate-limit violations");
        }
        return ApiError::Forbidden(format!("IP banned until {until}")).into_response();
    }
    let info = RateInfo {
        limit: u64::from(burst),
        remaining: if state_ip == 1 { a.max(0) as u64 } else { 0 },
        reset: now + (b.max(0) as u64).div_ceil(1000),
    };
    let mut response = if state_ip == 0 {
        tracing::warn!(target: "chainfront::security", event = "rate_limited", ip = %who, route = class.name(), "rate limit exceeded");
        too_many(class, &limit, "IP", a).into_response()
    } else if let Some(&(0, retry, _)) = answers.get(1) {
        tracing::warn!(target: "chainfront::api", route = class.name(), "global rate ceiling reached");
        let retry_after = (retry.max(0) as u64).div_ceil(1000).max(1);
        ApiError::TooManyRequests {
            message: format!(
                "{} is busy: over its global ceiling of {} requests per second; retry after {retry_after} s",
                class.name(),
                limit.global_per_sec.unwrap_or_default()
            ),
            retry_after,
        }
        .into_response()
    } else {
        run(inner, req).await
    };
    // A handler that counted the request per wallet too (`enforce_wallet`)
    // set the headers already; the tighter of the two counts is shown.
    let wallet_remaining = response
        .headers()
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if wallet_remaining.is_none_or(|w| w > info.remaining) {
        info.apply(&mut response);
    }
    response
}

/// Counts `wallet`'s request against `class`'s per-wallet limit
/// (`wallet_requests` per `window_secs`), for handlers that know the wallet
/// after authentication. `Ok(None)` when the class has no wallet limit or
/// limits are off; `Err` is the 429 (or the 503 of a fail-closed class
/// whose Redis is down) to answer.
pub async fn check_wallet(
    state: &AppState,
    class: RouteClass,
    wallet: Address,
) -> Result<Option<RateInfo>, ApiError> {
    check_wallet_with(state, class, wallet, false)
        .await
        .map_err(|(e, _)| e)
}

/// [`check_wallet`]; a refusal also carries the wallet's standing (0 left).
async fn check_wallet_with(
    state: &AppState,
    class: RouteClass,
    wallet: Address,
    default_to_ip_limit: bool,
) -> Result<Option<RateInfo>, (ApiError, Option<RateInfo>)> {
    let cfg = &state.config.rate_limits;
    let limit = class.limit(cfg);
    let requests = limit
        .wallet_requests
        .or(default_to_ip_limit.then_some(limit.requests));
    let Some(requests) = requests.filter(|_| cfg.enabled) else {
        return Ok(None);
    };
    let burst = requests.max(1);
    let mut conn = state.redis.clone();
    let answer: redis::RedisResult<(i64, i64, i64)> = Script::new(BUCKET_LUA)
        .key(NodeKeys.wallet_rate(wallet, class.name()))
        .arg(burst)
        .arg(limit.window_secs.max(1).saturating_mul(1000))
        .invoke_async(&mut conn)
        .await;
    let (allowed, a, b) = match answer {
        Ok(r) => r,
        Err(e) if class.fail_closed() => {
            tracing::error!(target: "chainfront::api", error = %e, route = class.name(), "wallet rate limiter unavailable; refusing");
            return Err((
                ApiError::Unavailable("rate limiter unavailable; retry shortly".into()),
                None,
            ));
        }
        Err(e) => {
            tracing::warn!(target: "chainfront::api", error = %e, route = class.name(), "wallet rate limiter unavailable; letting the request through");
            return Ok(None);
        }
    };
    if allowed == 0 {
        tracing::warn!(target: "chainfront::security", event = "rate_limited", wallet = %wallet, route = class.name(), "wallet rate limit exceeded");
        let standing = RateInfo {
            limit: u64::from(burst),
            remaining: 0,
            reset: unix_now() + (b.max(0) as u64).div_ceil(1000),
        };
        let limit = Limit {
            requests: burst,
            ..limit
        };
        return Err((too_many(class, &limit, "wallet", a), Some(standing)));
    }
    Ok(Some(RateInfo {
        limit: u64::from(burst),
        remaining: a.max(0) as u64,
        reset: unix_now() + (b.max(0) as u64).div_ceil(1000),
    }))
}

/// Counts one violation (e.g. a refused admin key) against `ip`'s bucket;
/// enough of them within `ban_window_secs` ban it, as 429s do.
pub async fn record_violation(state: &AppState, ip: IpAddr, reason: &str) {
    let cfg = &state.config.rate_limits;
    if !cfg.enabled {
        return;
    }
    let who = bucket(ip);
    let mut conn = state.redis.clone();
    let banned: redis::RedisResult<i64> = Script::new(VIOLATION_LUA)
        .key(NodeKeys.ip_ban(&who))
        .key(NodeKeys.ip_violations(&who))
        .arg(cfg.ban_threshold.max(1))
        .arg(cfg.ban_window_secs.max(1))
        .arg(cfg.ban_secs.max(1))
        .invoke_async(&mut conn)
        .await;
    match banned {
        Ok(1) => {
            tracing::warn!(target: "chainfront::security", event = "ban", ip = %who, reason, "client banned after repeated violations")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(target: "chainfront::api", error = %e, "could not record a violation")
        }
    }
}

/// A wallet's standing after [`enforce_wallet`] counted a request.
pub type WalletQuota = RateInfo;

/// [`check_wallet`] for handlers that answer a refusal themselves: counts a
/// request against `wallet`'s limit for `class` (`wallet_requests`, or the
/// per-IP `requests` when the class sets none). Call it only once the
/// wallet is proven (a verified signature or token), so nobody can spend
/// someone else's quota. Over the limit: the 429 answer (with `Retry-After`).
pub async fn enforce_wallet(
    state: &AppState,
    class: RouteClass,
    wallet: Address,
) -> Result<WalletQuota, Response> {
    let limit = class.limit(&state.config.rate_limits);
    let fallback = RateInfo {
        limit: u64::from(limit.wallet_requests.unwrap_or(limit.requests)),
        remaining: u64::from(limit.wallet_requests.unwrap_or(limit.requests)),
        reset: unix_now(),
    };
    match check_wallet_with(state, class, wallet, true).await {
        Ok(Some(info)) => Ok(info),
        Ok(None) => Ok(fallback),
        Err((e, standing)) => {
            let mut response = e.into_response();
            if let Some(info) = standing {
                info.apply(&mut response);
            }
            Err(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static(v));
        h
    }

    fn cidrs(list: &[&str]) -> Vec<IpCidr> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.1");
        let client = ip("203.0.113.9");
        let trusted = cidrs(&["10.0.0.1"]);
        let h = xff("198.51.100.1, 203.0.113.9");
        // Untrusted peer: its header is ignored (anyone can write it).
        assert_eq!(client_ip(client, &h, &trusted), client);
        // Trusted proxy: the right-most untrusted entry (the left ones are the
        // client's own claims).
        assert_eq!(client_ip(proxy, &h, &trusted), client);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    /// The review's case: a port on the proxy's entry must not hand the
    /// choice to the client's own left-hand entry.
    #[test]
    fn ports_parse_and_garbage_stops_the_walk() {
        let proxy = ip("10.0.0.1");
        let trusted = cidrs(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(proxy, &xff("1.2.3.4, 5.6.7.8:1234"), &trusted),
            ip("5.6.7.8")
        );
        assert_eq!(
            client_ip(proxy, &xff("1.2.3.4, [2001:db8::7]:443"), &trusted),
            ip("2001:db8::7")
        );
        // `unknown` is not a client: stop there, keep the proxy.
        assert_eq!(client_ip(proxy, &xff("1.2.3.4, unknown"), &trusted), proxy);
        // A chain of trusted proxies is walked through; garbage after them
        // leaves the last trusted hop.
        assert_eq!(
            client_ip(proxy, &xff("1.2.3.4, 6.6.6.6, 10.1.1.1"), &trusted),
            ip("6.6.6.6")
        );
        assert_eq!(
            client_ip(proxy, &xff("1.2.3.4, junk, 10.1.1.1"), &trusted),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn cidr_ranges_and_ipv4_mapped_peers_are_trusted() {
        let trusted = cidrs(&["10.0.0.0/8", "2001:db8::/32"]);
        let h = xff("203.0.113.9");
        // A dual-stack listener sees the IPv4 proxy as ::ffff:10.2.3.4.
        assert_eq!(
            client_ip(ip("::ffff:10.2.3.4"), &h, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("2001:db8:5::1"), &h, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("11.0.0.1"), &h, &trusted), ip("11.0.0.1"));
        assert!("10.0.0.0/33".parse::<IpCidr>().is_err());
        assert!("nope".parse::<IpCidr>().is_err());
        assert_eq!(
            "0.0.0.0/0"
                .parse::<IpCidr>()
                .map(|c| c.contains(ip("8.8.8.8"))),
            Ok(true)
        );
    }

    #[test]
    fn ipv6_is_bucketed_by_64() {
        assert_eq!(bucket(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(
            bucket(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            "2001:db8:1:2::/64"
        );
        assert_ne!(bucket(ip("2001:db8:1:3::1")), bucket(ip("2001:db8:1:2::1")));
        assert_eq!(bucket(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(bucket(ip("::ffff:203.0.113.9")), "203.0.113.9");
    }

    #[test]
    fn every_class_has_a_unique_name_and_a_default() {
        for (i, c) in RouteClass::ALL.iter().enumerate() {
            assert_eq!(RouteClass::from_name(c.name()), Some(*c));
            assert!(c.default_limit().requests > 0);
            assert!(
                RouteClass::ALL[i + 1..]
                    .iter()
                    .all(|o| o.name() != c.name())
            );
        }
    }
}
