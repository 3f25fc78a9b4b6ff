//! The `POST /v1/deposit` fast path: a client names a transaction, the node
//! reads its receipt from that network's RPC and credits the USDC transfers
//! to the treasury it finds — the same transfers the indexer would credit
//! (the classification is the indexer's own, `Watched::ops_for_logs`), under
//! the same idempotency key, so whoever sees a deposit first credits it and
//! nobody credits it twice. A deposit the indexer later does not have (a
//! reorg) is reversed by the reconciler.

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Log;
use alloy::sol_types::SolEvent;
use chainfront_indexer::apply::{Op, Watched};
use chainfront_indexer::contracts::MockUSDC;
use chainfront_indexer::follow::HeadTag;
use chainfront_indexer::retry::RetryPolicy;
use chainfront_indexer::rpc::Rpc;

use super::{DepositRef, Usd};
use crate::config::Config;

/// One network deposits are accepted on.
#[derive(Clone)]
pub struct Network {
    /// Config name (`base`, `ethereum`, `polygon`, …).
    pub name: String,
    /// EIP-155 id.
    pub chain_id: u64,
    /// USDC there.
    pub usdc: Address,
    /// The treasury there.
    pub treasury: Address,
    /// Blocks behind the head before a deposit counts (as the indexer).
    pub confirmations: u64,
    /// Which head the indexer follows there.
    pub head: HeadTag,
    /// Deposits before this block are not followed by the indexer.
    pub start_block: u64,
    /// The indexer's view of this chain (what counts as a deposit).
    pub watched: Watched,
    /// Chain reads, with failover.
    pub rpc: Rpc,
}

/// What the client claims.
#[derive(Debug, Clone)]
pub struct Proof {
    /// The depositor.
    pub wallet: Address,
    /// The transaction.
    pub tx: B256,
    /// Network name, `eip155:<id>` or chain id.
    pub network: String,
    /// At least this much was sent.
    pub amount: Usd,
    /// Must be USDC.
    pub token: String,
}

/// A verified deposit transaction.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Confirmed: the wallet's transfers to the treasury in this transaction.
    Confirmed {
        /// Network name.
        network: String,
        /// Each transfer with its amount.
        deposits: Vec<(DepositRef, Usd)>,
    },
    /// Mined, not yet confirmed deeply enough.
    Pending {
        /// Blocks it has.
        confirmations: u64,
        /// Blocks it needs.
        required: u64,
    },
}

/// Why a deposit proof was refused (400), or could not be checked (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepositError {
    /// A network this node does not follow.
    #[error("unknown network `{0}`; this node accepts: {1}")]
    UnknownNetwork(String, String),
    /// Not USDC.
    #[error("token `{0}` is not accepted; deposits are USDC only")]
    Token(String),
    /// No such transaction.
    #[error("transaction {0} was not found on {1}")]
    NotFound(B256, String),
    /// It reverted.
    #[error("transaction {0} reverted on {1}; nothing was transferred")]
    Reverted(B256, String),
    /// No token transfer at all.
    #[error("transaction {0} contains no token transfer")]
    NoTransfer(B256),
    /// A transfer of another token.
    #[error("the transfer is of token {0}, not {1}'s USDC ({2})")]
    OtherToken(Address, String, Address),
    /// USDC, but not to the treasury.
    #[error("the USDC transfer goes to {0}, not to the treasury {1}")]
    OtherRecipient(Address, Address),
    /// USDC to the treasury, but from someone else.
    #[error("the USDC transfer to the treasury was sent by {0}, not by {1}")]
    OtherSender(Address, Address),
    /// A transfer to the treasury that is a VM payment or submission fee.
    #[error("the USDC transfer in {0} pays a VM or a submission; it is not a deposit")]
    NotADeposit(B256),
    /// The transfer paid for an x402 request (a credentials fetch).
    #[error("the USDC transfer in {0} paid for an x402 request; it is not a deposit")]
    X402Payment(B256),
    /// Less than claimed.
    #[error("the transaction transferred {0} USDC, less than amountUsd {1}")]
    TooSmall(Usd, Usd),
    /// Before the node's start block on that network.
    #[error(
        "the transaction is in block {0}, before block {1} where this node starts following {2}"
    )]
    BeforeStart(u64, u64, String),
    /// The chain could not be read.
    #[error("chain unavailable; retry shortly")]
    Unavailable,
}

/// Every network deposits are accepted on.
#[derive(Clone)]
pub struct Deposits {
    networks: Vec<Network>,
}

