//! x402: agents pay per request in USDC with a signed EIP-3009
//! authorization, and the node verifies and settles it before serving.
//! This module knows nothing of HTTP routes; `crate::api::x402` calls it.
//!
//! - [`proto`]: the wire format of x402 versions 2 and 1.
//! - [`verify`]: the EIP-712 digest over the token's real domain (read from
//!   the contract at start) and every check that needs no chain.
//! - [`claim`]: one claim per authorization in Redis — one settlement and one
//!   served request per authorization, across replicas.
//! - [`settle`]: the settlement transaction through the node's one sender
//!   (`crate::chain`, relayer key), and what the chain says afterwards.
//! - [`facilitator`]: an optional external facilitator, checked against the chain.
//!
//! A paid request: the payment header is decoded and checked locally; the
//! authorization is claimed; the chain is asked whether its nonce is unused
//! and the payer's balance covers it (and, for a contract wallet, whether it
//! approves the signature, EIP-1271, bounded); the transfer is sent and
//! confirmed; only then does the route run. A settlement whose outcome is
//! unknown keeps its claim; the same payment sent again resumes it (the
//! sender re-broadcasts the recorded transaction, or the chain shows who used
//! the authorization) instead of sending a second one.

pub mod claim;
pub mod facilitator;
pub mod proto;
pub mod settle;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use axum::http::HeaderMap;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::contracts::{MockUSDC, VMMarketplace};
use chainfront_indexer::keys::{ChainKeys, lower};
use chainfront_indexer::rpc::Rpc;
use redis::AsyncCommands;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::chain::{SenderConfig, TxSender};
use crate::config::{Config, HomeChain, X402Config};
use crate::ledger::{CreditOutcome, DepositRef, Ledger, Source, Usd};
use claim::{Claims, Fingerprint, State, Taken};
use facilitator::Facilitator;
use proto::{
    PaymentRequired, PaymentRequiredV1, Requirements, RequirementsV1, Resource, SettleResponse,
};
use settle::{Action, Outcome as Sent};
pub use verify::{Expected, Primary, Refusal, TokenDomain};

/// The header a client names to have a repeated request answered with the
/// first answer instead of a 409.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Seconds before `validBefore` within which an authorization is refused: it
/// could expire before its settlement is mined.
pub const EXPIRY_MARGIN_SECS: u64 = 3;
/// The x402 headers browsers must be allowed to read
/// (`Access-Control-Expose-Headers`).
pub const EXPOSED_HEADERS: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE";
/// Largest answer kept for replays.
const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// Why a paid request was not served.
#[derive(Debug, thiserror::Error)]
pub enum X402Error {
    /// 402: no payment, or a refused one; carries the requirements.
    #[error("{}", .0.message)]
    Required(Box<Challenge>),
    /// 400: an unreadable payment header.
    #[error("{0}")]
    BadRequest(String),
    /// 409: the authorization is held by, or was used for, another request.
    #[error("{0}")]
    Conflict(String),
    /// 503: the chain, Redis or the facilitator could not be reached, or
    /// settlement is not configured.
    #[error("{0}")]
    Unavailable(String),
}

/// Result alias.
pub type Result<T, E = X402Error> = std::result::Result<T, E>;

impl From<redis::RedisError> for X402Error {
    fn from(e: redis::RedisError) -> Self {
        tracing::error!(target: "chainfront::x402", error = %e, "redis error");
        X402Error::Unavailable("state store unavailable; retry shortly".into())
    }
}

/// A 402 answer: the v2 `PAYMENT-REQUIRED` header, the v1 JSON body (whose
/// `error` is also chainfront's `{"error"}`), and after a failed settlement
/// the failure as `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// For people.
    pub message: String,
    /// Base64 JSON of the v2 `PaymentRequired`.
    pub payment_required: String,
    /// The v1 `PaymentRequired` JSON plus `reason` (the x402 code).
    pub body: Value,
    /// `(header, base64 SettleResponse)` when a settlement was tried.
    pub payment_response: Option<(&'static str, String)>,
}

/// What a route charges and what paying it does.
#[derive(Debug, Clone)]
pub struct Offer {
    /// Payee, price and the struct to sign.
    pub expected: Expected,
    /// What settlement executes.
    pub action: Action,
    /// What is paid for.
    pub resource: Resource,
    /// The route, for records and logs.
    pub route: &'static str,
    /// Whether the answer may be kept for `Idempotency-Key` replays (not
    /// when it carries credentials).
    pub replayable: bool,
    /// What the payment buys: a service (never a deposit) or credits.
    pub purpose: Purpose,
}

/// What a payment to the treasury is for, which decides how the ledger
/// treats its `Transfer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Pays for what the route serves (a credentials fetch, a VM): the
    /// transfer is consumed and never credited as a deposit.
    Service,
    /// Buys Compute API credits (a credit purchase, or a job paid per call):
    /// credited to the payer under the transfer's deposit key, the key every
    /// deposit path uses, so it is credited once whoever sees it first.
    Credit,
}

/// What a settled credit-purpose payment did to the payer's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credited {
    /// The deposit the transfer is.
    pub deposit: DepositRef,
    /// Credited (base units).
    pub amount: Usd,
    /// Credited now, or by a deposit path before.
    pub outcome: CreditOutcome,
}

/// A settled payment, ready to be served.
#[derive(Debug, Clone)]
pub struct Paid {
    /// Who paid.
    pub payer: Address,
    /// What was authorized (base units).
    pub value: U256,
    /// The settlement's receipt.
    pub receipt: Box<TransactionReceipt>,
    /// The protocol version the client paid with.
    pub version: u8,
    /// The network as the client named it.
    pub network: String,
    /// For a credit-purpose payment, the credit.
    pub credited: Option<Credited>,
    claim: String,
    replayable: bool,
}

impl Paid {
    /// The settlement transaction.
    pub fn transaction(&self) -> B256 {
        self.receipt.transaction_hash
    }

