//! The documented answer shapes (Clockchain reference): markets, submissions,
//! resolutions and fee quotes, built from the index. Times are ISO 8601 with
//! milliseconds (`2025-07-21T12:00:00.000Z`) as the document shows them;
//! amounts are decimal strings in the stake's currency.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock};

use alloy::primitives::{Address, U256};
use axum::body::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::fees::{self, FeeQuote};
use super::index::{Actor, Market, MarketId, MarketStatus, Submission, market_uuid};
use super::{Markets, MarketsError, Result};

/// Unix seconds as `2025-07-21T12:00:00.000Z`.
pub fn iso_millis(unix: u64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).ok()?).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// The current time as `2025-07-21T12:00:00.000Z`.
pub fn iso_millis_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// An id as a JSON number (strings only beyond `u64`, which sequential ids
/// never reach).
fn id_json(id: U256) -> Value {
    u64::try_from(id).map_or_else(|_| Value::String(id.to_string()), Value::from)
}

/// One market as `GET /v1/markets` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct MarketView {
    /// UUID.
    pub market_id: String,
    /// From the metadata.
    pub actor: Actor,
    /// From the metadata, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Opens.
    pub start_time: Option<String>,
    /// Closes.
    pub end_time: Option<String>,
    /// Checksummed oracle addresses.
    pub oracle_wallets: Vec<String>,
    /// Submissions so far.
    pub existing_submissions: u64,
    /// Whether an original exists (competitor and null submissions need one).
    pub has_original: bool,
    /// `upcoming`, `active`, `closed` or `resolved` at the head block's time.
    pub status: &'static str,
    /// Timestamp of the block that created it.
    pub created_at: Option<String>,
    /// The verdict (single-market answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ResolutionView>,
}

/// A market's verdict and payouts.
#[derive(Debug, Clone, Serialize)]
pub struct ResolutionView {
    /// Whether an oracle resolved it.
    pub resolved: bool,
    /// The winning submission.
    pub winning_submission_id: Option<Value>,
    /// Its creator.
    pub winner: Option<String>,
    /// The oracle that resolved it.
    pub resolved_by: Option<String>,
    /// The block of the verdict.
    pub resolved_block: Option<u64>,
    /// Its time.
    pub resolved_at: Option<String>,
    /// Payouts claimed so far, per currency, as decimal strings.
    pub payouts_claimed: BTreeMap<String, String>,
}

/// One submission.
#[derive(Debug, Clone, Serialize)]
pub struct SubmissionView {
    /// The contract's id.
    pub submission_id: Value,
    /// Its market's UUID.
    pub market_id: String,
    /// Checksummed creator.
    pub creator_wallet: String,
    /// `original`, `competitor` or `null`.
    pub submission_type: &'static str,
    /// The prediction (`null` for null submissions).
    pub predicted_text: Option<String>,
    /// Stake, decimal string.
    pub initial_stake_amount: String,
    /// Fee paid, decimal string.
    pub platform_fee_amount: String,
    /// `ETH`, `BTC` (cbBTC) or `USDC`.
    pub currency: String,
    /// The transaction that paid: the plain transfer, or the `submit` call.
    pub transaction_hash: String,
    /// The transaction that recorded it (the operator's `recordSubmission`
    /// for plain transfers; the same as `transaction_hash` otherwise).
    pub record_transaction_hash: String,
    /// Block of `SubmissionCreated`.
    pub block: u64,
    /// Its time.
    pub created_at: Option<String>,
    /// `recorded`: on chain and indexed.
    pub status: &'static str,
    /// Its market's verdict (single-submission answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ResolutionView>,
    /// Whether this submission won (single-submission answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_winner: Option<bool>,
}

/// `GET /v1/markets`.
#[derive(Debug, Clone, Serialize)]
pub struct MarketList {
    /// The markets.
    pub markets: Vec<MarketView>,
    /// How many.
    pub count: usize,
}

