//! The reconciler: keeps the ledger equal to what each chain's indexer has.
//!
//! The indexer stays the only writer of chain state (`s:deposits`, and the
//! by-block index `s:depblocks` it writes alongside) and undoes reorgs by
//! restoring pre-block values; balances are never written by indexer
//! commits, so an undo can never wipe a later spend. Each pass, per chain:
//!
//! 1. **credit** every indexed deposit from the cursor (the last block below
//!    the reorg window already handled) up: the credit is idempotent per
//!    (chain id, tx hash, log index), so deposits the fast path or an earlier
//!    pass credited are skipped;
//! 2. **check** every credited deposit not yet final (the chain's watch set)
//!    whose block the indexer's checkpoint has passed: if the indexer no
//!    longer has it (or has other content under its key), reverse it; if it
//!    is older than the reorg window, it is final and leaves the watch set.
//!
//! Several replicas may run passes at once: every step is an idempotent
//! script, so the outcome is the same.

use std::time::Duration;

use alloy::primitives::Address;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::{ChainKeys, LedgerKeys};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use super::deposit::parse_indexed;
use super::{Ledger, LedgerError, Result, Source, Usd};

/// Deposits checked per page.
const PAGE: usize = 1_000;

/// Entries of the by-block index (one per block with deposits) read per page.
const BLOCKS_PER_PAGE: usize = 100;

