//! What a provider's answer must satisfy before the indexer uses it. Block
//! headers decode into the few fields the indexer reads (a provider that
//! leaves out others, such as `mixHash`, is still usable); logs are checked
//! against the range or block they were asked for and against the headers
//! known for those blocks; a block's full log list is complete only if it
//! accounts for every bit of the block's `logsBloom`.

use std::collections::BTreeMap;

use alloy::primitives::{B256, Bloom};
use alloy::rpc::types::{Filter, Log};
use serde::Deserialize;

/// The part of a block header the indexer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// Block number.
    #[serde(with = "alloy::serde::quantity")]
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Parent block hash.
    pub parent_hash: B256,
    /// Seconds since the epoch.
    #[serde(with = "alloy::serde::quantity")]
    pub timestamp: u64,
    /// Bloom filter over every log's address and topics.
    pub logs_bloom: Bloom,
}

impl Header {
    /// Whether a log matching `filter` may be in this block (false is certain).
    pub fn may_match(&self, filters: &[Filter]) -> bool {
        // An all-zero bloom is what chains without blooms serve: no evidence.
        self.logs_bloom.is_zero() || filters.iter().any(|f| f.matches_bloom(self.logs_bloom))
    }
}

/// Why an answer was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The answer contradicts itself or what is known (a log outside the
    /// range, two hashes for one block, a `removed` log, a log of another
    /// block): the provider is wrong, ask another.
    Inconsistent(String),
    /// The answer may be correct but cannot be shown complete (an empty or
    /// partial log list for a block whose bloom says otherwise): the provider
    /// is probably behind, ask again (another one first).
    Incomplete(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Inconsistent(m) => write!(f, "inconsistent answer: {m}"),
            Rejection::Incomplete(m) => write!(f, "incomplete answer: {m}"),
        }
    }
}

fn inconsistent(msg: String) -> Rejection {
    Rejection::Inconsistent(msg)
}

/// Whether `log` matches any of `filters` (address and topics, as the node
/// would have filtered).
pub fn matches_any(filters: &[Filter], log: &Log) -> bool {
    filters
        .iter()
        .any(|f| f.matches_address(log.address()) && f.matches_topics(log.topics()))
}

/// Merges the answers of several `eth_getLogs` filters over `from..=to` into
/// one list in chain order and checks it: every log lies in the range, is
/// not `removed`, carries its block hash, tx hash and index; all logs of a
/// block share one hash, which equals `known` hashes where given; a log
/// position appears once (exact repeats are dropped, conflicting ones
/// reject the answer).
pub fn range_logs(
    answers: Vec<Vec<Log>>,
    from: u64,
    to: u64,
    known: &BTreeMap<u64, B256>,
) -> Result<Vec<Log>, Rejection> {
    let mut all: Vec<Log> = answers.into_iter().flatten().collect();
    let mut hashes: BTreeMap<u64, B256> = BTreeMap::new();
    for l in &all {
        let (Some(n), Some(h), Some(_), Some(_)) = (
            l.block_number,
            l.block_hash,
            l.log_index,
            l.transaction_hash,
        ) else {
            return Err(inconsistent(
                "a log without block number, block hash, index or tx hash".into(),
            ));
        };
        if l.removed {
            return Err(inconsistent(format!("a log of block {n} flagged removed")));
        }
        if n < from || n > to {
            return Err(inconsistent(format!(
                "a log of block {n} in an answer for {from}..={to}"
            )));
        }
        if *hashes.entry(n).or_insert(h) != h {
            return Err(inconsistent(format!("two hashes for block {n}")));
        }
        if let Some(k) = known.get(&n)
            && *k != h
        {
            return Err(inconsistent(format!(
                "block {n} has hash {h} in the logs but {k} in its header"
            )));
        }
    }
    all.sort_by_key(|l| (l.block_number, l.log_index));
    let mut out: Vec<Log> = Vec::with_capacity(all.len());
    for l in all {
        if let Some(prev) = out.last()
            && (prev.block_number, prev.log_index) == (l.block_number, l.log_index)
        {
            if *prev != l {
                return Err(inconsistent(format!(
                    "two different logs at block {:?} index {:?}",
                    l.block_number, l.log_index
                )));
            }
            continue;
        }
        out.push(l);
    }
    Ok(out)
}

/// The bloom bits of each address and topic seen, computed once: a block's
/// logs repeat a few contracts, event signatures and accounts, and each
/// item costs a keccak hash.
#[derive(Default)]
struct BloomItems(std::collections::HashMap<(bool, B256), Bloom>);

