//! The one transaction sender: nonce management, gas estimation, broadcast
//! with failover, receipt wait — and crash safety through a record per
//! transaction, keyed by the caller's idempotency id.
//!
//! How a send goes:
//! 1. If a record for the id exists, the transaction was signed before (maybe
//!    by a process that then died): its receipt is looked up and, if it has
//!    none yet, the same signed bytes are broadcast again. Nothing new is
//!    signed unless the record's nonce was taken by another transaction (its
//!    bytes can then never be mined, so signing anew cannot execute twice).
//! 2. Otherwise the call is simulated (`eth_estimateGas`): a revert is
//!    answered with its data before anything is signed or spent.
//! 3. Under a per-signer lock (in process, and in Redis across replicas), the
//!    nonce is the larger of the chain's pending count and the next nonce
//!    this node handed out; the transaction is signed and **recorded before it
//!    is broadcast**, so a crash after the broadcast still knows its hash.
//! 4. The receipt is awaited (bounded), then the configured confirmations.
//!
//! A broadcast whose fate is unknown (every endpoint timed out) keeps its
//! record; the next `send` with the same id resumes it. Callers make their
//! own effects idempotent on top (a contract's "already used" check, an
//! EIP-3009 nonce), since a crash can always come between the chain and them.

use std::time::{Duration, Instant};

use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::Provider;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportErrorKind};
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::ChainKeys;
use chainfront_indexer::rpc::Rpc;
use redis::AsyncCommands;
use tracing::{info, warn};

/// Sender tuning.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Blocks on top of the including block before a send counts as done
    /// (0: the receipt is enough).
    pub confirmations: u64,
    /// How long to wait for a receipt before answering [`SendError::Pending`].
    pub receipt_timeout: Duration,
    /// How often to poll for the receipt and confirmations.
    pub poll_interval: Duration,
    /// Added to the gas estimate, in percent.
    pub gas_margin_percent: u64,
    /// How long the cross-replica signer lock lives if its holder dies.
    pub lock_ttl: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            confirmations: 0,
            receipt_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(200),
            gas_margin_percent: 20,
            lock_ttl: Duration::from_secs(30),
        }
    }
}

/// Why a send did not end in a successful, confirmed transaction.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The simulation reverted: nothing was signed or sent. `data` is the
    /// revert data (decode it with the contract's error types).
    #[error("the transaction would revert: {message}")]
    WouldRevert {
        /// The node's message.
        message: String,
        /// ABI-encoded revert data, when the node returned it.
        data: Option<Bytes>,
    },
    /// Mined, and reverted.
    #[error("transaction {hash} reverted")]
    Reverted {
        /// Its hash.
        hash: B256,
        /// Its receipt.
        receipt: Box<TransactionReceipt>,
    },
    /// The node refused the signed transaction (funds, fees, …); nothing is
    /// pending under this id any more.
    #[error("the node refused the transaction: {0}")]
    Rejected(String),
    /// Sent (or possibly sent) and not yet mined or confirmed within the
    /// receipt timeout: send again with the same id to resume.
    #[error("transaction {hash} is not confirmed yet")]
    Pending {
        /// Its hash.
        hash: B256,
    },
    /// The chain could not be reached. The cause is for logs (its text comes
    /// from the RPC layer, which redacts endpoint URLs), not for clients.
    #[error("chain unavailable")]
    Unavailable(String),
    /// Redis failed.
    #[error("state store unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    /// The id or transaction is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias.
pub type SendResult<T> = std::result::Result<T, SendError>;

/// What is known about one id's transaction (the record in Redis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRecord {
    /// Transaction hash.
    pub hash: B256,
    /// Its nonce.
    pub nonce: u64,
    /// The signed bytes (re-broadcast as they are).
    pub raw: Bytes,
}

/// What a node said to a call whose refusal is an answer, not a fault.
enum Answer<T> {
    Ok(T),
    Refused {
        message: String,
        data: Option<Bytes>,
    },
}

/// Lets [`Rpc::call`] retry and fail over on faults while a node's refusal
/// (a revert, "nonce too low", "insufficient funds") comes back as an answer.
fn refusal<T>(
    r: Result<T, RpcError<TransportErrorKind>>,
) -> Result<Answer<T>, RpcError<TransportErrorKind>> {
    match r {
        Ok(v) => Ok(Answer::Ok(v)),
        Err(RpcError::ErrorResp(p)) if is_refusal(p.code, &p.message) => Ok(Answer::Refused {
            message: p.message.to_string(),
            data: p.as_revert_data(),
        }),
        Err(e) => Err(e),
    }
}