/// Reads the checkpoint and a page of the by-block index (each entry a
/// block's deposit ids, space-separated; an entry written before the index
/// went per block holds one id) with each deposit's value, in one atomic step
/// on the chain's slot. Returns the checkpoint, how many entries were read,
/// then id/value pairs.
/// KEYS: checkpoint, depblocks, deposits. ARGV: lowest block, offset, count.
const SCAN_LUA: &str = r"
local cp = redis.call('HGET', KEYS[1], 'number')
if not cp then return {''} end
local entries = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf', 'LIMIT', ARGV[2], ARGV[3])
local out = {cp, tostring(#entries)}
for i = 1, #entries do
  for id in string.gmatch(entries[i], '%S+') do
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
  end
end
return out
";

/// The checkpoint and these deposits' values, atomically.
/// KEYS: checkpoint, deposits. ARGV: deposit ids.
const CHECK_LUA: &str = r"
local out = {redis.call('HGET', KEYS[1], 'number') or ''}
for i = 1, #ARGV do out[#out + 1] = redis.call('HGET', KEYS[2], ARGV[i]) or '' end
return out
";

/// One followed chain.
#[derive(Debug, Clone)]
pub struct Followed {
    /// Chain id.
    pub chain_id: u64,
    /// Its reorg window (blocks).
    pub window: u64,
}

/// What one pass did (summed over chains).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Deposits credited now.
    pub credited: u64,
    /// Credits reversed now.
    pub reversed: u64,
    /// Credits that became final.
    pub finalized: u64,
}

/// Follows every chain's deposits into the ledger.
#[derive(Clone)]
pub struct Reconciler {
    ledger: Ledger,
    conn: RedisConn,
    chains: Vec<Followed>,
    scan: redis::Script,
    check: redis::Script,
}

impl Reconciler {
    /// A reconciler for `chains`.
    pub fn new(ledger: Ledger, chains: Vec<Followed>) -> Self {
        Self {
            conn: ledger.conn(),
            ledger,
            chains,
            scan: redis::Script::new(SCAN_LUA),
            check: redis::Script::new(CHECK_LUA),
        }
    }

    /// Runs a pass every `interval` until `shutdown`. Errors are logged and
    /// the next pass tries again.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        tracing::info!(target: "chainfront::ledger", chains = self.chains.len(), "deposit reconciler started");
        loop {
            match self.pass().await {
                Ok(r) if r != PassReport::default() => {
                    tracing::debug!(target: "chainfront::ledger", credited = r.credited, reversed = r.reversed, finalized = r.finalized, "reconciled");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target: "chainfront::ledger", error = %e, "reconcile pass failed; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass over every chain.
    pub async fn pass(&self) -> Result<PassReport> {
        let mut total = PassReport::default();
        for chain in &self.chains {
            let r = self.pass_chain(chain).await?;
            total.credited += r.credited;
            total.reversed += r.reversed;
            total.finalized += r.finalized;
        }
        Ok(total)
    }

    async fn pass_chain(&self, chain: &Followed) -> Result<PassReport> {
        let mut report = PassReport::default();
        let ck = ChainKeys::new(chain.chain_id);
        let lk = LedgerKeys;
        let mut conn = self.conn.clone();
        let cursor: Option<u64> = conn.get(lk.cursor(chain.chain_id)).await?;
        let from = cursor.map_or(0, |c| c + 1);

        // 1. Credit what the indexer has from the cursor up.
        let mut checkpoint = None;
        let mut offset = 0usize;
        loop {
            let page: Vec<String> = self
                .scan
                .key(ck.checkpoint())
                .key(ck.deposits_by_block())
                .key(ck.deposits())
                .arg(from)
                .arg(offset)
                .arg(BLOCKS_PER_PAGE)
                .invoke_async(&mut conn)
                .await?;
            let Some(cp) = page.first().and_then(|c| c.parse::<u64>().ok()) else {
                return Ok(report); // nothing indexed yet
            };
            checkpoint.get_or_insert(cp);
            let entries: usize = page.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            let found: Vec<_> = page[2.min(page.len())..]
                .chunks(2)
                .filter_map(|p| match p {
                    [id, value] => parse_indexed(chain.chain_id, id, value),
                    _ => None,
                })
                .collect();
            let keys: Vec<String> = found.iter().map(|d| d.dep.credit_key()).collect();
            let records = self.ledger.credit_records(&keys).await?;
            for (d, record) in found.iter().zip(records) {
                if record.is_some_and(|r| r.credited || r.consumed) {
                    continue;
                }
                let amount = match u64::try_from(d.amount) {
                    Ok(a) if a <= super::MAX_UNITS => Usd(a),
                    _ => {
                        tracing::error!(target: "chainfront::ledger", key = %d.dep.credit_key(), amount = %d.amount, "deposit too large for the ledger; not credited");
                        continue;
                    }
                };
                match self
                    .ledger
                    .credit_deposit(&d.dep, d.from, amount, Source::Indexer)
                    .await
                {
                    Ok(super::CreditOutcome::Credited) => report.credited += 1,
                    Ok(super::CreditOutcome::AlreadyCredited) => {}
                    // An x402 payment for a service: skipped now, and once
                    // its settlement is recorded the key is consumed.
                    Ok(super::CreditOutcome::NotADeposit) => {}
                    Err(LedgerError::TooLarge) => {
                        tracing::error!(target: "chainfront::ledger", key = %d.dep.credit_key(), "deposit would overflow the balance; not credited");
                    }
                    Err(e) => return Err(e),
                }
            }
            if entries < BLOCKS_PER_PAGE {
                break;
            }
            offset += entries;
        }
        let checkpoint = checkpoint.unwrap_or(0);

        // 2. Check credited deposits the checkpoint has passed.
        let watch = lk.watch(chain.chain_id);
        let members: Vec<(String, u64)> = conn
            .zrangebyscore_withscores(&watch, "-inf", checkpoint)
            .await?;
        for batch in members.chunks(PAGE) {
            let ids: Vec<&str> = batch.iter().map(|(m, _)| m.as_str()).collect();
            let snap: Vec<String> = self
                .check
                .key(ck.checkpoint())
                .key(ck.deposits())
                .arg(&ids)
                .invoke_async(&mut conn)
                .await?;
            let Some(now_cp) = snap.first().and_then(|c| c.parse::<u64>().ok()) else {
                break;
            };
            let keys: Vec<String> = batch
                .iter()
                .map(|(m, _)| format!("dep:{}:{m}", chain.chain_id))
                .collect();
            let records = self.ledger.credit_records(&keys).await?;
            for (((member, block), value), record) in batch.iter().zip(&snap[1..]).zip(records) {
                if *block > now_cp {
                    continue; // the indexer went back (a reorg in progress): decide later
                }
                let Some(record) = record.filter(|r| r.credited) else {
                    let _: () = conn.zrem(&watch, member).await?;
                    continue;
                };
                let Ok(wallet) = record.wallet.parse::<Address>() else {
                    continue;
                };
                let dep = match parse_member(chain.chain_id, member, *block) {
                    Some(d) => d,
                    None => continue,
                };
                let indexed = parse_indexed(chain.chain_id, member, value);
                if indexed.is_none() && !value.is_empty() {
                    // Present but unreadable (a format this build does not
                    // know): never a reason to take money back.
                    tracing::error!(target: "chainfront::ledger", key = %member, "indexed deposit value not understood; not reconciled");
                    continue;
                }
                let same = indexed.as_ref().is_some_and(|d| {
                    d.from == wallet && u64::try_from(d.amount).ok() == Some(record.amount.0)
                });
                if !same {
                    let reason = if indexed.is_none() {
                        "not in the chain's deposits at the indexer's checkpoint (reorg)"
                    } else {
                        "the chain's deposit under this key differs (reorg)"
                    };
                    if self.ledger.reverse_deposit(&dep, wallet, reason).await? {
                        report.reversed += 1;
                    }
                } else if indexed
                    .is_some_and(|d| d.dep.block.saturating_add(chain.window) <= now_cp)
                {
                    let _: () = conn.zrem(&watch, member).await?;
                    report.finalized += 1;
                }
            }
        }

        // Blocks below the window are final: later passes start above them.
        let final_block = checkpoint.saturating_sub(chain.window);
        if cursor.is_none_or(|c| final_block > c) && checkpoint > chain.window {
            let _: () = conn.set(lk.cursor(chain.chain_id), final_block).await?;
        }
        Ok(report)
    }
}

fn parse_member(chain_id: u64, member: &str, block: u64) -> Option<super::DepositRef> {
    let (tx, log) = member.rsplit_once(':')?;
    Some(super::DepositRef {
        chain_id,
        tx: tx.parse().ok()?,
        log_index: log.parse().ok()?,
        block,
    })
}
