//! The one retry policy: exponential backoff with jitter, from `backon`. Every
//! retry loop in chainfront draws its delays from here, so the crate behind it
//! can be swapped in one place.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Retry tuning.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
    /// Attempts after the first.
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_retries: 8,
        }
    }
}

impl RetryPolicy {
    /// The delays to wait between attempts (jittered, growing, finite).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .build()
    }

    /// The delay before retry number `attempt` (0-based) of one sequence of
    /// retries (the largest delay once the sequence is exhausted).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delays()
            .nth(attempt as usize)
            .unwrap_or(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_bounded_and_finite() {
        let p = RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
            max_retries: 6,
        };
        let d: Vec<Duration> = p.delays().collect();
        assert_eq!(d.len(), 6);
        // Jitter adds up to one more delay's worth.
        assert!(d.iter().all(|x| *x <= Duration::from_millis(160)), "{d:?}");
        assert!(d[0] >= Duration::from_millis(10));
    }
}
