//! A short-lived memory of logins that verified, so a reconnect storm does
//! not pay a full Argon2/bcrypt verification per client.
//!
//! Why: after a restart, a network blip or a phone waking up, thousands of
//! clients log in again within seconds with the password they used a minute
//! ago. With `{ARGON2ID}` each verification costs tens of milliseconds of
//! CPU and its memory cost, so two cores verify a few dozen logins per
//! second and the storm takes minutes. Dovecot has `auth_cache_ttl` for the
//! same reason.
//!
//! What is kept is never the password: per user, one HMAC-SHA256 under a key
//! drawn at random when the process starts (so the digest is useless outside
//! this process and cannot be brute-forced offline from a core dump without
//! the key too) over the stored hash and the password, with the time it
//! stops being valid. Because the stored hash is part of the input, a
//! changed password (`user passwd`) or a deleted user never matches an old
//! entry. Only successes are remembered: a wrong password always pays the
//! full verification, so the cache gives an attacker nothing to probe.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Recently verified credentials (see the module docs). Thread-safe.
pub struct VerifiedCache {
    key: hmac::Key,
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    digest: hmac::Tag,
    valid_until: Instant,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key nor a digest ever reaches a log.
        f.debug_struct("VerifiedCache").field("ttl", &self.ttl).field("max_entries", &self.max_entries).finish_non_exhaustive()
    }
}

impl VerifiedCache {
    /// A cache whose entries live `ttl`, holding at most `max_entries`
    /// users. `None` when `ttl` is zero (the cache is off) or no random key
    /// can be drawn (then every login is verified in full, and that is
    /// logged).
    pub fn new(ttl: Duration, max_entries: usize) -> Option<Self> {
        if ttl.is_zero() || max_entries == 0 {
            return None;
        }
        let mut key = [0u8; 32];
        if SystemRandom::new().fill(&mut key).is_err() {
            tracing::warn!("no random key for the verified-login cache; every login is verified in full");
            return None;
        }
        Some(VerifiedCache {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn digest(&self, user: &str, stored_hash: &str, password: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        for part in [user.as_bytes(), stored_hash.as_bytes(), password] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        ctx.sign()
    }

    /// Whether `user` logged in with `password` against `stored_hash`
    /// within the last `ttl` (as of `now`).
    pub fn holds(&self, user: &str, stored_hash: &str, password: &[u8], now: Instant) -> bool {
        let digest = self.digest(user, stored_hash, password);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(user).is_some_and(|entry| {
            now < entry.valid_until
                && super::password::constant_time_eq(entry.digest.as_ref(), digest.as_ref())
        })
    }

    /// Remembers that `user` just verified with `password`.
    pub fn remember(&self, user: &str, stored_hash: &str, password: &[u8], now: Instant) {
        let digest = self.digest(user, stored_hash, password);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max_entries && !entries.contains_key(user) {
            entries.retain(|_, e| now < e.valid_until);
            if entries.len() >= self.max_entries {
                // Still full of live entries: forgetting them only costs
                // full verifications, never a wrong answer.
                entries.clear();
            }
        }
        entries.insert(user.to_string(), Entry { digest, valid_until: now + self.ttl });
    }

    /// Users remembered now (expired entries included until evicted).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is remembered.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> VerifiedCache {
        VerifiedCache::new(Duration::from_secs(60), 3).unwrap()
    }

    #[test]
    fn remembers_only_the_same_user_hash_and_password() {
        let c = cache();
        let t = Instant::now();
        c.remember("alice", "$argon2id$A", b"secret", t);
        assert!(c.holds("alice", "$argon2id$A", b"secret", t));
        assert!(!c.holds("alice", "$argon2id$A", b"secreT", t), "another password");
        assert!(!c.holds("alice", "$argon2id$B", b"secret", t), "a changed stored hash");
        assert!(!c.holds("bob", "$argon2id$A", b"secret", t), "another user");
        assert!(!c.holds("alic", "e$argon2id$A", b"secret", t), "parts are length-prefixed");
    }

    #[test]
    fn entries_expire() {
        let c = cache();
        let t = Instant::now();
        c.remember("alice", "h", b"pw", t);
        assert!(c.holds("alice", "h", b"pw", t + Duration::from_secs(59)));
        assert!(!c.holds("alice", "h", b"pw", t + Duration::from_secs(60)));
    }

    #[test]
    fn stays_bounded_and_prefers_live_entries() {
        let c = cache();
        let t = Instant::now();
        c.remember("a", "h", b"pw", t);
        c.remember("b", "h", b"pw", t + Duration::from_secs(30));
        c.remember("c", "h", b"pw", t + Duration::from_secs(30));
        // "a" has expired by then: it makes room, the others stay.
        let later = t + Duration::from_secs(70);
        c.remember("d", "h", b"pw", later);
        assert_eq!(c.len(), 3);
        assert!(c.holds("b", "h", b"pw", later));
        assert!(c.holds("d", "h", b"pw", later));
        assert!(!c.holds("a", "h", b"pw", later));
    }

    #[test]
    fn zero_ttl_is_off() {
        assert!(VerifiedCache::new(Duration::ZERO, 10).is_none());
        assert!(VerifiedCache::new(Duration::from_secs(1), 0).is_none());
    }

    #[test]
    fn debug_shows_no_key_or_digest() {
        let c = cache();
        c.remember("alice", "h", b"pw", Instant::now());
        let shown = format!("{c:?}");
        assert!(!shown.contains("alice") && !shown.contains("digest"), "{shown}");
    }
}
