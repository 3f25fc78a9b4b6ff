//! The x402 routes: ClawCloud's `/x402/vm-credentials` and
//! `/x402/purchase-compute`, and `/x402/supported`. Handlers only parse,
//! price, call `crate::x402` and attach the payment response; the protocol,
//! verification and settlement live there (see `docs/x402.md`).

use std::sync::Arc;

use alloy::network::TransactionBuilder;
use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chainfront_indexer::contracts::VMMarketplace;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::vms::{CredentialsQuery, credentials_answer, parse_token_id};
use super::{ApiError, AppState};
use crate::api::openapi::ErrorBody;
use crate::ledger::money::parse_usd;
use crate::ledger::{CreditOutcome, Usd};
use crate::x402::proto::Resource;
use crate::x402::{Answer, EXPOSED_HEADERS, Outcome, Paid, X402, hash_hex, payment_header};

/// The x402 routes (rate-limited as one class in `api::routes`).
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(supported))
        .routes(routes!(vm_credentials))
        .routes(routes!(purchase_compute))
}

fn service(state: &AppState) -> Result<&Arc<X402>, ApiError> {
    state.x402.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "x402 payments are switched off on this node (x402.enabled, or the USDC contract has no EIP-3009 domain)"
                .into(),
        )
    })
}

/// The `resource` of an offer: `x402.public_url`, else `api.public_url`
/// (or the request's `Host`), + path.
pub(super) fn resource(
    state: &AppState,
    x: &X402,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    description: &str,
) -> Resource {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_else(|| uri.path());
    let configured = x
        .config()
        .public_url
        .clone()
        .or_else(|| state.config.api.public_url.clone());
    let base = configured.unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .unwrap_or("localhost");
        format!("http://{host}")
    });
    Resource {
        url: format!("{}{path}", base.trim_end_matches('/')),
        description: description.to_owned(),
        mime_type: "application/json".into(),
    }
}

/// What a paid request is, for `Idempotency-Key` replays: method, path and
/// query, body.
pub(super) fn request_hash(method: &str, uri: &axum::http::Uri, body: &[u8]) -> String {
    let mut data = format!("{method}\n{uri}\n").into_bytes();
    data.extend_from_slice(body);
    hash_hex(&data)
}

fn usdc(units: U256) -> String {
    let mut d = u128::try_from(units)
        .ok()
        .and_then(|u| i128::try_from(u).ok())
        .map(|u| Decimal::from_i128_with_scale(u, 6).normalize())
        .unwrap_or_default();
    if d.scale() < 2 {
        d.rescale(2);
    }
    d.to_string()
}

fn price(d: Decimal, what: &str) -> Result<U256, ApiError> {
    X402::base_units(d)
        .ok_or_else(|| ApiError::internal(format!("x402.prices.{what} is not a USDC amount")))
}

/// Adds the payment response and exposure headers to a paid answer.
pub(super) fn with_payment(mut response: Response, paid: &Paid) -> Response {
    let (name, value) = paid.response_header();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    response
}

pub(super) fn replay(answer: Answer) -> Response {
    let mut response = (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
        answer.body,
    )
        .into_response();
    let headers = response.headers_mut();
    for (k, v) in &answer.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    headers.insert("x-idempotent-replay", HeaderValue::from_static("true"));
    response
}

