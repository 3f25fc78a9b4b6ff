//! When to poll the head next: around the moment the next block is expected,
//! not on a fixed interval.
//!
//! The block time is learnt from block timestamps (the median of recent
//! per-block differences), and trusted only while the blocks' arrival times
//! agree with it (timestamps can run ahead of the clock: anvil's do when it
//! mines faster than one block a second). When a block becomes available on the endpoint,
//! relative to its timestamp, is learnt from the polls themselves: a poll
//! sent at `s` that did not see block `n` says it was published after `s`;
//! one answered at `r` that saw it says it was published before `r`. The
//! bracket `[lo, hi]` of this offset narrows block after block (the next
//! block's first poll goes to the bracket's middle, a bisection), widens a
//! little with every block so it follows drift, and starts over when the
//! chain stops agreeing with it. After the expected moment the head is
//! polled every [`HeadPace::step`] for half a block; a block that has not
//! come by then falls back to the configured interval, so a stalled or idle
//! chain is polled no more often than before.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many recent per-block time differences the block time is the median of.
const SAMPLES: usize = 15;
/// How much the offset bracket widens per block (ms), to follow drift.
const DRIFT_MS: i64 = 3;
/// Shortest and longest burst step.
const MIN_STEP: Duration = Duration::from_millis(10);
const MAX_STEP: Duration = Duration::from_millis(250);
/// Block times outside this range are not paced (sub-second chains have no
/// timestamp resolution to learn from; very slow ones gain nothing).
const MIN_BLOCK_TIME_MS: u64 = 500;
const MAX_BLOCK_TIME_MS: u64 = 120_000;

/// The head-polling schedule of one follower.
#[derive(Debug)]
pub struct HeadPace {
    idle: Duration,
    /// (number, timestamp in ms) of the highest head seen.
    last: Option<(u64, u64)>,
    deltas: VecDeque<u64>,
    /// Wall-clock ms per block between the answers that saw new heads.
    arrivals: VecDeque<u64>,
    /// When the last new head was seen (ms since the epoch).
    last_seen: Option<u64>,
    /// When the last poll that did not see a new head was sent (ms since the
    /// epoch), if it was made after the last new head was seen.
    miss_sent: Option<u64>,
    /// Bracket of publication offsets (ms after the block's timestamp).
    lo: Option<i64>,
    hi: Option<i64>,
}

/// The median of at least 3 samples.
fn median(samples: &VecDeque<u64>) -> Option<u64> {
    if samples.len() < 3 {
        return None;
    }
    let mut v: Vec<u64> = samples.iter().copied().collect();
    v.sort_unstable();
    Some(v[v.len() / 2])
}

