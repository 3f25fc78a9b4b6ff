//! `data`: answers from state the node already has — `balance` (a wallet's
//! USDC balance on a followed chain, read from the chain), `vms`, `markets`
//! and `deposits` (the indexer's state in Redis). The trading data types of
//! the document (price, orderbook, candles, trades, positions, news,
//! sentiment) answer 501: this node has no market data feed.

use std::collections::HashMap;

use alloy::primitives::Address;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::contracts::MockUSDC;
use chainfront_indexer::keys::ChainKeys;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::compute::executor::{Bound, Executor, Failure, JobContext, Output, Refusal, str_field};
use crate::ledger::Usd;
use crate::ledger::deposit::{Network, parse_indexed};

/// Types answered.
const TYPES: [&str; 4] = ["balance", "vms", "markets", "deposits"];
/// The document's trading data types, not served here.
const TRADING: [&str; 7] = [
    "price",
    "orderbook",
    "candles",
    "trades",
    "positions",
    "news",
    "sentiment",
];
/// Items listed per answer at most.
const MAX_ITEMS: isize = 100;

/// Where the data comes from.
#[derive(Clone)]
pub struct DataSources {
    /// Redis (the indexer's state).
    pub conn: RedisConn,
    /// Followed chains with USDC.
    pub networks: Vec<Network>,
    /// The home chain (VMs, markets).
    pub home_chain_id: u64,
}

/// The data service.
pub struct Data {
    src: DataSources,
}

impl Data {
    /// Over these sources.
    pub fn new(src: DataSources) -> Self {
        Self { src }
    }

    fn network(&self, q: &Value) -> Result<&Network, String> {
        let name = q.get("network").and_then(Value::as_str);
        match name {
            None => self
                .src
                .networks
                .iter()
                .find(|n| n.chain_id == self.src.home_chain_id)
                .or(self.src.networks.first())
                .ok_or_else(|| "no chain with USDC is followed".to_owned()),
            Some(n) => self
                .src
                .networks
                .iter()
                .find(|x| x.name.eq_ignore_ascii_case(n) || x.chain_id.to_string() == n)
                .ok_or_else(|| format!("unknown network `{n}`")),
        }
    }