    /// `PAYMENT-RESPONSE` (v2) or `X-PAYMENT-RESPONSE` (v1) and its value.
    pub fn response_header(&self) -> (&'static str, String) {
        let body = SettleResponse {
            success: true,
            error_reason: None,
            transaction: self.transaction().to_string(),
            network: self.network.clone(),
            payer: Some(self.payer.to_string()),
        };
        (
            response_header_name(self.version),
            proto::encode_header(&body),
        )
    }
}

fn response_header_name(version: u8) -> &'static str {
    if version == 1 {
        proto::X_PAYMENT_RESPONSE
    } else {
        proto::PAYMENT_RESPONSE
    }
}

/// An answer kept for an `Idempotency-Key` replay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers to send again (the payment response among them).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

/// What [`X402::pay`] gave.
#[derive(Debug)]
pub enum Outcome {
    /// Settled: serve the request, then call [`X402::finish`].
    Paid(Box<Paid>),
    /// The same request (same payment, same `Idempotency-Key`) was answered
    /// before: send this again.
    Replay(Answer),
}

/// The node's x402 service for its home chain.
pub struct X402 {
    cfg: X402Config,
    domain: TokenDomain,
    v1_network: String,
    treasury: Address,
    marketplace: Address,
    rpc: Rpc,
    sender: Option<Arc<TxSender>>,
    facilitator: Option<Facilitator>,
    claims: Claims,
    ledger: Ledger,
}

impl std::fmt::Debug for X402 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X402")
            .field("domain", &self.domain)
            .field("relayer", &self.sender.as_ref().map(|s| s.address()))
            .field("facilitator", &self.facilitator.is_some())
            .finish_non_exhaustive()
    }
}

impl X402 {
    /// Sets x402 up for the home chain: reads the token's EIP-712 domain from
    /// the contract (and checks it against `DOMAIN_SEPARATOR()`), builds the
    /// relayer's sender and the facilitator client. `rpc` is the API's
    /// failover client; `ledger` is where payments are credited or consumed.
    /// `None` when switched off or when the token cannot take EIP-3009
    /// payments (logged).
    pub async fn connect(
        config: &Config,
        home: &HomeChain,
        redis: RedisConn,
        rpc: Rpc,
        ledger: Ledger,
    ) -> crate::Result<Option<Self>> {
        let cfg = config.x402.clone();
        if !cfg.enabled {
            return Ok(None);
        }
        let chain_id = home.chain.chain_id;
        let token = home.deployment.usdc;
        let Some(domain) = read_domain(&rpc, token, chain_id).await? else {
            return Ok(None);
        };
        let sender = match &config.secrets.relayer_key {
            Some(key) => {
                let signer: PrivateKeySigner =
                    key.expose()
                        .trim()
                        .parse()
                        .map_err(|_| crate::Error::Config {
                            key: "relayer_key".into(),
                            message: "is not a hex private key".into(),
                        })?;
                let sender_cfg = SenderConfig {
                    confirmations: cfg.confirmations,
                    receipt_timeout: Duration::from_secs(cfg.settle_timeout_secs),
                    poll_interval: Duration::from_millis(cfg.poll_interval_ms),
                    ..SenderConfig::default()
                };
                Some(Arc::new(TxSender::new(
                    rpc.clone(),
                    signer,
                    chain_id,
                    redis.clone(),
                    sender_cfg,
                )))
            }
            None => None,
        };
        let facilitator = match &cfg.facilitator_url {
            Some(url) => Some(
                Facilitator::new(url, Duration::from_secs(cfg.settle_timeout_secs))
                    .map_err(crate::Error::Internal)?,
            ),
            None => None,
        };
        if sender.is_none() && facilitator.is_none() {
            warn!(target: "chainfront::x402", "no relayer key (CHAINFRONT_RELAYER_KEY) and no x402.facilitator_url: paid routes answer 503");
        }
        let v1_network = cfg.v1_network.clone().unwrap_or_else(|| {
            proto::v1_network_name(chain_id)
                .map(str::to_owned)
                .unwrap_or_else(|| proto::caip2(chain_id))
        });
        info!(target: "chainfront::x402", token = %token, name = %domain.name, version = %domain.version,
            relayer = ?sender.as_ref().map(|s| s.address()), facilitator = facilitator.is_some(), "x402 ready");
        Ok(Some(Self {
            cfg,
            domain,
            v1_network,
            treasury: home.deployment.treasury,
            marketplace: home.deployment.vm_marketplace,
            rpc,
            sender,
            facilitator,
            claims: Claims::new(redis, ChainKeys::new(chain_id)),
            ledger,
        }))
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(self.cfg.poll_interval_ms)
    }

    /// The configuration in force.
    pub fn config(&self) -> &X402Config {
        &self.cfg
    }

    /// The token's EIP-712 domain.
    pub fn domain(&self) -> &TokenDomain {
        &self.domain
    }

    /// Where transfers are paid.
    pub fn treasury(&self) -> Address {
        self.treasury
    }

    /// The VM marketplace (payee of gas-free purchases).
    pub fn marketplace(&self) -> Address {
        self.marketplace
    }

    /// The relayer's address, when settling locally.
    pub fn relayer(&self) -> Option<Address> {
        self.sender.as_ref().map(|s| s.address())
    }

    /// The failover RPC x402 reads the chain through.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The v1 network name of the home chain.
    pub fn v1_network(&self) -> &str {
        &self.v1_network
    }

    /// A USDC price as base units (6 decimals).
    pub fn base_units(price: Decimal) -> Option<U256> {
        let scaled = price.checked_mul(Decimal::new(1_000_000, 0))?;
        if scaled.is_sign_negative() || scaled.fract() != Decimal::ZERO {
            return None;
        }
        scaled.trunc().to_string().parse().ok()
    }

