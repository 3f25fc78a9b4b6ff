//! Reads of the indexed `SubmissionStakes` state (`docs/state.md`, keys from
//! `ChainKeys`): markets, submissions, resolutions and the contract settings.
//! The indexer is the only writer; nothing here writes.

use std::collections::HashMap;

use alloy::primitives::{Address, B256, FixedBytes, U256};
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::ChainKeys;
use redis::AsyncCommands;

use super::{MarketsError, Result};

/// A market id: the UUID's 16 bytes, as the contract keys markets.
pub type MarketId = FixedBytes<16>;

/// The market's UUID in its hyphenated form.
pub fn market_uuid(id: MarketId) -> String {
    uuid::Uuid::from_bytes(id.0).hyphenated().to_string()
}

/// Parses a market id from a path or body: a UUID (any form the `uuid` crate
/// reads) or the contract's `0x` + 32 hex digits.
pub fn parse_market_id(raw: &str) -> Option<MarketId> {
    if let Some(hex) = raw.strip_prefix("0x") {
        return (hex.len() == 32)
            .then(|| hex.parse::<MarketId>().ok())
            .flatten();
    }
    uuid::Uuid::parse_str(raw)
        .ok()
        .map(|u| MarketId::from(*u.as_bytes()))
}

/// The three kinds of submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubmissionType {
    /// The market's first prediction (one per market).
    Original,
    /// A competing prediction (needs an original).
    Competitor,
    /// A bet that nothing predicted is said (needs an original; no text).
    Null,
}

impl SubmissionType {
    /// `original`, `competitor` or `null` exactly.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "original" => Some(SubmissionType::Original),
            "competitor" => Some(SubmissionType::Competitor),
            "null" => Some(SubmissionType::Null),
            _ => None,
        }
    }

    /// The document's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubmissionType::Original => "original",
            SubmissionType::Competitor => "competitor",
            SubmissionType::Null => "null",
        }
    }

    /// The contract's enum value.
    pub fn as_u8(self) -> u8 {
        match self {
            SubmissionType::Original => 0,
            SubmissionType::Competitor => 1,
            SubmissionType::Null => 2,
        }
    }
}

/// Where a market stands at a given chain time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarketStatus {
    /// Before `start_time`.
    Upcoming,
    /// Accepting submissions: `start_time ≤ now < end_time`, not resolved.
    Active,
    /// Past `end_time`, not resolved yet.
    Closed,
    /// An oracle named the winner.
    Resolved,
}

impl MarketStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [MarketStatus; 4] = [
        MarketStatus::Upcoming,
        MarketStatus::Active,
        MarketStatus::Closed,
        MarketStatus::Resolved,
    ];

    /// The served name.
    pub fn as_str(self) -> &'static str {
        match self {
            MarketStatus::Upcoming => "upcoming",
            MarketStatus::Active => "active",
            MarketStatus::Closed => "closed",
            MarketStatus::Resolved => "resolved",
        }
    }

    /// Parses a served name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// The market's actor, from its metadata (`{"actor": {"id", "name"}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Actor {
    /// The actor's id.
    pub id: Option<String>,
    /// The actor's name.
    pub name: Option<String>,
}

/// An oracle's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The winning submission.
    pub winning_submission: U256,
    /// The oracle that resolved it.
    pub resolved_by: Address,
    /// The block of `MarketResolved`.
    pub resolved_block: u64,
}

/// One indexed market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Market {
    /// Its id.
    pub id: MarketId,
    /// Opens (unix s).
    pub start_time: u64,
    /// Closes (unix s).
    pub end_time: u64,
    /// Who may resolve it.
    pub oracles: Vec<Address>,
    /// The metadata string as created.
    pub metadata: String,
    /// From the metadata.
    pub actor: Actor,
    /// `title` from the metadata, if any.
    pub title: Option<String>,
    /// Block of `MarketCreated`.
    pub created_block: u64,
    /// Submissions so far.
    pub submission_count: u64,
    /// The original submission, once there is one.
    pub original_submission: Option<U256>,
    /// The verdict, once resolved.
    pub resolution: Option<Resolution>,
    /// Payouts claimed: stake token → amount (base units).
    pub payouts: Vec<(Address, U256)>,
}

impl Market {
    /// Its status at chain time `now`.
    pub fn status(&self, now: u64) -> MarketStatus {
        if self.resolution.is_some() {
            MarketStatus::Resolved
        } else if now < self.start_time {
            MarketStatus::Upcoming
        } else if now >= self.end_time {
            MarketStatus::Closed
        } else {
            MarketStatus::Active
        }
    }