/// `GET /v1/markets/{market_id}/submissions`.
#[derive(Debug, Clone, Serialize)]
pub struct MarketSubmissions {
    /// The market's UUID.
    pub market_id: String,
    /// Its status.
    pub status: &'static str,
    /// Its submissions in id order.
    pub submissions: Vec<SubmissionView>,
    /// How many.
    pub count: usize,
}

/// The body of `POST /v1/calculate_fees` (other fields are ignored), read
/// without copying its strings.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct FeesRequest<'a> {
    /// The stake, a decimal string.
    #[serde(default, borrow)]
    pub initial_stake_amount: Option<FeeField<'a>>,
    /// `ETH` or `BTC`.
    #[serde(default, borrow)]
    pub currency: Option<FeeField<'a>>,
}

/// One field of a [`FeesRequest`]: a string (borrowed from the body unless
/// it has escapes), or any other JSON value (refused: "must be a string").
/// `null` and a missing field are both `None` in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeeField<'a> {
    /// A JSON string.
    Str(Cow<'a, str>),
    /// A number, boolean, array or object.
    NotString,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for FeeField<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = FeeField<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(FeeField::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(FeeField::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(FeeField::Str(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
                Ok(FeeField::NotString)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
                Ok(FeeField::NotString)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
                Ok(FeeField::NotString)
            }
            fn visit_i128<E>(self, _: i128) -> std::result::Result<Self::Value, E> {
                Ok(FeeField::NotString)
            }
            fn visit_u128<E>(self, _: u128) -> std::result::Result<Self::Value, E> {
                Ok(FeeField::NotString)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
                Ok(FeeField::NotString)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(FeeField::NotString)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(FeeField::NotString)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The serialized `POST /v1/calculate_fees` answers of recently quoted
/// requests, keyed by the request body's very bytes: an answer is a function
/// of the body (its amount string and currency) and the fee rate, so it is
/// reused while the indexed rate is the one it was computed at. A repeated
/// quote is one map lookup, not a JSON parse, a decimal parse, four amounts
/// formatted and a JSON document written. Only bodies that were answered
/// 200 are remembered (errors are worked out every time), and only bodies
/// of at most [`FEE_BODY_KEY_MAX`] bytes.
#[derive(Debug, Default)]
pub struct FeeBodies(RwLock<FeeBodiesMap>);

type FeeBodiesMap = HashMap<Box<[u8]>, (u16, Bytes), foldhash::fast::RandomState>;

/// Bodies remembered before the map is cleared (bounds memory when clients
/// quote many different amounts: at most about 400 bytes an entry).
pub const FEE_BODIES_MAX: usize = 1_024;

/// The longest request body remembered (the documented body is about 50
/// bytes).
pub const FEE_BODY_KEY_MAX: usize = 256;

impl FeeBodies {
    /// The answer remembered for the request `body`, with the fee rate it
    /// was computed at (the caller serves it only at that rate).
    pub fn get(&self, body: &[u8]) -> Option<(u16, Bytes)> {
        if body.len() > FEE_BODY_KEY_MAX {
            return None;
        }
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(body).cloned()
    }

    /// Remembers `answer` as the answer to the request `body` at `fee_bps`.
    pub fn put(&self, body: &[u8], fee_bps: u16, answer: Bytes) {
        if body.len() > FEE_BODY_KEY_MAX {
            return;
        }
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= FEE_BODIES_MAX && !map.contains_key(body) {
            map.clear();
        }
        map.insert(body.into(), (fee_bps, answer));
    }

    /// Bodies remembered.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `POST /v1/calculate_fees`.
#[derive(Debug, Clone, Serialize)]
pub struct FeeView {
    /// The stake.
    pub initial_stake_amount: String,
    /// The rate in percent (`"7.0"`).
    pub platform_fee_percentage: String,
    /// The fee.
    pub platform_fee_amount: String,
    /// What to pay.
    pub total_required: String,
    /// `ETH` or `BTC`.
    pub currency: &'static str,
}

impl From<&FeeQuote> for FeeView {
    fn from(q: &FeeQuote) -> Self {
        Self {
            initial_stake_amount: q.stake.to_string(),
            platform_fee_percentage: fees::format_percentage(q.fee_percentage),
            platform_fee_amount: q.fee.to_string(),
            total_required: q.total.to_string(),
            currency: q.currency.symbol(),
        }
    }
}

impl Markets {
    fn label(&self, token: Address) -> fees::TokenLabel {
        fees::label(token, self.contracts.cbbtc, self.contracts.usdc)
    }

    fn market_view(&self, m: &Market, now: u64, times: &HashMap<u64, u64>) -> MarketView {
        MarketView {
            market_id: market_uuid(m.id),
            actor: m.actor.clone(),
            title: m.title.clone(),
            start_time: iso_millis(m.start_time),
            end_time: iso_millis(m.end_time),
            oracle_wallets: m.oracles.iter().map(Address::to_string).collect(),
            existing_submissions: m.submission_count,
            has_original: m.original_submission.is_some(),
            status: m.status(now).as_str(),
            created_at: times.get(&m.created_block).and_then(|t| iso_millis(*t)),
            resolution: None,
        }
    }

    fn submission_view(&self, s: &Submission, times: &HashMap<u64, u64>) -> SubmissionView {
        let label = self.label(s.stake_token);
        SubmissionView {
            submission_id: id_json(s.id),
            market_id: market_uuid(s.market_id),
            creator_wallet: s.creator.to_string(),
            submission_type: s.kind.as_str(),
            predicted_text: (!s.predicted_text.is_empty()).then(|| s.predicted_text.clone()),
            initial_stake_amount: fees::format_units(s.stake, label.decimals),
            platform_fee_amount: fees::format_units(s.fee, label.decimals),
            currency: label.currency,
            transaction_hash: s.paid_with().to_string(),
            record_transaction_hash: s.tx.to_string(),
            block: s.block,
            created_at: times.get(&s.block).and_then(|t| iso_millis(*t)),
            status: "recorded",
            resolution: None,
            is_winner: None,
        }
    }

    async fn resolution_view(&self, m: &Market) -> Result<ResolutionView> {
        let payouts_claimed = m
            .payouts
            .iter()
            .map(|(token, amount)| {
                let label = self.label(*token);
                (label.currency, fees::format_units(*amount, label.decimals))
            })
            .collect();
        let Some(r) = &m.resolution else {
            return Ok(ResolutionView {
                resolved: false,
                winning_submission_id: None,
                winner: None,
                resolved_by: None,
                resolved_block: None,
                resolved_at: None,
                payouts_claimed,
            });
        };
        let winner = self.index.submission(r.winning_submission).await?;
        let times = self.block_times(&[r.resolved_block]).await;
        Ok(ResolutionView {
            resolved: true,
            winning_submission_id: Some(id_json(r.winning_submission)),
            winner: winner.map(|w| w.creator.to_string()),
            resolved_by: Some(r.resolved_by.to_string()),
            resolved_block: Some(r.resolved_block),
            resolved_at: times.get(&r.resolved_block).and_then(|t| iso_millis(*t)),
            payouts_claimed,
        })
    }

    /// `GET /v1/markets`: the markets whose status is in `statuses`.
    pub async fn list(&self, statuses: &[MarketStatus]) -> Result<MarketList> {
        let now = self.chain_now().await?;
        let markets: Vec<Market> = self
            .index
            .markets()
            .await?
            .into_iter()
            .filter(|m| statuses.contains(&m.status(now)))
            .collect();
        let blocks: Vec<u64> = markets.iter().map(|m| m.created_block).collect();
        let times = self.block_times(&blocks).await;
        let markets: Vec<MarketView> = markets
            .iter()
            .map(|m| self.market_view(m, now, &times))
            .collect();
        Ok(MarketList {
            count: markets.len(),
            markets,
        })
    }

    /// `GET /v1/markets/{market_id}`: one market with its resolution.
    pub async fn market(&self, id: MarketId) -> Result<MarketView> {
        let now = self.chain_now().await?;
        let m = self.index.market(id).await?;
        let times = self.block_times(&[m.created_block]).await;
        let mut view = self.market_view(&m, now, &times);
        view.resolution = Some(self.resolution_view(&m).await?);
        Ok(view)
    }

    /// `GET /v1/markets/{market_id}/resolution`.
    pub async fn resolution(&self, id: MarketId) -> Result<ResolutionView> {
        let m = self.index.market(id).await?;
        self.resolution_view(&m).await
    }

    /// `GET /v1/markets/{market_id}/submissions`.
    pub async fn market_submissions(&self, id: MarketId) -> Result<MarketSubmissions> {
        let now = self.chain_now().await?;
        let (market, subs) = self.index.market_submissions(id).await?;
        let blocks: Vec<u64> = subs.iter().map(|s| s.block).collect();
        let times = self.block_times(&blocks).await;
        let submissions: Vec<SubmissionView> = subs
            .iter()
            .map(|s| self.submission_view(s, &times))
            .collect();
        Ok(MarketSubmissions {
            market_id: market_uuid(market.id),
            status: market.status(now).as_str(),
            count: submissions.len(),
            submissions,
        })
    }

    /// One indexed submission with its market's resolution.
    pub async fn submission_view_full(&self, s: &Submission) -> Result<SubmissionView> {
        let times = self.block_times(&[s.block]).await;
        let mut view = self.submission_view(s, &times);
        let market = self.index.market(s.market_id).await?;
        let resolution = self.resolution_view(&market).await?;
        view.is_winner = Some(
            market
                .resolution
                .as_ref()
                .is_some_and(|r| r.winning_submission == s.id),
        );
        view.resolution = Some(resolution);
        Ok(view)
    }

    /// `POST /v1/calculate_fees` with the documented body
    /// `{initial_stake_amount, currency}` (the request's body as it came):
    /// the answer's JSON, reused from [`FeeBodies`] while the indexed fee
    /// rate is unchanged.
    pub async fn calculate_fees_json(&self, body: &[u8]) -> Result<Bytes> {
        // A remembered body is a valid one, so only the rate is read.
        if let Some((at_bps, json)) = self.fee_bodies.get(body)
            && at_bps == self.settings_cached().await?.fee_bps
        {
            return Ok(json);
        }
        let request: FeesRequest<'_> = serde_json::from_slice(body)
            .map_err(|e| MarketsError::InvalidField(format!("body must be a JSON object: {e}")))?;
        fn field<'a>(v: &'a Option<FeeField<'_>>, name: &'static str) -> Result<&'a str> {
            match v {
                None => Err(MarketsError::MissingField(name)),
                Some(FeeField::Str(s)) if s.is_empty() => Err(MarketsError::MissingField(name)),
                Some(FeeField::Str(s)) => Ok(s),
                Some(FeeField::NotString) => Err(MarketsError::InvalidField(format!(
                    "{name} must be a string"
                ))),
            }
        }
        let amount = field(&request.initial_stake_amount, "initial_stake_amount")?;
        let currency = field(&request.currency, "currency")?;
        let currency = fees::Currency::parse(currency).ok_or(fees::AmountError::UnknownCurrency)?;
        // The amount is parsed before the rate is read, so a bad amount is
        // a 400 even while the rate is not indexed yet.
        let stake = fees::parse_amount(amount, currency)?;
        let fee_bps = self.settings_cached().await?.fee_bps;
        let quote = FeeQuote::new(stake, fee_bps, currency)?;
        let json = Bytes::from(
            serde_json::to_vec(&FeeView::from(&quote))
                .map_err(|e| MarketsError::Unavailable(format!("fee quote: {e}")))?,
        );
        self.fee_bodies.put(body, fee_bps, json.clone());
        Ok(json)
    }

    /// The submission with this contract id (`SubmissionNotFound` if none).
    pub async fn submission_by_id(&self, id: U256) -> Result<SubmissionView> {
        let s = self
            .index
            .submission(id)
            .await?
            .ok_or(MarketsError::SubmissionNotFound)?;
        self.submission_view_full(&s).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_milliseconds_like_the_document() {
        assert_eq!(iso_millis(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            iso_millis(1_753_099_200).as_deref(),
            Some("2025-07-21T12:00:00.000Z")
        );
        assert_eq!(iso_millis(u64::MAX), None);
    }

    #[test]
    fn fee_request_borrows_strings_and_tells_other_values_apart() {
        let body = br#"{"initial_stake_amount": "0.5", "currency": "ETH", "extra": [1, {"a": 2}]}"#;
        let r: FeesRequest<'_> = serde_json::from_slice(body).expect("parses");
        assert!(matches!(
            r.initial_stake_amount,
            Some(FeeField::Str(Cow::Borrowed("0.5")))
        ));
        assert!(matches!(
            r.currency,
            Some(FeeField::Str(Cow::Borrowed("ETH")))
        ));
        // An escaped string is unescaped into a copy.
        let r: FeesRequest<'_> =
            serde_json::from_slice(br#"{"currency": "E\u0054H"}"#).expect("parses");
        assert_eq!(r.currency, Some(FeeField::Str(Cow::Owned("ETH".into()))));
        assert_eq!(r.initial_stake_amount, None);
        // null is a missing field; numbers, booleans, arrays and objects are not strings.
        for (raw, expected) in [
            ("null", None),
            ("0.5", Some(FeeField::NotString)),
            ("-1", Some(FeeField::NotString)),
            ("5", Some(FeeField::NotString)),
            ("true", Some(FeeField::NotString)),
            ("[\"0.5\"]", Some(FeeField::NotString)),
            ("{\"v\": \"0.5\"}", Some(FeeField::NotString)),
        ] {
            let body = format!(r#"{{"initial_stake_amount": {raw}, "currency": "ETH"}}"#);
            let r: FeesRequest<'_> = serde_json::from_str(&body).expect("parses");
            assert_eq!(r.initial_stake_amount, expected, "{raw}");
            assert!(matches!(r.currency, Some(FeeField::Str(_))), "{raw}");
        }
        assert!(serde_json::from_slice::<FeesRequest<'_>>(b"not json").is_err());
    }

    #[test]
    fn fee_bodies_hit_change_with_the_rate_and_stay_bounded() {
        let memo = FeeBodies::default();
        let half = br#"{"initial_stake_amount": "0.5", "currency": "ETH"}"#;
        assert_eq!(memo.get(half), None);
        memo.put(half, 700, Bytes::from_static(b"at 7%"));
        // A hit: the answer and the rate it was computed at.
        assert_eq!(memo.get(half), Some((700, Bytes::from_static(b"at 7%"))));
        // Keyed by the very bytes: another currency, amount string or
        // spacing is its own entry.
        for other in [
            &br#"{"initial_stake_amount": "0.5", "currency": "BTC"}"#[..],
            br#"{"initial_stake_amount": "0.50", "currency": "ETH"}"#,
            br#"{"initial_stake_amount":"0.5","currency":"ETH"}"#,
        ] {
            assert_eq!(memo.get(other), None);
        }
        // After a fee change the caller sees the old rate (so it recomputes)
        // and the new answer replaces the old one.
        memo.put(half, 725, Bytes::from_static(b"at 7.25%"));
        assert_eq!(memo.get(half), Some((725, Bytes::from_static(b"at 7.25%"))));
        assert_eq!(memo.len(), 1);
        // A body past the key limit is neither remembered nor looked up.
        let long = vec![b' '; FEE_BODY_KEY_MAX + 1];
        memo.put(&long, 700, Bytes::new());
        assert_eq!((memo.get(&long), memo.len()), (None, 1));
        // Bounded: the map is cleared when it is full.
        for i in 1..FEE_BODIES_MAX {
            memo.put(i.to_string().as_bytes(), 700, Bytes::new());
        }
        assert_eq!(memo.len(), FEE_BODIES_MAX);
        // Re-putting a remembered body does not clear.
        memo.put(b"1", 700, Bytes::new());
        assert_eq!(memo.len(), FEE_BODIES_MAX);
        memo.put(b"new", 700, Bytes::new());
        assert_eq!(memo.len(), 1, "cleared to the new entry");
        assert_eq!(memo.get(half), None);
        assert!(memo.get(b"new").is_some());
    }
}