/// What this node accepts (like a facilitator's `/supported`) and the priced routes.
#[utoipa::path(
    get,
    path = "/x402/supported",
    tag = "x402",
    responses(
        (status = 200, description = "`{kinds: [{x402Version, scheme, network, extra}], extensions, signers, settlement, payTo, confirmations, routes: [{method, path, price, amount, payTo}]}`", body = Value),
        (status = 503, description = "x402 is switched off", body = ErrorBody),
    )
)]
async fn supported(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let x = service(&state)?;
    let p = &x.config().prices;
    let mut body = x.supported();
    body["routes"] = json!([
        {"method": "GET", "path": "/x402/vm-credentials/{tokenId}", "price": p.vm_credentials.to_string(),
         "amount": price(p.vm_credentials, "vm_credentials")?.to_string(), "payTo": x.treasury().to_string(),
         "description": "SSH credentials of a VM you own (owner signature or JWT as for /credentials, plus this price per fetch)"},
        {"method": "POST", "path": "/x402/purchase-compute", "body": {"vm": {"tier": "0-7", "days": "1-3650"}},
         "price": "the tier's price per day × days (read from the marketplace)", "payTo": x.marketplace().to_string(),
         "primaryType": "ReceiveWithAuthorization",
         "description": "a VM NFT minted to the payer, gas-free (purchaseVMWithAuthorization)"},
        {"method": "POST", "path": "/x402/purchase-compute", "body": {"amount": "USDC"},
         "price": p.credits_default.to_string(), "min": p.credits_min.to_string(), "max": p.credits_max.to_string(),
         "payTo": x.treasury().to_string(), "available": state.compute.is_some(),
         "description": "Compute API credits: the amount paid is credited to the payer's balance (exactly the amount asked)"},
        {"method": "POST", "path": "/v1/compute/{service}", "price": "the job's maximum charge (GET /v1/pricing)",
         "payTo": x.treasury().to_string(), "available": state.compute.is_some(),
         "description": "one Compute job paid per call instead of from the balance; what the job does not cost stays in the payer's balance"},
    ]);
    Ok(Json(body))
}

/// SSH credentials of a VM, for its owner, paid per fetch with x402.
#[utoipa::path(
    get,
    path = "/x402/vm-credentials/{token_id}",
    tag = "x402",
    params(
        ("token_id" = String, Path, description = "The VM NFT's token id (decimal)"),
        ("encrypt" = Option<String>, Query, description = "`owner`: `privateKey` ECIES-encrypted to the signer's public key"),
        ("Authorization" = Option<String>, Header, description = "As for `/credentials`: `Bearer <wallet signature>` or `Bearer <sign-in JWT>` (checked on the paid request)"),
        ("PAYMENT-SIGNATURE" = Option<String>, Header, description = "x402 v2 payment (base64 JSON PaymentPayload)"),
        ("X-PAYMENT" = Option<String>, Header, description = "x402 v1 payment (base64 JSON)"),
    ),
    responses(
        (status = 200, description = "The `/credentials` body; `PAYMENT-RESPONSE` (or `X-PAYMENT-RESPONSE`) carries `{success, transaction, network, payer}`", body = Value),
        (status = 202, description = "Still provisioning: nothing is charged", body = Value),
        (status = 400, description = "Malformed token id or payment header", body = ErrorBody),
        (status = 401, description = "Missing, invalid or replayed owner signature (nothing charged)", body = ErrorBody),
        (status = 402, description = "Payment required or refused: `PAYMENT-REQUIRED` header (v2) and the v1 requirements as the body, with `error` and `reason`", body = Value),
        (status = 403, description = "Not the owner, or the NFT expired (nothing charged)", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 409, description = "This payment is being settled or was used for another request", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
        (status = 503, description = "Chain, state store or settlement unavailable", body = ErrorBody),
    )
)]
async fn vm_credentials(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<CredentialsQuery>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let x = service(&state)?;
    parse_token_id(&raw)?;
    let amount = price(x.config().prices.vm_credentials, "vm_credentials")?;
    let offer = x.transfer_offer(
        amount,
        resource(&state, x, &headers, &uri, "SSH credentials of a VM you own"),
        "/x402/vm-credentials",
        false,
    );
    // Without a payment, the requirements come first and the owner's
    // signature is not consumed (single-use forms stay usable for the paid retry).
    if payment_header(&headers).is_none() {
        return Err(x.required(&offer).into());
    }
    let request = request_hash("GET", &uri, b"");
    let mut paid: Option<Box<Paid>> = None;
    let answer = credentials_answer(&state, &raw, q, &headers, async || {
        match x.pay_detached(&headers, &request, &offer).await? {
            Outcome::Paid(p) => {
                paid = Some(p);
                Ok(())
            }
            Outcome::Replay(_) => Err(ApiError::Conflict(
                "this payment was already used for this request".into(),
            )),
        }
    })
    .await;
    match (answer, paid) {
        (Ok(response), Some(p)) => {
            x.finish(&p, None).await?;
            Ok(with_payment(response, &p))
        }
        (Err(e), Some(p)) => {
            x.unserved(&p).await?;
            Err(e)
        }
        (answer, None) => answer,
    }
}

