//! Retry delays: exponential backoff with full jitter.

use std::time::Duration;

use rand::Rng;

use super::RelayConfig;

/// Delay before retry `n`: a uniformly random time in `[0, ceiling(n)]`,
/// where the ceiling starts at `backoff_initial_ms` and doubles per failed
/// attempt up to `backoff_max_ms` ("full jitter": many endpoints failing at
/// once do not retry in lock step). A `Retry-After` from the endpoint is a
/// lower bound, itself capped at `backoff_max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// From `backoff_initial_ms` / `backoff_max_ms`.
    pub fn from_config(cfg: &RelayConfig) -> Self {
        Backoff::new(Duration::from_millis(cfg.backoff_initial_ms), Duration::from_millis(cfg.backoff_max_ms))
    }

    /// A backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max: max.max(initial) }
    }

    /// The upper bound of the delay after `failures` failed attempts (1 = the first).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.initial.saturating_mul(1u32 << doublings.min(31)).min(self.max)
    }

    /// The delay after `failures` failed attempts, honouring `retry_after`.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling(failures);
        let jittered = Duration::from_nanos(rand::thread_rng().gen_range(0..=ceiling.as_nanos().min(u128::from(u64::MAX)) as u64));
        match retry_after {
            Some(r) => jittered.max(r.min(self.max)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_below_it() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let ceilings: Vec<u64> = (1..=10).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
        for n in 1..20 {
            assert!(b.delay(n, None) <= b.ceiling(n));
        }
        // Retry-After is a floor, capped at the maximum.
        assert!(b.delay(1, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        assert_eq!(b.delay(1, Some(Duration::from_secs(3600))), Duration::from_secs(60));
    }
}
