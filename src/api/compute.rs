//! The Compute API (Clodds): deposits, balances, usage, pricing, metrics,
//! jobs, SSE streams, webhook secrets. Handlers only parse, call
//! `crate::ledger` / `crate::compute`, and map their errors.
//!
//! Who may spend: [`spender`] is the one place a balance's wallet is
//! established (a sign-in JWT or the auth module's per-request signature).
//! A bare `wallet` field is refused unless `compute.trust_wallet_field` is
//! on. A job may instead carry an x402 payment of itself: `submit` hands it
//! to `api::x402::paid_job` (the payer's job, paid per call).

use std::convert::Infallible;
use std::time::Instant;

use alloy::primitives::{Address, B256};
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::limits::{RouteClass, WalletQuota, enforce_wallet};
use super::openapi::ErrorBody;
use super::{ApiError, AppState};
use crate::auth::AuthError;
use crate::compute::executors::llm::StreamEvent;
use crate::compute::job::JobView;
use crate::compute::{Compute, ComputeError};
use crate::ledger::deposit::{DepositError, Proof, Verdict};
use crate::ledger::money::parse_usd;
use crate::ledger::{Balance, CreditOutcome, LedgerError, Source, Usd};

/// Largest compute request body (storage objects travel inside it).
pub const MAX_COMPUTE_BODY: usize = 4 << 20;
/// Header naming a wallet (job reads; the document's ownership header).
pub const WALLET_HEADER: &str = "x-wallet-address";

/// Every Compute API route.
///
/// The larger body limit wraps only the routes that read a body (the
/// proven reads too: a signed request's proof covers its body): a layer
/// wraps each route in one more boxed service, which the others (polled
/// balances, job status) would pay for on every request and never use.
pub fn router() -> OpenApiRouter<AppState> {
    let bodiless = OpenApiRouter::new()
        .routes(routes!(pricing))
        .routes(routes!(metrics))
        .routes(routes!(balance))
        .routes(routes!(job));
    let with_body = OpenApiRouter::new()
        .routes(routes!(usage))
        .routes(routes!(ledger))
        .routes(routes!(jobs))
        .routes(routes!(deposit))
        .routes(routes!(submit))
        .routes(routes!(cancel))
        .routes(routes!(stream_llm))
        .routes(routes!(webhook_secret, rotate_webhook_secret))
        .routes(routes!(incoming_webhook))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_COMPUTE_BODY));
    bodiless.merge(with_body)
}

impl From<ComputeError> for ApiError {
    fn from(e: ComputeError) -> Self {
        match e {
            ComputeError::UnknownService(_) | ComputeError::NoJob => {
                ApiError::NotFound(e.to_string())
            }
            ComputeError::NotOffered(m) => ApiError::NotImplemented(m),
            ComputeError::Invalid(m) => ApiError::BadRequest(m),
            ComputeError::Insufficient { message, job } => ApiError::PaymentRequiredWith {
                message,
                body: job.to_json(),
            },
            ComputeError::NotOwner => ApiError::Forbidden(e.to_string()),
            ComputeError::NotPending(_) => ApiError::Conflict(e.to_string()),
            ComputeError::Store(_) => {
                ApiError::Unavailable("state store unavailable; retry shortly".into())
            }
            ComputeError::Ledger(l) => l.into(),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Store(e) => e.into(),
            LedgerError::TooLarge => ApiError::BadRequest("amount too large for the ledger".into()),
            other => ApiError::internal(other),
        }
    }
}