/// `POST /x402/purchase-compute` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PurchaseCompute {
    /// Buy a VM: `{"tier": 0-7, "days": 1-3650}`.
    #[serde(default)]
    vm: Option<VmOrder>,
    /// Buy Compute API credits for this many USDC (a JSON number or string).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    amount: Option<Box<RawValue>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct VmOrder {
    tier: u8,
    days: u16,
}

/// Buy compute with x402: a VM NFT gas-free, or Compute API credits.
#[utoipa::path(
    post,
    path = "/x402/purchase-compute",
    tag = "x402",
    request_body(content = PurchaseCompute, description = "`{\"vm\": {\"tier\": 0, \"days\": 30}}` buys a VM: sign `ReceiveWithAuthorization` (accepts[].extra.primaryType) of exactly the price to the marketplace. `{\"amount\": \"5.00\"}` (or no body: `x402.prices.credits_default`) buys Compute API credits: exactly that amount to the treasury, credited to the payer's balance."),
    params(
        ("PAYMENT-SIGNATURE" = Option<String>, Header, description = "x402 v2 payment (base64 JSON PaymentPayload)"),
        ("X-PAYMENT" = Option<String>, Header, description = "x402 v1 payment (base64 JSON)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Sent again with the same payment and body, answers the first answer again instead of 409"),
    ),
    responses(
        (status = 200, description = "VM: `{success, tokenId, tier, days, owner, totalCost, transaction, network, credentials}`; credits: `{success, credits, transaction, network, wallet, balance, alreadyCredited}`; `PAYMENT-RESPONSE` carries the settlement", body = Value),
        (status = 400, description = "Malformed body, unknown or inactive tier, bad duration, an amount outside credits_min..credits_max", body = ErrorBody),
        (status = 402, description = "Payment required or refused (`PAYMENT-REQUIRED` header, v1 body with `error` and `reason`)", body = Value),
        (status = 409, description = "This payment is being settled or was used for another request", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody),
        (status = 501, description = "Credits: the Compute API is switched off on this node", body = ErrorBody),
        (status = 503, description = "Chain, state store or relayer unavailable", body = ErrorBody),
    )
)]
async fn purchase_compute(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let x = service(&state)?;
    let order: PurchaseCompute = if body.iter().all(u8::is_ascii_whitespace) {
        PurchaseCompute::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "body must be {{\"vm\": {{\"tier\": 0-7, \"days\": n}}}} or {{\"amount\": \"USDC\"}}: {e}"
            ))
        })?
    };
    let Some(vm) = order.vm else {
        return purchase_credits(&state, x, order.amount.as_deref(), &uri, &headers, &body).await;
    };
    if order.amount.is_some() {
        return Err(ApiError::BadRequest(
            "send either `vm` or `amount`, not both".into(),
        ));
    }
    if vm.days == 0 || vm.days > 3650 {
        return Err(ApiError::BadRequest("days must be 1-3650".into()));
    }
    let tier = tier_price(x, vm.tier).await?;
    let total = tier.saturating_mul(U256::from(vm.days));
    let offer = x.vm_offer(
        vm.tier,
        vm.days,
        total,
        resource(
            &state,
            x,
            &headers,
            &uri,
            &format!(
                "VM tier {} for {} days, minted to the payer",
                vm.tier, vm.days
            ),
        ),
    );
    let request = request_hash("POST", &uri, &body);
    let paid = match x.pay_detached(&headers, &request, &offer).await? {
        Outcome::Replay(answer) => return Ok(replay(answer)),
        Outcome::Paid(p) => p,
    };
    let Some(ev) = crate::x402::purchased_token(&paid.receipt, x.marketplace(), paid.payer) else {
        x.unserved(&paid).await?;
        return Err(ApiError::internal(
            "settled purchase has no VMPurchased event for the payer",
        ));
    };
    let out = json!({
        "success": true,
        "tokenId": ev.tokenId.to_string(),
        "tier": ev.tier,
        "days": ev.durationDays,
        "owner": paid.payer.to_string(),
        "totalCost": usdc(ev.totalCost),
        "transaction": paid.transaction().to_string(),
        "network": paid.network,
        "credentials": format!("/credentials/{}", ev.tokenId),
    });
    let (name, value) = paid.response_header();
    let answer = Answer {
        status: 200,
        headers: vec![
            (name.to_owned(), value),
            ("content-type".into(), "application/json".into()),
        ],
        body: out.to_string(),
    };
    x.finish(&paid, Some(&answer)).await?;
    Ok(with_payment(Json(out).into_response(), &paid))
}