    async fn answer(&self, ctx: &JobContext, kind: &str, q: &Value) -> Result<Value, String> {
        let wallet = match q
            .get("wallet")
            .or_else(|| q.get("address"))
            .and_then(Value::as_str)
        {
            Some(w) => w
                .parse::<Address>()
                .map_err(|_| "query.wallet is not an address".to_owned())?,
            None => ctx.wallet,
        };
        let mut conn = self.src.conn.clone();
        let store = |e: redis::RedisError| {
            tracing::warn!(target: "chainfront::compute", error = %e, "data: redis error");
            "state store unavailable; retry shortly".to_owned()
        };
        match kind {
            "balance" => {
                let net = self.network(q)?;
                let usdc = net.usdc;
                let units = net
                    .rpc
                    .call("balanceOf", |p| async move {
                        MockUSDC::new(usdc, &p)
                            .balanceOf(wallet)
                            .call()
                            .await
                            .map_err(|e| match e {
                                alloy::contract::Error::TransportError(t) => t,
                                other => alloy::transports::TransportErrorKind::custom_str(
                                    &other.to_string(),
                                ),
                            })
                    })
                    .await
                    .map_err(|_| "chain unavailable; retry shortly".to_owned())?;
                let units = u64::try_from(units).unwrap_or(crate::ledger::MAX_UNITS);
                Ok(json!({
                    "type": "balance", "network": net.name, "chainId": net.chain_id,
                    "wallet": chainfront_indexer::keys::lower(wallet), "token": "USDC",
                    "units": units.to_string(), "balance": Usd(units).text(),
                }))
            }
            "vms" => {
                let k = ChainKeys::new(self.src.home_chain_id);
                let ids: Vec<String> = conn.smembers(k.owner_vms(wallet)).await.map_err(store)?;
                let mut pipe = redis::pipe();
                for id in ids.iter().take(MAX_ITEMS as usize) {
                    let n = alloy::primitives::U256::from_str_radix(id, 10).unwrap_or_default();
                    pipe.hgetall(k.vm(n));
                }
                let vms: Vec<HashMap<String, String>> =
                    pipe.query_async(&mut conn).await.map_err(store)?;
                Ok(
                    json!({"type": "vms", "owner": chainfront_indexer::keys::lower(wallet), "vms": vms, "count": vms.len()}),
                )
            }
            "markets" => {
                let k = ChainKeys::new(self.src.home_chain_id);
                let ids: Vec<String> = conn.smembers(k.markets()).await.map_err(store)?;
                let mut pipe = redis::pipe();
                for id in ids.iter().take(MAX_ITEMS as usize) {
                    if let Ok(m) = id.parse::<alloy::primitives::FixedBytes<16>>() {
                        pipe.hgetall(k.market(m));
                    }
                }
                let markets: Vec<HashMap<String, String>> =
                    pipe.query_async(&mut conn).await.map_err(store)?;
                Ok(json!({"type": "markets", "markets": markets, "count": markets.len()}))
            }
            _ => {
                let mut out = Vec::new();
                for net in &self.src.networks {
                    let k = ChainKeys::new(net.chain_id);
                    let ids: Vec<String> = conn
                        .zrevrange(k.wallet_deposits(wallet), 0, MAX_ITEMS - 1)
                        .await
                        .map_err(store)?;
                    if ids.is_empty() {
                        continue;
                    }
                    let values: Vec<Option<String>> = redis::cmd("HMGET")
                        .arg(k.deposits())
                        .arg(&ids)
                        .query_async(&mut conn)
                        .await
                        .map_err(store)?;
                    for (id, v) in ids.iter().zip(values) {
                        if let Some(d) = v.and_then(|v| parse_indexed(net.chain_id, id, &v)) {
                            let units = u64::try_from(d.amount).unwrap_or(crate::ledger::MAX_UNITS);
                            out.push(json!({
                                "network": net.name, "chainId": net.chain_id,
                                "txHash": d.dep.tx.to_string(), "logIndex": d.dep.log_index,
                                "block": d.dep.block, "amount": Usd(units).text(),
                            }));
                        }
                    }
                }
                Ok(
                    json!({"type": "deposits", "wallet": chainfront_indexer::keys::lower(wallet), "deposits": out, "count": out.len()}),
                )
            }
        }
    }
}

fn kind(payload: &Value) -> Result<&str, Refusal> {
    let t = str_field(payload, "type")?
        .ok_or_else(|| Refusal::Invalid("payload.type is required".into()))?;
    if TRADING.contains(&t) {
        return Err(Refusal::NotOffered(format!(
            "data type `{t}` is trading market data, which this node does not serve; available: {}",
            TYPES.join(", ")
        )));
    }
    if !TYPES.contains(&t) {
        return Err(Refusal::Invalid(format!(
            "payload.type must be one of {}",
            TYPES.join(", ")
        )));
    }
    Ok(t)
}

impl Executor for Data {
    fn check(&self, payload: &Value) -> Result<Bound, Refusal> {
        kind(payload)?;
        Ok(Some(Decimal::ONE))
    }

    fn run<'a>(
        &'a self,
        ctx: &'a JobContext,
        payload: &'a Value,
    ) -> BoxFuture<'a, Result<Output, Failure>> {
        async move {
            let t = kind(payload).map_err(|e| Failure::new(e.to_string()))?;
            let q = payload.get("query").cloned().unwrap_or(Value::Null);
            let result = self.answer(ctx, t, &q).await.map_err(Failure::new)?;
            Ok(Output {
                result,
                units: Decimal::ONE,
            })
        }
        .boxed()
    }
}