    fn from_hash(h: &HashMap<String, String>) -> Option<Self> {
        let id = parse_market_id(h.get("market_id")?)?;
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let u256 = |k: &str| h.get(k).and_then(|v| v.parse::<U256>().ok());
        let oracles: Vec<String> = h
            .get("oracles")
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default();
        let metadata = h.get("metadata").cloned().unwrap_or_default();
        let meta: serde_json::Value = serde_json::from_str(&metadata).unwrap_or_default();
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let resolution = (h.get("resolved").map(String::as_str) == Some("1")).then(|| Resolution {
            winning_submission: u256("winning_submission").unwrap_or_default(),
            resolved_by: h
                .get("resolved_by")
                .and_then(|a| a.parse().ok())
                .unwrap_or_default(),
            resolved_block: num("resolved_block"),
        });
        let mut payouts: Vec<(Address, U256)> = h
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("payout:")?.parse().ok()?, v.parse().ok()?)))
            .collect();
        payouts.sort();
        Some(Market {
            id,
            start_time: num("start_time"),
            end_time: num("end_time"),
            oracles: oracles.iter().filter_map(|a| a.parse().ok()).collect(),
            actor: Actor {
                id: text(&meta["actor"]["id"]),
                name: text(&meta["actor"]["name"]),
            },
            title: text(&meta["title"]),
            metadata,
            created_block: num("created_block"),
            submission_count: num("submission_count"),
            original_submission: u256("original_submission"),
            resolution,
            payouts,
        })
    }
}

/// One indexed submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The contract's submission id.
    pub id: U256,
    /// Its market.
    pub market_id: MarketId,
    /// Who it belongs to.
    pub creator: Address,
    /// Its kind.
    pub kind: SubmissionType,
    /// The prediction (empty for null submissions).
    pub predicted_text: String,
    /// `0x00…00` for ETH, else the ERC-20.
    pub stake_token: Address,
    /// Stake in base units.
    pub stake: U256,
    /// Fee in base units.
    pub fee: U256,
    /// The plain-transfer payment it was recorded for (`None` for direct
    /// `submit` calls).
    pub payment_tx: Option<B256>,
    /// The transaction that emitted `SubmissionCreated`.
    pub tx: B256,
    /// Its block.
    pub block: u64,
}

impl Submission {
    fn from_hash(h: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| h.get(k).map(String::as_str);
        let payment_tx: B256 = get("payment_tx")?.parse().ok()?;
        Some(Submission {
            id: get("submission_id")?.parse().ok()?,
            market_id: parse_market_id(get("market_id")?)?,
            creator: get("creator")?.parse().ok()?,
            kind: SubmissionType::parse(get("submission_type")?)?,
            predicted_text: get("predicted_text").unwrap_or_default().to_owned(),
            stake_token: get("stake_token")?.parse().ok()?,
            stake: get("stake")?.parse().ok()?,
            fee: get("fee")?.parse().ok()?,
            payment_tx: (payment_tx != B256::ZERO).then_some(payment_tx),
            tx: get("tx")?.parse().ok()?,
            block: get("block")?.parse().ok()?,
        })
    }

    /// The transaction a client paid with: the plain transfer, or the
    /// `submit` call itself.
    pub fn paid_with(&self) -> B256 {
        self.payment_tx.unwrap_or(self.tx)
    }
}

/// The stakes contract's indexed settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StakeSettings {
    /// Platform fee in basis points.
    pub fee_bps: u16,
    /// Where fees go.
    pub fee_treasury: Option<Address>,
}

/// Reads of one chain's indexed market state.
#[derive(Clone)]
pub struct Index {
    redis: RedisConn,
    keys: ChainKeys,
}

impl Index {
    /// The index of the chain `keys` belong to.
    pub fn new(redis: RedisConn, keys: ChainKeys) -> Self {
        Self { redis, keys }
    }

    /// The indexed state's version: the hash of the last committed block
    /// (changes with every commit and every reorg). Answers cached under it
    /// are never stale.
    pub async fn version(&self) -> Result<String> {
        let mut c = self.redis.clone();
        let hash: Option<String> = c.hget(self.keys.checkpoint(), "hash").await?;
        Ok(hash.unwrap_or_default())
    }