/// `POST /x402/purchase-compute` `{"amount"}` (or no body: the default):
/// the payment, settled, is credited to the payer's Compute balance under
/// its transfer's deposit key.
async fn purchase_credits(
    state: &AppState,
    x: &Arc<X402>,
    amount: Option<&RawValue>,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let Some(compute) = state.compute.as_ref() else {
        return Err(ApiError::NotImplemented(
            "the Compute API is switched off on this node (compute.enabled): there are no credits to buy; buy a VM with {\"vm\": {\"tier\", \"days\"}}"
                .into(),
        ));
    };
    let p = &x.config().prices;
    let bound = |d: Decimal, what: &str| {
        Usd::from_decimal(d)
            .ok_or_else(|| ApiError::internal(format!("x402.prices.{what} is not a USDC amount")))
    };
    let (min, max) = (
        bound(p.credits_min, "credits_min")?,
        bound(p.credits_max, "credits_max")?,
    );
    let amount = match amount {
        None => bound(p.credits_default, "credits_default")?,
        Some(raw) => {
            parse_usd(raw.get()).map_err(|e| ApiError::BadRequest(format!("amount {e}")))?
        }
    };
    if amount < min || amount > max || amount == Usd::ZERO {
        return Err(ApiError::BadRequest(format!(
            "amount must be between {} and {} USDC",
            min.text(),
            max.text()
        )));
    }
    let offer = x.credit_offer(
        amount,
        resource(
            state,
            x,
            headers,
            uri,
            &format!(
                "{} USDC of Compute API credits for the payer",
                amount.text()
            ),
        ),
        "/x402/purchase-compute",
    );
    let request = request_hash("POST", uri, body);
    let paid = match x.pay_detached(headers, &request, &offer).await? {
        Outcome::Replay(answer) => return Ok(replay(answer)),
        Outcome::Paid(p) => p,
    };
    let Some(credited) = paid.credited else {
        x.unserved(&paid).await?;
        return Err(ApiError::internal(
            "settled credit purchase has no transfer to the treasury",
        ));
    };
    let balance = compute.ledger().balance(paid.payer).await?;
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Bought {
        success: bool,
        credits: Usd,
        transaction: String,
        network: String,
        wallet: String,
        balance: Usd,
        already_credited: bool,
    }
    let out = Bought {
        success: true,
        credits: credited.amount,
        transaction: paid.transaction().to_string(),
        network: paid.network.clone(),
        wallet: chainfront_indexer::keys::lower(paid.payer),
        balance: balance.available,
        already_credited: credited.outcome != CreditOutcome::Credited,
    };
    let text = serde_json::to_string(&out).map_err(ApiError::internal)?;
    let (name, value) = paid.response_header();
    let answer = Answer {
        status: 200,
        headers: vec![
            (name.to_owned(), value),
            ("content-type".into(), "application/json".into()),
        ],
        body: text.clone(),
    };
    x.finish(&paid, Some(&answer)).await?;
    let response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response();
    Ok(with_payment(response, &paid))
}

/// The tier's price per day from the marketplace; 400 for unknown or
/// inactive tiers.
async fn tier_price(x: &X402, tier: u8) -> Result<U256, ApiError> {
    if tier > 7 {
        return Err(ApiError::BadRequest("tier must be 0-7".into()));
    }
    let call = VMMarketplace::getTierConfigCall { tier };
    let tx = TransactionRequest::default()
        .with_to(x.marketplace())
        .with_input(call.abi_encode());
    let out = x
        .rpc()
        .call("eth_call", |p| {
            let tx = tx.clone();
            async move { p.call(tx).await }
        })
        .await
        .map_err(|e| {
            tracing::warn!(target: "chainfront::x402", error = %e, "tier price read failed");
            ApiError::Unavailable("chain unavailable; retry shortly".into())
        })?;
    let cfg = VMMarketplace::getTierConfigCall::abi_decode_returns(&out)
        .map_err(|e| ApiError::internal(format!("getTierConfig answer: {e}")))?;
    if !cfg.active || cfg.price.is_zero() {
        return Err(ApiError::BadRequest(format!("tier {tier} is not for sale")));
    }
    Ok(cfg.price)
}

