//! Event → state change. Each decoded log becomes a list of [`Op`]s on keys
//! from [`crate::keys`]; the store turns a block's ops into one atomic commit
//! and records how to undo it.

use alloy::primitives::{Address, B256, U256};
use alloy::rpc::types::Log;
use alloy::sol_types::{SolEvent, SolEventInterface};

use crate::contracts::{MockUSDC, SubmissionStakes, VMMarketplace};
use crate::keys::{ChainKeys, lower};

/// One change to Redis state. Everything but [`Op::AddU256`] maps to a single
/// Redis command that cannot fail on well-typed keys; `AddU256` is resolved
/// into a plain write by the store (Redis integers are only 64-bit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `HSET key field value ...`
    HSet {
        /// Key.
        key: String,
        /// Field/value pairs.
        fields: Vec<(String, String)>,
    },
    /// `HINCRBY key field by` (small counters only).
    HIncr {
        /// Key.
        key: String,
        /// Field.
        field: String,
        /// Increment.
        by: i64,
    },
    /// `SADD key member`
    SAdd {
        /// Key.
        key: String,
        /// Member.
        member: String,
    },
    /// `SREM key member`
    SRem {
        /// Key.
        key: String,
        /// Member.
        member: String,
    },
    /// `ZADD key score member`
    ZAdd {
        /// Key.
        key: String,
        /// Score.
        score: u64,
        /// Member.
        member: String,
    },
    /// `SET key value`
    Set {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Add a 256-bit amount to a decimal string (`field` `None`: a string key;
    /// `Some`: a hash field).
    AddU256 {
        /// Key.
        key: String,
        /// Hash field, if the total lives in a hash.
        field: Option<String>,
        /// Amount to add.
        amount: U256,
    },
}

impl Op {
    /// The key the op writes.
    pub fn key(&self) -> &str {
        match self {
            Op::HSet { key, .. }
            | Op::HIncr { key, .. }
            | Op::SAdd { key, .. }
            | Op::SRem { key, .. }
            | Op::ZAdd { key, .. }
            | Op::Set { key, .. }
            | Op::AddU256 { key, .. } => key,
        }
    }
}

/// The contracts followed on one chain.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Keys of this chain.
    pub keys: ChainKeys,
    /// VM marketplace (home chain only).
    pub vm_marketplace: Option<Address>,
    /// Stakes contract (home chain only).
    pub submission_stakes: Option<Address>,
    /// USDC on this chain (for deposits).
    pub usdc: Option<Address>,
    /// The treasury deposits go to.
    pub treasury: Option<Address>,
}

impl Watched {
    /// Contracts whose every event matters.
    pub fn contract_addresses(&self) -> Vec<Address> {
        self.vm_marketplace
            .into_iter()
            .chain(self.submission_stakes)
            .collect()
    }

    /// The ops for a batch of logs sorted by (block, log index), holding
    /// every log of each of their transactions. Every USDC transfer to the
    /// treasury is a deposit except the ones an indexed event of our
    /// contracts accounts for ([`Watched::payments`]).
    ///
    /// Each block with deposits also gets one member of
    /// [`ChainKeys::deposits_by_block`]: its deposit ids, space-separated,
    /// scored by the block (one write per block instead of one per deposit;
    /// a block split over two calls would get two members, which readers
    /// treat as one list).
    pub fn ops_for_logs(&self, logs: &[Log]) -> Vec<Op> {
        let payments = self.payments(logs);
        let mut out = Vec::with_capacity(logs.len() * 3);
        // The deposit ids of the block being walked.
        let mut block_ids: Option<(u64, String)> = None;
        let deposits = self.keys.deposits();
        for (i, l) in logs.iter().enumerate() {
            if payments.contains(&i) {
                continue;
            }
            let ops = self.ops(l);
            for op in &ops {
                if let Op::HSet { key, fields } = op
                    && *key == deposits
                {
                    let block = l.block_number.unwrap_or_default();
                    if block_ids.as_ref().is_some_and(|(b, _)| *b != block) {
                        out.extend(self.block_deposits(block_ids.take()));
                    }
                    let ids = &mut block_ids.get_or_insert_with(|| (block, String::new())).1;
                    for (id, _) in fields {
                        if !ids.is_empty() {
                            ids.push(' ');
                        }
                        ids.push_str(id);
                    }
                }
            }
            out.extend(ops);
        }
        out.extend(self.block_deposits(block_ids));
        out
    }