impl Deposits {
    /// One network per followed chain that has USDC and a treasury.
    pub fn from_config(config: &Config, rpc_timeout: Duration) -> crate::Result<Self> {
        let retry = RetryPolicy {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            max_retries: 2,
        };
        let mut networks = Vec::new();
        for spec in config.chain_specs()? {
            let (Some(usdc), Some(treasury)) = (spec.watched.usdc, spec.watched.treasury) else {
                continue;
            };
            networks.push(Network {
                name: spec.name.clone(),
                chain_id: spec.chain_id,
                usdc,
                treasury,
                confirmations: spec.follow.confirmations,
                head: spec.follow.head,
                start_block: spec.follow.start_block,
                rpc: Rpc::new(&spec.rpc_urls, retry, rpc_timeout)?,
                watched: spec.watched,
            });
        }
        Ok(Self { networks })
    }

    /// Every network.
    pub fn networks(&self) -> &[Network] {
        &self.networks
    }

    /// The network a client names: its config name, a well-known alias
    /// (`ethereum`/`mainnet`, `polygon`/`matic`), `eip155:<id>` or the chain id.
    pub fn network(&self, name: &str) -> Option<&Network> {
        let n = name.trim().to_ascii_lowercase();
        let by_id = n
            .strip_prefix("eip155:")
            .unwrap_or(&n)
            .parse::<u64>()
            .ok()
            .or(match n.as_str() {
                "ethereum" | "mainnet" | "eth" => Some(1),
                "base" => Some(8453),
                "polygon" | "matic" => Some(137),
                "base-sepolia" => Some(84532),
                _ => None,
            });
        self.networks
            .iter()
            .find(|x| x.name.eq_ignore_ascii_case(&n))
            .or_else(|| by_id.and_then(|id| self.networks.iter().find(|x| x.chain_id == id)))
    }

