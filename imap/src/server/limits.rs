//! Connection limits (per IP, per user) and the growing failed-login delay.
//!
//! Both live in the master, which sees every connection and every login;
//! workers report ended sessions back so the per-user counts stay right.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Atomic so a configuration reload can change them under running sessions.
    max_per_ip: AtomicUsize,
    max_per_user: AtomicUsize,
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
        Self { max_per_ip: AtomicUsize::new(max_per_ip), max_per_user: AtomicUsize::new(max_per_user), counts: Mutex::new(Counts::default()) }
    }

    /// Changes the maxima (a configuration reload). Connections and sessions
    /// already open stay; new ones are checked against the new values.
    pub fn set_maxima(&self, max_per_ip: usize, max_per_user: usize) {
        self.max_per_ip.store(max_per_ip, Ordering::Relaxed);
        self.max_per_user.store(max_per_user, Ordering::Relaxed);
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip`, or refuses it.
    ///
    /// # Errors
    /// [`LimitExceeded::PerIp`] if `ip` is at its limit.
    pub fn open_connection(&self, ip: IpAddr) -> Result<(), LimitExceeded> {
        let max = self.max_per_ip.load(Ordering::Relaxed);
        if bump(&mut self.counts().per_ip, ip, max) {
            Ok(())
        } else {
            Err(LimitExceeded::PerIp(max))
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
        let max = self.max_per_user.load(Ordering::Relaxed);
        if bump(&mut self.counts().per_user, user.to_owned(), max) {
            Ok(())
        } else {
            Err(LimitExceeded::PerUser(max))
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

#[derive(Debug, Clone)]
struct Failures {
    count: u32,
    last: Instant,
    /// The one account all of this address's failures were for; `None`
    /// once they were for several (or for an account map entry).
    only_account: Option<String>,
}

/// Failure counts by key, each doubling a delay, forgotten after
/// [`LoginDelay::FORGET_AFTER`] without failures.
#[derive(Debug)]
struct FailureMap<K>(HashMap<K, Failures>);

impl<K> Default for FailureMap<K> {
    fn default() -> Self {
        FailureMap(HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq> FailureMap<K> {
    fn record(&mut self, key: K, account: &str, now: Instant) -> u32 {
        if self.0.len() >= LoginDelay::PRUNE_AT {
            self.0.retain(|_, f| now.saturating_duration_since(f.last) < LoginDelay::FORGET_AFTER);
        }
        let entry =
            self.0.entry(key).or_insert_with(|| Failures { count: 0, last: now, only_account: Some(account.to_owned()) });
        if now.saturating_duration_since(entry.last) >= LoginDelay::FORGET_AFTER {
            entry.count = 0;
            entry.only_account = Some(account.to_owned());
        }
        if entry.only_account.as_deref() != Some(account) {
            entry.only_account = None;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        entry.count
    }
}

/// Delay before answering a failed login: the larger of a per-IP and a
/// per-account delay, each doubling with every failure (from that address,
/// or against that account from any address), capped, and forgotten after
/// [`LoginDelay::FORGET_AFTER`] without failures.
///
/// A successful login resets the account's count, and the address's count
/// only if every failure from that address was for that same account: an
/// attacker holding one valid account cannot reset its address's delay by
/// logging into it between guesses at other accounts. Unknown user names are
/// counted like real ones, so the delay does not tell which names exist.
#[derive(Debug)]
pub struct LoginDelay {
    /// In milliseconds; atomic so a configuration reload can change them.
    base_ms: AtomicU64,
    max_ms: AtomicU64,
    failures: Mutex<(FailureMap<IpAddr>, FailureMap<String>)>,
}

impl LoginDelay {
    /// How long failures are remembered.
    pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
    /// Entries tracked (per map) before expired ones are pruned.
    const PRUNE_AT: usize = 10_000;

    /// A delay starting at `base` and capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            base_ms: AtomicU64::new(ms(base)),
            max_ms: AtomicU64::new(ms(max)),
            failures: Mutex::new((FailureMap::default(), FailureMap::default())),
        }
    }

    /// Changes the base and cap (a configuration reload); failure counts
    /// are kept, so a client already being slowed down stays slowed down.
    pub fn set_bounds(&self, base: Duration, max: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.base_ms.store(ms(base), Ordering::Relaxed);
        self.max_ms.store(ms(max), Ordering::Relaxed);
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, (FailureMap<IpAddr>, FailureMap<String>)> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn delay_for(&self, count: u32) -> Duration {
        let factor = 1u32.checked_shl(count.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        let base = Duration::from_millis(self.base_ms.load(Ordering::Relaxed));
        base.saturating_mul(factor).min(Duration::from_millis(self.max_ms.load(Ordering::Relaxed)))
    }

    /// Records a failed login from `ip` for `account` at `now` and returns
    /// how long to wait before answering it.
    pub fn record_failure(&self, ip: IpAddr, account: &str, now: Instant) -> Duration {
        let mut maps = self.maps();
        let by_ip = maps.0.record(ip, account, now);
        let by_account = maps.1.record(account.to_owned(), account, now);
        self.delay_for(by_ip.max(by_account))
    }

    /// A successful login of `account` from `ip`: forgets the account's
    /// failures, and the address's if they were all for this account.
    pub fn record_success(&self, ip: IpAddr, account: &str) {
        let mut maps = self.maps();
        maps.1 .0.remove(account);
        if maps.0 .0.get(&ip).is_some_and(|f| f.only_account.as_deref() == Some(account)) {
            maps.0 .0.remove(&ip);
        }
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
        assert_eq!(delay.record_failure(ip, "a", t0), Duration::from_millis(100));
        assert_eq!(delay.record_failure(ip, "a", t0), Duration::from_millis(200));
        assert_eq!(delay.record_failure(ip, "a", t0), Duration::from_millis(400));
        assert_eq!(delay.record_failure(ip, "a", t0), Duration::from_millis(500));
        for _ in 0..100 {
            assert_eq!(delay.record_failure(ip, "a", t0), Duration::from_millis(500));
        }
        delay.record_success(ip, "a");
        assert_eq!(delay.record_failure(ip, "a", t0), Duration::from_millis(100));
        let later = t0 + LoginDelay::FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(delay.record_failure(ip, "a", later), Duration::from_millis(100));
    }

    /// The attacker holds account `mine` and guesses at `victim`: logging
    /// into `mine` in between must not reset the address's delay.
    #[test]
    fn success_for_another_account_keeps_the_ip_delay() {
        let delay = LoginDelay::new(Duration::from_millis(100), Duration::from_secs(60));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let t0 = Instant::now();
        let mut last = Duration::ZERO;
        for round in 0..5u32 {
            // A different victim each time, so only the IP count can grow.
            last = delay.record_failure(ip, &format!("victim{round}"), t0);
            delay.record_success(ip, "mine");
        }
        assert_eq!(last, Duration::from_millis(1600));
    }

    /// Fifty addresses, one account: the account's delay grows regardless.
    #[test]
    fn account_delay_grows_across_addresses() {
        let delay = LoginDelay::new(Duration::from_millis(100), Duration::from_secs(60));
        let t0 = Instant::now();
        let mut last = Duration::ZERO;
        for i in 0..6u8 {
            last = delay.record_failure(IpAddr::from([198, 51, 100, i]), "victim", t0);
        }
        assert_eq!(last, Duration::from_millis(3200));
        // Another account from a fresh address starts at the base delay.
        assert_eq!(delay.record_failure(IpAddr::from([198, 51, 100, 99]), "other", t0), Duration::from_millis(100));
    }

    #[test]
    fn reloaded_maxima_and_delays_apply_to_new_requests() {
        let limits = ConnectionLimits::new(3, 0);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        limits.open_connection(ip).unwrap();
        limits.open_connection(ip).unwrap();
        limits.set_maxima(2, 1);
        assert_eq!(limits.open_connection(ip), Err(LimitExceeded::PerIp(2)));
        limits.open_session("alice").unwrap();
        assert_eq!(limits.open_session("alice"), Err(LimitExceeded::PerUser(1)));
        let delay = LoginDelay::new(Duration::from_millis(100), Duration::from_millis(500));
        let t0 = Instant::now();
        assert_eq!(delay.record_failure(ip, "a", t0), Duration::from_millis(100));
        delay.set_bounds(Duration::from_millis(10), Duration::from_millis(15));
        assert_eq!(delay.record_failure(ip, "a", t0), Duration::from_millis(15));
    }
}