    /// The by-block entry of one block's deposit ids.
    fn block_deposits(&self, ids: Option<(u64, String)>) -> Option<Op> {
        ids.map(|(block, member)| Op::ZAdd {
            key: self.keys.deposits_by_block(),
            score: block,
            member,
        })
    }

    /// The positions in `logs` of the USDC transfers to the treasury that
    /// pay for an indexed purchase, extension or submission, and so are not
    /// deposits. The contracts pull exactly the price to the treasury in the
    /// call that emits the event (`safeTransferFrom(msg.sender, treasury,
    /// totalCost | fee)`, or from the contract itself for
    /// `purchaseVMWithAuthorization` and `recordSubmission`), so a payment
    /// is a transfer in the *same transaction*, from the *payer* (or the
    /// contract), of the *same amount*. Each event consumes one such
    /// transfer, the nearest one before it (else the first after it); every
    /// other transfer — a top-up batched with a purchase by a smart wallet,
    /// or another user's deposit in the same ERC-4337 bundle — stays a
    /// deposit.
    pub fn payments(&self, logs: &[Log]) -> std::collections::HashSet<usize> {
        use std::collections::{HashMap, HashSet};
        let mut consumed = HashSet::new();
        let (Some(usdc), Some(treasury)) = (self.usdc, self.treasury) else {
            return consumed;
        };
        // Paid events first (few: only our contracts' logs are decoded), so
        // a range of plain deposits costs no second decode of its transfers.
        let contracts = self.contract_addresses();
        let paid: Vec<(usize, B256, Payment)> = logs
            .iter()
            .enumerate()
            .filter(|(_, l)| contracts.contains(&l.address()))
            .filter_map(|(i, l)| Some((i, l.transaction_hash?, self.payment_of(l)?)))
            .collect();
        if paid.is_empty() {
            return consumed;
        }
        let paid_txs: HashSet<B256> = paid.iter().map(|(_, tx, _)| *tx).collect();
        // Transfers to the treasury in those transactions, in log order.
        let mut transfers: HashMap<B256, Vec<(usize, Address, U256)>> = HashMap::new();
        for (i, l) in logs.iter().enumerate() {
            if l.address() == usdc
                && let Some(tx) = l.transaction_hash
                && paid_txs.contains(&tx)
                && let Ok(ev) = MockUSDC::Transfer::decode_log(&l.inner)
                && ev.to == treasury
            {
                transfers
                    .entry(tx)
                    .or_default()
                    .push((i, ev.from, ev.value));
            }
        }
        for (i, tx, payment) in paid {
            let Some(candidates) = transfers.get(&tx) else {
                continue;
            };
            let Payment {
                payers,
                amount,
                pulled_before,
            } = payment;
            let fits = |(j, from, value): &&(usize, Address, U256)| {
                !consumed.contains(j) && *value == amount && payers.contains(from)
            };
            let before = || {
                candidates
                    .iter()
                    .filter(|c| c.0 < i)
                    .rev()
                    .find(|c| fits(c))
            };
            let after = || candidates.iter().filter(|c| c.0 > i).find(|c| fits(c));
            let pick = if pulled_before {
                before().or_else(after)
            } else {
                after().or_else(before)
            };
            if let Some((j, ..)) = pick {
                consumed.insert(*j);
            }
        }
        consumed
    }

    /// Who may pay (to the treasury) for the event in `log`, and how much,
    /// if it is a paid event of our contracts.
    fn payment_of(&self, log: &Log) -> Option<Payment> {
        let addr = log.address();
        if Some(addr) == self.vm_marketplace {
            use VMMarketplace::VMMarketplaceEvents as E;
            return match VMMarketplace::VMMarketplaceEvents::decode_log(&log.inner)
                .ok()?
                .data
            {
                // `purchaseVMWithAuthorization` forwards from the marketplace.
                E::VMPurchased(e) => Some(Payment {
                    payers: vec![e.buyer, addr],
                    amount: e.totalCost,
                    pulled_before: true,
                }),
                E::VMExtended(e) => Some(Payment {
                    payers: vec![e.payer],
                    amount: e.totalCost,
                    pulled_before: true,
                }),
                _ => None,
            };
        }
        if Some(addr) == self.submission_stakes {
            use SubmissionStakes::SubmissionStakesEvents as E;
            return match SubmissionStakes::SubmissionStakesEvents::decode_log(&log.inner)
                .ok()?
                .data
            {
                // `submit` pulls the fee from the creator; `recordSubmission`
                // forwards it from the contract.
                E::SubmissionCreated(e) if Some(e.stakeToken) == self.usdc => Some(Payment {
                    payers: vec![e.creator, addr],
                    amount: e.fee,
                    pulled_before: false,
                }),
                _ => None,
            };
        }
        None
    }