impl From<DepositError> for ApiError {
    fn from(e: DepositError) -> Self {
        match e {
            DepositError::Unavailable => ApiError::Unavailable(e.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

fn compute(state: &AppState) -> Result<&Compute, ApiError> {
    state.compute.as_ref().ok_or_else(|| {
        ApiError::NotImplemented(
            "the Compute API is switched off on this node (compute.enabled)".into(),
        )
    })
}

/// What a 401 says: the ways to prove control of a wallet.
pub const PROOF_NEEDED: &str = "spending or reading a wallet's jobs needs proof of control of the wallet; a bare `wallet` field is not accepted on this node. Either sign in (GET /auth/nonce, sign the EIP-4361 message, POST /auth/login) and send `Authorization: Bearer <token>`, or sign the request itself with the wallet (X-Wallet-Address, X-Wallet-Timestamp and X-Wallet-Signature over method, path, body SHA-256 and time), or pay the request with x402";

/// The request as signed: method, path and query, body.
pub struct Signed<'a> {
    /// HTTP method.
    pub method: &'a Method,
    /// Path and query as sent.
    pub uri: &'a Uri,
    /// Raw body.
    pub body: &'a [u8],
}

/// The one place a request's paying wallet is established: a proof of
/// control (see [`proven_wallet`]), or — only with
/// `compute.trust_wallet_field` — the wallet the request names. `claimed` is
/// the body's `wallet` (or `X-Wallet-Address`); when both are present they
/// must agree.
async fn spender(
    state: &AppState,
    headers: &HeaderMap,
    signed: &Signed<'_>,
    claimed: Option<Address>,
) -> Result<Address, ApiError> {
    match proven_wallet(state, headers, signed).await {
        Ok(Some(proven)) => {
            if let Some(c) = claimed
                && c != proven
            {
                return Err(ApiError::Forbidden(format!(
                    "the credentials prove {proven}, but the request names {c}"
                )));
            }
            Ok(proven)
        }
        Ok(None) => match claimed {
            Some(c) if state.config.compute.trust_wallet_field => Ok(c),
            _ => Err(ApiError::Unauthorized(PROOF_NEEDED.into())),
        },
        Err(AuthError::Unavailable(m)) => Err(ApiError::Unavailable(m)),
        Err(e) => Err(ApiError::Unauthorized(format!("{e}. {PROOF_NEEDED}"))),
    }
}

/// The auth module's answer to "which wallet does this request prove?"
/// (`Auth::wallet_from_request`: a sign-in JWT in `Authorization: Bearer`,
/// or a per-request signature in `X-Wallet-Address` / `X-Wallet-Timestamp`
/// / `X-Wallet-Signature` over method, path, body hash and time). `None`
/// when the request carries no credentials at all.
async fn proven_wallet(
    state: &AppState,
    headers: &HeaderMap,
    signed: &Signed<'_>,
) -> Result<Option<Address>, AuthError> {
    if !headers.contains_key(header::AUTHORIZATION)
        && !headers.contains_key(crate::auth::WALLET_SIGNATURE_HEADER)
    {
        return Ok(None);
    }
    let path_and_query = signed
        .uri
        .path_and_query()
        .map_or(signed.uri.path(), |p| p.as_str());
    match state
        .auth
        .wallet_from_request(signed.method.as_str(), path_and_query, headers, signed.body)
        .await
    {
        Ok(wallet) => Ok(Some(wallet)),
        Err(AuthError::Missing) => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse_address(s: &str, what: &str) -> Result<Address, ApiError> {
    s.trim()
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{what} must be a 0x address")))
}

fn header_wallet(headers: &HeaderMap) -> Result<Option<Address>, ApiError> {
    headers
        .get(WALLET_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::BadRequest("X-Wallet-Address is not ASCII".into()))
                .and_then(|s| parse_address(s, "X-Wallet-Address"))
        })
        .transpose()
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body must be JSON {shape}: {e}")))
}

/// A typed JSON answer (typed so money stays exact), with the wallet's
/// `X-RateLimit-*` when it was counted.
fn answer<T: Serialize>(status: StatusCode, body: &T, quota: Option<WalletQuota>) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response();
    if let Some(q) = quota {
        q.apply(&mut r);
    }
    r
}

/// Counts a request of a proven wallet (`rate_limits.compute.wallet_requests`).
async fn per_wallet(state: &AppState, wallet: Address) -> Result<WalletQuota, Response> {
    enforce_wallet(state, RouteClass::Compute, wallet).await
}

/// A request for a proven wallet: the wallet [`spender`] establishes from the
/// request as sent (the one `X-Wallet-Address` names, if it names one).
/// Extracting it refuses the request the way every wallet route does: 501
/// with the Compute API off, 400 for a malformed `X-Wallet-Address`, 401 or
/// 403 without a matching proof.
struct ProvenCall {
    wallet: Address,
}

impl FromRequest<AppState> for ProvenCall {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        compute(state).map_err(IntoResponse::into_response)?;
        let (method, uri, headers) = (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        );
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let signed = Signed {
            method: &method,
            uri: &uri,
            body: &body,
        };
        let claimed = header_wallet(&headers).map_err(IntoResponse::into_response)?;
        let wallet = spender(state, &headers, &signed, claimed)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self { wallet })
    }
}

/// A [`ProvenCall`] counted against the wallet's limit (429 over it), with
/// the wallet's `X-RateLimit-*` for the answer.
struct WalletCall {
    wallet: Address,
    quota: Option<WalletQuota>,
}

impl FromRequest<AppState> for WalletCall {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let ProvenCall { wallet } = ProvenCall::from_request(req, state).await?;
        let quota = per_wallet(state, wallet).await?;
        Ok(Self {
            wallet,
            quota: Some(quota),
        })
    }
}

