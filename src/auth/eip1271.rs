//! EIP-1271 contract wallets: asks the wallet's `isValidSignature(bytes32,
//! bytes)` whether it approves a signature. Only the magic value `0x1626ba7e`
//! approves; a revert, a non-contract (empty answer), an oversized answer or
//! any other answer is a "no". Only a failure to reach the chain is an error,
//! so an outage is never mistaken for a refusal, nor a refusal for an outage.
//!
//! Every call goes through the node's failover [`Rpc`] (per-call timeout,
//! failover), with a gas cap (`auth.eip1271_gas`) so a hostile contract
//! cannot burn the RPC node's whole gas cap, and an answer larger than
//! [`MAX_RETURN_BYTES`] counts as a refusal. "Is this address a contract"
//! answers are cached (`auth.code_cache_secs`), so a flood of bad signatures
//! costs no `eth_getCode` per request.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, FixedBytes};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use alloy::transports::{RpcError, TransportErrorKind};
use chainfront_indexer::contracts::IERC1271;
use chainfront_indexer::rpc::Rpc;

/// ERC-1271's "valid" answer: `bytes4(keccak256("isValidSignature(bytes32,bytes)"))`.
pub const MAGIC_VALUE: FixedBytes<4> = FixedBytes([0x16, 0x26, 0xba, 0x7e]);

/// Largest `isValidSignature` answer read; a `bytes4` is 32 bytes ABI-encoded.
pub const MAX_RETURN_BYTES: usize = 1024;

/// Cached `eth_getCode` answers before the cache is cleared (bounds memory).
const CODE_CACHE_MAX: usize = 50_000;

/// The chain could not be asked. The cause is for logs only (URLs redacted);
/// clients get the fixed message.
#[derive(Debug, thiserror::Error)]
#[error("chain unavailable; retry shortly")]
pub struct ChainUnavailable(pub String);

/// Contract-wallet checks with a code cache.
pub struct ContractWallets {
    rpc: Rpc,
    gas: u64,
    code_ttl: Duration,
    code: RwLock<HashMap<Address, (Instant, bool)>>,
}

impl std::fmt::Debug for ContractWallets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractWallets")
            .field("gas", &self.gas)
            .finish_non_exhaustive()
    }
}

impl ContractWallets {
    /// Checks through `rpc`, giving `isValidSignature` `gas`, caching code
    /// lookups for `code_ttl`.
    pub fn new(rpc: Rpc, gas: u64, code_ttl: Duration) -> Self {
        Self {
            rpc,
            gas,
            code_ttl,
            code: RwLock::default(),
        }
    }

    /// Whether `address` has code (cached).
    pub async fn is_contract(&self, address: Address) -> Result<bool, ChainUnavailable> {
        {
            let cache = self
                .code
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, has_code)) = cache.get(&address)
                && at.elapsed() < self.code_ttl
            {
                return Ok(*has_code);
            }
        }
        let code = self
            .rpc
            .call(
                "eth_getCode",
                |p| async move { p.get_code_at(address).await },
            )
            .await
            .map_err(|e| ChainUnavailable(e.to_string()))?;
        let has_code = !code.is_empty();
        let mut cache = self
            .code
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CODE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(address, (Instant::now(), has_code));
        Ok(has_code)
    }

    /// Does `wallet` approve `sig` over `hash`?
    pub async fn approves(
        &self,
        wallet: Address,
        hash: B256,
        sig: &[u8],
    ) -> Result<bool, ChainUnavailable> {
        is_valid_signature(&self.rpc, wallet, hash, sig, self.gas).await
    }
}

/// Does `wallet` approve `sig` over `hash`, given `gas`? `Ok(false)` for a
/// revert, a non-contract, an oversized or wrong answer; `Err` only when the
/// RPC call itself failed.
pub async fn is_valid_signature(
    rpc: &Rpc,
    wallet: Address,
    hash: B256,
    sig: &[u8],
    gas: u64,
) -> Result<bool, ChainUnavailable> {
    let input = IERC1271::isValidSignatureCall {
        hash,
        signature: Bytes::copy_from_slice(sig),
    }
    .abi_encode();
    let tx = TransactionRequest::default()
        .with_to(wallet)
        .with_input(input)
        .with_gas_limit(gas);
    let answer = rpc
        .call("eip1271", |p| {
            let tx = tx.clone();
            async move {
                match p.call(tx).await {
                    Ok(data) => Ok(Some(data)),
                    Err(e) if is_refusal(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
        .map_err(|e| ChainUnavailable(e.to_string()))?;
    Ok(answer.is_some_and(|data| approves(&data)))
}

/// Whether an `isValidSignature` answer is exactly the magic value.
fn approves(data: &[u8]) -> bool {
    (32..=MAX_RETURN_BYTES).contains(&data.len())
        && data[..4] == MAGIC_VALUE[..]
        && data[4..32].iter().all(|b| *b == 0)
}

/// An error that is the contract's answer rather than the chain's absence:
/// an execution failure the node reports (revert, out of gas, invalid opcode).
fn is_refusal(e: &RpcError<TransportErrorKind>) -> bool {
    match e {
        RpcError::ErrorResp(payload) => {
            let message = payload.message.to_ascii_lowercase();
            payload.code == 3
                || payload.as_revert_data().is_some()
                || [
                    "revert",
                    "out of gas",
                    "outofgas",
                    "invalid opcode",
                    "stack underflow",
                    "gas required exceeds",
                    "execution",
                    "evm error",
                    "oog",
                ]
                .iter()
                .any(|m| message.contains(m))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_the_selector() {
        let selector = alloy::primitives::keccak256("isValidSignature(bytes32,bytes)");
        assert_eq!(MAGIC_VALUE.as_slice(), &selector[..4]);
    }

    #[test]
    fn only_the_exact_magic_answer_approves() {
        let mut good = [0u8; 32];
        good[..4].copy_from_slice(MAGIC_VALUE.as_slice());
        assert!(approves(&good));
        assert!(!approves(&good[..4]), "not ABI-encoded");
        let mut dirty = good;
        dirty[31] = 1;
        assert!(!approves(&dirty));
        let big = [good.to_vec(), vec![0; MAX_RETURN_BYTES]].concat();
        assert!(!approves(&big), "oversized answers are refusals");
        assert!(!approves(&[]));
    }

    #[tokio::test]
    async fn an_unreachable_chain_is_an_error_not_a_refusal() {
        let port = crate::devnet::free_port().expect("port");
        let rpc = Rpc::new(
            &[format!("http://user:secret@127.0.0.1:{port}/KEY")],
            chainfront_indexer::retry::RetryPolicy {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
                max_retries: 0,
            },
            Duration::from_secs(2),
        )
        .expect("rpc");
        let answer = is_valid_signature(&rpc, Address::repeat_byte(1), B256::ZERO, &[], 100_000)
            .await
            .expect_err("unreachable");
        assert_eq!(answer.to_string(), "chain unavailable; retry shortly");
        assert!(
            !answer.0.contains("secret") && !answer.0.contains("KEY"),
            "{}",
            answer.0
        );
    }
}
