//! `POST /v1/submissions` in two steps, so the API can count the request
//! against the proven wallet's rate limit in between:
//!
//! 1. [`Markets::prepare`]: the body's fields, the market exists, and the
//!    signature of
//!    `{market_id}:{predicted_text or 'null'}:{initial_stake_amount}:{transaction_hash}`
//!    by `creator_wallet` (EIP-191 `personal_sign` or a raw signature of
//!    keccak256(message), checked by `crate::auth`);
//! 2. [`Markets::commit`]: the payment transaction on chain (`payment`); for
//!    a plain transfer the market rules (open at the head block's time, one
//!    original, competitor and null need an original — a `submit` call met
//!    them on chain already); then the atomic claim of its hash (`claims`).
//!    A `submit` call is answered with the indexed submission (or 202 until
//!    indexed); a plain transfer is queued for the operator's
//!    `recordSubmission` and answered 202.

use alloy::primitives::{Address, B256, U256};
use serde_json::{Map, Value};

use super::claims::{Claim, ClaimOutcome, ClaimStatus};
use super::fees::{self, Currency, FeeQuote};
use super::index::{MarketId, MarketStatus, SubmissionType, market_uuid, parse_market_id};
use super::payment::{Expected, Paid};
use super::view::{SubmissionView, iso_millis};
use super::{Markets, MarketsError, Result};
use crate::auth::AuthError;

/// The contract's limit on predicted text, in bytes.
pub const MAX_TEXT_BYTES: usize = 1_000;

/// The documented signature message.
pub fn signature_message(
    market_id: &str,
    predicted_text: Option<&str>,
    stake: &str,
    tx: &str,
) -> String {
    let text = predicted_text.filter(|t| !t.is_empty()).unwrap_or("null");
    format!("{market_id}:{text}:{stake}:{tx}")
}

/// A well-formed request (step 1 before the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRequest {
    /// The market id as the client wrote it (signed as such).
    pub market_id_text: String,
    /// The market.
    pub market_id: MarketId,
    /// `creator_wallet`.
    pub creator: Address,
    /// The prediction (`None` for null submissions).
    pub predicted_text: Option<String>,
    /// The kind.
    pub kind: SubmissionType,
    /// The stake as the client wrote it (signed as such).
    pub stake_text: String,
    /// The currency.
    pub currency: Currency,
    /// The transaction hash as the client wrote it (signed as such).
    pub tx_text: String,
    /// The payment transaction.
    pub tx: B256,
    /// The signature (hex, `0x` optional).
    pub signature: String,
}

const FIELDS: [&str; 8] = [
    "market_id",
    "creator_wallet",
    "predicted_text",
    "submission_type",
    "initial_stake_amount",
    "currency",
    "transaction_hash",
    "signature",
];

