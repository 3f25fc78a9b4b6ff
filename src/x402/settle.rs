//! Settlement on chain: the transaction that executes a verified
//! authorization (`transferWithAuthorization`, or the marketplace's gas-free
//! `purchaseVMWithAuthorization`), sent through the node's one transaction
//! sender with the relayer key, and the reading of what the chain says about
//! it afterwards (receipts, the `Transfer` log, who used an authorization).
//!
//! Every send for one authorization uses the same send id, so a second
//! attempt (a retry after a timeout, another replica taking over) resumes the
//! recorded transaction instead of signing a new one; and the token's own
//! EIP-3009 nonce makes a second execution impossible on chain anyway.

use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, TransactionReceipt, TransactionRequest};
use alloy::sol_types::{SolCall, SolEvent, SolInterface};
use chainfront_indexer::contracts::{MockUSDC, VMMarketplace};
use chainfront_indexer::keys::lower;
use chainfront_indexer::rpc::Rpc;

use super::verify::{Checked, Refusal, SignatureCheck};
use crate::chain::{SendError, TxSender};

/// What executing an authorization does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `token.transferWithAuthorization`: the payer pays `payTo`.
    Transfer,
    /// `marketplace.purchaseVMWithAuthorization`: the payer's
    /// `ReceiveWithAuthorization` pays the marketplace, which pays the
    /// treasury and mints the VM NFT to the payer.
    PurchaseVm {
        /// The marketplace.
        marketplace: Address,
        /// Tier 0-7.
        tier: u8,
        /// Days.
        days: u16,
    },
}

/// How every x402 settlement's send id starts.
pub const SEND_ID_PREFIX: &str = "x402:";
/// How the send id of a settlement that buys credits (credited to the payer
/// as a deposit would be) starts; every other x402 settlement pays for a
/// service and is never a deposit.
pub const CREDIT_SEND_ID_PREFIX: &str = "x402:credit:";

/// The sender's idempotency id for one authorization's settlement. It names
/// what the payment is for, and the sender records it with the signed
/// transaction before the broadcast, so the deposit path can tell a payment
/// for a service from the transaction hash alone (see [`never_a_deposit`]).
pub fn send_id(token: Address, payer: Address, nonce: B256, credit: bool) -> String {
    format!(
        "{}{}:{}:{nonce:#x}",
        if credit {
            CREDIT_SEND_ID_PREFIX
        } else {
            SEND_ID_PREFIX
        },
        lower(token),
        lower(payer)
    )
}

/// Whether a transaction sent under `send_id` is an x402 payment for a
/// service (a credentials fetch, a VM), whose transfer is never a deposit.
pub fn never_a_deposit(send_id: &str) -> bool {
    send_id.starts_with(SEND_ID_PREFIX) && !send_id.starts_with(CREDIT_SEND_ID_PREFIX)
}

/// The transaction that executes `checked` as `action`.
pub fn transaction(
    token: Address,
    action: Action,
    checked: &Checked,
) -> Result<TransactionRequest, Refusal> {
    let a = &checked.authorization;
    let (to, input) = match (action, &checked.signature) {
        (Action::Transfer, SignatureCheck::Ecdsa(sig)) => {
            let (v, r, s) = vrs(sig);
            let call = MockUSDC::transferWithAuthorization_1Call {
                from: a.from,
                to: a.to,
                value: a.value,
                validAfter: a.valid_after,
                validBefore: a.valid_before,
                nonce: a.nonce,
                v,
                r,
                s,
            };
            (token, call.abi_encode())
        }
        (Action::Transfer, SignatureCheck::Contract { signature, .. }) => {
            let call = MockUSDC::transferWithAuthorization_0Call {
                from: a.from,
                to: a.to,
                value: a.value,
                validAfter: a.valid_after,
                validBefore: a.valid_before,
                nonce: a.nonce,
                signature: Bytes::copy_from_slice(signature),
            };
            (token, call.abi_encode())
        }
        (
            Action::PurchaseVm {
                marketplace,
                tier,
                days,
            },
            SignatureCheck::Ecdsa(sig),
        ) => {
            let (v, r, s) = vrs(sig);
            let call = VMMarketplace::purchaseVMWithAuthorizationCall {
                buyer: a.from,
                tier,
                durationDays: days,
                validAfter: a.valid_after,
                validBefore: a.valid_before,
                nonce: a.nonce,
                v,
                r,
                s,
            };
            (marketplace, call.abi_encode())
        }
        (Action::PurchaseVm { .. }, SignatureCheck::Contract { .. }) => {
            return Err(Refusal::new(
                "invalid_exact_evm_payload_signature",
                "a gas-free VM purchase needs a 65-byte ECDSA signature (purchaseVMWithAuthorization takes v, r, s); contract-wallet signatures can pay the other routes",
            ));
        }
    };
    Ok(TransactionRequest::default()
        .with_to(to)
        .with_input(Bytes::from(input)))
}