// ---- node ----

/// The Compute API's fields of `GET /v1/health` (`service`, `version`,
/// `uptime`, `activeJobs`), for whichever handler serves that route.
pub async fn health_fields(state: &AppState) -> serde_json::Map<String, Value> {
    let (uptime, active) = match &state.compute {
        Some(c) => (c.uptime_secs(), c.active_jobs().await.unwrap_or(0)),
        None => (state.metrics.uptime_secs(), 0),
    };
    let mut m = serde_json::Map::new();
    m.insert("service".into(), "chainfront-compute".into());
    m.insert("version".into(), "v1".into());
    m.insert("uptime".into(), uptime.into());
    m.insert("activeJobs".into(), active.into());
    m
}

/// Prices of every service.
#[utoipa::path(get, path = "/v1/pricing", tag = "compute",
    responses((status = 200, description = "Service → `{service, basePrice, unit, pricePerUnit, minCharge, maxCharge}` (USD)", body = Value)))]
async fn pricing(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(answer(StatusCode::OK, compute(&state)?.pricing(), None))
}

/// Node-wide Compute figures.
#[utoipa::path(get, path = "/v1/metrics", tag = "compute",
    responses((status = 200, description = "`{uptime, totalRequests, totalRevenue, activeJobs, jobsByStatus, requestsByService}`", body = Value)))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = compute(&state)?.metrics().await?;
    Ok(answer(StatusCode::OK, &m, None))
}

// ---- money ----

#[derive(Debug, Deserialize)]
struct WalletQuery {
    wallet: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BalanceBody {
    wallet: String,
    available: Usd,
    pending: Usd,
    total_deposited: Usd,
    total_spent: Usd,
    #[serde(skip_serializing_if = "is_zero")]
    owed: Usd,
}

fn is_zero(u: &Usd) -> bool {
    u.0 == 0
}

/// A wallet's balance (public, like the deposits it comes from).
#[utoipa::path(get, path = "/v1/balance", tag = "compute",
    params(("wallet" = Option<String>, Query, description = "The wallet (or X-Wallet-Address, or the signed-in wallet)")),
    responses(
        (status = 200, description = "`{wallet, available, pending, totalDeposited, totalSpent}` in USD", body = Value),
        (status = 400, description = "No or malformed wallet", body = ErrorBody),
    ))]
