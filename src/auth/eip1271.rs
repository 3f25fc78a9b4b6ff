//! EIP-1271 contract wallets: asks the wallet's `isValidSignature(bytes32,
//! bytes)` whether it approves a signature. Only the magic value `0x1626ba7e`
//! approves; a revert, a non-contract (empty answer) or any other answer is a
//! "no". Only a failure to reach the chain is an error, so an outage is never
//! mistaken for a refusal, nor a refusal for an outage.

use alloy::contract::Error as ContractError;
use alloy::primitives::{Address, B256, Bytes, FixedBytes};
use alloy::providers::DynProvider;
use alloy::transports::RpcError;
use chainfront_indexer::contracts::IERC1271;

/// ERC-1271's "valid" answer: `bytes4(keccak256("isValidSignature(bytes32,bytes)"))`.
pub const MAGIC_VALUE: FixedBytes<4> = FixedBytes([0x16, 0x26, 0xba, 0x7e]);

/// The chain could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("chain unavailable: {0}")]
pub struct ChainUnavailable(pub String);

/// Does `wallet` approve `sig` over `hash`? `Ok(false)` for a revert, a
/// non-contract or a wrong answer; `Err` only when the RPC call itself failed.
pub async fn is_valid_signature(
    provider: &DynProvider,
    wallet: Address,
    hash: B256,
    sig: &[u8],
) -> Result<bool, ChainUnavailable> {
    let answer = IERC1271::new(wallet, provider)
        .isValidSignature(hash, Bytes::copy_from_slice(sig))
        .call()
        .await;
    match answer {
        Ok(magic) => Ok(magic == MAGIC_VALUE),
        Err(e) if is_refusal(&e) => Ok(false),
        Err(e) => Err(ChainUnavailable(e.to_string())),
    }
}

/// [`is_valid_signature`] bounded for callers that let strangers name the
/// wallet (x402 payers): the call gets at most `gas` and `timeout`, so a
/// contract cannot make the node do unbounded work for one request. Running
/// out of gas is a "no"; a timeout is [`ChainUnavailable`].
pub async fn is_valid_signature_bounded(
    provider: &DynProvider,
    wallet: Address,
    hash: B256,
    sig: &[u8],
    gas: u64,
    timeout: std::time::Duration,
) -> Result<bool, ChainUnavailable> {
    let contract = IERC1271::new(wallet, provider);
    let call = contract
        .isValidSignature(hash, Bytes::copy_from_slice(sig))
        .gas(gas);
    match tokio::time::timeout(timeout, call.call()).await {
        Err(_) => Err(ChainUnavailable(format!(
            "isValidSignature did not answer within {timeout:?}"
        ))),
        Ok(Ok(magic)) => Ok(magic == MAGIC_VALUE),
        Ok(Err(e)) if is_refusal(&e) => Ok(false),
        Ok(Err(e)) => Err(ChainUnavailable(e.to_string())),
    }
}

/// An error that is the contract's answer rather than the chain's absence:
/// empty or undecodable return data (no contract, no such function) or an
/// execution failure the node reports (revert, out of gas, invalid opcode).
fn is_refusal(e: &ContractError) -> bool {
    match e {
        ContractError::ZeroData(..) | ContractError::AbiError(_) => true,
        ContractError::TransportError(RpcError::ErrorResp(payload)) => {
            let message = payload.message.to_ascii_lowercase();
            payload.code == 3
                || payload.as_revert_data().is_some()
                || ["revert", "out of gas", "invalid opcode", "stack underflow"]
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

    #[tokio::test]
    async fn an_unreachable_chain_is_an_error_not_a_refusal() {
        let port = crate::devnet::free_port().expect("port");
        let provider =
            crate::node::read_provider(&format!("http://127.0.0.1:{port}")).expect("provider");
        let answer = is_valid_signature(&provider, Address::repeat_byte(1), B256::ZERO, &[]).await;
        assert!(answer.is_err(), "{answer:?}");
    }
}