    /// The ops for one log (none for logs we do not follow).
    pub fn ops(&self, log: &Log) -> Vec<Op> {
        let addr = log.address();
        let block = log.block_number.unwrap_or_default();
        let tx = log.transaction_hash.unwrap_or_default();
        if Some(addr) == self.vm_marketplace {
            return match VMMarketplace::VMMarketplaceEvents::decode_log(&log.inner) {
                Ok(ev) => self.vm_ops(ev.data, block, tx),
                Err(_) => Vec::new(),
            };
        }
        if Some(addr) == self.submission_stakes {
            return match SubmissionStakes::SubmissionStakesEvents::decode_log(&log.inner) {
                Ok(ev) => self.stakes_ops(ev.data, block, tx),
                Err(_) => Vec::new(),
            };
        }
        if Some(addr) == self.usdc
            && let Some(treasury) = self.treasury
            && let Ok(ev) = MockUSDC::Transfer::decode_log(&log.inner)
            && ev.to == treasury
        {
            return self.deposit_ops(
                ev.from,
                ev.value,
                block,
                tx,
                log.log_index.unwrap_or_default(),
            );
        }
        Vec::new()
    }

    fn vm_ops(&self, ev: VMMarketplace::VMMarketplaceEvents, block: u64, tx: B256) -> Vec<Op> {
        use VMMarketplace::VMMarketplaceEvents as E;
        let k = &self.keys;
        match ev {
            E::VMPurchased(e) => {
                let expires = e
                    .purchaseDate
                    .saturating_add(U256::from(u64::from(e.durationDays)) * U256::from(86_400u64));
                vec![
                    Op::HSet {
                        key: k.vm(e.tokenId),
                        fields: vec![
                            f("token_id", e.tokenId),
                            f("buyer", lower(e.buyer)),
                            f("tier", e.tier),
                            f("duration_days", e.durationDays),
                            f("purchase_date", e.purchaseDate),
                            f("expires_at", expires),
                            f("purchase_tx", tx),
                            f("purchase_block", block),
                        ],
                    },
                    Op::AddU256 {
                        key: k.vm(e.tokenId),
                        field: Some("total_cost".into()),
                        amount: e.totalCost,
                    },
                    Op::SAdd {
                        key: k.vms(),
                        member: e.tokenId.to_string(),
                    },
                ]
            }
            E::VMExtended(e) => vec![
                Op::HSet {
                    key: k.vm(e.tokenId),
                    fields: vec![f("expires_at", e.newExpiresAt)],
                },
                Op::AddU256 {
                    key: k.vm(e.tokenId),
                    field: Some("total_cost".into()),
                    amount: e.totalCost,
                },
            ],
            E::Transfer(e) => {
                let id = e.tokenId.to_string();
                let mut ops = vec![Op::HSet {
                    key: k.vm(e.tokenId),
                    fields: vec![f("owner", lower(e.to)), f("owner_since_block", block)],
                }];
                if e.from != Address::ZERO {
                    ops.push(Op::SRem {
                        key: k.owner_vms(e.from),
                        member: id.clone(),
                    });
                }
                if e.to != Address::ZERO {
                    ops.push(Op::SAdd {
                        key: k.owner_vms(e.to),
                        member: id,
                    });
                }
                ops
            }
            E::TierUpdated(e) => vec![
                Op::HSet {
                    key: k.tier(e.tier),
                    fields: vec![
                        f("tier", e.tier),
                        f("price_per_day", e.pricePerDay),
                        f("active", u8::from(e.active)),
                        f("name", e.name),
                    ],
                },
                Op::SAdd {
                    key: k.tiers(),
                    member: e.tier.to_string(),
                },
            ],
            E::TreasuryUpdated(e) => vec![Op::HSet {
                key: k.vm_settings(),
                fields: vec![f("treasury", lower(e.treasury))],
            }],
            E::Paused(_) => vec![Op::HSet {
                key: k.vm_settings(),
                fields: vec![f("paused", 1)],
            }],
            E::Unpaused(_) => vec![Op::HSet {
                key: k.vm_settings(),
                fields: vec![f("paused", 0)],
            }],
            _ => Vec::new(),
        }
    }