async fn balance(
    State(state): State<AppState>,
    Query(q): Query<WalletQuery>,
    // The request itself (read by reference): no copy of its headers and URI.
    req: Request,
) -> Result<Response, ApiError> {
    let (uri, headers) = (req.uri(), req.headers());
    let signed = Signed {
        method: &Method::GET,
        uri,
        body: &[],
    };
    let c = compute(&state)?;
    let wallet = match (&q.wallet, header_wallet(headers)?) {
        (Some(w), _) => parse_address(w, "wallet")?,
        (None, Some(w)) => w,
        // Boxed: the proof's future is ~5 KB, and a polled balance that
        // names its wallet would otherwise carry (and copy) it every time.
        (None, None) => Box::pin(spender(&state, headers, &signed, None))
            .await
            .map_err(|_| {
                ApiError::BadRequest(
                    "name the wallet: ?wallet=0x…, X-Wallet-Address or a sign-in token".into(),
                )
            })?,
    };
    let b = c.ledger().balance_cached(wallet).await?;
    let body = state.balance_bodies.body(wallet, b);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// The serialized `GET /v1/balance` answer of each wallet recently asked
/// for, with the balance it shows: the body is a function of the two, so it
/// is reused while the balance is unchanged (a polled balance is one map
/// lookup, not five amounts formatted and a JSON document written).
#[derive(Default)]
pub struct BalanceBodies(std::sync::RwLock<std::collections::HashMap<Address, (Balance, Bytes)>>);

/// Wallets remembered before the map is cleared (bounds memory under scans).
const BALANCE_BODIES_MAX: usize = 10_000;

impl BalanceBodies {
    /// `wallet`'s answer for balance `b`.
    fn body(&self, wallet: Address, b: Balance) -> Bytes {
        if let Some((shown, body)) = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&wallet)
            && *shown == b
        {
            return body.clone();
        }
        let body = Bytes::from(
            serde_json::to_vec(&BalanceBody {
                wallet: chainfront_indexer::keys::lower(wallet),
                available: b.available,
                pending: b.pending,
                total_deposited: b.deposited,
                total_spent: b.spent,
                owed: b.owed,
            })
            .unwrap_or_default(),
        );
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= BALANCE_BODIES_MAX {
            map.clear();
        }
        map.insert(wallet, (b, body.clone()));
        body
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct PaymentProofBody {
    tx_hash: String,
    network: String,
    #[schema(value_type = f64)]
    amount_usd: Box<RawValue>,
    token: String,
    #[serde(default)]
    #[allow(dead_code)]
    timestamp: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct DepositBody {
    wallet: String,
    payment_proof: PaymentProofBody,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Credited {
    success: bool,
    credits: Usd,
    tx_hash: String,
    network: String,
    already_credited: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PendingDeposit {
    success: bool,
    status: &'static str,
    tx_hash: String,
    confirmations: u64,
    required: u64,
    remaining: u64,
}

/// Credits a USDC deposit to the treasury, verified on chain.
#[utoipa::path(post, path = "/v1/deposit", tag = "compute", request_body = DepositBody,
    responses(
        (status = 200, description = "`{success, credits, txHash}`: credited now or before (`alreadyCredited`)", body = Value),
        (status = 202, description = "Mined, not yet confirmed: `{status: \"pending\", confirmations, required, remaining}`", body = Value),
        (status = 400, description = "Unknown network, another token or recipient, reverted, someone else's transfer, too small", body = ErrorBody),
        (status = 503, description = "The chain could not be read", body = ErrorBody),
    ))]
async fn deposit(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let c = compute(&state)?;
    let req: DepositBody = json_body(
        &body,
        "{wallet, paymentProof: {txHash, network, amountUsd, token, timestamp}}",
    )?;
    let wallet = parse_address(&req.wallet, "wallet")?;
    let p = req.payment_proof;
    let tx: B256 = p.tx_hash.trim().parse().map_err(|_| {
        ApiError::BadRequest("paymentProof.txHash must be a 0x transaction hash".into())
    })?;
    let amount = parse_usd(p.amount_usd.get())
        .map_err(|e| ApiError::BadRequest(format!("paymentProof.amountUsd {e}")))?;
    let verdict = c
        .deposits()
        .verify(&Proof {
            wallet,
            tx,
            network: p.network,
            amount,
            token: p.token,
        })
        .await?;
    match verdict {
        Verdict::Pending {
            confirmations,
            required,
        } => Ok(answer(
            StatusCode::ACCEPTED,
            &PendingDeposit {
                success: false,
                status: "pending",
                tx_hash: tx.to_string(),
                confirmations,
                required,
                remaining: required.saturating_sub(confirmations),
            },
            None,
        )),
        Verdict::Confirmed { network, deposits } => {
            let mut total = Usd::ZERO;
            let mut fresh = false;
            for (dep, amount) in &deposits {
                let o = c
                    .ledger()
                    .credit_deposit(dep, wallet, *amount, Source::Api)
                    .await?;
                if o == CreditOutcome::NotADeposit {
                    return Err(DepositError::X402Payment(tx).into());
                }
                fresh |= o == CreditOutcome::Credited;
                total = Usd(total.0.saturating_add(amount.0));
            }
            Ok(answer(
                StatusCode::OK,
                &Credited {
                    success: true,
                    credits: total,
                    tx_hash: tx.to_string(),
                    network,
                    already_credited: !fresh,
                },
                None,
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
struct UsageQuery {
    period: Option<String>,
}

/// The proven wallet's usage per service.
#[utoipa::path(get, path = "/v1/usage", tag = "compute",
    params(("period" = Option<String>, Query, description = "day, week, month or all (default)")),
    responses(
        (status = 200, description = "`{wallet, period, byService: {svc: {requests, cost, avgDuration}}, totalCost, totalRequests}`", body = Value),
        (status = 401, description = "No proof of control of the wallet", body = ErrorBody),
    ))]
async fn usage(
    State(state): State<AppState>,
    Query(q): Query<UsageQuery>,
    call: WalletCall,
) -> Result<Response, ApiError> {
    let u = compute(&state)?
        .usage(call.wallet, q.period.as_deref().unwrap_or("all"))
        .await?;
    Ok(answer(StatusCode::OK, &u, call.quota))
}

#[derive(Debug, Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

/// The proven wallet's ledger: credits, reversals, reservations, charges, refunds.
#[utoipa::path(get, path = "/v1/ledger", tag = "compute",
    params(("limit" = Option<usize>, Query, description = "Entries, newest first (default 50, max 500)")),
    responses(
        (status = 200, description = "`{wallet, entries: [{id, kind, amount, ref, available, pending, timestamp, note}]}`", body = Value),
        (status = 401, description = "No proof of control of the wallet", body = ErrorBody),
    ))]
async fn ledger(
    State(state): State<AppState>,
    Query(q): Query<LimitQuery>,
    call: WalletCall,
) -> Result<Response, ApiError> {
    let WalletCall { wallet, quota } = call;
    let entries = compute(&state)?
        .ledger()
        .entries(wallet, q.limit.unwrap_or(50).clamp(1, 500))
        .await?;
    #[derive(Serialize)]
    struct Body {
        wallet: String,
        entries: Vec<crate::ledger::Entry>,
    }
    Ok(answer(
        StatusCode::OK,
        &Body {
            wallet: chainfront_indexer::keys::lower(wallet),
            entries,
        },
        quota,
    ))
}

// ---- jobs ----

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SubmitBody {
    #[serde(default)]
    wallet: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    payload: Value,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payment_proof: Option<Value>,
    #[serde(default)]
    callback_url: Option<String>,
}

/// Submits a paid job: reserves its maximum charge, runs it asynchronously.
/// Paid from the proven wallet's balance, or per call with x402.
#[utoipa::path(post, path = "/v1/compute/{service}", tag = "compute", request_body = SubmitBody,
    params(
        ("service" = String, Path, description = "llm, code, web, trade, data, storage, gpu or ml"),
        ("PAYMENT-SIGNATURE" = Option<String>, Header, description = "x402 v2 payment of the job's maximum charge (the 402's `accepts`): the job is the payer's, paid per call; what it does not cost stays in the payer's balance"),
        ("X-PAYMENT" = Option<String>, Header, description = "x402 v1 payment"),
        ("Idempotency-Key" = Option<String>, Header, description = "With a payment: the same request sent again answers the same job"),
    ),
    responses(
        (status = 200, description = "`{id, jobId, service, status: \"pending\", cost, timestamp}` (cost = the reserved maximum); paid per call: `PAYMENT-RESPONSE` carries the settlement", body = JobView),
        (status = 400, description = "Bad payload", body = ErrorBody),
        (status = 401, description = "No proof of control of the wallet named by `wallet` (or x402 is off)", body = ErrorBody),
        (status = 402, description = "`Insufficient balance. Need $X, have $Y`, as the failed job, with the job's x402 offer in `PAYMENT-REQUIRED`; or, for a request with no wallet, no credentials and no payment, the x402 offer alone (v1 requirements as the body); or a refused payment", body = JobView),
        (status = 403, description = "The payment's payer is not the `wallet` the request names", body = ErrorBody),
        (status = 409, description = "This payment was used for another request", body = ErrorBody),
        (status = 404, description = "Unknown service", body = ErrorBody),
        (status = 429, description = "Over the per-wallet or per-IP limit", body = ErrorBody),
        (status = 501, description = "Service not offered by this node", body = ErrorBody),
    ))]
async fn submit(
    State(state): State<AppState>,
    Path(service): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let signed = Signed {
        method: &method,
        uri: &uri,
        body: &body,
    };
    let c = compute(&state)?;
    let req: SubmitBody = json_body(&body, "{wallet, payload, callbackUrl?}")?;
    let claimed = req
        .wallet
        .as_deref()
        .map(|w| parse_address(w, "wallet"))
        .transpose()?;
    let callback = req.callback_url.as_deref();
    if let Some(x) = &state.x402 {
        // Paid per call with x402: the payer's job (see `api::x402::paid_job`).
        if crate::x402::payment_header(&headers).is_some() {
            let job = super::x402::PaidJob {
                wallet: claimed,
                payload: &req.payload,
                callback,
                body: &body,
            };
            return super::x402::paid_job(&state, x, c, &service, job, &uri, &headers).await;
        }
        // Nothing to spend from and no payment: the job's x402 offer.
        if claimed.is_none() && !carries_credentials(&headers) {
            let price = c.check_submission(&service, &req.payload, callback)?;
            let offer = super::x402::job_offer(&state, x, price, &service, &uri, &headers);
            return Err(x.required_with(&offer, &format!("payment required: pay this job with x402 (PAYMENT-SIGNATURE, or X-PAYMENT for version 1) at its maximum charge — what it does not cost stays in your balance — or spend from a balance: {PROOF_NEEDED}")).into());
        }
    }
    let wallet = spender(&state, &headers, &signed, claimed).await?;
    let left = match per_wallet(&state, wallet).await {
        Ok(q) => Some(q),
        Err(r) => return Ok(r),
    };
    if let Some(proof) = &req.payment_proof {
        credit_inline_proof(c, wallet, proof).await?;
    }
    let view = match c.submit(wallet, &service, &req.payload, callback).await {
        Ok(view) => view,
        Err(ComputeError::Insufficient { message, job }) => {
            // The document's 402 (the failed job), plus, with x402 on, the
            // offer to pay this job per call instead.
            let mut r = answer(StatusCode::PAYMENT_REQUIRED, &*job, left);
            if let (Some(x), Some(price)) =
                (&state.x402, job_price(c, &service, &req.payload, callback))
            {
                let offer = super::x402::job_offer(&state, x, price, &service, &uri, &headers);
                r = super::x402::with_offer(r, x, &offer, &message);
            }
            return Ok(r);
        }
        Err(e) => return Err(e.into()),
    };
    Ok(answer(StatusCode::OK, &view, left))
}

/// The charge a job reserves, if it can be quoted.
fn job_price(c: &Compute, service: &str, payload: &Value, callback: Option<&str>) -> Option<Usd> {
    c.check_submission(service, payload, callback).ok()
}

/// Whether a request carries any proof of a wallet (a bearer token or a
/// per-request signature), valid or not.
fn carries_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key(crate::auth::WALLET_SIGNATURE_HEADER)
}

/// The document lets a job carry its deposit's `paymentProof`: it is
/// verified and credited like `POST /v1/deposit` first.
async fn credit_inline_proof(c: &Compute, wallet: Address, proof: &Value) -> Result<(), ApiError> {
    let p: PaymentProofBody = serde_json::from_value(proof.clone())
        .map_err(|e| ApiError::BadRequest(format!("paymentProof: {e}")))?;
    let tx: B256 = p.tx_hash.trim().parse().map_err(|_| {
        ApiError::BadRequest("paymentProof.txHash must be a 0x transaction hash".into())
    })?;
    let amount = parse_usd(p.amount_usd.get())
        .map_err(|e| ApiError::BadRequest(format!("paymentProof.amountUsd {e}")))?;
    let verdict = c
        .deposits()
        .verify(&Proof {
            wallet,
            tx,
            network: p.network,
            amount,
            token: p.token,
        })
        .await?;
    if let Verdict::Confirmed { deposits, .. } = verdict {
        for (dep, amount) in &deposits {
            let o = c
                .ledger()
                .credit_deposit(dep, wallet, *amount, Source::Api)
                .await?;
            if o == CreditOutcome::NotADeposit {
                return Err(DepositError::X402Payment(tx).into());
            }
        }
    }
    Ok(())
}

/// The proven wallet's newest jobs.
#[utoipa::path(get, path = "/v1/jobs", tag = "compute",
    params(("limit" = Option<usize>, Query, description = "Default 50, max 100")),
    responses(
        (status = 200, description = "`{jobs: [...], count}`", body = Value),
        (status = 401, description = "No proof of control of the wallet", body = ErrorBody),
    ))]
