//! Connection limits (per IP, per user) and the growing failed-login delay.
//!
//! Both live in the master, which sees every connection and every login;
//! workers report ended sessions back so the per-user counts stay right.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which limit refused a connection or a login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// Too many connections from the client's IP address.
    #[error("too many connections from your IP address (limit {0})")]
    PerIp(usize),
    /// Too many sessions of this user.
    #[error("too many simultaneous sessions of this user (limit {0})")]
    PerUser(usize),
}

#[derive(Debug, Default)]
struct Counts {
    per_ip: HashMap<IpAddr, usize>,
    per_user: HashMap<String, usize>,
}

/// Counts open connections per IP and sessions per user against limits
/// (0 = unlimited). Thread-safe.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_per_ip: usize,
    max_per_user: usize,
    counts: Mutex<Counts>,
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K, max: usize) -> bool {
    let entry = map.entry(key).or_insert(0);
    if max != 0 && *entry >= max {
        return false;
    }
    *entry += 1;
    true
}

fn drop_one<K, Q>(map: &mut HashMap<K, usize>, key: &Q)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl ConnectionLimits {
    /// Limits with the given maxima (0 = unlimited).
    pub fn new(max_per_ip: usize, max_per_user: usize) -> Self {
        Self { max_per_ip, max_per_user, counts: Mutex::new(Counts::default()) }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip`, or refuses it.
    ///
    /// # Errors
    /// [`LimitExceeded::PerIp`] if `ip` is at its limit.
    pub fn open_connection(&self, ip: IpAddr) -> Result<(), LimitExceeded> {
        if bump(&mut self.counts().per_ip, ip, self.max_per_ip) {
            Ok(())
        } else {
            Err(LimitExceeded::PerIp(self.max_per_ip))
        }
    }

    /// Forgets a connection counted by [`ConnectionLimits::open_connection`].
    pub fn close_connection(&self, ip: IpAddr) {
        drop_one(&mut self.counts().per_ip, &ip);
    }

    /// Counts a new session of `user`, or refuses it.
    ///
    /// # Errors
    /// [`LimitExceeded::PerUser`] if `user` is at the limit.
    pub fn open_session(&self, user: &str) -> Result<(), LimitExceeded> {
        if bump(&mut self.counts().per_user, user.to_owned(), self.max_per_user) {
            Ok(())
        } else {
            Err(LimitExceeded::PerUser(self.max_per_user))
        }
    }

    /// Forgets a session counted by [`ConnectionLimits::open_session`].
    pub fn close_session(&self, user: &str) {
        drop_one(&mut self.counts().per_user, user);
    }

    /// Open connections from `ip`.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.counts().per_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Open sessions of `user`.
    pub fn sessions_of(&self, user: &str) -> usize {
        self.counts().per_user.get(user).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Delay before answering a failed login, doubling with each failure from
/// the same IP address, capped; forgotten after [`LoginDelay::FORGET_AFTER`]
/// without failures or after a successful login from that address.
#[derive(Debug)]
pub struct LoginDelay {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl LoginDelay {
    /// How long an address's failures are remembered.
    pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
    /// Addresses tracked before expired entries are pruned.
    const PRUNE_AT: usize = 10_000;

    /// A delay starting at `base` and capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, failures: Mutex::new(HashMap::new()) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failed login from `ip` at `now` and returns how long to
    /// wait before answering it.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut map = self.map();
        if map.len() >= Self::PRUNE_AT {
            map.retain(|_, f| now.saturating_duration_since(f.last) < Self::FORGET_AFTER);
        }
        let entry = map.entry(ip).or_insert(Failures { count: 0, last: now });
        if now.saturating_duration_since(entry.last) >= Self::FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let factor = 1u32.checked_shl(entry.count.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Forgets the failures of `ip` (after a successful login).
    pub fn record_success(&self, ip: IpAddr) {
        self.map().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_limit_and_release() {
        let limits = ConnectionLimits::new(2, 0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        limits.open_connection(ip).unwrap();
        limits.open_connection(ip).unwrap();
        assert_eq!(limits.open_connection(ip), Err(LimitExceeded::PerIp(2)));
        limits.open_connection(other).unwrap();
        limits.close_connection(ip);
        limits.open_connection(ip).unwrap();
        assert_eq!(limits.connections_from(ip), 2);
        limits.close_connection(ip);
        limits.close_connection(ip);
        limits.close_connection(ip);
        assert_eq!(limits.connections_from(ip), 0);
    }

    #[test]
    fn per_user_limit_and_unlimited() {
        let limits = ConnectionLimits::new(0, 1);
        limits.open_session("alice").unwrap();
        assert_eq!(limits.open_session("alice"), Err(LimitExceeded::PerUser(1)));
        limits.open_session("bob").unwrap();
        limits.close_session("alice");
        limits.open_session("alice").unwrap();
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..1000 {
            limits.open_connection(ip).unwrap();
        }
        assert_eq!(limits.sessions_of("alice"), 1);
    }

    #[test]
    fn login_delay_doubles_caps_and_resets() {
        let delay = LoginDelay::new(Duration::from_millis(100), Duration::from_millis(500));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(delay.record_failure(ip, t0), Duration::from_millis(100));
        assert_eq!(delay.record_failure(ip, t0), Duration::from_millis(200));
        assert_eq!(delay.record_failure(ip, t0), Duration::from_millis(400));
        assert_eq!(delay.record_failure(ip, t0), Duration::from_millis(500));
        for _ in 0..100 {
            assert_eq!(delay.record_failure(ip, t0), Duration::from_millis(500));
        }
        let other: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(delay.record_failure(other, t0), Duration::from_millis(100));
        delay.record_success(ip);
        assert_eq!(delay.record_failure(ip, t0), Duration::from_millis(100));
        let later = t0 + LoginDelay::FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(delay.record_failure(ip, later), Duration::from_millis(100));
    }
}