    /// An offer to pay `amount` to the treasury for a service (a standard
    /// x402 payment; the transfer is never a deposit).
    pub fn transfer_offer(
        &self,
        amount: U256,
        resource: Resource,
        route: &'static str,
        replayable: bool,
    ) -> Offer {
        Offer {
            expected: Expected {
                primary: Primary::Transfer,
                pay_to: self.treasury,
                amount,
                exact: false,
                v1_network: self.v1_network.clone(),
            },
            action: Action::Transfer,
            resource,
            route,
            replayable,
            purpose: Purpose::Service,
        }
    }

    /// An offer to pay exactly `amount` to the treasury, credited to the
    /// payer's Compute balance once settled (credits, or a job paid per
    /// call). Exactly: an authorization for more than the ledger can hold
    /// is refused before anything is sent.
    pub fn credit_offer(&self, amount: Usd, resource: Resource, route: &'static str) -> Offer {
        Offer {
            expected: Expected {
                primary: Primary::Transfer,
                pay_to: self.treasury,
                amount: U256::from(amount.0),
                exact: true,
                v1_network: self.v1_network.clone(),
            },
            action: Action::Transfer,
            resource,
            route,
            replayable: true,
            purpose: Purpose::Credit,
        }
    }

    /// An offer to buy a VM gas-free: a `ReceiveWithAuthorization` of exactly
    /// the tier price × days to the marketplace.
    pub fn vm_offer(&self, tier: u8, days: u16, total: U256, resource: Resource) -> Offer {
        Offer {
            expected: Expected {
                primary: Primary::Receive,
                pay_to: self.marketplace,
                amount: total,
                exact: true,
                v1_network: self.v1_network.clone(),
            },
            action: Action::PurchaseVm {
                marketplace: self.marketplace,
                tier,
                days,
            },
            resource,
            route: "/x402/purchase-compute",
            replayable: true,
            purpose: Purpose::Service,
        }
    }

    fn requirements(&self, offer: &Offer) -> (Requirements, RequirementsV1) {
        let mut extra = serde_json::Map::new();
        extra.insert("name".into(), self.domain.name.clone().into());
        extra.insert("version".into(), self.domain.version.clone().into());
        if offer.expected.primary == Primary::Receive {
            extra.insert("primaryType".into(), Primary::Receive.name().into());
        }
        let v2 = Requirements {
            scheme: proto::SCHEME_EXACT.into(),
            network: proto::caip2(self.domain.chain_id),
            amount: offer.expected.amount.to_string(),
            asset: self.domain.token.to_string(),
            pay_to: offer.expected.pay_to.to_string(),
            max_timeout_seconds: self.cfg.max_timeout_seconds,
            extra: extra.clone(),
        };
        let v1 = RequirementsV1 {
            scheme: proto::SCHEME_EXACT.into(),
            network: self.v1_network.clone(),
            max_amount_required: offer.expected.amount.to_string(),
            resource: offer.resource.url.clone(),
            description: offer.resource.description.clone(),
            mime_type: offer.resource.mime_type.clone(),
            pay_to: offer.expected.pay_to.to_string(),
            max_timeout_seconds: self.cfg.max_timeout_seconds,
            asset: self.domain.token.to_string(),
            output_schema: None,
            extra,
        };
        (v2, v1)
    }

    /// The 402 answer for `offer`, with `message` (and an x402 `code`).
    pub fn challenge(&self, offer: &Offer, message: &str, code: Option<&str>) -> Challenge {
        let (v2, v1) = self.requirements(offer);
        let required = PaymentRequired {
            x402_version: 2,
            error: message.to_owned(),
            resource: offer.resource.clone(),
            accepts: vec![v2],
        };
        let mut body = serde_json::to_value(PaymentRequiredV1 {
            x402_version: 1,
            error: message.to_owned(),
            accepts: vec![v1],
        })
        .unwrap_or_else(|_| json!({ "error": message }));
        if let Some(c) = code {
            body["reason"] = c.into();
        }
        Challenge {
            message: message.to_owned(),
            payment_required: proto::encode_header(&required),
            body,
            payment_response: None,
        }
    }

    /// 402 for a missing payment, saying `message`.
    pub fn required_with(&self, offer: &Offer, message: &str) -> X402Error {
        X402Error::Required(Box::new(self.challenge(offer, message, None)))
    }

    /// 402 for a missing payment.
    pub fn required(&self, offer: &Offer) -> X402Error {
        X402Error::Required(Box::new(self.challenge(
            offer,
            "payment required: pay with x402 (PAYMENT-SIGNATURE, or X-PAYMENT for version 1) using one of `accepts`",
            None,
        )))
    }

    fn refused(&self, offer: &Offer, r: &Refusal) -> X402Error {
        X402Error::Required(Box::new(self.challenge(
            offer,
            &format!("payment refused ({}): {}", r.code, r.message),
            Some(r.code),
        )))
    }

    /// A refusal after settlement was attempted: the failure also goes out as
    /// the payment response.
    fn settle_failed(
        &self,
        offer: &Offer,
        r: &Refusal,
        version: u8,
        network: &str,
        payer: Address,
        tx: Option<B256>,
    ) -> X402Error {
        let mut c = self.challenge(
            offer,
            &format!("payment not settled ({}): {}", r.code, r.message),
            Some(r.code),
        );
        let response = SettleResponse {
            success: false,
            error_reason: Some(r.code.to_owned()),
            transaction: tx.map(|t| t.to_string()).unwrap_or_default(),
            network: network.to_owned(),
            payer: Some(payer.to_string()),
        };
        c.payment_response = Some((
            response_header_name(version),
            proto::encode_header(&response),
        ));
        X402Error::Required(Box::new(c))
    }