async fn jobs(
    State(state): State<AppState>,
    Query(q): Query<LimitQuery>,
    call: WalletCall,
) -> Result<Response, ApiError> {
    let jobs = compute(&state)?
        .jobs(call.wallet, q.limit.unwrap_or(50).clamp(1, 100))
        .await?;
    #[derive(Serialize)]
    struct Body {
        count: usize,
        jobs: Vec<JobView>,
    }
    Ok(answer(
        StatusCode::OK,
        &Body {
            count: jobs.len(),
            jobs,
        },
        call.quota,
    ))
}

/// One job (its id is unguessable; `X-Wallet-Address` narrows to the owner).
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "compute",
    params(("id" = String, Path, description = "jobId")),
    responses(
        (status = 200, description = "The job: `{id, jobId, service, status, result?, error?, cost, usage?, timestamp}`", body = JobView),
        (status = 403, description = "X-Wallet-Address names another wallet", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let c = compute(&state)?;
    let view = c.job(&id).await?.ok_or(ComputeError::NoJob)?;
    if let Some(w) = header_wallet(&headers)?
        && chainfront_indexer::keys::lower(w) != view.wallet
    {
        return Err(ComputeError::NotOwner.into());
    }
    Ok(answer(StatusCode::OK, &view, None))
}

/// Cancels a pending job and refunds its reservation.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "compute",
    request_body(content = String, content_type = "application/json", description = "empty or `{}`"),
    params(("id" = String, Path, description = "jobId")),
    responses(
        (status = 200, description = "`{success: true, jobId}`", body = Value),
        (status = 401, description = "No proof of control of the wallet", body = ErrorBody),
        (status = 403, description = "Another wallet's job", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Not pending any more", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: WalletCall,
) -> Result<Response, ApiError> {
    compute(&state)?.cancel(&id, call.wallet).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        success: bool,
        job_id: String,
    }
    Ok(answer(
        StatusCode::OK,
        &Body {
            success: true,
            job_id: id,
        },
        call.quota,
    ))
}

/// Streams an LLM answer as Server-Sent Events (`start`, `text`, `usage`,
/// `done`, `error`); charged for what was generated even if the client leaves.
#[utoipa::path(post, path = "/v1/stream/llm", tag = "compute", request_body = SubmitBody,
    responses(
        (status = 200, description = "text/event-stream of `data: {\"type\": ...}` events", content_type = "text/event-stream"),
        (status = 401, description = "No proof of control of the wallet", body = ErrorBody),
        (status = 402, description = "Insufficient balance", body = JobView),
        (status = 501, description = "No LLM upstream configured", body = ErrorBody),
    ))]