pub(super) fn string_field<'a>(
    body: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str> {
    match body.get(name) {
        None | Some(Value::Null) => Err(MarketsError::MissingField(name)),
        Some(Value::String(s)) if s.is_empty() => Err(MarketsError::MissingField(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(MarketsError::InvalidField(format!(
            "{name} must be a string"
        ))),
    }
}

/// Parses a 32-byte transaction hash, `0x` optional (Python's `HexBytes.hex()`
/// drops it).
pub fn parse_tx_hash(raw: &str) -> Option<B256> {
    let hex = raw.strip_prefix("0x").unwrap_or(raw);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.parse().ok())
        .flatten()
}

impl SubmissionRequest {
    /// Reads the documented body: every field present (`predicted_text` may
    /// be null only for null submissions) and well formed.
    pub fn parse(body: &Value) -> Result<Self> {
        let Some(body) = body.as_object() else {
            return Err(MarketsError::InvalidField(format!(
                "body must be a JSON object with {}",
                FIELDS.join(", ")
            )));
        };
        for name in FIELDS {
            if name != "predicted_text" {
                string_field(body, name)?;
            }
        }
        let kind = SubmissionType::parse(string_field(body, "submission_type")?)
            .ok_or(MarketsError::InvalidSubmissionType)?;
        let predicted_text = match (kind, body.get("predicted_text")) {
            (SubmissionType::Null, None | Some(Value::Null)) => None,
            (SubmissionType::Null, Some(Value::String(s))) if s.is_empty() => None,
            (SubmissionType::Null, Some(_)) => {
                return Err(MarketsError::InvalidField(
                    "predicted_text must be null for a null submission".into(),
                ));
            }
            (_, _) => {
                let text = string_field(body, "predicted_text")?;
                if text.len() > MAX_TEXT_BYTES {
                    return Err(MarketsError::InvalidField(format!(
                        "predicted_text is longer than {MAX_TEXT_BYTES} bytes"
                    )));
                }
                Some(text.to_owned())
            }
        };
        let market_id_text = string_field(body, "market_id")?;
        let market_id = parse_market_id(market_id_text).ok_or_else(|| {
            MarketsError::InvalidField(
                "market_id must be a UUID such as 123e4567-e89b-12d3-a456-426614174000".into(),
            )
        })?;
        let creator: Address = string_field(body, "creator_wallet")?
            .parse()
            .map_err(|_| {
                MarketsError::InvalidField(
                    "creator_wallet must be a 0x address (BTC stakes are cbBTC on Base, paid from the same kind of wallet)".into(),
                )
            })?;
        let currency = Currency::parse(string_field(body, "currency")?)
            .ok_or(fees::AmountError::UnknownCurrency)?;
        let stake_text = string_field(body, "initial_stake_amount")?;
        fees::parse_amount(stake_text, currency)?;
        let tx_text = string_field(body, "transaction_hash")?;
        let tx = parse_tx_hash(tx_text).ok_or_else(|| {
            MarketsError::InvalidField(
                "transaction_hash must be 32 bytes of hex (0x optional)".into(),
            )
        })?;
        Ok(Self {
            market_id_text: market_id_text.to_owned(),
            market_id,
            creator,
            predicted_text,
            kind,
            stake_text: stake_text.to_owned(),
            currency,
            tx_text: tx_text.to_owned(),
            tx,
            signature: string_field(body, "signature")?.to_owned(),
        })
    }

    /// The message `creator_wallet` must have signed.
    pub fn message(&self) -> String {
        signature_message(
            &self.market_id_text,
            self.predicted_text.as_deref(),
            &self.stake_text,
            &self.tx_text,
        )
    }
}

/// A request that passed the rules and whose signature is the creator's.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The request.
    pub request: SubmissionRequest,
    /// Its price at the contract's fee.
    pub quote: FeeQuote,
}

impl Prepared {
    /// The wallet the signature proved.
    pub fn wallet(&self) -> Address {
        self.request.creator
    }
}

/// What `POST /v1/submissions` answers.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// On chain and indexed (the payment called `submit`): 201.
    Recorded(Box<SubmissionView>),
    /// Accepted; being recorded or indexed: 202 with a status URL.
    Accepted(Box<Accepted>),
}

/// A submission on its way (202).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    /// `pending` (waiting for the operator), `sent` (record transaction
    /// sent), `recorded` / `direct` (on chain, waiting for the indexer).
    pub status: &'static str,
    /// What happens next.
    pub message: &'static str,
    /// The payment transaction (the status URL's key).
    pub transaction_hash: String,
    /// Its market.
    pub market_id: String,
    /// The creator.
    pub creator_wallet: String,
    /// The kind.
    pub submission_type: &'static str,
    /// The stake.
    pub initial_stake_amount: String,
    /// The currency.
    pub currency: String,
    /// The operator's record transaction, once sent.
    pub record_transaction_hash: Option<String>,
    /// The submission id, once known.
    pub submission_id: Option<Value>,
    /// When it was accepted.
    pub accepted_at: Option<String>,
}

