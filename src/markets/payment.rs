//! What a payment transaction proves, read from the chain (never from the
//! client): it is mined with the chain's `confirmations` on top, succeeded,
//! was sent by `creator_wallet`, and either paid at least stake + fee to the
//! treasury (the `SubmissionStakes` escrow: a plain native-ETH transfer for
//! `ETH`, a cbBTC `transfer` for `BTC`) or called `SubmissionStakes.submit`
//! itself with the submission's exact fields.

use alloy::consensus::Transaction as _;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionReceipt;
use alloy::sol_types::{SolCall, SolEvent};
use chainfront_indexer::contracts::{MockCbBTC, SubmissionStakes};

use super::fees::{self, Currency};
use super::index::{MarketId, SubmissionType};
use super::{CHAIN_TIMEOUT, Markets, MarketsError, Result};

/// What the client says it paid for.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The payment transaction.
    pub tx: B256,
    /// `creator_wallet`.
    pub creator: Address,
    /// The market.
    pub market: MarketId,
    /// The kind.
    pub kind: SubmissionType,
    /// The prediction (empty for null).
    pub text: &'a str,
    /// The currency.
    pub currency: Currency,
    /// Stake in base units.
    pub stake: U256,
    /// stake + fee in base units.
    pub required: U256,
    /// For messages: the decimal total and fee rate.
    pub total_text: String,
    /// For messages: the fee percentage.
    pub fee_percentage: String,
}

/// What the transaction turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paid {
    /// A plain transfer of `amount` to the escrow (to be recorded by the operator).
    Transfer {
        /// Base units paid.
        amount: U256,
    },
    /// The creator called `submit`: the submission exists on chain already.
    Submitted {
        /// Its id.
        submission_id: U256,
    },
}

fn tx_error(message: impl Into<String>) -> MarketsError {
    MarketsError::Transaction(message.into())
}

fn unavailable(e: impl std::fmt::Display) -> MarketsError {
    tracing::warn!(target: "chainfront::markets", error = %e, "chain read failed");
    MarketsError::Unavailable("the chain did not answer; retry shortly".into())
}