async fn stream_llm(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let signed = Signed {
        method: &method,
        uri: &uri,
        body: &body,
    };
    let c = compute(&state)?.clone();
    let req: SubmitBody = json_body(&body, "{wallet, payload}")?;
    let claimed = req
        .wallet
        .as_deref()
        .map(|w| parse_address(w, "wallet"))
        .transpose()?;
    let wallet = spender(&state, &headers, &signed, claimed).await?;
    let left = match per_wallet(&state, wallet).await {
        Ok(q) => Some(q),
        Err(r) => return Ok(r),
    };
    let llm = c.llm().ok_or_else(|| {
        ApiError::NotImplemented(
            "the `llm` service is not offered: no upstream is configured (compute.llm.base_url)"
                .into(),
        )
    })?;
    let view = c.open_here(wallet, "llm", &req.payload).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<StreamEvent>();
    let payload = req.payload;
    let job = view.clone();
    // The stream runs on its own task: a client that disconnects drops
    // the receiver, not the generation, which is metered and settled.
    tokio::spawn(async move {
        let started = Instant::now();
        let lease_every = std::time::Duration::from_millis((c.config().lease_ms / 3).max(50));
        let renew = {
            let (c, id) = (c.clone(), job.job_id.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease_every).await;
                    let _ = c.renew_here(&id).await;
                }
            })
        };
        let outcome = llm.stream(&payload, tx).await;
        renew.abort();
        if let Err(e) = c
            .finish_here(&job, wallet, outcome, started.elapsed())
            .await
        {
            tracing::warn!(target: "chainfront::compute", job = %job.job_id, error = %e, "settling a stream failed; the lease will end and the job be refunded");
        }
    });
    let start = serde_json::json!({"type": "start", "requestId": view.id, "jobId": view.job_id});
    let first = futures_util::stream::once(async move {
        Ok::<Event, Infallible>(Event::default().data(start.to_string()))
    });
    let rest = tokio_stream_from(rx).map(|ev| {
        let v = match ev {
            StreamEvent::Text(t) => serde_json::json!({"type": "text", "text": t}),
            StreamEvent::Usage { input, output } => {
                serde_json::json!({"type": "usage", "usage": {"inputTokens": input, "outputTokens": output}})
            }
            StreamEvent::Done(r) => serde_json::json!({"type": "done", "response": r}),
            StreamEvent::Error(e) => serde_json::json!({"type": "error", "error": e}),
        };
        Ok::<Event, Infallible>(Event::default().data(v.to_string()))
    });
    let mut r = Sse::new(first.chain(rest))
        .keep_alive(KeepAlive::default())
        .into_response();
    if let Some(q) = left {
        q.apply(&mut r);
    }
    Ok(r)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