impl BloomItems {
    /// The bits one log sets (its address and every topic), as
    /// `accrue_raw_log` would set them.
    fn log(&mut self, l: &Log) -> Bloom {
        let mut bloom = self.item(false, l.address().into_word(), l.address().as_slice());
        for t in l.topics() {
            bloom.accrue_bloom(&self.item(true, *t, t.as_slice()));
        }
        bloom
    }

    fn item(&mut self, topic: bool, key: B256, raw: &[u8]) -> Bloom {
        *self.0.entry((topic, key)).or_insert_with(|| {
            let mut b = Bloom::ZERO;
            b.accrue(alloy::primitives::BloomInput::Raw(raw));
            b
        })
    }
}

/// Checks every log of one block (an unfiltered `eth_getLogs` by hash or by
/// number) against its header and returns them in order: each log belongs
/// to `header`'s number and hash, none is `removed`, an index holds one log
/// (exact repeats are dropped);
/// the list is complete when its logs set every bit of the header's bloom
/// (a non-empty bloom with no logs is Ponder's check for a log backend that
/// has not caught up; the coverage check also catches a partial answer when
/// the bloom is not saturated). Logs that match `filters` must also be in
/// the bloom.
pub fn block_logs(
    mut logs: Vec<Log>,
    header: &Header,
    filters: &[Filter],
) -> Result<Vec<Log>, Rejection> {
    let n = header.number;
    let mut bloom = Bloom::ZERO;
    let mut items = BloomItems::default();
    for l in &logs {
        if l.block_hash != Some(header.hash) || l.block_number != Some(n) {
            return Err(inconsistent(format!(
                "a log of block {:?} ({:?}) in the answer for block {n} ({})",
                l.block_number, l.block_hash, header.hash
            )));
        }
        if l.removed {
            return Err(inconsistent(format!("a log of block {n} flagged removed")));
        }
        if l.log_index.is_none() || l.transaction_hash.is_none() {
            return Err(inconsistent(format!(
                "a log of block {n} without index or tx hash"
            )));
        }
        let own = items.log(l);
        bloom.accrue_bloom(&own);
        if !header.logs_bloom.is_zero()
            && matches_any(filters, l)
            && !header.logs_bloom.contains(&own)
        {
            return Err(inconsistent(format!(
                "a log at index {:?} is not in block {n}'s bloom",
                l.log_index
            )));
        }
    }
    logs.sort_by_key(|l| l.log_index);
    // Exact repeats are dropped; two different logs at one index reject.
    let mut seen: Vec<Log> = Vec::with_capacity(logs.len());
    for l in logs {
        match seen.last() {
            Some(prev) if prev.log_index == l.log_index && *prev == l => {}
            Some(prev) if prev.log_index == l.log_index => {
                return Err(inconsistent(format!(
                    "two different logs at index {:?} of block {n}",
                    l.log_index
                )));
            }
            _ => seen.push(l),
        }
    }
    let logs = seen;
    if !bloom.contains(&header.logs_bloom) {
        return Err(Rejection::Incomplete(format!(
            "{} logs for block {n} do not account for its bloom",
            logs.len()
        )));
    }
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, LogData};

    fn log(n: u64, hash: B256, index: u64, address: Address, topics: Vec<B256>) -> Log {
        Log {
            inner: alloy::primitives::Log {
                address,
                data: LogData::new_unchecked(topics, Default::default()),
            },
            block_hash: Some(hash),
            block_number: Some(n),
            block_timestamp: None,
            transaction_hash: Some(B256::repeat_byte(0xee)),
            transaction_index: Some(0),
            log_index: Some(index),
            removed: false,
        }
    }

    fn header_for(n: u64, hash: B256, logs: &[Log]) -> Header {
        let mut bloom = Bloom::ZERO;
        for l in logs {
            bloom.accrue_raw_log(l.address(), l.topics());
        }
        Header {
            number: n,
            hash,
            parent_hash: B256::ZERO,
            timestamp: 0,
            logs_bloom: bloom,
        }
    }

    #[test]
    fn remembered_item_bits_equal_hashing_each_log_again() {
        // An address equal to a topic's low 20 bytes (an indexed account)
        // must not share the topic's bits: the bloom hashes 20 and 32 bytes.
        let a = Address::repeat_byte(0x11);
        let t = a.into_word();
        let logs = [
            log(1, B256::ZERO, 0, a, vec![t, B256::repeat_byte(2)]),
            log(1, B256::ZERO, 1, Address::repeat_byte(0x22), vec![t]),
            log(1, B256::ZERO, 2, a, vec![]),
        ];
        let mut items = BloomItems::default();
        for l in &logs {
            let mut expected = Bloom::ZERO;
            expected.accrue_raw_log(l.address(), l.topics());
            assert_eq!(items.log(l), expected);
        }
        assert_eq!(items.0.len(), 4, "each distinct item hashed once");
    }

    #[test]
    fn headers_without_unused_fields_decode() {
        // No mixHash, nonce, difficulty, transactions or roots.
        let raw = r#"{"number":"0x10","hash":"0x1111111111111111111111111111111111111111111111111111111111111111",
            "parentHash":"0x2222222222222222222222222222222222222222222222222222222222222222",
            "timestamp":"0x65","logsBloom":"0x{}","extra":"ignored"}"#
            .replace("{}", &"00".repeat(256));
        let h: Header = serde_json::from_str(&raw).expect("decodes");
        assert_eq!((h.number, h.timestamp), (16, 101));
        assert!(h.logs_bloom.is_zero());
    }

    #[test]
    fn range_answers_are_checked_against_the_range_and_known_hashes() {
        let a = Address::repeat_byte(1);
        let (h5, h6) = (B256::repeat_byte(5), B256::repeat_byte(6));
        let known = BTreeMap::from([(6, h6)]);
        let ok = range_logs(
            vec![
                vec![log(6, h6, 1, a, vec![])],
                vec![log(5, h5, 0, a, vec![]), log(6, h6, 0, a, vec![])],
            ],
            5,
            6,
            &known,
        )
        .expect("valid");
        assert_eq!(
            ok.iter()
                .map(|l| (l.block_number, l.log_index))
                .collect::<Vec<_>>(),
            vec![(Some(5), Some(0)), (Some(6), Some(0)), (Some(6), Some(1))]
        );
        // Exact repeats are dropped.
        let twice = vec![log(5, h5, 0, a, vec![]), log(5, h5, 0, a, vec![])];
        assert_eq!(range_logs(vec![twice], 5, 6, &known).expect("ok").len(), 1);
        for bad in [
            vec![log(7, h6, 0, a, vec![])],                           // outside
            vec![log(6, h5, 0, a, vec![])],                           // not the header's hash
            vec![log(5, h5, 0, a, vec![]), log(5, h6, 1, a, vec![])], // two hashes
            vec![
                log(5, h5, 0, a, vec![]),
                log(5, h5, 0, Address::repeat_byte(2), vec![]),
            ], // conflicting repeat
            vec![Log {
                removed: true,
                ..log(5, h5, 0, a, vec![])
            }],
        ] {
            assert!(
                matches!(
                    range_logs(vec![bad.clone()], 5, 6, &known),
                    Err(Rejection::Inconsistent(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_block_answer_must_account_for_the_bloom() {
        let h = B256::repeat_byte(9);
        let topic = B256::repeat_byte(3);
        let full: Vec<Log> = (0..4)
            .map(|i| log(9, h, i, Address::repeat_byte(i as u8 + 1), vec![topic]))
            .collect();
        let header = header_for(9, h, &full);
        let watch = [Filter::new().address(Address::repeat_byte(2))];
        assert!(header.may_match(&watch));
        assert!(!header.may_match(&[Filter::new().address(Address::repeat_byte(0x77))]));
        assert_eq!(
            block_logs(full.clone(), &header, &watch)
                .expect("complete")
                .len(),
            4
        );
        // Empty (Ponder's check) and partial answers are incomplete.
        for part in [vec![], full[..2].to_vec()] {
            assert!(matches!(
                block_logs(part, &header, &watch),
                Err(Rejection::Incomplete(_))
            ));
        }
        // A log of another block (a provider that ignored `blockHash`).
        let mut other = full.clone();
        other[3].block_hash = Some(B256::repeat_byte(8));
        assert!(matches!(
            block_logs(other, &header, &watch),
            Err(Rejection::Inconsistent(_))
        ));
        // A watched log the bloom does not contain.
        let mut stray = full.clone();
        stray.push(log(
            9,
            h,
            4,
            Address::repeat_byte(2),
            vec![B256::repeat_byte(0x55)],
        ));
        assert!(matches!(
            block_logs(stray, &header, &watch),
            Err(Rejection::Inconsistent(_))
        ));
        // No bloom at all (chains without one): nothing to check against.
        let blind = Header {
            logs_bloom: Bloom::ZERO,
            ..header
        };
        assert!(blind.may_match(&watch));
        assert!(block_logs(vec![], &blind, &watch).is_ok());
    }
}