/// Node answers about the transaction itself (as opposed to the node being
/// unwell, which `Rpc` retries elsewhere).
fn is_refusal(code: i64, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == 3
        || [
            "revert",
            "nonce too low",
            "nonce too high",
            "already known",
            "already imported",
            "known transaction",
            "insufficient funds",
            "underpriced",
            "fee cap",
            "intrinsic gas",
            "gas limit",
            "invalid sender",
            "exceeds block gas limit",
        ]
        .iter()
        .any(|p| m.contains(p))
}

fn nonce_too_low(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("nonce too low") || m.contains("nonce has already been used")
}

fn already_known(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("already known") || m.contains("already imported") || m.contains("known transaction")
}

/// Signs and sends one key's transactions on one chain.
pub struct TxSender {
    rpc: Rpc,
    wallet: EthereumWallet,
    from: Address,
    chain_id: u64,
    redis: RedisConn,
    keys: ChainKeys,
    cfg: SenderConfig,
    local: tokio::sync::Mutex<()>,
}

/// KEYS: lock. ARGV: token. Deletes the lock only if this holder owns it.
const UNLOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

impl TxSender {
    /// A sender signing with `signer` on `chain_id` through `rpc`.
    pub fn new(
        rpc: Rpc,
        signer: PrivateKeySigner,
        chain_id: u64,
        redis: RedisConn,
        cfg: SenderConfig,
    ) -> Self {
        let from = signer.address();
        Self {
            rpc,
            wallet: EthereumWallet::from(signer),
            from,
            chain_id,
            redis,
            keys: ChainKeys::new(chain_id),
            cfg,
            local: tokio::sync::Mutex::new(()),
        }
    }

    /// The address transactions are sent from.
    pub fn address(&self) -> Address {
        self.from
    }

    /// The send id this node signed transaction `hash` under, if it did
    /// (recorded before the broadcast).
    pub async fn sent_as(&self, hash: B256) -> SendResult<Option<String>> {
        let mut c = self.redis.clone();
        Ok(c.get(self.keys.tx_sent(hash)).await?)
    }

    /// The record of `id`'s transaction, if one was signed.
    pub async fn record(&self, id: &str) -> SendResult<Option<TxRecord>> {
        let mut c = self.redis.clone();
        let h: std::collections::HashMap<String, String> = c.hgetall(self.keys.tx(id)).await?;
        Ok(parse_record(&h))
    }

    /// Sends `tx` (its `to`, `input`, `value`; nonce, gas, fees and chain id
    /// are filled here) once for `id`, and waits for it to be mined and
    /// confirmed. Calling again with the same id never sends a second
    /// transaction while the first can still be mined.
    pub async fn send(&self, id: &str, tx: TransactionRequest) -> SendResult<TransactionReceipt> {
        if id.is_empty() || id.len() > 200 || id.chars().any(|c| c.is_whitespace()) {
            return Err(SendError::Invalid(
                "a send id is 1-200 characters without spaces".into(),
            ));
        }
        let tx = tx.with_from(self.from).with_chain_id(self.chain_id);
        if let Some(rec) = self.record(id).await? {
            match self.resume(&rec).await? {
                Some(outcome) => return outcome,
                None => {
                    warn!(target: "chainfront::chain", id, nonce = rec.nonce, hash = %rec.hash, "recorded transaction lost its nonce to another; signing it anew");
                }
            }
        }
        let gas = self.simulate(&tx).await?;
        let rec = self.sign_and_broadcast(id, tx, gas).await?;
        self.await_confirmed(rec.hash).await
    }

    /// Follows an earlier signed transaction: `Some(outcome)` if it is (or can
    /// still be) mined, `None` if its nonce went to another transaction and
    /// it never can be.
    async fn resume(&self, rec: &TxRecord) -> SendResult<Option<SendResult<TransactionReceipt>>> {
        if self.receipt(rec.hash).await?.is_some() {
            return Ok(Some(self.await_confirmed(rec.hash).await));
        }
        match self.broadcast(&rec.raw).await? {
            Answer::Ok(()) => Ok(Some(self.await_confirmed(rec.hash).await)),
            Answer::Refused { message, .. } if already_known(&message) => {
                Ok(Some(self.await_confirmed(rec.hash).await))
            }
            Answer::Refused { message, .. } if nonce_too_low(&message) => {
                // Mined between our receipt check and the broadcast?
                if self.receipt(rec.hash).await?.is_some() {
                    return Ok(Some(self.await_confirmed(rec.hash).await));
                }
                Ok(None)
            }
            Answer::Refused { message, .. } => Ok(Some(Err(SendError::Rejected(message)))),
        }
    }