    fn stakes_ops(
        &self,
        ev: SubmissionStakes::SubmissionStakesEvents,
        block: u64,
        tx: B256,
    ) -> Vec<Op> {
        use SubmissionStakes::SubmissionStakesEvents as E;
        let k = &self.keys;
        match ev {
            E::MarketCreated(e) => {
                let oracles: Vec<String> = e.oracles.iter().map(|a| lower(*a)).collect();
                vec![
                    Op::HSet {
                        key: k.market(e.marketId),
                        fields: vec![
                            f("market_id", e.marketId),
                            f("start_time", e.startTime),
                            f("end_time", e.endTime),
                            f(
                                "oracles",
                                serde_json::to_string(&oracles).unwrap_or_default(),
                            ),
                            f("metadata", e.metadata),
                            f("created_block", block),
                            f("created_tx", tx),
                            f("resolved", 0),
                        ],
                    },
                    Op::SAdd {
                        key: k.markets(),
                        member: e.marketId.to_string(),
                    },
                ]
            }
            E::SubmissionCreated(e) => {
                let kind = match e.submissionType {
                    0 => "original",
                    1 => "competitor",
                    _ => "null",
                };
                let mut ops = vec![
                    Op::HSet {
                        key: k.submission(e.submissionId),
                        fields: vec![
                            f("submission_id", e.submissionId),
                            f("market_id", e.marketId),
                            f("creator", lower(e.creator)),
                            f("submission_type", kind),
                            f("predicted_text", e.predictedText),
                            f("stake_token", lower(e.stakeToken)),
                            f("stake", e.stake),
                            f("fee", e.fee),
                            f("payment_tx", e.paymentTxHash),
                            f("tx", tx),
                            f("block", block),
                        ],
                    },
                    Op::ZAdd {
                        key: k.market_submissions(e.marketId),
                        score: u64::try_from(e.submissionId).unwrap_or(u64::MAX),
                        member: e.submissionId.to_string(),
                    },
                    Op::HIncr {
                        key: k.market(e.marketId),
                        field: "submission_count".into(),
                        by: 1,
                    },
                ];
                if kind == "original" {
                    ops.push(Op::HSet {
                        key: k.market(e.marketId),
                        fields: vec![f("original_submission", e.submissionId)],
                    });
                }
                if e.paymentTxHash != B256::ZERO {
                    ops.push(Op::Set {
                        key: k.payment(e.paymentTxHash),
                        value: e.submissionId.to_string(),
                    });
                }
                ops
            }
            E::MarketResolved(e) => vec![Op::HSet {
                key: k.market(e.marketId),
                fields: vec![
                    f("resolved", 1),
                    f("winning_submission", e.winningSubmissionId),
                    f("resolved_by", lower(e.oracle)),
                    f("resolved_block", block),
                ],
            }],
            E::PayoutClaimed(e) => vec![Op::HSet {
                key: k.market(e.marketId),
                fields: vec![(
                    format!("payout:{}", lower(e.stakeToken)),
                    e.amount.to_string(),
                )],
            }],
            E::FeeUpdated(e) => vec![Op::HSet {
                key: k.stakes_settings(),
                fields: vec![f("fee_bps", e.feeBps)],
            }],
            E::TreasuryUpdated(e) => vec![Op::HSet {
                key: k.stakes_settings(),
                fields: vec![f("treasury", lower(e.treasury))],
            }],
            E::OperatorUpdated(e) => vec![Op::HSet {
                key: k.stakes_settings(),
                fields: vec![(
                    format!("operator:{}", lower(e.operator)),
                    u8::from(e.enabled).to_string(),
                )],
            }],
            E::StakeTokenUpdated(e) => vec![Op::HSet {
                key: k.stakes_settings(),
                fields: vec![(
                    format!("token:{}", lower(e.token)),
                    u8::from(e.allowed).to_string(),
                )],
            }],
            _ => Vec::new(),
        }
    }