fn vrs(sig: &[u8; 65]) -> (u8, B256, B256) {
    (
        sig[64],
        B256::from_slice(&sig[..32]),
        B256::from_slice(&sig[32..64]),
    )
}

/// How a settlement attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Mined, succeeded and confirmed.
    Done(Box<TransactionReceipt>),
    /// Definitely not executed (refused before anything was sent, or
    /// reverted): the claim can be released.
    Failed(Refusal),
    /// The simulation says the authorization was already used: someone
    /// (maybe an earlier attempt of ours whose record is gone) executed it.
    AlreadyUsed(Refusal),
    /// Sent (or maybe sent), fate unknown: keep the claim, resume later.
    Unknown {
        /// The transaction, when known.
        hash: Option<B256>,
        /// Why it is not known, for logs.
        cause: String,
    },
}

/// Sends (or resumes) `tx` under `id`.
pub async fn send(sender: &TxSender, id: &str, tx: TransactionRequest) -> Outcome {
    match sender.send(id, tx).await {
        Ok(receipt) => Outcome::Done(Box::new(receipt)),
        Err(SendError::WouldRevert { message, data }) => {
            let refusal = revert_refusal(&message, data.as_ref());
            if refusal.code == "invalid_exact_evm_nonce_already_used" {
                Outcome::AlreadyUsed(refusal)
            } else {
                Outcome::Failed(refusal)
            }
        }
        Err(SendError::Reverted { hash, .. }) => Outcome::Failed(Refusal::new(
            "transaction_failed",
            format!("the settlement transaction {hash} reverted; nothing was transferred"),
        )),
        Err(SendError::Rejected(m)) => Outcome::Failed(Refusal::new(
            "transaction_failed",
            format!("the chain refused the settlement transaction ({m}); nothing was transferred"),
        )),
        Err(SendError::Invalid(m)) => Outcome::Failed(Refusal::new("transaction_failed", m)),
        Err(SendError::Pending { hash }) => Outcome::Unknown {
            hash: Some(hash),
            cause: "not confirmed within the settlement timeout".into(),
        },
        Err(SendError::Unavailable(cause)) => Outcome::Unknown { hash: None, cause },
        Err(SendError::Redis(e)) => Outcome::Unknown {
            hash: None,
            cause: format!("redis: {e}"),
        },
    }
}

/// A refusal from a simulation's revert: EIP-3009's reasons by name, the
/// token's and marketplace's custom errors decoded.
pub fn revert_refusal(message: &str, data: Option<&Bytes>) -> Refusal {
    let reason = data
        .and_then(|d| alloy::sol_types::decode_revert_reason(d))
        .unwrap_or_else(|| message.to_owned());
    if let Some(d) = data {
        if let Ok(MockUSDC::MockUSDCErrors::ERC20InsufficientBalance(e)) =
            MockUSDC::MockUSDCErrors::abi_decode(d)
        {
            return Refusal::new(
                "invalid_exact_evm_insufficient_balance",
                format!(
                    "the payer holds {} USDC base units, less than the {} authorized",
                    e.balance, e.needed
                ),
            );
        }
        if let Ok(e) = VMMarketplace::VMMarketplaceErrors::abi_decode(d) {
            return Refusal::new(
                "invalid_vm_purchase",
                format!("the marketplace refuses this purchase: {e:?}"),
            );
        }
    }
    let r = reason.to_ascii_lowercase();
    let (code, text) = if r.contains("authorization is used or canceled") {
        (
            "invalid_exact_evm_nonce_already_used",
            "this authorization's nonce was already used (or canceled) on chain; sign a new one",
        )
    } else if r.contains("authorization is expired") {
        (
            "invalid_exact_evm_payload_authorization_valid_before",
            "the authorization expired before it could be settled; sign a new one",
        )
    } else if r.contains("not yet valid") {
        (
            "invalid_exact_evm_payload_authorization_valid_after",
            "the authorization is not valid yet on chain (validAfter)",
        )
    } else if r.contains("invalid signature") {
        (
            "invalid_exact_evm_payload_signature",
            "the token rejects the signature",
        )
    } else if r.contains("exceeds balance") {
        (
            "invalid_exact_evm_insufficient_balance",
            "the payer's balance does not cover the payment",
        )
    } else if r.contains("paused") {
        ("invalid_vm_purchase", "the marketplace is paused")
    } else {
        return Refusal::new(
            "invalid_exact_evm_transaction_simulation_failed",
            format!("the settlement would revert: {reason}"),
        );
    };
    Refusal::new(code, text)
}