// ---- webhooks ----

#[derive(Serialize)]
struct SecretBody {
    wallet: String,
    secret: String,
    header: &'static str,
    algorithm: &'static str,
}

async fn secret_answer(
    state: &AppState,
    wallet: Address,
    rotate: bool,
) -> Result<Response, ApiError> {
    let c = compute(state)?;
    let secret = if rotate {
        c.secrets().rotate(wallet).await?
    } else {
        c.secrets().secret(wallet).await?
    };
    let mut r = answer(
        StatusCode::OK,
        &SecretBody {
            wallet: chainfront_indexer::keys::lower(wallet),
            secret: secret.to_string(),
            header: "X-Clodds-Signature",
            algorithm: "hex(HMAC-SHA256(secret, raw body))",
        },
        None,
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The proven wallet's webhook secret (signs its callbacks, verifies its incoming webhooks).
#[utoipa::path(get, path = "/v1/webhook-secret", tag = "compute",
    responses(
        (status = 200, description = "`{wallet, secret, header, algorithm}`", body = Value),
        (status = 401, description = "No proof of control of the wallet", body = ErrorBody),
    ))]
async fn webhook_secret(
    State(state): State<AppState>,
    call: ProvenCall,
) -> Result<Response, ApiError> {
    secret_answer(&state, call.wallet, false).await
}

