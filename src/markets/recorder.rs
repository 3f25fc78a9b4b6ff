//! Records plain-transfer submissions on chain: the operator's
//! `recordSubmission(market, creator, type, text, token, stake, paymentTx)`,
//! sent through the node's one transaction sender (`crate::chain`) under the
//! send id `record:<payment tx>:<round>`.
//!
//! Claims wait in a Redis queue (`claims`); the recorder leases them, so a
//! crashed process's claims come back to any replica after the lease. A
//! crash after the operator's transaction was signed resumes that same
//! transaction (the sender's record per send id), and the contract's
//! `PaymentAlreadyUsed` refuses a second record of one payment whatever
//! else happened — the recorder then reads it as recorded. A claim whose
//! payment left the chain (a reorg) is released, never recorded: the
//! contract only checks its unaccounted balance, so recording it would spend
//! someone else's payment.

use std::sync::Arc;
use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{B256, U256};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::{SolCall, SolEvent, SolInterface};
use chainfront_indexer::contracts::SubmissionStakes;
use chainfront_indexer::contracts::SubmissionStakes::SubmissionStakesErrors as StakeError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::claims::{Claim, ClaimStatus};
use super::{Markets, Result};
use crate::chain::{SendError, TxSender};

/// Recorder tuning (from `[markets]`).
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// How often the queue is looked at when nothing wakes the recorder.
    pub poll_interval: Duration,
    /// How long a leased claim is kept from other recorders.
    pub lease: Duration,
    /// Attempts (transient failures) before a claim is given up.
    pub max_attempts: u32,
    /// First retry delay (doubles per attempt, capped at a minute).
    pub retry_base: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(120),
            max_attempts: 20,
            retry_base: Duration::from_secs(1),
        }
    }
}

/// What one attempt at a claim came to.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing left to do for it.
    Done,
    /// Try again after this long (with this error noted).
    Retry(String),
    /// The record transaction is sent but not mined yet.
    Sent(B256),
}

/// Why a simulation's revert is final, in the words a client understands.
fn revert_reason(e: &StakeError) -> Option<&'static str> {
    Some(match e {
        StakeError::MarketNotOpen(_) => "the market closed before the submission was recorded",
        StakeError::MarketAlreadyResolved(_) => {
            "the market was resolved before the submission was recorded"
        }
        StakeError::OriginalExists(_) => "Market already has original",
        StakeError::OriginalRequired(_) => "the market has no original submission",
        StakeError::InsufficientPayment(_) => {
            "the stake escrow does not hold the payment (the fee may have changed)"
        }
        StakeError::InvalidText(_) => "predicted_text is not acceptable to the contract",
        StakeError::TokenNotAllowed(_) => "the stake currency is not allowed by the contract",
        StakeError::ZeroStake(_) => "the stake is zero",
        StakeError::MarketNotFound(_) => "Market not found",
        _ => return None,
    })
}

/// The recorder of one node.
pub struct Recorder {
    markets: Arc<Markets>,
    sender: Arc<TxSender>,
    cfg: RecorderConfig,
}

impl Recorder {
    /// A recorder sending with `sender` (the stakes contract's operator).
    pub fn new(markets: Arc<Markets>, sender: Arc<TxSender>, cfg: RecorderConfig) -> Self {
        Self {
            markets,
            sender,
            cfg,
        }
    }

    /// Works the queue until `shutdown`; woken early by new claims.
    pub async fn run(&self, shutdown: CancellationToken) {
        info!(target: "chainfront::markets", operator = %self.sender.address(), "submission recorder started");
        loop {
            if let Err(e) = self.pass().await {
                warn!(target: "chainfront::markets", error = %e, "recorder pass failed; retrying");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.markets.recorder_wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
            }
        }
    }

    /// Leases the due claims and works each once. Returns how many it leased.
    pub async fn pass(&self) -> Result<usize> {
        let claims = self.markets.claims();
        let lease_ms = u64::try_from(self.cfg.lease.as_millis()).unwrap_or(u64::MAX);
        let due = claims.lease(now_ms(), lease_ms, 16).await?;
        let n = due.len();
        let work = due.into_iter().map(|tx| self.work(tx));
        futures_util::future::join_all(work).await;
        Ok(n)
    }