    /// Verifies, claims and settles the payment in `headers` for `offer`;
    /// `request` is a hash of the request (method, path, body), so a replay
    /// by `Idempotency-Key` only answers the same request.
    pub async fn pay(&self, headers: &HeaderMap, request: &str, offer: &Offer) -> Result<Outcome> {
        let Some(raw) = payment_header(headers) else {
            return Err(self.required(offer));
        };
        let payment =
            proto::decode_payment(raw).map_err(|e| X402Error::BadRequest(e.to_string()))?;
        if self.sender.is_none() && self.facilitator.is_none() {
            return Err(X402Error::Unavailable(
                "x402 settlement is not configured on this node (no relayer key, no facilitator)"
                    .into(),
            ));
        }
        let payload_hash = hash_hex(payment.raw.to_string().as_bytes());
        let a = &payment.payload.authorization;
        let key = self.claims.key(self.domain.token, a.from, a.nonce);
        // The very payment claimed before (its settlement unknown, or being
        // replayed) is judged as of its claim: a settlement that was sent
        // before `validBefore` is reconciled even after it. Everything else,
        // the signature included, is checked again.
        let now = self
            .claims
            .claimed_at(&key, &payload_hash)
            .await?
            .unwrap_or_else(unix_now);
        let checked = verify::check_local(
            &self.domain,
            &offer.expected,
            &payment,
            now,
            EXPIRY_MARGIN_SECS,
        )
        .map_err(|r| self.refused(offer, &r))?;
        let idempotency = headers
            .get(IDEMPOTENCY_KEY)
            .map(|v| hash_hex(v.as_bytes()))
            .unwrap_or_default();
        let fp = Fingerprint {
            payload: payload_hash,
            idempotency,
            request: request.to_owned(),
        };
        let valid_for = checked
            .authorization
            .valid_before
            .saturating_sub(U256::from(unix_now()))
            .min(U256::from(30 * 86_400u64))
            .to::<u64>();
        let ttl = Duration::from_secs(valid_for + 86_400);
        let lease = Duration::from_secs(self.cfg.settle_timeout_secs + 30);
        let ctx = Ctx {
            key,
            offer,
            payment: &payment,
            checked: &checked,
        };
        match self.claims.take(&ctx.key, &fp, lease, ttl).await? {
            Taken::Won => self.first(&ctx).await,
            Taken::Resume(state) => self.resume(&ctx, state).await,
            Taken::Busy(state, fields) => self.busy(&ctx, state, &fields, &fp).await,
        }
    }

    async fn first(&self, ctx: &Ctx<'_>) -> Result<Outcome> {
        let from_block = match self.chain_checks(ctx.checked).await {
            Ok(b) => b,
            Err(e) => {
                self.claims.release(&ctx.key).await?;
                return Err(match e {
                    Checks::Refused(r) => self.refused(ctx.offer, &r),
                    Checks::Unavailable(m) => X402Error::Unavailable(m),
                });
            }
        };
        self.claims
            .set(
                &ctx.key,
                State::Settling,
                &[("from_block", from_block.to_string())],
            )
            .await?;
        self.execute(ctx, from_block, false).await
    }

    /// Nonce unused on chain, balance, contract-wallet signature. Returns
    /// the head block (where a later search for the authorization's use starts).
    async fn chain_checks(&self, c: &verify::Checked) -> Result<u64, Checks> {
        let token = self.domain.token;
        let (from, nonce) = (c.payer, c.authorization.nonce);
        let state_call = MockUSDC::authorizationStateCall {
            authorizer: from,
            nonce,
        };
        let balance_call = MockUSDC::balanceOfCall { account: from };
        let (used, balance, head) = tokio::join!(
            self.eth_call(token, state_call),
            self.eth_call(token, balance_call),
            self.rpc.call(
                "eth_blockNumber",
                |p| async move { p.get_block_number().await }
            ),
        );
        let unavailable = |e: String| Checks::Unavailable(format!("chain unavailable: {e}"));
        if used.map_err(unavailable)? {
            return Err(Checks::Refused(Refusal::new(
                "invalid_exact_evm_nonce_already_used",
                "this authorization's nonce was already used (or canceled) on chain; sign a new one",
            )));
        }
        let balance = balance.map_err(unavailable)?;
        if balance < c.authorization.value {
            return Err(Checks::Refused(Refusal::new(
                "invalid_exact_evm_insufficient_balance",
                format!(
                    "the payer holds {balance} USDC base units, less than the {} authorized",
                    c.authorization.value
                ),
            )));
        }
        let head = head.map_err(|e| unavailable(e.to_string()))?;
        if let verify::SignatureCheck::Contract {
            signature,
            ecdsa_failure,
        } = &c.signature
        {
            let code = self
                .rpc
                .call("eth_getCode", |p| async move { p.get_code_at(from).await })
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            if code.is_empty() {
                return Err(Checks::Refused(Refusal::new(
                    "invalid_exact_evm_payload_signature",
                    ecdsa_failure.clone(),
                )));
            }
            let approved = crate::auth::eip1271::is_valid_signature(
                &self.rpc,
                from,
                c.digest,
                signature,
                self.cfg.eip1271_gas,
            )
            .await
            .map_err(|e| Checks::Unavailable(e.to_string()))?;
            if !approved {
                return Err(Checks::Refused(Refusal::new(
                    "invalid_exact_evm_payload_signature",
                    format!(
                        "{from} is a contract wallet and its EIP-1271 isValidSignature does not approve this signature (within {} gas)",
                        self.cfg.eip1271_gas
                    ),
                )));
            }
        }
        Ok(head.saturating_sub(1))
    }

    async fn eth_call<C: SolCall + Clone>(
        &self,
        to: Address,
        call: C,
    ) -> std::result::Result<C::Return, String> {
        let tx = TransactionRequest::default()
            .with_to(to)
            .with_input(call.abi_encode());
        let out = self
            .rpc
            .call("eth_call", |p| {
                let tx = tx.clone();
                async move { p.call(tx).await }
            })
            .await
            .map_err(|e| e.to_string())?;
        C::abi_decode_returns(&out).map_err(|e| e.to_string())
    }