/// Replaces the proven wallet's webhook secret.
#[utoipa::path(post, path = "/v1/webhook-secret", tag = "compute",
    request_body(content = String, content_type = "application/json", description = "empty or `{}`"),
    responses(
        (status = 200, description = "The new `{wallet, secret, header, algorithm}`", body = Value),
        (status = 401, description = "No proof of control of the wallet", body = ErrorBody),
    ))]
async fn rotate_webhook_secret(
    State(state): State<AppState>,
    call: ProvenCall,
) -> Result<Response, ApiError> {
    secret_answer(&state, call.wallet, true).await
}

/// An automation hook: a job for `wallet` whose raw body (`{payload,
/// callbackUrl?}`) is signed with the wallet's webhook secret
/// (`x-webhook-signature: <hex>` or `x-hub-signature-256: sha256=<hex>`).
#[utoipa::path(post, path = "/v1/webhook/{wallet}/{service}", tag = "compute",
    request_body(content = String, content_type = "application/json", description = "`{payload, callbackUrl?}`, signed as sent"),
    params(("wallet" = String, Path, description = "The paying wallet"), ("service" = String, Path, description = "The service")),
    responses(
        (status = 200, description = "`{ok: true, jobId, id, status, cost}`", body = Value),
        (status = 401, description = "Missing or invalid signature", body = ErrorBody),
        (status = 402, description = "Insufficient balance", body = JobView),
        (status = 404, description = "Unknown service", body = ErrorBody),
    ))]
async fn incoming_webhook(
    State(state): State<AppState>,
    Path((wallet, service)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = compute(&state)?;
    let wallet = parse_address(&wallet, "wallet")?;
    if !crate::compute::SERVICES.contains(&service.as_str()) && c.executor(&service).is_none() {
        return Err(ComputeError::UnknownService(service).into());
    }
    let sig = headers
        .get("x-webhook-signature")
        .or_else(|| headers.get("x-hub-signature-256"))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized("missing x-webhook-signature or x-hub-signature-256 (hex HMAC-SHA256 of the raw body with the wallet's webhook secret)".into()))?;
    let secret = c.secrets().secret(wallet).await?;
    if !crate::compute::webhook::verify(secret.as_bytes(), &body, sig) {
        tracing::warn!(target: "chainfront::security", event = "auth_failure", method = "webhook", wallet = %wallet, "invalid webhook signature");
        return Err(ApiError::Unauthorized("invalid webhook signature".into()));
    }
    let left = match per_wallet(&state, wallet).await {
        Ok(q) => Some(q),
        Err(r) => return Ok(r),
    };
    let req: SubmitBody = json_body(&body, "{payload, callbackUrl?}")?;
    let view = c
        .submit(wallet, &service, &req.payload, req.callback_url.as_deref())
        .await?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        ok: bool,
        #[serde(flatten)]
        job: JobView,
    }
    Ok(answer(
        StatusCode::OK,
        &Body {
            ok: true,
            job: view,
        },
        left,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reused balance body is the one the balance serializes to, and a
    /// changed balance is never answered with the old body.
    #[test]
    fn balance_bodies_follow_the_balance() {
        let bodies = BalanceBodies::default();
        let wallet = Address::repeat_byte(0xab);
        let mut b = Balance {
            available: Usd(10_500_000),
            deposited: Usd(12_000_000),
            spent: Usd(1_500_000),
            ..Balance::default()
        };
        let json = |bytes: Bytes| serde_json::from_slice::<Value>(&bytes).expect("JSON");
        let first = bodies.body(wallet, b);
        assert_eq!(
            json(first.clone()),
            serde_json::json!({"wallet": format!("0x{}", "ab".repeat(20)), "available": 10.5,
                "pending": 0.0, "totalDeposited": 12.0, "totalSpent": 1.5})
        );
        assert_eq!(&first[..], &bodies.body(wallet, b)[..]);
        assert!(
            std::str::from_utf8(&first)
                .expect("utf8")
                .contains("\"available\":10.50")
        );
        b.available = Usd(9_000_000);
        b.pending = Usd(1_500_000);
        let second = bodies.body(wallet, b);
        assert!(
            std::str::from_utf8(&second)
                .expect("utf8")
                .contains("\"available\":9.00")
        );
        assert!(
            std::str::from_utf8(&second)
                .expect("utf8")
                .contains("\"pending\":1.50")
        );
    }
}