    async fn work(&self, tx: B256) {
        let claims = self.markets.claims();
        let claim = match claims.get(tx).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                let _ = claims.dequeue(tx).await;
                return;
            }
            Err(e) => {
                warn!(target: "chainfront::markets", payment_tx = %tx, error = %e, "cannot read the claim");
                return;
            }
        };
        let step = match self.attempt(&claim).await {
            Ok(step) => step,
            Err(e) => Step::Retry(e.to_string()),
        };
        let result = match step {
            Step::Done => Ok(()),
            Step::Sent(record_tx) => match claims.mark_sent(tx, record_tx).await {
                Ok(()) => claims.requeue(tx, now_ms() + 1_000).await,
                Err(e) => Err(e),
            },
            Step::Retry(error) if claim.attempts + 1 >= self.cfg.max_attempts => {
                warn!(target: "chainfront::markets", payment_tx = %tx, attempts = claim.attempts + 1, error = %error, "giving up recording a submission");
                claims
                    .mark_failed(
                        &claim,
                        &format!("gave up after {} attempts: {error}", claim.attempts + 1),
                    )
                    .await
            }
            Step::Retry(error) => {
                let delay = self
                    .cfg
                    .retry_base
                    .saturating_mul(1 << claim.attempts.min(6))
                    .min(Duration::from_secs(60));
                warn!(target: "chainfront::markets", payment_tx = %tx, attempt = claim.attempts + 1, error = %error, "recording a submission failed; will retry");
                let due = now_ms() + u64::try_from(delay.as_millis()).unwrap_or(60_000);
                claims.retry_later(tx, due, &error).await
            }
        };
        if let Err(e) = result {
            warn!(target: "chainfront::markets", payment_tx = %tx, error = %e, "cannot update the claim");
        }
    }

    async fn attempt(&self, claim: &Claim) -> Result<Step> {
        let claims = self.markets.claims();
        let tx = claim.payment_tx;
        if !matches!(claim.status, ClaimStatus::Pending | ClaimStatus::Sent) {
            claims.dequeue(tx).await?;
            return Ok(Step::Done);
        }
        if let Some(s) = self.markets.index().submission_for_payment(tx).await? {
            claims.mark_recorded(claim, Some(s.id), Some(s.tx)).await?;
            return Ok(Step::Done);
        }
        // Recording a payment that a reorg dropped would spend someone
        // else's unaccounted balance: such a claim is released instead.
        if !self.markets.payment_on_chain(tx).await? {
            warn!(target: "chainfront::markets", payment_tx = %tx, "claimed payment is no longer on chain (reorg); claim released");
            claims.release(claim).await?;
            return Ok(Step::Done);
        }
        let Some(stakes) = self.markets.contracts().stakes else {
            return Ok(Step::Retry("no submission_stakes contract".into()));
        };
        let call = SubmissionStakes::recordSubmissionCall {
            marketId: claim.market_id,
            creator: claim.creator,
            submissionType: claim.kind.as_u8(),
            predictedText: claim.predicted_text.clone(),
            stakeToken: claim.stake_token,
            stake: claim.stake,
            paymentTxHash: tx,
        };
        let request = TransactionRequest::default()
            .with_to(stakes)
            .with_input(call.abi_encode());
        let id = format!("record:{tx}:{}", claim.round);
        match self.sender.send(&id, request).await {
            Ok(receipt) => {
                let id = submission_id(&receipt, stakes);
                info!(target: "chainfront::markets", payment_tx = %tx, record_tx = %receipt.transaction_hash, submission_id = ?id, "submission recorded on chain");
                claims
                    .mark_recorded(claim, id, Some(receipt.transaction_hash))
                    .await?;
                Ok(Step::Done)
            }
            Err(SendError::WouldRevert { data, message }) => {
                let decoded = data.as_ref().and_then(|d| StakeError::abi_decode(d).ok());
                match decoded {
                    Some(StakeError::PaymentAlreadyUsed(_)) => {
                        // Recorded before (by us before a crash, or by another
                        // replica): never twice. The index will show it.
                        info!(target: "chainfront::markets", payment_tx = %tx, "payment already recorded on chain");
                        claims.mark_recorded(claim, None, None).await?;
                        Ok(Step::Done)
                    }
                    Some(e) => match revert_reason(&e) {
                        Some(reason) => {
                            warn!(target: "chainfront::markets", payment_tx = %tx, reason, "submission cannot be recorded");
                            claims.mark_failed(claim, reason).await?;
                            Ok(Step::Done)
                        }
                        // NotOperator and the like: a configuration problem
                        // an operator can fix; keep retrying.
                        None => Ok(Step::Retry(format!("recordSubmission would revert: {e:?}"))),
                    },
                    None => Ok(Step::Retry(format!(
                        "recordSubmission would revert: {message}"
                    ))),
                }
            }
            Err(SendError::Reverted { hash, .. }) => {
                // Mined and reverted (the state moved after the simulation):
                // the next round simulates again and names the reason.
                claims.next_round(tx).await?;
                Ok(Step::Retry(format!("record transaction {hash} reverted")))
            }
            Err(SendError::Pending { hash }) => Ok(Step::Sent(hash)),
            Err(e) => Ok(Step::Retry(e.to_string())),
        }
    }
}

/// The submission id in a `recordSubmission` receipt.
fn submission_id(receipt: &TransactionReceipt, stakes: alloy::primitives::Address) -> Option<U256> {
    receipt
        .inner
        .logs()
        .iter()
        .filter(|l| l.address() == stakes)
        .find_map(|l| SubmissionStakes::SubmissionCreated::decode_log(&l.inner).ok())
        .map(|e| e.submissionId)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_reverts_have_client_reasons_and_config_problems_do_not() {
        let closed = StakeError::MarketNotOpen(SubmissionStakes::MarketNotOpen {
            marketId: Default::default(),
        });
        assert!(revert_reason(&closed).is_some_and(|r| r.contains("closed")));
        let original = StakeError::OriginalExists(SubmissionStakes::OriginalExists {
            marketId: Default::default(),
        });
        assert_eq!(
            revert_reason(&original),
            Some("Market already has original")
        );
        let operator = StakeError::NotOperator(SubmissionStakes::NotOperator {});
        assert_eq!(
            revert_reason(&operator),
            None,
            "retried: an owner can fix it"
        );
        let used = StakeError::PaymentAlreadyUsed(SubmissionStakes::PaymentAlreadyUsed {
            paymentTxHash: B256::ZERO,
        });
        assert_eq!(
            revert_reason(&used),
            None,
            "handled as recorded, never failed"
        );
    }
}