    /// Sends (or resumes) the settlement and turns its outcome into an answer.
    async fn execute(&self, ctx: &Ctx<'_>, from_block: u64, resuming: bool) -> Result<Outcome> {
        if let (Some(f), Action::Transfer) = (&self.facilitator, ctx.offer.action) {
            return self.execute_facilitator(ctx, f, from_block, resuming).await;
        }
        let Some(sender) = &self.sender else {
            self.claims.release(&ctx.key).await?;
            return Err(X402Error::Unavailable(
                "this payment needs the node's relayer (CHAINFRONT_RELAYER_KEY), which is not configured"
                    .into(),
            ));
        };
        let tx = match settle::transaction(self.domain.token, ctx.offer.action, ctx.checked) {
            Ok(tx) => tx,
            Err(r) => {
                self.claims.release(&ctx.key).await?;
                return Err(self.refused(ctx.offer, &r));
            }
        };
        let id = settle::send_id(
            self.domain.token,
            ctx.checked.payer,
            ctx.checked.authorization.nonce,
            ctx.offer.purpose == Purpose::Credit,
        );
        match settle::send(sender, &id, tx).await {
            Sent::Done(receipt) => self.settled(ctx, *receipt).await,
            Sent::Failed(r) => {
                self.claims.release(&ctx.key).await?;
                warn!(target: "chainfront::x402", route = ctx.offer.route, payer = %ctx.checked.payer, code = r.code, "settlement refused");
                Err(self.failed(ctx, &r, None))
            }
            Sent::AlreadyUsed(r) => self.used_elsewhere(ctx, from_block, r).await,
            Sent::Unknown { hash, cause } => self.unknown(ctx, hash, &cause).await,
        }
    }

    async fn execute_facilitator(
        &self,
        ctx: &Ctx<'_>,
        f: &Facilitator,
        from_block: u64,
        resuming: bool,
    ) -> Result<Outcome> {
        if resuming {
            let used = self.find_settlement(ctx, from_block).await;
            if let Some(outcome) = used {
                return outcome;
            }
        }
        let requirements = {
            let (v2, v1) = self.requirements(ctx.offer);
            if ctx.payment.version == 1 {
                serde_json::to_value(v1)
            } else {
                serde_json::to_value(v2)
            }
            .unwrap_or(Value::Null)
        };
        let v = ctx.payment.version;
        let verdict = f.verify(v, &ctx.payment.raw, &requirements).await;
        match verdict {
            Ok(a) if a.is_valid => {}
            Ok(a) => {
                self.claims.release(&ctx.key).await?;
                let r = Refusal::new(
                    "facilitator_refused",
                    format!(
                        "the facilitator refuses the payment: {} {}",
                        a.invalid_reason.unwrap_or_default(),
                        a.invalid_message.unwrap_or_default()
                    )
                    .trim_end()
                    .to_owned(),
                );
                return Err(self.refused(ctx.offer, &r));
            }
            Err(e) => {
                self.claims.release(&ctx.key).await?;
                return Err(X402Error::Unavailable(e));
            }
        }
        let answer = match f.settle(v, &ctx.payment.raw, &requirements).await {
            Ok(a) => a,
            Err(e) => return self.unknown(ctx, None, &e).await,
        };
        if !answer.success {
            self.claims.release(&ctx.key).await?;
            let r = Refusal::new(
                "facilitator_settlement_failed",
                format!(
                    "the facilitator did not settle: {} {}",
                    answer.error_reason.unwrap_or_default(),
                    answer.error_message.unwrap_or_default()
                )
                .trim_end()
                .to_owned(),
            );
            return Err(self.failed(ctx, &r, None));
        }
        let Some(hash) = answer
            .transaction
            .as_deref()
            .and_then(|t| t.parse::<B256>().ok())
        else {
            return self
                .unknown(
                    ctx,
                    None,
                    "the facilitator reported success without a transaction hash",
                )
                .await;
        };
        // Trust the chain, not the facilitator.
        let timeout = Duration::from_secs(self.cfg.settle_timeout_secs);
        match settle::confirmed_receipt(
            &self.rpc,
            hash,
            self.cfg.confirmations,
            timeout,
            self.poll(),
        )
        .await
        {
            Ok(Some(receipt)) if self.receipt_pays(ctx, &receipt) => {
                self.settled(ctx, receipt).await
            }
            Ok(Some(_)) => {
                // Mined, but not this payment: did anything use the authorization?
                if let Some(outcome) = self.find_settlement(ctx, from_block).await {
                    return outcome;
                }
                self.claims.release(&ctx.key).await?;
                let r = Refusal::new(
                    "facilitator_settlement_unproven",
                    format!(
                        "the facilitator reported transaction {hash}, which does not carry this payment; nothing was transferred"
                    ),
                );
                Err(self.failed(ctx, &r, Some(hash)))
            }
            Ok(None) => {
                self.unknown(
                    ctx,
                    Some(hash),
                    "the facilitator's transaction is not on chain yet",
                )
                .await
            }
            Err(e) => self.unknown(ctx, Some(hash), &e).await,
        }
    }

    /// Whether `receipt` is a successful execution of this very payment.
    fn receipt_pays(&self, ctx: &Ctx<'_>, receipt: &TransactionReceipt) -> bool {
        let a = &ctx.checked.authorization;
        receipt.status()
            && settle::used_authorization(receipt, self.domain.token, a.from, a.nonce)
            && match ctx.offer.action {
                Action::Transfer => {
                    settle::transfer_log(receipt, self.domain.token, a.from, a.to, a.value)
                        .is_some()
                }
                Action::PurchaseVm { .. } => vm_purchase(receipt, self.marketplace, a.from),
            }
    }

    async fn used_elsewhere(&self, ctx: &Ctx<'_>, from_block: u64, r: Refusal) -> Result<Outcome> {
        if let Some(outcome) = self.find_settlement(ctx, from_block).await {
            return outcome;
        }
        self.claims.release(&ctx.key).await?;
        Err(self.failed(ctx, &r, None))
    }