fn accepted(claim: &Claim, markets: &Markets) -> Accepted {
    let label = fees::label(
        claim.stake_token,
        markets.contracts.cbbtc,
        markets.contracts.usdc,
    );
    let message = match claim.status {
        ClaimStatus::Pending => {
            "accepted: the node is recording the submission on chain; poll status_url"
        }
        ClaimStatus::Sent => "the record transaction is sent; waiting for it to be mined",
        _ => "recorded on chain; waiting for the indexer",
    };
    Accepted {
        status: claim.status.as_str(),
        message,
        transaction_hash: claim.payment_tx.to_string(),
        market_id: market_uuid(claim.market_id),
        creator_wallet: claim.creator.to_string(),
        submission_type: claim.kind.as_str(),
        initial_stake_amount: fees::format_units(claim.stake, label.decimals),
        currency: label.currency,
        record_transaction_hash: claim.record_tx.map(|t| t.to_string()),
        submission_id: claim.submission_id.map(|id| {
            u64::try_from(id).map_or_else(|_| Value::String(id.to_string()), Value::from)
        }),
        accepted_at: iso_millis(claim.created_at),
    }
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Markets {
    /// Step 1: the body, the market's existence and the signature.
    pub async fn prepare(&self, body: &Value) -> Result<Prepared> {
        self.stakes()?;
        let request = SubmissionRequest::parse(body)?;
        self.index.market(request.market_id).await?;
        let message = request.message();
        self.auth
            .verify_wallet_message(message.as_bytes(), &request.signature, request.creator)
            .await
            .map_err(|e| match e {
                AuthError::Unavailable(m) => MarketsError::Unavailable(m),
                other => MarketsError::InvalidSignature(format!(
                    "expected creator_wallet's signature of \"{message}\" (EIP-191 personal_sign, or a raw signature of its keccak256): {other}"
                )),
            })?;
        let settings = self.index.settings().await?;
        let stake = fees::parse_amount(&request.stake_text, request.currency)?;
        let quote = FeeQuote::new(stake, settings.fee_bps, request.currency)?;
        Ok(Prepared { request, quote })
    }

    /// The market rules a new submission must meet at the head block's
    /// time (a `submit` call met them when it was mined: the contract checks
    /// the same).
    async fn check_rules(&self, r: &SubmissionRequest) -> Result<()> {
        let now = self.chain_now().await?;
        let market = self.index.market(r.market_id).await?;
        match market.status(now) {
            MarketStatus::Active => {}
            MarketStatus::Upcoming => {
                return Err(MarketsError::MarketNotOpen(format!(
                    "Market is not open yet: submissions start at {}",
                    iso_millis(market.start_time).unwrap_or_default()
                )));
            }
            MarketStatus::Closed => {
                return Err(MarketsError::MarketNotOpen(format!(
                    "Market is closed: submissions ended at {}",
                    iso_millis(market.end_time).unwrap_or_default()
                )));
            }
            MarketStatus::Resolved => {
                return Err(MarketsError::MarketNotOpen(
                    "Market is resolved: it no longer accepts submissions".into(),
                ));
            }
        }
        match (r.kind, market.original_submission.is_some()) {
            (SubmissionType::Original, true) => Err(MarketsError::OriginalExists),
            (SubmissionType::Competitor | SubmissionType::Null, false) => {
                Err(MarketsError::OriginalRequired)
            }
            _ => Ok(()),
        }
    }

    /// Step 2: the payment transaction, the market rules (for plain
    /// transfers) and the claim of its hash.
    pub async fn commit(&self, prepared: &Prepared) -> Result<Outcome> {
        let r = &prepared.request;
        if self.claims.is_used(r.tx).await? {
            return Err(MarketsError::HashUsed);
        }
        let text = r.predicted_text.clone().unwrap_or_default();
        let expected = Expected {
            tx: r.tx,
            creator: r.creator,
            market: r.market_id,
            kind: r.kind,
            text: &text,
            currency: r.currency,
            stake: prepared.quote.stake_base_units(),
            required: prepared.quote.total_base_units(),
            total_text: prepared.quote.total.to_string(),
            fee_percentage: fees::format_percentage(prepared.quote.fee_percentage),
        };
        let paid = self.verify_payment(&expected).await?;
        if matches!(paid, Paid::Transfer { .. }) {
            self.check_rules(r).await?;
        }
        let (status, submission_id) = match &paid {
            Paid::Transfer { .. } => (ClaimStatus::Pending, None),
            Paid::Submitted { submission_id } => (ClaimStatus::Direct, Some(*submission_id)),
        };
        let claim = Claim {
            status,
            payment_tx: r.tx,
            market_id: r.market_id,
            creator: r.creator,
            kind: r.kind,
            predicted_text: text.clone(),
            stake_token: match r.currency {
                Currency::Eth => Address::ZERO,
                Currency::Btc => self.contracts.cbbtc.unwrap_or_default(),
            },
            stake: expected.stake,
            record_tx: (status == ClaimStatus::Direct).then_some(r.tx),
            submission_id,
            attempts: 0,
            round: 0,
            error: None,
            created_at: unix_now_ms() / 1000,
        };
        match self.claims.claim(&claim, unix_now_ms()).await? {
            ClaimOutcome::Claimed => {}
            ClaimOutcome::Used => return Err(MarketsError::HashUsed),
            ClaimOutcome::OriginalExists => return Err(MarketsError::OriginalExists),
        }
        if status == ClaimStatus::Pending {
            self.recorder_wake.notify_one();
        }
        tracing::info!(
            target: "chainfront::markets",
            payment_tx = %r.tx,
            market = %r.market_id,
            creator = %r.creator,
            kind = r.kind.as_str(),
            path = status.as_str(),
            "submission claimed"
        );
        if let Some(id) = submission_id
            && let Some(s) = self.index.submission(id).await?
            && s.tx == r.tx
        {
            self.refresh_version().await?;
            return Ok(Outcome::Recorded(Box::new(
                self.submission_view_full(&s).await?,
            )));
        }
        Ok(Outcome::Accepted(Box::new(accepted(&claim, self))))
    }

    /// The status route's answer for a payment transaction hash: the indexed
    /// submission, or the claim's progress. A claim whose payment left the
    /// chain (a reorg) and whose submission is not indexed is released, and
    /// the hash reads as unknown.
    pub async fn status_by_payment(&self, tx: B256) -> Result<Outcome> {
        if let Some(s) = self.index.submission_for_payment(tx).await? {
            self.refresh_version().await?;
            return Ok(Outcome::Recorded(Box::new(
                self.submission_view_full(&s).await?,
            )));
        }
        let Some(claim) = self.claims.get(tx).await? else {
            return Err(MarketsError::SubmissionNotFound);
        };
        if claim.status == ClaimStatus::Direct
            && let Some(id) = claim.submission_id
            && let Some(s) = self.index.submission(id).await?
            && s.tx == tx
        {
            self.refresh_version().await?;
            return Ok(Outcome::Recorded(Box::new(
                self.submission_view_full(&s).await?,
            )));
        }
        if claim.status == ClaimStatus::Failed {
            return Err(MarketsError::RecordFailed(
                claim.error.unwrap_or_else(|| "unknown error".into()),
            ));
        }
        if !self.payment_on_chain(tx).await? {
            tracing::warn!(target: "chainfront::markets", payment_tx = %tx, "claimed payment is no longer on chain (reorg); claim released");
            self.claims.release(&claim).await?;
            return Err(MarketsError::SubmissionNotFound);
        }
        Ok(Outcome::Accepted(Box::new(accepted(&claim, self))))
    }

    /// `GET /v1/submissions/{id}`: a submission number, or a payment
    /// transaction hash (the status URL of `POST /v1/submissions`).
    pub async fn submission_or_status(&self, raw: &str) -> Result<Outcome> {
        if raw.starts_with("0x") && raw.len() == 66 {
            let tx = parse_tx_hash(raw).ok_or(MarketsError::MalformedSubmissionId)?;
            return self.status_by_payment(tx).await;
        }
        if raw.is_empty() || raw.len() > 78 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MarketsError::MalformedSubmissionId);
        }
        let id: U256 = raw
            .parse()
            .map_err(|_| MarketsError::MalformedSubmissionId)?;
        Ok(Outcome::Recorded(Box::new(
            self.submission_by_id(id).await?,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({
            "market_id": "123e4567-e89b-12d3-a456-426614174000",
            "creator_wallet": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "predicted_text": "I predict the actor will say...",
            "submission_type": "competitor",
            "initial_stake_amount": "0.1",
            "currency": "ETH",
            "transaction_hash": format!("0x{}", "ab".repeat(32)),
            "signature": "0x00",
        })
    }

    fn err(b: Value) -> String {
        SubmissionRequest::parse(&b)
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn the_documented_body_parses_and_signs_as_documented() {
        let r = SubmissionRequest::parse(&body()).expect("parses");
        assert_eq!(
            r.message(),
            format!(
                "123e4567-e89b-12d3-a456-426614174000:I predict the actor will say...:0.1:0x{}",
                "ab".repeat(32)
            )
        );
        let mut null = body();
        null["submission_type"] = json!("null");
        null["predicted_text"] = Value::Null;
        let r = SubmissionRequest::parse(&null).expect("null submission");
        assert!(r.message().contains(":null:0.1:"), "{}", r.message());
        null.as_object_mut()
            .expect("object")
            .remove("predicted_text");
        assert!(
            SubmissionRequest::parse(&null).is_ok(),
            "may be absent for null"
        );
        // Python's HexBytes.hex() has no 0x: signed as written.
        let mut bare = body();
        bare["transaction_hash"] = json!("ab".repeat(32));
        let r = SubmissionRequest::parse(&bare).expect("bare hash");
        assert!(r.message().ends_with(&format!(":0.1:{}", "ab".repeat(32))));
    }

    #[test]
    fn every_field_is_required_with_the_documented_error() {
        for field in FIELDS {
            let mut b = body();
            b.as_object_mut().expect("object").remove(field);
            assert_eq!(err(b), format!("Missing required field: {field}"));
            let mut b = body();
            b[field] = Value::Null;
            assert_eq!(err(b), format!("Missing required field: {field}"));
        }
        let mut b = body();
        b["currency"] = json!(5);
        assert_eq!(err(b), "currency must be a string");
    }

    #[test]
    fn malformed_fields_get_clear_errors() {
        let cases = [
            (
                "submission_type",
                json!("Original"),
                "Invalid submission type",
            ),
            ("submission_type", json!("other"), "Invalid submission type"),
            (
                "market_id",
                json!("market-uuid"),
                "market_id must be a UUID",
            ),
            (
                "creator_wallet",
                json!("bc1qxyz"),
                "creator_wallet must be a 0x address",
            ),
            (
                "currency",
                json!("DOGE"),
                "currency must be \"ETH\" or \"BTC\"",
            ),
            ("initial_stake_amount", json!("0"), "greater than zero"),
            ("initial_stake_amount", json!("-1"), "greater than zero"),
            ("initial_stake_amount", json!("abc"), "decimal string"),
            (
                "initial_stake_amount",
                json!("0.0000000000000000001"),
                "decimal places",
            ),
            (
                "transaction_hash",
                json!("0x1234"),
                "transaction_hash must be 32 bytes",
            ),
            (
                "predicted_text",
                json!("x".repeat(1001)),
                "longer than 1000 bytes",
            ),
        ];
        for (field, value, expected) in cases {
            let mut b = body();
            b[field] = value;
            let e = err(b);
            assert!(
                e.starts_with(expected) || e.contains(expected),
                "{field}: {e}"
            );
        }
        let mut b = body();
        b["submission_type"] = json!("null");
        assert_eq!(err(b), "predicted_text must be null for a null submission");
        let mut b = body();
        b["currency"] = json!("BTC");
        b["initial_stake_amount"] = json!("0.000000001");
        assert!(err(b).contains("8 decimal places"));
        assert!(err(json!([1, 2])).starts_with("body must be a JSON object"));
    }

    #[test]
    fn messages_use_null_for_empty_text() {
        assert_eq!(signature_message("m", None, "1", "0x1"), "m:null:1:0x1");
        assert_eq!(signature_message("m", Some(""), "1", "0x1"), "m:null:1:0x1");
        assert_eq!(signature_message("m", Some("hi"), "1", "0x1"), "m:hi:1:0x1");
    }
}