    /// `eth_estimateGas` plus the margin; a revert is [`SendError::WouldRevert`].
    async fn simulate(&self, tx: &TransactionRequest) -> SendResult<u64> {
        let answer = self
            .rpc
            .call("eth_estimateGas", |p| {
                let tx = tx.clone();
                async move { refusal(p.estimate_gas(tx).await) }
            })
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        match answer {
            Answer::Ok(gas) => Ok(gas.saturating_mul(100 + self.cfg.gas_margin_percent) / 100),
            Answer::Refused { message, data } => Err(SendError::WouldRevert { message, data }),
        }
    }

    async fn sign_and_broadcast(
        &self,
        id: &str,
        tx: TransactionRequest,
        gas: u64,
    ) -> SendResult<TxRecord> {
        let _local = self.local.lock().await;
        let lock = self.lock().await?;
        let result = self.sign_and_broadcast_locked(id, tx, gas).await;
        self.unlock(&lock).await;
        result
    }

    async fn sign_and_broadcast_locked(
        &self,
        id: &str,
        tx: TransactionRequest,
        gas: u64,
    ) -> SendResult<TxRecord> {
        let fees = self
            .rpc
            .call("eth_feeHistory", |p| async move {
                p.estimate_eip1559_fees().await
            })
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        let mut c = self.redis.clone();
        // A nonce another sender (or another tool with the same key) used
        // makes the broadcast answer "nonce too low": take the chain's count
        // and sign again, a few times at most.
        for _ in 0..5 {
            let nonce = self.next_nonce().await?;
            let envelope: TxEnvelope = tx
                .clone()
                .with_nonce(nonce)
                .with_gas_limit(gas)
                .with_max_fee_per_gas(fees.max_fee_per_gas)
                .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
                .build(&self.wallet)
                .await
                .map_err(|e| SendError::Invalid(format!("cannot sign the transaction: {e}")))?;
            let rec = TxRecord {
                hash: *envelope.tx_hash(),
                nonce,
                raw: envelope.encoded_2718().into(),
            };
            // Recorded before it leaves: a crash after the broadcast still
            // knows what was sent under this id, and anyone reading the
            // chain (the deposit path) can tell this node's transaction by
            // its hash before it can be mined.
            let _: () = redis::pipe()
                .atomic()
                .hset_multiple(
                    self.keys.tx(id),
                    &[
                        ("hash", rec.hash.to_string()),
                        ("nonce", nonce.to_string()),
                        ("raw", rec.raw.to_string()),
                    ],
                )
                .ignore()
                .set(self.keys.tx_sent(rec.hash), id)
                .ignore()
                .query_async(&mut c)
                .await?;
            match self.broadcast(&rec.raw).await {
                Ok(Answer::Ok(())) => {}
                Ok(Answer::Refused { message, .. }) if already_known(&message) => {}
                Ok(Answer::Refused { message, .. }) if nonce_too_low(&message) => {
                    let _: () = c.del(self.keys.tx_nonce(self.from)).await?;
                    continue;
                }
                Ok(Answer::Refused { message, .. }) => {
                    let _: () = c
                        .del(&[self.keys.tx(id), self.keys.tx_sent(rec.hash)])
                        .await?;
                    return Err(SendError::Rejected(message));
                }
                Err(e) => {
                    // Unknown: the node may have it. Keep the record (the
                    // next send with this id resumes it) and only hand the
                    // nonce on if the node knows the transaction.
                    if self.known(rec.hash).await.unwrap_or(false) {
                        self.advance_nonce(nonce).await?;
                    }
                    return Err(e);
                }
            }
            self.advance_nonce(nonce).await?;
            info!(target: "chainfront::chain", id, nonce, hash = %rec.hash, from = %self.from, "transaction sent");
            return Ok(rec);
        }
        Err(SendError::Rejected(
            "the signer's nonce kept moving under us; is another tool sending with this key?"
                .into(),
        ))
    }

    /// The larger of the chain's pending count and the next nonce this node
    /// handed out (which covers transactions the node has not seen yet).
    async fn next_nonce(&self) -> SendResult<u64> {
        let from = self.from;
        let pending = self
            .rpc
            .call("eth_getTransactionCount", |p| async move {
                p.get_transaction_count(from).pending().await
            })
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        let mut c = self.redis.clone();
        let ours: Option<u64> = c.get(self.keys.tx_nonce(self.from)).await?;
        Ok(ours.map_or(pending, |n| n.max(pending)))
    }

    async fn advance_nonce(&self, used: u64) -> SendResult<()> {
        let mut c = self.redis.clone();
        let _: () = c.set(self.keys.tx_nonce(self.from), used + 1).await?;
        Ok(())
    }