    /// Looks for a transaction that used the authorization and pays this
    /// payment; if found, the payment is settled by it.
    async fn find_settlement(&self, ctx: &Ctx<'_>, from_block: u64) -> Option<Result<Outcome>> {
        let a = &ctx.checked.authorization;
        let tx = settle::find_authorization_use(
            &self.rpc,
            self.domain.token,
            a.from,
            a.nonce,
            from_block,
        )
        .await
        .ok()??;
        let timeout = Duration::from_secs(self.cfg.settle_timeout_secs);
        let receipt =
            settle::confirmed_receipt(&self.rpc, tx, self.cfg.confirmations, timeout, self.poll())
                .await
                .ok()??;
        if !self.receipt_pays(ctx, &receipt) {
            return None;
        }
        info!(target: "chainfront::x402", tx = %tx, payer = %a.from, "authorization found used on chain; counted as this payment's settlement");
        Some(self.settled(ctx, receipt).await)
    }

    async fn unknown(&self, ctx: &Ctx<'_>, hash: Option<B256>, cause: &str) -> Result<Outcome> {
        let mut fields = vec![];
        if let Some(h) = hash {
            fields.push(("tx", h.to_string()));
        }
        self.claims.set(&ctx.key, State::Unknown, &fields).await?;
        warn!(target: "chainfront::x402", route = ctx.offer.route, payer = %ctx.checked.payer, tx = ?hash, cause, "settlement outcome unknown; kept for reconciliation");
        let r = Refusal::new(
            "settlement_pending",
            "the settlement was sent but is not confirmed yet; send the same payment again to resume it (it will not be charged twice)",
        );
        Err(self.failed(ctx, &r, hash))
    }

    fn failed(&self, ctx: &Ctx<'_>, r: &Refusal, tx: Option<B256>) -> X402Error {
        self.settle_failed(
            ctx.offer,
            r,
            ctx.payment.version,
            &ctx.payment.network,
            ctx.checked.payer,
            tx,
        )
    }

    /// Records a confirmed settlement and hands the request over to be served.
    async fn settled(&self, ctx: &Ctx<'_>, receipt: TransactionReceipt) -> Result<Outcome> {
        let a = &ctx.checked.authorization;
        let tx = receipt.transaction_hash;
        let block = receipt.block_number.unwrap_or_default();
        let mut fields = vec![("tx", tx.to_string()), ("block", block.to_string())];
        let mut credited = None;
        if ctx.offer.action == Action::Transfer
            && let Some(log) =
                settle::transfer_log(&receipt, self.domain.token, a.from, a.to, a.value)
        {
            fields.push(("log", log.to_string()));
            let credit = ctx.offer.purpose == Purpose::Credit;
            self.claims
                .record_payment(
                    tx,
                    log,
                    &json!({
                        "payer": lower(a.from),
                        "amount": a.value.to_string(),
                        "to": lower(a.to),
                        "route": ctx.offer.route,
                        "purpose": if credit { "credit" } else { "service" },
                    }),
                )
                .await?;
            // The transfer is a USDC Transfer to the treasury, which the
            // indexer also sees, under the deposit key every path shares.
            let deposit = DepositRef {
                chain_id: self.domain.chain_id,
                tx,
                log_index: log,
                block,
            };
            let amount = u64::try_from(a.value)
                .ok()
                .filter(|v| *v <= crate::ledger::MAX_UNITS)
                .map(Usd)
                .ok_or_else(|| {
                    X402Error::Unavailable("the payment is too large for the ledger".into())
                })?;
            if credit {
                // Credited as the deposit it is: whichever path (this one,
                // the reconciler, `POST /v1/deposit`) comes second is a no-op.
                let outcome = self
                    .ledger
                    .credit_deposit(&deposit, a.from, amount, Source::X402)
                    .await
                    .map_err(ledger_unavailable)?;
                credited = Some(Credited {
                    deposit,
                    amount,
                    outcome,
                });
            } else {
                // Paid for a service: consumed, never credited by any path.
                self.ledger
                    .consume_deposit(
                        &deposit,
                        a.from,
                        amount,
                        &format!("x402:{}", ctx.offer.route),
                    )
                    .await
                    .map_err(ledger_unavailable)?;
            }
        }
        self.claims.set(&ctx.key, State::Settled, &fields).await?;
        info!(target: "chainfront::x402", route = ctx.offer.route, payer = %a.from, value = %a.value, tx = %tx, block, "payment settled");
        Ok(Outcome::Paid(Box::new(Paid {
            payer: a.from,
            value: a.value,
            receipt: Box::new(receipt),
            version: ctx.payment.version,
            network: ctx.payment.network.clone(),
            credited,
            claim: ctx.key.clone(),
            replayable: ctx.offer.replayable,
        })))
    }

    async fn resume(&self, ctx: &Ctx<'_>, state: State) -> Result<Outcome> {
        let fields = self.claims.fields(&ctx.key).await?;
        let from_block = fields
            .get("from_block")
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        match state {
            State::Settled | State::Unserved | State::Served => {
                // Settled before; its request did not get the answer.
                let Some(hash) = fields.get("tx").and_then(|t| t.parse::<B256>().ok()) else {
                    return self.execute(ctx, from_block, true).await;
                };
                let timeout = Duration::from_secs(self.cfg.settle_timeout_secs);
                match settle::confirmed_receipt(
                    &self.rpc,
                    hash,
                    self.cfg.confirmations,
                    timeout,
                    self.poll(),
                )
                .await
                {
                    Ok(Some(r)) if self.receipt_pays(ctx, &r) => self.settled(ctx, r).await,
                    // Reorged away: resume the settlement itself.
                    Ok(_) => self.execute(ctx, from_block, true).await,
                    Err(e) => self.unknown(ctx, Some(hash), &e).await,
                }
            }
            State::Unknown | State::Settling => self.execute(ctx, from_block, true).await,
        }
    }