    fn names(&self) -> String {
        self.networks
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks a proof against the chain.
    pub async fn verify(&self, proof: &Proof) -> Result<Verdict, DepositError> {
        let net = self
            .network(&proof.network)
            .ok_or_else(|| DepositError::UnknownNetwork(proof.network.clone(), self.names()))?;
        if !proof.token.trim().eq_ignore_ascii_case("usdc") {
            return Err(DepositError::Token(proof.token.clone()));
        }
        let tx = proof.tx;
        let receipt = net
            .rpc
            .call("eth_getTransactionReceipt", |p| async move {
                p.get_transaction_receipt(tx).await
            })
            .await
            .map_err(|e| {
                tracing::warn!(target: "chainfront::ledger", network = %net.name, error = %e, "deposit receipt read failed");
                DepositError::Unavailable
            })?
            .ok_or_else(|| DepositError::NotFound(tx, net.name.clone()))?;
        let block = receipt
            .block_number
            .ok_or_else(|| DepositError::NotFound(tx, net.name.clone()))?;
        if !receipt.status() {
            return Err(DepositError::Reverted(tx, net.name.clone()));
        }
        if block < net.start_block {
            return Err(DepositError::BeforeStart(
                block,
                net.start_block,
                net.name.clone(),
            ));
        }
        let logs: Vec<Log> = receipt.inner.logs().to_vec();
        let deposits = classify(net, proof.wallet, tx, &logs)?;
        let total = Usd(deposits.iter().map(|(_, a)| a.0).sum());
        if total < proof.amount {
            return Err(DepositError::TooSmall(total, proof.amount));
        }
        let (have, required) = confirmations(net, block).await?;
        if have < required {
            return Ok(Verdict::Pending {
                confirmations: have,
                required,
            });
        }
        Ok(Verdict::Confirmed {
            network: net.name.clone(),
            deposits,
        })
    }
}

/// `(confirmations the block has, confirmations needed)`, by the same rule
/// the indexer follows the chain with.
async fn confirmations(net: &Network, block: u64) -> Result<(u64, u64), DepositError> {
    let unavailable = |e: chainfront_indexer::Error| {
        tracing::warn!(target: "chainfront::ledger", network = %net.name, error = %e, "deposit head read failed");
        DepositError::Unavailable
    };
    match net.head {
        HeadTag::Latest => {
            let head = net
                .rpc
                .call(
                    "eth_blockNumber",
                    |p| async move { p.get_block_number().await },
                )
                .await
                .map_err(unavailable)?;
            Ok((head.saturating_sub(block), net.confirmations))
        }
        tag => {
            let t = match tag {
                HeadTag::Safe => alloy::eips::BlockNumberOrTag::Safe,
                _ => alloy::eips::BlockNumberOrTag::Finalized,
            };
            // The indexer's minimal header: a provider that leaves out a
            // field nobody reads (e.g. `mixHash`) must not break proofs.
            let h = net.rpc.head(t).await.map_err(unavailable)?;
            let n = h.map(|h| h.number).unwrap_or(0);
            // Counted as "blocks until the tag passes it".
            Ok((if n >= block { 1 } else { 0 }, 1))
        }
    }
}

/// The wallet's deposits in a receipt's logs, classified exactly as the
/// indexer classifies them; when there are none, the most specific reason.
fn classify(
    net: &Network,
    wallet: Address,
    tx: B256,
    logs: &[Log],
) -> Result<Vec<(DepositRef, Usd)>, DepositError> {
    let deposits_key = net.watched.keys.deposits();
    let mut found = Vec::new();
    for op in net.watched.ops_for_logs(logs) {
        let Op::HSet { key, fields } = op else {
            continue;
        };
        if key != deposits_key {
            continue;
        }
        for (id, value) in fields {
            // `<tx>:<log index>` → `<from>:<amount>:<block>`.
            let Some(d) = parse_indexed(net.chain_id, &id, &value) else {
                continue;
            };
            if d.from == wallet {
                let amount = u64::try_from(d.amount)
                    .ok()
                    .filter(|a| *a <= super::MAX_UNITS)
                    .map(Usd)
                    .unwrap_or(Usd(super::MAX_UNITS));
                found.push((d.dep, amount));
            }
        }
    }
    if !found.is_empty() {
        return Ok(found);
    }
    // Nothing of the wallet's: say why.
    let transfers: Vec<(Address, MockUSDC::Transfer)> = logs
        .iter()
        .filter_map(|l| {
            MockUSDC::Transfer::decode_log(&l.inner)
                .ok()
                .map(|e| (l.address(), e.data))
        })
        .collect();
    if transfers.is_empty() {
        return Err(DepositError::NoTransfer(tx));
    }
    let usdc: Vec<&MockUSDC::Transfer> = transfers
        .iter()
        .filter(|(a, _)| *a == net.usdc)
        .map(|(_, t)| t)
        .collect();
    if usdc.is_empty() {
        return Err(DepositError::OtherToken(
            transfers[0].0,
            net.name.clone(),
            net.usdc,
        ));
    }
    if let Some(t) = usdc.iter().find(|t| t.to == net.treasury) {
        if t.from != wallet {
            return Err(DepositError::OtherSender(t.from, wallet));
        }
        return Err(DepositError::NotADeposit(tx));
    }
    Err(DepositError::OtherRecipient(usdc[0].to, net.treasury))
}

/// A deposit as the indexer stores it.
#[derive(Debug, Clone)]
pub struct IndexedDeposit {
    /// Where it is.
    pub dep: DepositRef,
    /// Sender.
    pub from: Address,
    /// Amount in base units.
    pub amount: U256,
}

/// Parses an `s:deposits` entry: field `<tx>:<log index>`, value
/// `<from>:<amount>:<block>` (see `docs/state.md`).
pub fn parse_indexed(chain_id: u64, id: &str, value: &str) -> Option<IndexedDeposit> {
    let (tx, log) = id.rsplit_once(':')?;
    let mut v = value.split(':');
    let from: Address = v.next()?.parse().ok()?;
    let amount: U256 = v.next()?.parse().ok()?;
    let block: u64 = v.next()?.parse().ok()?;
    Some(IndexedDeposit {
        dep: DepositRef {
            chain_id,
            tx: tx.parse().ok()?,
            log_index: log.parse().ok()?,
            block,
        },
        from,
        amount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_entries_parse() {
        let tx = format!("0x{}", "ab".repeat(32));
        let from = format!("0x{}", "12".repeat(20));
        let d =
            parse_indexed(7, &format!("{tx}:3"), &format!("{from}:1500000:42")).expect("parses");
        assert_eq!(d.dep.chain_id, 7);
        assert_eq!(d.dep.log_index, 3);
        assert_eq!(d.dep.block, 42);
        assert_eq!(d.amount, U256::from(1_500_000u64));
        assert_eq!(d.from, from.parse::<Address>().expect("addr"));
        assert!(parse_indexed(7, "junk", "x:y:z").is_none());
    }
}