    /// Every market, in creation order.
    pub async fn markets(&self) -> Result<Vec<Market>> {
        let mut c = self.redis.clone();
        let ids: Vec<String> = c.smembers(self.keys.markets()).await?;
        let ids: Vec<MarketId> = ids.iter().filter_map(|s| parse_market_id(s)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.market(*id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut c).await?;
        let mut markets: Vec<Market> = hashes.iter().filter_map(Market::from_hash).collect();
        markets.sort_by_key(|m| (m.created_block, m.id));
        Ok(markets)
    }

    /// One market (`MarketNotFound` when the index has no such market).
    pub async fn market(&self, id: MarketId) -> Result<Market> {
        let mut c = self.redis.clone();
        let h: HashMap<String, String> = c.hgetall(self.keys.market(id)).await?;
        Market::from_hash(&h).ok_or(MarketsError::MarketNotFound)
    }

    /// A market and its submissions in id order, in one round trip for the ids.
    pub async fn market_submissions(&self, id: MarketId) -> Result<(Market, Vec<Submission>)> {
        let mut c = self.redis.clone();
        let (h, ids): (HashMap<String, String>, Vec<String>) = redis::pipe()
            .hgetall(self.keys.market(id))
            .zrange(self.keys.market_submissions(id), 0, -1)
            .query_async(&mut c)
            .await?;
        let market = Market::from_hash(&h).ok_or(MarketsError::MarketNotFound)?;
        let ids: Vec<U256> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        Ok((market, self.submissions(&ids).await?))
    }

    /// The submissions with these ids that exist, in the given order.
    pub async fn submissions(&self, ids: &[U256]) -> Result<Vec<Submission>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.redis.clone();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.keys.submission(*id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut c).await?;
        Ok(hashes.iter().filter_map(Submission::from_hash).collect())
    }

    /// One submission, if indexed.
    pub async fn submission(&self, id: U256) -> Result<Option<Submission>> {
        Ok(self.submissions(&[id]).await?.pop())
    }

    /// The submission recorded for a plain-transfer payment, if indexed.
    pub async fn submission_for_payment(&self, payment_tx: B256) -> Result<Option<Submission>> {
        let mut c = self.redis.clone();
        let id: Option<String> = c.get(self.keys.payment(payment_tx)).await?;
        match id.and_then(|s| s.parse::<U256>().ok()) {
            Some(id) => self.submission(id).await,
            None => Ok(None),
        }
    }

    /// The fee and fee treasury as the contract last announced them
    /// (`Unavailable` until the indexer has seen `FeeUpdated`).
    pub async fn settings(&self) -> Result<StakeSettings> {
        let mut c = self.redis.clone();
        let (fee, treasury): (Option<String>, Option<String>) = redis::pipe()
            .hget(self.keys.stakes_settings(), "fee_bps")
            .hget(self.keys.stakes_settings(), "treasury")
            .query_async(&mut c)
            .await?;
        let fee_bps = fee.and_then(|f| f.parse().ok()).ok_or_else(|| {
            MarketsError::Unavailable("the platform fee is not indexed yet; retry shortly".into())
        })?;
        Ok(StakeSettings {
            fee_bps,
            fee_treasury: treasury.and_then(|t| t.parse().ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_ids_parse_as_uuid_or_hex() {
        let uuid = "123e4567-e89b-12d3-a456-426614174000";
        let id = parse_market_id(uuid).expect("uuid");
        assert_eq!(id.to_string(), "0x123e4567e89b12d3a456426614174000");
        assert_eq!(
            parse_market_id("0x123e4567e89b12d3a456426614174000"),
            Some(id)
        );
        assert_eq!(market_uuid(id), uuid);
        for bad in [
            "",
            "market-uuid",
            "0x1234",
            "123e4567-e89b-12d3-a456-42661417400",
            "0x123e4567e89b12d3a456426614174000ff",
        ] {
            assert_eq!(parse_market_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn status_follows_chain_time() {
        let h: HashMap<String, String> = [
            ("market_id", "0x123e4567e89b12d3a456426614174000"),
            ("start_time", "100"),
            ("end_time", "200"),
            (
                "oracles",
                "[\"0x0000000000000000000000000000000000000001\"]",
            ),
            (
                "metadata",
                "{\"actor\":{\"id\":\"a1\",\"name\":\"Ann\"},\"title\":\"t\"}",
            ),
            ("resolved", "0"),
            ("payout:0x0000000000000000000000000000000000000000", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let m = Market::from_hash(&h).expect("market");
        assert_eq!(m.status(99), MarketStatus::Upcoming);
        assert_eq!(m.status(100), MarketStatus::Active);
        assert_eq!(m.status(199), MarketStatus::Active);
        assert_eq!(m.status(200), MarketStatus::Closed);
        assert_eq!(m.actor.name.as_deref(), Some("Ann"));
        assert_eq!(m.title.as_deref(), Some("t"));
        assert_eq!(m.oracles, vec![Address::with_last_byte(1)]);
        assert_eq!(m.payouts, vec![(Address::ZERO, U256::from(5))]);
        let mut resolved = h.clone();
        resolved.insert("resolved".into(), "1".into());
        resolved.insert("winning_submission".into(), "3".into());
        let m = Market::from_hash(&resolved).expect("market");
        assert_eq!(m.status(150), MarketStatus::Resolved);
        assert_eq!(
            m.resolution.expect("resolution").winning_submission,
            U256::from(3)
        );
        let mut bad_meta = h;
        bad_meta.insert("metadata".into(), "not json".into());
        assert_eq!(
            Market::from_hash(&bad_meta).expect("market").actor,
            Actor::default()
        );
    }
}