    fn deposit_ops(
        &self,
        from: Address,
        amount: U256,
        block: u64,
        tx: B256,
        log_index: u64,
    ) -> Vec<Op> {
        let k = &self.keys;
        let id = ChainKeys::deposit_id(tx, log_index);
        // `<from>:<amount>:<block>`, built in one buffer.
        let mut value = String::with_capacity(42 + 1 + 78 + 1 + 20);
        crate::keys::push_lower(&mut value, from);
        value.push(':');
        let _ = std::fmt::Write::write_fmt(&mut value, format_args!("{amount}"));
        value.push(':');
        value.push_str(itoa::Buffer::new().format(block));
        vec![
            Op::HSet {
                key: k.deposits(),
                fields: vec![(id.clone(), value)],
            },
            // (The ledger's reconciler follows deposits by block: one
            // entry per block, see `ops_for_logs`.)
            Op::ZAdd {
                key: k.wallet_deposits(from),
                score: block,
                member: id,
            },
            Op::AddU256 {
                key: k.wallet_deposit_total(from),
                field: None,
                amount,
            },
        ]
    }
}

/// The treasury transfer a paid event accounts for.
struct Payment {
    /// Who the transfer may come from.
    payers: Vec<Address>,
    /// Exactly how much.
    amount: U256,
    /// The contract pulls the payment before emitting the event (VM
    /// purchases and extensions) rather than after (submissions).
    pulled_before: bool,
}