    async fn busy(
        &self,
        ctx: &Ctx<'_>,
        state: State,
        fields: &std::collections::HashMap<String, String>,
        fp: &Fingerprint,
    ) -> Result<Outcome> {
        let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
        let same_payment = field("payload") == fp.payload;
        let tx = fields.get("tx").cloned();
        if same_payment
            && !fp.idempotency.is_empty()
            && field("idem") == fp.idempotency
            && field("req") == fp.request
        {
            if !ctx.offer.replayable {
                return Err(X402Error::Conflict(
                    "this payment was already used for this request, and its answer carried credentials, which are not kept for replays; fetch them from /credentials/{tokenId} with your signature".into(),
                ));
            }
            return self.await_answer(&ctx.key).await;
        }
        if same_payment {
            return Err(X402Error::Conflict(match state {
                State::Settling | State::Settled => "this payment is being settled for another request; one payment serves one request".to_owned(),
                _ => format!(
                    "this payment was already used for another request{}; sign a new one (or resend with the first request's Idempotency-Key to get its answer again)",
                    tx.map(|t| format!(" (settled in {t})")).unwrap_or_default()
                ),
            }));
        }
        match state {
            State::Settling | State::Unknown => Err(X402Error::Conflict(
                "another payment with this authorization nonce is being settled".into(),
            )),
            _ => Err(self.refused(
                ctx.offer,
                &Refusal::new(
                    "invalid_exact_evm_nonce_already_used",
                    "this authorization's nonce was already used; sign a new one",
                ),
            )),
        }
    }