fn push(samples: &mut VecDeque<u64>, v: u64) {
    if samples.len() == SAMPLES {
        samples.pop_front();
    }
    samples.push_back(v);
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl HeadPace {
    /// A schedule that polls every `idle` until it has learnt the chain.
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            last: None,
            deltas: VecDeque::with_capacity(SAMPLES),
            arrivals: VecDeque::with_capacity(SAMPLES),
            last_seen: None,
            miss_sent: None,
            lo: None,
            hi: None,
        }
    }

    /// The learnt block time, if the chain is regular enough to pace: the
    /// timestamps' median, when blocks also arrive that often.
    pub fn block_time(&self) -> Option<Duration> {
        let (stamped, arriving) = (median(&self.deltas)?, median(&self.arrivals)?);
        let agree = arriving.abs_diff(stamped) <= stamped / 4;
        ((MIN_BLOCK_TIME_MS..=MAX_BLOCK_TIME_MS).contains(&stamped) && agree)
            .then(|| Duration::from_millis(stamped))
    }

    /// The spacing of polls around the expected block.
    pub fn step(&self) -> Duration {
        self.block_time()
            .map_or(self.idle, |bt| (bt / 40).clamp(MIN_STEP, MAX_STEP))
            .min(self.idle)
    }

    /// A head poll sent at `sent`, answered at `answered`, saw block
    /// `number` with `timestamp` (seconds).
    pub fn observe(&mut self, number: u64, timestamp: u64, sent: SystemTime, answered: SystemTime) {
        let ts = timestamp.saturating_mul(1000);
        let Some((last_n, last_ts)) = self.last else {
            self.last = Some((number, ts));
            self.last_seen = Some(ms(answered));
            return;
        };
        if number <= last_n {
            self.miss_sent = Some(ms(sent));
            return;
        }
        push(
            &mut self.deltas,
            ts.saturating_sub(last_ts) / (number - last_n),
        );
        let seen = ms(answered);
        if let Some(before) = self.last_seen {
            push(
                &mut self.arrivals,
                seen.saturating_sub(before) / (number - last_n),
            );
        }
        self.last_seen = Some(seen);
        let upper = ms(answered) as i64 - ts as i64;
        let lower = self.miss_sent.map(|s| s as i64 - ts as i64);
        let lo = match (self.lo, lower) {
            (Some(a), Some(b)) => Some((a - DRIFT_MS).max(b)),
            (a, b) => b.or(a.map(|a| a - DRIFT_MS)),
        };
        let hi = self.hi.map_or(upper, |h| (h + DRIFT_MS).min(upper));
        if lo.is_some_and(|lo| lo > hi) {
            // The chain moved away from what was learnt: start over from
            // this block's observation.
            self.lo = lower;
            self.hi = Some(upper);
        } else {
            self.lo = lo;
            self.hi = Some(hi);
        }
        self.last = Some((number, ts));
        self.miss_sent = None;
    }

    /// How long to wait, at wall-clock time `now`, before polling the head.
    pub fn next_poll(&self, now: SystemTime) -> Duration {
        let (Some(bt), Some((_, last_ts)), Some(hi)) = (self.block_time(), self.last, self.hi)
        else {
            return self.idle;
        };
        let step = self.step();
        let expected = (last_ts + bt.as_millis() as u64) as i64;
        // First poll: the bracket's middle (a bisection); without a lower
        // bound yet, a little before its upper end.
        let offset = match self.lo {
            Some(lo) => lo + (hi - lo) / 2,
            None => hi - 2 * step.as_millis() as i64,
        };
        let first = expected + offset;
        let now = ms(now) as i64;
        if now < first {
            return Duration::from_millis((first - now) as u64).min(bt);
        }
        // Missed at the middle: the block comes before the bracket's end.
        let end = expected + hi + 1;
        if self.miss_sent.is_some_and(|s| s as i64 >= first) && now < end {
            return Duration::from_millis((end - now) as u64);
        }
        if now < expected + hi.max(offset) + bt.as_millis() as i64 / 2 {
            return step;
        }
        // Overdue: the chain is slower than learnt, or stalled.
        self.idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// A chain whose block `n` has timestamp `2n` s and is available
    /// `delay` ms later, plus up to `jitter` ms (pseudo-random); the follower
    /// polls when the schedule says, each poll taking `rtt` ms. Returns
    /// (polls per block, mean ms from availability to being seen) over the
    /// last 40 of 100 blocks.
    fn simulate(delay: u64, jitter: u64, rtt: u64) -> (f64, f64) {
        let mut pace = HeadPace::new(Duration::from_secs(1));
        let noise = |n: u64| (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % (jitter + 1);
        let available = |n: u64| n * 2_000 + delay + noise(n);
        let head_at = |t: u64| (0..).take_while(|n| available(*n) <= t).last().unwrap_or(0);
        let mut t = 1_000;
        let (mut polls, mut lateness, mut blocks) = (0u64, 0u64, 0u64);
        let mut seen = 0;
        while seen < 100 {
            let head = head_at(t + rtt / 2);
            pace.observe(head, head * 2, at(t), at(t + rtt));
            if seen >= 60 {
                polls += 1;
                if head > seen {
                    lateness += t + rtt - available(head);
                    blocks += 1;
                }
            }
            seen = seen.max(head);
            t += rtt + pace.next_poll(at(t + rtt)).as_millis() as u64;
        }
        (
            polls as f64 / blocks as f64,
            lateness as f64 / blocks as f64,
        )
    }

    #[test]
    fn learns_the_block_time_and_polls_right_after_each_block() {
        for delay in [0, 137, 640, 1_950] {
            let (polls, late) = simulate(delay, 0, 2);
            assert!(polls <= 2.0, "delay {delay}: {polls} polls per block");
            assert!(
                late <= 10.0,
                "delay {delay}: seen {late} ms after availability"
            );
        }
        // Publication jitter of up to 80 ms costs some polls and some delay,
        // but stays far below a 1 s poll's 500 ms mean and 2 polls a block.
        for rtt in [2, 30] {
            let (polls, late) = simulate(300, 80, rtt);
            assert!(polls <= 4.0, "jitter, rtt {rtt}: {polls} polls per block");
            assert!(
                late <= 60.0 + rtt as f64,
                "jitter, rtt {rtt}: seen {late} ms late"
            );
        }
    }

    #[test]
    fn an_idle_or_unlearnt_chain_is_polled_at_the_configured_interval() {
        let mut pace = HeadPace::new(Duration::from_millis(700));
        assert_eq!(pace.next_poll(at(0)), Duration::from_millis(700));
        // Regular 2 s blocks are learnt ...
        for n in 0..6u64 {
            pace.observe(n, n * 2, at(n * 2_000 + 100), at(n * 2_000 + 101));
        }
        assert_eq!(pace.block_time(), Some(Duration::from_secs(2)));
        assert!(pace.next_poll(at(10_200)) > Duration::from_millis(700));
        // ... and a block long overdue falls back to the interval.
        pace.observe(5, 10, at(14_000), at(14_001));
        assert_eq!(pace.next_poll(at(14_001)), Duration::from_millis(700));
        // Timestamps one second apart on blocks that come every 100 ms (anvil
        // mining faster than its clock) are not trusted.
        let mut ahead = HeadPace::new(Duration::from_millis(100));
        for n in 0..10u64 {
            ahead.observe(n, 1_000 + n, at(n * 100), at(n * 100 + 1));
        }
        assert_eq!(ahead.block_time(), None);
        assert_eq!(ahead.next_poll(at(1_000)), Duration::from_millis(100));
        // Blocks within one second teach nothing.
        let mut fast = HeadPace::new(Duration::from_millis(50));
        for n in 0..10u64 {
            fast.observe(n, 7, at(n * 100), at(n * 100 + 1));
        }
        assert_eq!(fast.block_time(), None);
        assert_eq!(fast.next_poll(at(1_000)), Duration::from_millis(50));
    }
}