impl Markets {
    /// A transaction or receipt through the API's failover client, within
    /// [`CHAIN_TIMEOUT`]: `None` only when every endpoint answers that it
    /// has none ([`Rpc::call_found`]). One endpoint's `null` is never taken
    /// for a payment a reorg dropped: that releases a claim.
    ///
    /// [`Rpc::call_found`]: chainfront_indexer::rpc::Rpc::call_found
    async fn on_any_endpoint<T, F, Fut>(&self, what: &'static str, f: F) -> Result<Option<T>>
    where
        F: Fn(alloy::providers::DynProvider) -> Fut,
        Fut: std::future::Future<Output = alloy::transports::TransportResult<Option<T>>>,
    {
        tokio::time::timeout(CHAIN_TIMEOUT, self.rpc.call_found(what, f))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }

    async fn transaction(&self, tx: B256) -> Result<Option<alloy::rpc::types::Transaction>> {
        self.on_any_endpoint("eth_getTransactionByHash", |p| async move {
            p.get_transaction_by_hash(tx).await
        })
        .await
    }

    async fn receipt(&self, tx: B256) -> Result<Option<TransactionReceipt>> {
        self.on_any_endpoint("eth_getTransactionReceipt", |p| async move {
            p.get_transaction_receipt(tx).await
        })
        .await
    }

    /// Whether the payment is still on the canonical chain (a reorg may
    /// drop it after it was claimed).
    pub async fn payment_on_chain(&self, tx: B256) -> Result<bool> {
        Ok(self
            .receipt(tx)
            .await?
            .is_some_and(|r| r.block_number.is_some()))
    }

    /// Checks the payment rules for `e` (module docs).
    pub async fn verify_payment(&self, e: &Expected<'_>) -> Result<Paid> {
        let stakes = self.stakes()?;
        let Some(receipt) = self.receipt(e.tx).await? else {
            let pending = self.transaction(e.tx).await?;
            return Err(match pending {
                Some(_) => tx_error(
                    "Transaction not confirmed: it is still pending; submit again once it is mined",
                ),
                None => tx_error(format!(
                    "Transaction not found on chain {}",
                    self.keys.chain_id()
                )),
            });
        };
        let Some(block) = receipt.block_number else {
            return Err(tx_error(
                "Transaction not confirmed: it is still pending; submit again once it is mined",
            ));
        };
        let head = tokio::time::timeout(
            CHAIN_TIMEOUT,
            self.rpc.call(
                "eth_blockNumber",
                |p| async move { p.get_block_number().await },
            ),
        )
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        let on_top = head.saturating_sub(block);
        if head < block || on_top < self.confirmations {
            return Err(tx_error(format!(
                "Transaction not confirmed: {on_top} of {} confirmations; submit again shortly",
                self.confirmations
            )));
        }
        if !receipt.status() {
            return Err(tx_error(
                "Transaction failed on chain (it reverted); pay with a successful transaction",
            ));
        }
        if receipt.from != e.creator {
            return Err(tx_error(format!(
                "Transaction was not sent by creator_wallet (it was sent by {})",
                receipt.from
            )));
        }
        let to = receipt.to.unwrap_or_default();
        if to == stakes {
            return self.paid_to_escrow(e, &receipt, stakes).await;
        }
        if Some(to) == self.contracts.cbbtc && self.contracts.cbbtc.is_some() {
            if e.currency != Currency::Btc {
                return Err(tx_error(
                    "Transaction transfers cbBTC but currency is ETH: send the currency you submit",
                ));
            }
            let amount = receipt
                .inner
                .logs()
                .iter()
                .filter(|l| l.address() == to)
                .filter_map(|l| MockCbBTC::Transfer::decode_log(&l.inner).ok())
                .filter(|t| t.from == e.creator && t.to == stakes)
                .fold(U256::ZERO, |sum, t| sum.saturating_add(t.value));
            if amount.is_zero() {
                return Err(tx_error(format!(
                    "Transaction does not transfer cbBTC to the treasury {stakes}"
                )));
            }
            return self.enough(e, amount);
        }
        Err(tx_error(format!(
            "Transaction does not pay the treasury {stakes}: send {} there (its address is `treasury` in /v1/health) or call SubmissionStakes.submit",
            e.currency.symbol()
        )))
    }

    async fn paid_to_escrow(
        &self,
        e: &Expected<'_>,
        receipt: &TransactionReceipt,
        stakes: Address,
    ) -> Result<Paid> {
        let tx = self
            .transaction(e.tx)
            .await?
            .ok_or_else(|| tx_error("Transaction not found"))?;
        let input = tx.input();
        if input.is_empty() {
            if e.currency != Currency::Eth {
                return Err(tx_error(
                    "Transaction sends ETH but currency is BTC: send the currency you submit",
                ));
            }
            return self.enough(e, tx.value());
        }
        if !input.starts_with(&SubmissionStakes::submitCall::SELECTOR) {
            return Err(tx_error(
                "Transaction calls SubmissionStakes but not submit(): pay with a plain transfer or call submit",
            ));
        }
        let Some(created) = receipt
            .inner
            .logs()
            .iter()
            .filter(|l| l.address() == stakes)
            .find_map(|l| SubmissionStakes::SubmissionCreated::decode_log(&l.inner).ok())
        else {
            return Err(tx_error("Transaction created no submission"));
        };
        let token = match e.currency {
            Currency::Eth => Address::ZERO,
            Currency::Btc => self.contracts.cbbtc.unwrap_or_default(),
        };
        let differs = if created.creator != e.creator {
            Some("creator")
        } else if created.marketId != e.market {
            Some("market_id")
        } else if created.submissionType != e.kind.as_u8() {
            Some("submission_type")
        } else if created.predictedText != e.text {
            Some("predicted_text")
        } else if created.stakeToken != token {
            Some("currency")
        } else if created.stake != e.stake {
            Some("initial_stake_amount")
        } else {
            None
        };
        if let Some(field) = differs {
            return Err(tx_error(format!(
                "Transaction does not match the submission: its {field} differs from the request's"
            )));
        }
        Ok(Paid::Submitted {
            submission_id: created.submissionId,
        })
    }

    fn enough(&self, e: &Expected<'_>, amount: U256) -> Result<Paid> {
        if amount < e.required {
            let cur = e.currency.symbol();
            return Err(MarketsError::InsufficientAmount(format!(
                "paid {} {cur}, required {} {cur} (stake + {}% fee)",
                fees::format_units(amount, e.currency.decimals()),
                e.total_text,
                e.fee_percentage
            )));
        }
        Ok(Paid::Transfer { amount })
    }
}
