//! One timer wheel for every session's keepalive, instead of a timer per
//! session: `slots` buckets of session keys, one bucket per tick; a session
//! sits in the bucket of the tick it arrived in and is visited once per
//! revolution. Dead keys are dropped lazily when their bucket is visited.

use std::time::{Duration, Instant};

use super::SessionKey;

/// A wheel with one revolution per keepalive interval.
#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<SessionKey>>,
    tick: Duration,
    cursor: usize,
    next_tick_at: Instant,
}

impl TimerWheel {
    /// A wheel whose revolution is `interval`, turning every `tick`.
    pub fn new(interval: Duration, tick: Duration, now: Instant) -> Self {
        let tick = tick.max(Duration::from_millis(1));
        let n = (interval.as_nanos() / tick.as_nanos()).clamp(1, 1 << 20) as usize;
        TimerWheel { slots: vec![Vec::new(); n], tick, cursor: 0, next_tick_at: now + tick }
    }

    /// Adds `key`; it is first visited one revolution from now.
    pub fn insert(&mut self, key: SessionKey) {
        self.slots[self.cursor].push(key);
    }

    /// When [`TimerWheel::advance`] next has work.
    pub fn next_deadline(&self) -> Instant {
        self.next_tick_at
    }

    /// Turns the wheel up to `now`; `visit` is called for every key in the
    /// buckets passed and returns whether the key stays.
    pub fn advance(&mut self, now: Instant, mut visit: impl FnMut(SessionKey) -> bool) {
        let mut turns = 0;
        while now >= self.next_tick_at && turns < self.slots.len() {
            self.cursor = (self.cursor + 1) % self.slots.len();
            let mut bucket = std::mem::take(&mut self.slots[self.cursor]);
            bucket.retain(|&k| visit(k));
            if bucket.capacity() > 2 * bucket.len() + 16 {
                bucket.shrink_to_fit();
            }
            // Keys inserted during the visit landed in this slot too.
            bucket.append(&mut self.slots[self.cursor]);
            self.slots[self.cursor] = bucket;
            self.next_tick_at += self.tick;
            turns += 1;
        }
        if now >= self.next_tick_at {
            // Far behind (suspended process): skip ahead instead of spinning.
            self.next_tick_at = now + self.tick;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_once_per_revolution() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(Duration::from_secs(4), Duration::from_secs(1), t0);
        let a = SessionKey { index: 1, generation: 0 };
        w.insert(a);
        let mut seen = Vec::new();
        for s in 1..=9 {
            w.advance(t0 + Duration::from_secs(s), |k| {
                seen.push((s, k.index));
                true
            });
        }
        assert_eq!(seen, vec![(4, 1), (8, 1)]);
        let mut count = 0;
        w.advance(t0 + Duration::from_secs(12), |_| {
            count += 1;
            false
        });
        assert_eq!(count, 1);
        w.advance(t0 + Duration::from_secs(16), |_| panic!("dropped key visited"));
    }
}