fn f(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::LogData;

    const USDC: Address = Address::repeat_byte(0x11);
    const MARKET: Address = Address::repeat_byte(0x22);
    const STAKES: Address = Address::repeat_byte(0x33);
    const TREASURY: Address = Address::repeat_byte(0x44);

    fn watched() -> Watched {
        Watched {
            keys: ChainKeys::new(1),
            vm_marketplace: Some(MARKET),
            submission_stakes: Some(STAKES),
            usdc: Some(USDC),
            treasury: Some(TREASURY),
        }
    }

    /// A deposit's record reads `<from>:<amount>:<block>` exactly as it was
    /// written with `format!` (the ledger parses it; state written before
    /// keeps its meaning).
    #[test]
    fn a_deposit_record_keeps_its_format() {
        let w = watched();
        let from = Address::repeat_byte(0x0A);
        let amount = U256::from(123_456_789u64) * U256::from(10u64).pow(U256::from(30u64));
        let tx = B256::repeat_byte(0x3C);
        let ops = w.deposit_ops(from, amount, u64::MAX, tx, 17);
        let Op::HSet { key, fields } = &ops[0] else {
            panic!("{ops:?}");
        };
        assert_eq!(key, &w.keys.deposits());
        assert_eq!(
            fields,
            &vec![(
                format!("{tx}:17"),
                format!("{from:#x}:{amount}:{}", u64::MAX)
            )]
        );
    }

    fn log(address: Address, data: LogData, tx: u8, index: u64) -> Log {
        Log {
            inner: alloy::primitives::Log { address, data },
            block_hash: Some(B256::repeat_byte(0xbb)),
            block_number: Some(7),
            block_timestamp: None,
            transaction_hash: Some(B256::repeat_byte(tx)),
            transaction_index: Some(u64::from(tx)),
            log_index: Some(index),
            removed: false,
        }
    }

    fn transfer(from: Address, value: u64, tx: u8, index: u64) -> Log {
        let ev = MockUSDC::Transfer {
            from,
            to: TREASURY,
            value: U256::from(value),
        };
        log(USDC, ev.encode_log_data(), tx, index)
    }

    fn purchase(buyer: Address, cost: u64, tx: u8, index: u64) -> Log {
        let ev = VMMarketplace::VMPurchased {
            tokenId: U256::from(index),
            buyer,
            tier: 1,
            durationDays: 1,
            purchaseDate: U256::from(1),
            totalCost: U256::from(cost),
        };
        log(MARKET, ev.encode_log_data(), tx, index)
    }

    /// Positions of the logs credited as deposits.
    fn deposits(logs: &[Log]) -> Vec<u64> {
        let w = watched();
        let paid = w.payments(logs);
        logs.iter()
            .enumerate()
            .filter(|(i, l)| l.address() == USDC && !paid.contains(i))
            .map(|(_, l)| l.log_index.unwrap_or_default())
            .collect()
    }

    #[test]
    fn only_the_transfer_a_purchase_accounts_for_is_not_a_deposit() {
        let (x, y) = (Address::repeat_byte(1), Address::repeat_byte(2));
        // One ERC-4337 bundle: Y deposits 100, X buys for 100 (pull, then
        // event), Y deposits again.
        let logs = [
            transfer(y, 100, 9, 0),
            transfer(x, 100, 9, 1),
            purchase(x, 100, 9, 2),
            transfer(y, 100, 9, 3),
        ];
        assert_eq!(deposits(&logs), [0, 3]);
        // The ops credit exactly Y's two transfers.
        let ops = watched().ops_for_logs(&logs);
        let credited: Vec<&Op> = ops
            .iter()
            .filter(|op| matches!(op, Op::AddU256 { key, .. } if key.contains("deptotal")))
            .collect();
        assert_eq!(credited.len(), 2);
        assert!(credited.iter().all(|op| op.key().ends_with(&lower(y))));
    }

    #[test]
    fn each_payment_is_consumed_once_and_a_same_amount_top_up_stays_a_deposit() {
        let x = Address::repeat_byte(1);
        // A smart-wallet batch: two purchases and a top-up of the same amount
        // from the same wallet.
        let logs = [
            transfer(x, 50, 4, 0),
            purchase(x, 50, 4, 1),
            transfer(x, 50, 4, 2),
            purchase(x, 50, 4, 3),
            transfer(x, 50, 4, 4),
        ];
        assert_eq!(deposits(&logs), [4]);
    }

    #[test]
    fn a_transfer_of_another_amount_or_payer_or_tx_is_a_deposit() {
        let (x, y) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let logs = [
            transfer(x, 99, 1, 0),
            transfer(y, 100, 1, 1),
            transfer(x, 100, 2, 2),
            purchase(x, 100, 1, 3),
        ];
        assert_eq!(deposits(&logs), [0, 1, 2]);
    }

    #[test]
    fn a_deposit_next_to_contract_events_that_carry_no_payment_is_credited() {
        let x = Address::repeat_byte(1);
        // An NFT transfer (no payment) and a deposit in one transaction: the
        // old rule dropped the deposit.
        let nft = VMMarketplace::Transfer {
            from: x,
            to: Address::repeat_byte(5),
            tokenId: U256::from(3),
        };
        let logs = [
            log(MARKET, nft.encode_log_data(), 1, 0),
            transfer(x, 100, 1, 1),
        ];
        assert_eq!(deposits(&logs), [1]);
    }

    #[test]
    fn authorized_purchases_and_recorded_submissions_pay_from_the_contract() {
        let (x, y) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let sub = |stake_token: Address, fee: u64, index: u64| {
            let ev = SubmissionStakes::SubmissionCreated {
                marketId: Default::default(),
                submissionId: U256::from(index),
                creator: y,
                submissionType: 0,
                predictedText: String::new(),
                stakeToken: stake_token,
                stake: U256::from(1_000),
                fee: U256::from(fee),
                paymentTxHash: B256::ZERO,
            };
            log(STAKES, ev.encode_log_data(), 3, index)
        };
        let logs = [
            // purchaseVMWithAuthorization: the marketplace forwards the price.
            transfer(MARKET, 100, 3, 0),
            purchase(x, 100, 3, 1),
            // submit (event, then the fee pulled from the creator).
            sub(USDC, 7, 2),
            transfer(y, 7, 3, 3),
            // recordSubmission: the stakes contract forwards the fee.
            sub(USDC, 8, 4),
            transfer(STAKES, 8, 3, 5),
            // An ETH-staked submission pays no USDC: Y's 9 is a deposit.
            sub(Address::ZERO, 9, 6),
            transfer(y, 9, 3, 7),
        ];
        assert_eq!(deposits(&logs), [7]);
    }
}
