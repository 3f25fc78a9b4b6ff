//! Per-IP, per-route rate limits and automatic bans (ClawCloud v1.3.0), counted
//! in Redis so several API replicas share one exact count.
//!
//! Fixed windows: the counter key names the window (`unix time / window`), so
//! every replica increments the same key and the count is exact; the first
//! request of a window sets its expiry. One Lua script per request checks the
//! ban, counts, and on a violation counts it towards the auto-ban — one round
//! trip. Every answer of a limited route carries `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset` (unix seconds); over the
//! limit is 429 with `Retry-After`; a banned IP gets 403 on every limited
//! route. If Redis is unreachable the limiter lets requests through (and logs
//! it): refusing every client because the counter store is down would turn a
//! Redis blip into a full outage.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chainfront_indexer::keys::NodeKeys;
use redis::Script;

use super::{ApiError, AppState};
use crate::config::{Limit, RateLimitConfig};

/// The limited route groups.
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
    /// `/auth/*`.
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
}

impl RouteClass {
    /// Name used in keys and logs.
    pub fn name(self) -> &'static str {
        match self {
            RouteClass::Tiers => "tiers",
            RouteClass::Credentials => "credentials",
            RouteClass::Vms => "vms",
            RouteClass::Status => "status",
            RouteClass::GenerateWallet => "generate-wallet",
            RouteClass::Admin => "admin",
            RouteClass::Auth => "auth",
            RouteClass::X402 => "x402",
            RouteClass::Markets => "markets",
            RouteClass::MarketSubmissions => "market-submissions",
            RouteClass::SubmissionStatus => "submission-status",
            RouteClass::CalculateFees => "calculate-fees",
            RouteClass::Submissions => "submissions",
        }
    }

    /// Its configured limit.
    pub fn limit(self, cfg: &RateLimitConfig) -> Limit {
        match self {
            RouteClass::Tiers => cfg.tiers,
            RouteClass::Credentials => cfg.credentials,
            RouteClass::Vms => cfg.vms,
            RouteClass::Status => cfg.status,
            RouteClass::GenerateWallet => cfg.generate_wallet,
            RouteClass::Admin => cfg.admin,
            RouteClass::Auth => cfg.auth,
            RouteClass::X402 => cfg.x402,
            RouteClass::Markets => cfg.markets,
            RouteClass::MarketSubmissions => cfg.market_submissions,
            RouteClass::SubmissionStatus => cfg.submission_status,
            RouteClass::CalculateFees => cfg.calculate_fees,
            RouteClass::Submissions => cfg.submissions,
        }
    }
}

/// KEYS: ban, counter, violations. ARGV: limit, window, ban threshold, ban
/// window, ban seconds. Returns {count, ttl}: count -1 = banned (ttl = ban
/// seconds left), -2 = this request triggered a ban.
const LIMIT_LUA: &str = r"
local banned = redis.call('TTL', KEYS[1])
if banned > 0 then return {-1, banned} end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
if n <= tonumber(ARGV[1]) then return {n, redis.call('TTL', KEYS[2])} end
local v = redis.call('INCR', KEYS[3])
if v == 1 then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
if v >= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], 'auto', 'EX', ARGV[5])
  return {-2, tonumber(ARGV[5])}
end
return {n, redis.call('TTL', KEYS[2])}
";

/// The client's IP: the socket peer, or — only when the peer is a trusted
/// proxy — the right-most `X-Forwarded-For` entry that is not itself trusted.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn header(v: u64) -> HeaderValue {
    HeaderValue::from(v)
}

/// Middleware: `axum::middleware::from_fn_with_state((state, class), enforce)`.
pub async fn enforce(
    State((state, class)): State<(AppState, RouteClass)>,
    req: Request,
    next: Next,
) -> Response {
    let cfg = &state.config.rate_limits;
    if !cfg.enabled {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let ip = client_ip(peer, req.headers(), &state.config.api.trusted_proxies);
    let limit = class.limit(cfg);
    let window = limit.window_secs.max(1);
    let now = unix_now();
    let index = now / window;
    let reset = (index + 1) * window;
    let keys = NodeKeys;
    let mut conn = state.redis.clone();
    let result: redis::RedisResult<(i64, i64)> = Script::new(LIMIT_LUA)
        .key(keys.ip_ban(&ip))
        .key(keys.rate_counter(&ip, class.name(), index))
        .key(keys.ip_violations(&ip))
        .arg(limit.requests)
        .arg(window)
        .arg(cfg.ban_threshold.max(1))
        .arg(cfg.ban_window_secs.max(1))
        .arg(cfg.ban_secs.max(1))
        .invoke_async(&mut conn)
        .await;
    let (count, ttl) = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(target: "chainfront::api", error = %e, "rate limiter unavailable; letting the request through");
            return next.run(req).await;
        }
    };
    if count < 0 {
        let until = crate::time::iso8601((now + ttl.max(0) as u64) as i64).unwrap_or_default();
        if count == -2 {
            tracing::warn!(target: "chainfront::security", event = "ban", ip = %ip, route = class.name(), until = %until, "IP banned after repeated rate-limit violations");
        }
        return ApiError::Forbidden(format!("IP banned until {until}")).into_response();
    }
    let count = count as u64;
    let max = u64::from(limit.requests);
    let mut response = if count > max {
        tracing::warn!(target: "chainfront::security", event = "rate_limited", ip = %ip, route = class.name(), "rate limit exceeded");
        ApiError::TooManyRequests {
            message: format!(
                "rate limit exceeded: {} requests per {} s on {}; retry after {} s",
                limit.requests,
                window,
                class.name(),
                reset.saturating_sub(now)
            ),
            retry_after: reset.saturating_sub(now).max(1),
        }
        .into_response()
    } else {
        next.run(req).await
    };
    let h = response.headers_mut();
    let remaining = max.saturating_sub(count);
    // A handler that counted the request per wallet too (`enforce_wallet`)
    // set the headers already; the tighter of the two counts is shown.
    let wallet_remaining = h
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if wallet_remaining.is_none_or(|w| w > remaining) {
        h.insert("x-ratelimit-limit", header(max));
        h.insert("x-ratelimit-remaining", header(remaining));
        h.insert("x-ratelimit-reset", header(reset));
    }
    response
}

