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

    /// The ops for a batch of logs sorted by (block, log index). A USDC
    /// transfer to the treasury made in the same transaction as an event of
    /// our contracts is a VM payment or a submission fee, not a deposit, and is
    /// not credited as one.
    pub fn ops_for_logs(&self, logs: &[Log]) -> Vec<Op> {
        let contracts = self.contract_addresses();
        let paid_through_contract: std::collections::HashSet<B256> = logs
            .iter()
            .filter(|l| contracts.contains(&l.address()))
            .filter_map(|l| l.transaction_hash)
            .collect();
        logs.iter()
            .filter(|l| {
                !(Some(l.address()) == self.usdc
                    && l.transaction_hash
                        .is_some_and(|t| paid_through_contract.contains(&t)))
            })
            .flat_map(|l| self.ops(l))
            .collect()
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
        vec![
            Op::HSet {
                key: k.deposits(),
                fields: vec![(id.clone(), format!("{}:{amount}:{block}", lower(from)))],
            },
            Op::ZAdd {
                key: k.wallet_deposits(from),
                score: block,
                member: id.clone(),
            },
            // The ledger's reconciler follows deposits by block.
            Op::ZAdd {
                key: k.deposits_by_block(),
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

fn f(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}