// ---- Compute jobs paid per call (`POST /v1/compute/:service`) ----

/// The offer for one Compute job: its maximum charge, credited to the
/// payer's balance once settled and reserved for the job at once.
pub(super) fn job_offer(
    state: &AppState,
    x: &X402,
    price: Usd,
    service: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> crate::x402::Offer {
    x.credit_offer(
        price,
        resource(
            state,
            x,
            headers,
            uri,
            &format!(
                "one `{service}` job, paid at its maximum charge; what it does not cost stays in the payer's Compute balance"
            ),
        ),
        "/v1/compute",
    )
}

/// Adds the x402 offer (`PAYMENT-REQUIRED`) to an answer, e.g. the 402
/// "Insufficient balance" of a job: the client may pay this job per call.
pub(super) fn with_offer(
    mut response: Response,
    x: &X402,
    offer: &crate::x402::Offer,
    message: &str,
) -> Response {
    let c = x.challenge(offer, message, None);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&c.payment_required) {
        headers.insert(crate::x402::proto::PAYMENT_REQUIRED, v);
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    response
}

/// A Compute job paid with the x402 payment the request carries, instead
/// of from the balance: the job's maximum charge is settled, credited to the
/// payer under the transfer's deposit key (the key every deposit path
/// shares) and reserved for the job; the job then runs like any other, and
/// what it does not cost stays in the payer's balance. The payer is the
/// job's wallet; a `wallet` in the body must be the payer. One payment opens
/// one job: the job id is kept with the payment, so a resumed payment answers
/// the same job.
pub(super) async fn paid_job(
    state: &AppState,
    x: &Arc<X402>,
    compute: &crate::compute::Compute,
    service: &str,
    job: PaidJob<'_>,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let price = compute.check_submission(service, job.payload, job.callback)?;
    if price == Usd::ZERO {
        return Err(ApiError::BadRequest(
            "this job's maximum charge is 0; it needs no payment".into(),
        ));
    }
    if let (Some(named), Some(raw)) = (job.wallet, payment_header(headers)) {
        let payment = crate::x402::proto::decode_payment(raw)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let payer = payment.payload.authorization.from;
        if payer != named {
            return Err(ApiError::Forbidden(format!(
                "the payment is signed by {payer}, but the request names the wallet {named}; a job paid per call belongs to its payer"
            )));
        }
    }
    let offer = job_offer(state, x, price, service, uri, headers);
    let request = request_hash("POST", uri, job.body);
    let paid = match x.pay_detached(headers, &request, &offer).await? {
        Outcome::Replay(answer) => return Ok(replay(answer)),
        Outcome::Paid(p) => p,
    };
    let job_id = x
        .remember(&paid, "job", &crate::compute::job::new_id("job_"))
        .await?;
    let opened = compute
        .submit_as(
            paid.payer,
            service,
            job.payload,
            job.callback,
            Some(&job_id),
        )
        .await;
    let (status, body) = match opened {
        Ok(view) => (StatusCode::OK, serde_json::to_string(&view)),
        // The credit was spent by the payer's other jobs in between: the
        // payment is in the balance's history; this job failed for want of it.
        Err(crate::compute::ComputeError::Insufficient { job, .. }) => {
            (StatusCode::PAYMENT_REQUIRED, serde_json::to_string(&job))
        }
        Err(e) => {
            x.unserved(&paid).await?;
            return Err(e.into());
        }
    };
    let text = body.map_err(ApiError::internal)?;
    let (name, value) = paid.response_header();
    let answer = Answer {
        status: status.as_u16(),
        headers: vec![
            (name.to_owned(), value),
            ("content-type".into(), "application/json".into()),
        ],
        body: text.clone(),
    };
    x.finish(&paid, Some(&answer)).await?;
    let response = (status, [(header::CONTENT_TYPE, "application/json")], text).into_response();
    Ok(with_payment(response, &paid))
}

/// The parts of a job request [`paid_job`] needs.
pub(super) struct PaidJob<'a> {
    /// The `wallet` the body names, if any.
    pub wallet: Option<alloy::primitives::Address>,
    /// The job's payload.
    pub payload: &'a Value,
    /// `callbackUrl`.
    pub callback: Option<&'a str>,
    /// The raw body (for `Idempotency-Key` replays).
    pub body: &'a [u8],
}