// ---- per-wallet limits (markets surface) ----

/// KEYS: counter. ARGV: window. Returns {count, ttl}.
static WALLET_LUA: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('TTL', KEYS[1])}
",
    )
});

/// A wallet's standing after [`enforce_wallet`] counted a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletQuota {
    /// Requests allowed per window.
    pub limit: u64,
    /// Left in this window.
    pub remaining: u64,
    /// When the window ends (unix s).
    pub reset: u64,
}

impl WalletQuota {
    /// Puts the wallet's `X-RateLimit-*` on a response (the IP middleware
    /// keeps them when they are the tighter count).
    pub fn apply(&self, response: &mut Response) {
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit", header(self.limit));
        h.insert("x-ratelimit-remaining", header(self.remaining));
        h.insert("x-ratelimit-reset", header(self.reset));
    }
}

/// Counts a request against `wallet`'s limit for `class` (the same limit as
/// per IP), for handlers that know the wallet a request acts for. Call it
/// only once the wallet is proven (a verified signature or token), so nobody
/// can spend someone else's quota. Over the limit: a 429 answer with
/// `Retry-After` and the wallet's headers. Redis down: let through, as the
/// IP limiter does.
pub async fn enforce_wallet(
    state: &AppState,
    class: RouteClass,
    wallet: alloy::primitives::Address,
) -> Result<WalletQuota, Response> {
    let cfg = &state.config.rate_limits;
    let limit = class.limit(cfg);
    let window = limit.window_secs.max(1);
    let now = unix_now();
    let index = now / window;
    let reset = (index + 1) * window;
    let max = u64::from(limit.requests);
    if !cfg.enabled {
        return Ok(WalletQuota {
            limit: max,
            remaining: max,
            reset,
        });
    }
    let mut conn = state.redis.clone();
    let key = NodeKeys.wallet_rate_counter(
        &chainfront_indexer::keys::lower(wallet),
        class.name(),
        index,
    );
    let result: redis::RedisResult<(i64, i64)> = WALLET_LUA
        .key(key)
        .arg(window)
        .invoke_async(&mut conn)
        .await;
    let count = match result {
        Ok((n, _)) => u64::try_from(n).unwrap_or(0),
        Err(e) => {
            tracing::warn!(target: "chainfront::api", error = %e, "rate limiter unavailable; letting the request through");
            return Ok(WalletQuota {
                limit: max,
                remaining: max,
                reset,
            });
        }
    };
    let quota = WalletQuota {
        limit: max,
        remaining: max.saturating_sub(count),
        reset,
    };
    if count > max {
        tracing::warn!(target: "chainfront::security", event = "rate_limited", wallet = %wallet, route = class.name(), "wallet rate limit exceeded");
        let mut response = ApiError::TooManyRequests {
            message: format!(
                "rate limit exceeded: {} requests per {} s per wallet on {}; retry after {} s",
                limit.requests,
                window,
                class.name(),
                reset.saturating_sub(now)
            ),
            retry_after: reset.saturating_sub(now).max(1),
        }
        .into_response();
        quota.apply(&mut response);
        return Err(response);
    }
    Ok(quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let client: IpAddr = "203.0.113.9".parse().expect("ip");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, 203.0.113.9"),
        );
        // Untrusted peer: its header is ignored (anyone can write it).
        assert_eq!(client_ip(client, &h, &[proxy]), client);
        // Trusted proxy: the right-most untrusted entry (the left ones are the
        // client's own claims).
        assert_eq!(client_ip(proxy, &h, &[proxy]), client);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
    }
}