/// The index of the `Transfer(from → to, value)` log of `token` in `receipt`.
pub fn transfer_log(
    receipt: &TransactionReceipt,
    token: Address,
    from: Address,
    to: Address,
    value: U256,
) -> Option<u64> {
    receipt.inner.logs().iter().find_map(|l| {
        if l.address() != token {
            return None;
        }
        let ev = MockUSDC::Transfer::decode_log(&l.inner).ok()?;
        (ev.from == from && ev.to == to && ev.value == value)
            .then_some(l.log_index)
            .flatten()
    })
}

/// Whether `receipt` used the authorization (payer, nonce) of `token`.
pub fn used_authorization(
    receipt: &TransactionReceipt,
    token: Address,
    payer: Address,
    nonce: B256,
) -> bool {
    receipt.inner.logs().iter().any(|l| {
        l.address() == token
            && MockUSDC::AuthorizationUsed::decode_log(&l.inner)
                .is_ok_and(|ev| ev.authorizer == payer && ev.nonce == nonce)
    })
}

/// The transaction that used authorization (payer, nonce), searched from
/// `from_block` on.
pub async fn find_authorization_use(
    rpc: &Rpc,
    token: Address,
    payer: Address,
    nonce: B256,
    from_block: u64,
) -> Result<Option<B256>, String> {
    let filter = Filter::new()
        .address(token)
        .event_signature(MockUSDC::AuthorizationUsed::SIGNATURE_HASH)
        .topic1(payer.into_word())
        .topic2(nonce)
        .from_block(from_block);
    let logs = rpc
        .call("eth_getLogs", |p| {
            let f = filter.clone();
            async move { p.get_logs(&f).await }
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(logs.first().and_then(|l| l.transaction_hash))
}

/// The receipt of `hash` once it has `confirmations` blocks on top, waiting
/// at most `timeout`. `Ok(None)`: not there (yet).
pub async fn confirmed_receipt(
    rpc: &Rpc,
    hash: B256,
    confirmations: u64,
    timeout: Duration,
    poll: Duration,
) -> Result<Option<TransactionReceipt>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let receipt = rpc
            .call("eth_getTransactionReceipt", |p| async move {
                p.get_transaction_receipt(hash).await
            })
            .await
            .map_err(|e| e.to_string())?;
        if let Some(r) = receipt {
            let head = rpc
                .call(
                    "eth_blockNumber",
                    |p| async move { p.get_block_number().await },
                )
                .await
                .map_err(|e| e.to_string())?;
            if head.saturating_sub(r.block_number.unwrap_or(u64::MAX)) >= confirmations {
                return Ok(Some(r));
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::sol_types::SolError;

    #[test]
    fn revert_reasons_become_x402_codes() {
        let data =
            |reason: &str| -> Bytes { alloy::sol_types::Revert::from(reason).abi_encode().into() };
        let code = |r: &str| revert_refusal("execution reverted", Some(&data(r))).code;
        assert_eq!(
            code("FiatTokenV2: authorization is used or canceled"),
            "invalid_exact_evm_nonce_already_used"
        );
        assert_eq!(
            code("FiatTokenV2: authorization is expired"),
            "invalid_exact_evm_payload_authorization_valid_before"
        );
        assert_eq!(
            code("FiatTokenV2: invalid signature"),
            "invalid_exact_evm_payload_signature"
        );
        let short: Bytes = MockUSDC::ERC20InsufficientBalance {
            sender: Address::ZERO,
            balance: U256::from(1),
            needed: U256::from(2),
        }
        .abi_encode()
        .into();
        assert_eq!(
            revert_refusal("execution reverted", Some(&short)).code,
            "invalid_exact_evm_insufficient_balance"
        );
        assert_eq!(
            revert_refusal("boom", None).code,
            "invalid_exact_evm_transaction_simulation_failed"
        );
    }

    #[test]
    fn send_ids_fit_the_senders_limit_and_name_their_purpose() {
        for credit in [false, true] {
            let id = send_id(
                Address::repeat_byte(1),
                Address::repeat_byte(2),
                B256::repeat_byte(3),
                credit,
            );
            assert!(id.len() <= 200 && !id.contains(' '), "{id}");
            assert_eq!(never_a_deposit(&id), !credit, "{id}");
        }
        assert!(!never_a_deposit("markets:record:0x01"), "other senders");
    }
}