    /// Takes the cross-replica signer lock, waiting for it (bounded by the
    /// lock's own lifetime twice over).
    async fn lock(&self) -> SendResult<String> {
        let token = format!("{:032x}", rand::random::<u128>());
        let key = self.keys.tx_lock(self.from);
        let ttl_ms = u64::try_from(self.cfg.lock_ttl.as_millis()).unwrap_or(u64::MAX);
        let deadline = Instant::now() + self.cfg.lock_ttl * 2;
        let mut c = self.redis.clone();
        loop {
            let got: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut c)
                .await?;
            if got.is_some() {
                return Ok(token);
            }
            if Instant::now() > deadline {
                return Err(SendError::Unavailable(
                    "the signer lock stayed taken; another replica is stuck sending".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn unlock(&self, token: &str) {
        let mut c = self.redis.clone();
        let released: redis::RedisResult<i64> = redis::Script::new(UNLOCK_LUA)
            .key(self.keys.tx_lock(self.from))
            .arg(token)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = released {
            // It expires by itself within `lock_ttl`.
            warn!(target: "chainfront::chain", error = %e, "could not release the signer lock");
        }
    }

    async fn broadcast(&self, raw: &Bytes) -> SendResult<Answer<()>> {
        self.rpc
            .call("eth_sendRawTransaction", |p| {
                let raw = raw.clone();
                async move { refusal(p.send_raw_transaction(&raw).await.map(|_| ())) }
            })
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))
    }

    async fn receipt(&self, hash: B256) -> SendResult<Option<TransactionReceipt>> {
        self.rpc
            .call("eth_getTransactionReceipt", |p| async move {
                p.get_transaction_receipt(hash).await
            })
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))
    }

    async fn known(&self, hash: B256) -> SendResult<bool> {
        self.rpc
            .call("eth_getTransactionByHash", |p| async move {
                p.get_transaction_by_hash(hash).await.map(|t| t.is_some())
            })
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))
    }

    async fn head(&self) -> SendResult<u64> {
        self.rpc
            .call(
                "eth_blockNumber",
                |p| async move { p.get_block_number().await },
            )
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))
    }

    /// Waits until `hash` is mined with the configured confirmations on top
    /// (re-reading the receipt then, in case a reorg moved it).
    async fn await_confirmed(&self, hash: B256) -> SendResult<TransactionReceipt> {
        let deadline = Instant::now() + self.cfg.receipt_timeout;
        loop {
            if let Some(receipt) = self.receipt(hash).await? {
                let block = receipt.block_number.unwrap_or(u64::MAX);
                if self.head().await?.saturating_sub(block) >= self.cfg.confirmations {
                    let again = if self.cfg.confirmations == 0 {
                        Some(receipt)
                    } else {
                        self.receipt(hash).await?
                    };
                    if let Some(receipt) = again {
                        if !receipt.status() {
                            return Err(SendError::Reverted {
                                hash,
                                receipt: Box::new(receipt),
                            });
                        }
                        return Ok(receipt);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(SendError::Pending { hash });
            }
            tokio::time::sleep(self.cfg.poll_interval).await;
        }
    }
}

fn parse_record(h: &std::collections::HashMap<String, String>) -> Option<TxRecord> {
    Some(TxRecord {
        hash: h.get("hash")?.parse().ok()?,
        nonce: h.get("nonce")?.parse().ok()?,
        raw: h.get("raw")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_refusals_are_told_from_faults() {
        assert!(is_refusal(3, "execution reverted: PaymentAlreadyUsed"));
        assert!(is_refusal(
            -32000,
            "nonce too low: next nonce 5, tx nonce 4"
        ));
        assert!(is_refusal(-32000, "already known"));
        assert!(is_refusal(
            -32003,
            "insufficient funds for gas * price + value"
        ));
        assert!(is_refusal(-32000, "replacement transaction underpriced"));
        assert!(!is_refusal(-32603, "internal error"));
        assert!(!is_refusal(-32000, "header not found"));
        assert!(nonce_too_low("Nonce too low"));
        assert!(!nonce_too_low("nonce too high"));
        assert!(already_known("ALREADY KNOWN"));
        assert!(already_known("transaction already imported")); // anvil
    }

    #[test]
    fn records_round_trip_and_partial_ones_are_ignored() {
        let mut h = std::collections::HashMap::new();
        h.insert("hash".to_owned(), B256::repeat_byte(7).to_string());
        h.insert("nonce".to_owned(), "12".to_owned());
        assert_eq!(parse_record(&h), None, "no raw bytes: not a usable record");
        h.insert("raw".to_owned(), "0x02f8".to_owned());
        let rec = parse_record(&h).expect("record");
        assert_eq!(rec.nonce, 12);
        assert_eq!(rec.raw.as_ref(), &[0x02, 0xf8]);
    }
}