    /// Waits for the first request's answer and replays it.
    async fn await_answer(&self, key: &str) -> Result<Outcome> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.cfg.settle_timeout_secs + 10);
        loop {
            let fields = self.claims.fields(key).await?;
            let state = fields.get("state").map(String::as_str);
            match state {
                None => {
                    return Err(X402Error::Conflict(
                        "the first request with this payment was refused; send it again to see why"
                            .into(),
                    ));
                }
                Some("served") => {
                    return match fields
                        .get("answer")
                        .and_then(|a| serde_json::from_str::<Answer>(a).ok())
                    {
                        Some(answer) => Ok(Outcome::Replay(answer)),
                        None => Err(X402Error::Conflict(
                            "this payment was used for this request, but its answer was not kept"
                                .into(),
                        )),
                    };
                }
                Some("unknown") | Some("unserved") => {
                    return Err(X402Error::Conflict(
                        "the first request with this payment did not complete; send the same payment again (without waiting for it) to resume"
                            .into(),
                    ));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(X402Error::Conflict(
                    "the first request with this payment is still being settled; retry shortly"
                        .into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// [`X402::pay`], run as its own task: a settlement, once started,
    /// finishes (and is recorded, credited or consumed) even if the client
    /// goes away or the request times out.
    pub async fn pay_detached(
        self: &Arc<Self>,
        headers: &HeaderMap,
        request: &str,
        offer: &Offer,
    ) -> Result<Outcome> {
        let (x, headers, request, offer) = (
            self.clone(),
            headers.clone(),
            request.to_owned(),
            offer.clone(),
        );
        tokio::spawn(async move { x.pay(&headers, &request, &offer).await })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(target: "chainfront::x402", error = %e, "settlement task failed");
                Err(X402Error::Unavailable(
                    "settlement failed; send the same payment again to resume it".into(),
                ))
            })
    }

    /// Stores `value` under `field` of `paid`'s claim unless something is
    /// there already, and returns what is there: a value the first request
    /// with this payment chose (a job id) and every resumed one reuses.
    pub async fn remember(&self, paid: &Paid, field: &str, value: &str) -> Result<String> {
        Ok(self.claims.set_once(&paid.claim, field, value).await?)
    }

    /// Marks `paid` as served; `answer` is kept for `Idempotency-Key`
    /// replays when the offer allows it.
    pub async fn finish(&self, paid: &Paid, answer: Option<&Answer>) -> Result<()> {
        let mut fields = vec![];
        if paid.replayable
            && let Some(a) = answer
        {
            let json = serde_json::to_string(a).unwrap_or_default();
            if json.len() <= MAX_REPLAY_BYTES {
                fields.push(("answer", json));
            }
        }
        self.claims.set(&paid.claim, State::Served, &fields).await?;
        Ok(())
    }

    /// Marks `paid` as settled but not served (its request failed): the same
    /// payment sent again is served without another transfer.
    pub async fn unserved(&self, paid: &Paid) -> Result<()> {
        self.claims.set(&paid.claim, State::Unserved, &[]).await?;
        Ok(())
    }

    /// The x402 payment recorded for a USDC transfer log, if it was one
    /// (the deposit path skips these).
    pub async fn payment_for_log(&self, tx: B256, log_index: u64) -> Result<Option<Value>> {
        Ok(self
            .claims
            .payment(tx, log_index)
            .await?
            .and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// What this node accepts, like a facilitator's `/supported`.
    pub fn supported(&self) -> Value {
        let extra = json!({
            "name": self.domain.name,
            "version": self.domain.version,
            "asset": self.domain.token.to_string(),
        });
        let signers: Vec<String> = self.relayer().map(|a| a.to_string()).into_iter().collect();
        json!({
            "kinds": [
                {"x402Version": 2, "scheme": proto::SCHEME_EXACT, "network": proto::caip2(self.domain.chain_id), "extra": extra},
                {"x402Version": 1, "scheme": proto::SCHEME_EXACT, "network": self.v1_network, "extra": extra},
            ],
            "extensions": [],
            "signers": { "eip155:*": signers },
            "settlement": if self.facilitator.is_some() { "facilitator" } else if self.sender.is_some() { "relayer" } else { "none" },
            "payTo": self.treasury.to_string(),
            "confirmations": self.cfg.confirmations,
        })
    }
}

/// Whether the USDC transfer at (`tx`, `log_index`) on `keys`' chain is an
/// x402 payment (of any purpose): either the node's relayer signed `tx` for
/// an x402 settlement (recorded before the broadcast, so this holds before
/// the transfer can even be mined), or an x402 payment was recorded for the
/// log (every settlement, the facilitator's too, once confirmed). Whether
/// the ledger may credit it is the ledger's decision: payments for a service
/// never, credit purchases once (see `docs/x402.md`).
pub async fn is_payment(
    redis: &RedisConn,
    keys: &ChainKeys,
    tx: B256,
    log_index: u64,
) -> redis::RedisResult<bool> {
    let mut c = redis.clone();
    let (sent_as, recorded): (Option<String>, bool) = redis::pipe()
        .get(keys.tx_sent(tx))
        .hexists(keys.x402_payments(), ChainKeys::deposit_id(tx, log_index))
        .query_async(&mut c)
        .await?;
    Ok(recorded || sent_as.is_some_and(|id| id.starts_with(settle::SEND_ID_PREFIX)))
}

/// Whether `tx` on chain `chain_id` is a transaction this node's relayer
/// signed as an x402 payment for a service (so its transfer is never a
/// deposit). The sender records it before the broadcast: this holds before
/// the transfer can be mined.
pub async fn sent_for_a_service(
    redis: &RedisConn,
    chain_id: u64,
    tx: B256,
) -> redis::RedisResult<bool> {
    let mut c = redis.clone();
    let sent_as: Option<String> = c.get(ChainKeys::new(chain_id).tx_sent(tx)).await?;
    Ok(sent_as.is_some_and(|id| settle::never_a_deposit(&id)))
}

fn ledger_unavailable(e: crate::ledger::LedgerError) -> X402Error {
    tracing::error!(target: "chainfront::x402", error = %e, "ledger write failed after settlement; the same payment resumes it");
    X402Error::Unavailable("state store unavailable; retry shortly".into())
}

/// Whether `receipt` carries the marketplace's `VMPurchased` for `buyer`.
pub fn vm_purchase(receipt: &TransactionReceipt, marketplace: Address, buyer: Address) -> bool {
    purchased_token(receipt, marketplace, buyer).is_some()
}

/// The token id the marketplace minted to `buyer` in `receipt`.
pub fn purchased_token(
    receipt: &TransactionReceipt,
    marketplace: Address,
    buyer: Address,
) -> Option<VMMarketplace::VMPurchased> {
    use alloy::sol_types::SolEvent;
    receipt.inner.logs().iter().find_map(|l| {
        if l.address() != marketplace {
            return None;
        }
        let ev = VMMarketplace::VMPurchased::decode_log(&l.inner).ok()?;
        (ev.buyer == buyer).then_some(ev.data)
    })
}

/// One request's view of its payment.
struct Ctx<'a> {
    key: String,
    offer: &'a Offer,
    payment: &'a proto::Payment,
    checked: &'a verify::Checked,
}

enum Checks {
    Refused(Refusal),
    Unavailable(String),
}

/// The payment header of a request: `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1).
pub fn payment_header(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(proto::PAYMENT_SIGNATURE)
        .or_else(|| headers.get(proto::X_PAYMENT))
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty())
}

/// Hex SHA-256 of `data`.
pub fn hash_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the token's `name()` and `version()` and checks the domain they
/// make against its `DOMAIN_SEPARATOR()`. `None` (logged) when the token
/// has no EIP-3009 domain to sign over.
async fn read_domain(
    rpc: &Rpc,
    token: Address,
    chain_id: u64,
) -> crate::Result<Option<TokenDomain>> {
    /// `Ok(None)` when the contract has no such function (an answer, not an outage).
    async fn call<C: SolCall>(
        rpc: &Rpc,
        token: Address,
        call: C,
    ) -> crate::Result<Option<C::Return>> {
        let tx = TransactionRequest::default()
            .with_to(token)
            .with_input(call.abi_encode());
        let out = rpc
            .call("eth_call", |p| {
                let tx = tx.clone();
                async move { p.call(tx).await }
            })
            .await;
        match out {
            Ok(bytes) => Ok(C::abi_decode_returns(&bytes).ok()),
            Err(chainfront_indexer::Error::Rpc(m)) if m.contains("revert") => Ok(None),
            Err(e) => Err(crate::Error::chain(format!(
                "reading the USDC contract's EIP-712 domain: {e}"
            ))),
        }
    }
    let name = call(rpc, token, MockUSDC::nameCall {}).await?;
    let version = call(rpc, token, MockUSDC::versionCall {}).await?;
    let separator = call(rpc, token, MockUSDC::DOMAIN_SEPARATORCall {}).await?;
    let (Some(name), Some(version)) = (name, version) else {
        warn!(target: "chainfront::x402", token = %token, "the USDC contract has no name()/version(): x402 is off");
        return Ok(None);
    };
    let domain = TokenDomain::new(&name, &version, chain_id, token);
    if let Some(sep) = separator
        && sep != domain.separator()
    {
        warn!(target: "chainfront::x402", token = %token, "the token's DOMAIN_SEPARATOR() is not the one its name()/version() make: x402 is off");
        return Ok(None);
    }
    Ok(Some(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_become_exact_base_units() {
        let units = |s: &str| X402::base_units(s.parse().expect("decimal"));
        assert_eq!(units("0.01"), Some(U256::from(10_000)));
        assert_eq!(units("1000"), Some(U256::from(1_000_000_000u64)));
        assert_eq!(units("0.000001"), Some(U256::from(1)));
        assert_eq!(units("0.0000001"), None, "below one base unit");
        assert_eq!(units("-1"), None);
    }

    #[test]
    fn the_payment_header_is_v2_first_then_v1() {
        let mut h = HeaderMap::new();
        assert!(payment_header(&h).is_none());
        h.insert(proto::X_PAYMENT, "v1".parse().expect("value"));
        assert_eq!(payment_header(&h), Some(&b"v1"[..]));
        h.insert(proto::PAYMENT_SIGNATURE, "v2".parse().expect("value"));
        assert_eq!(payment_header(&h), Some(&b"v2"[..]));
    }
}
