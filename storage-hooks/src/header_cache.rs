//! Header fields of messages as SEARCH matches them, kept in memory once a
//! search has parsed a message, so the next SEARCH FROM/SUBJECT/HEADER over
//! a big mailbox does not open and parse every file again.
//!
//! Keyed by mailbox directory and basename: a Maildir file's content never
//! changes under its basename, so an entry never goes stale (an expunged
//! message's entry is just never asked for again). It is a cache: bounded
//! ([`MAX_CACHED_MESSAGES`], emptied whole when full; a mailbox whose
//! headers nobody asked for during the load cache's idle time is dropped by
//! the same sweep, see `load_cache::Limits::idle`), it emits no events,
//! and losing it only costs reading the files again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Header fields of one message: lower-case name, value as the caller
/// stores it (SEARCH: raw and decoded text, lower-cased).
pub type Headers = Arc<[(String, String)]>;

/// Most messages whose headers are kept per process.
pub const MAX_CACHED_MESSAGES: usize = 400_000;

/// Headers by mailbox directory, each mailbox with its last use (time
/// comes in as `now`, milliseconds of `load_cache::now_ms`).
#[derive(Default)]
struct Cache {
    mailboxes: HashMap<PathBuf, (u64, foldhash::HashMap<String, Headers>)>,
    total: usize,
}

impl Cache {
    fn get(&mut self, mailbox_dir: &Path, basename: &str, now: u64) -> Option<Headers> {
        let (used, headers) = self.mailboxes.get_mut(mailbox_dir)?;
        *used = now;
        headers.get(basename).cloned()
    }

    fn put(&mut self, mailbox_dir: &Path, basename: &str, headers: Headers, now: u64) {
        if self.total >= MAX_CACHED_MESSAGES {
            self.mailboxes.clear();
            self.total = 0;
        }
        let (used, map) = self.mailboxes.entry(mailbox_dir.to_path_buf()).or_default();
        *used = now;
        let fresh = map.insert(basename.to_string(), headers).is_none();
        self.total += usize::from(fresh);
    }

    fn sweep(&mut self, now: u64, idle: std::time::Duration) -> usize {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let before = self.mailboxes.len();
        let mut dropped = 0;
        self.mailboxes.retain(|_, (used, map)| {
            let keep = now.saturating_sub(*used) <= idle_ms;
            if !keep {
                dropped += map.len();
            }
            keep
        });
        self.total -= dropped;
        before - self.mailboxes.len()
    }
}

fn cache() -> MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The cached headers of `basename` in `mailbox_dir`.
pub fn get(mailbox_dir: &Path, basename: &str) -> Option<Headers> {
    cache().get(mailbox_dir, basename, crate::load_cache::now_ms())
}

/// Caches the headers of `basename` in `mailbox_dir`.
pub fn put(mailbox_dir: &Path, basename: &str, headers: Headers) {
    cache().put(mailbox_dir, basename, headers, crate::load_cache::now_ms());
}

/// Drops the headers of mailboxes not used for longer than `idle` at `now`
/// (`load_cache::now_ms`); returns how many mailboxes went. Run by the load
/// cache's sweep.
pub fn sweep(now: u64, idle: std::time::Duration) -> usize {
    cache().sweep(now, idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_per_mailbox_and_basename() {
        let (a, b) = (Path::new("/nonexistent/hc-test/a"), Path::new("/nonexistent/hc-test/b"));
        let h: Headers = vec![("subject".to_string(), "hello".to_string())].into();
        put(a, "m1", h.clone());
        assert_eq!(get(a, "m1").as_deref(), Some(&*h));
        assert!(get(a, "m2").is_none());
        assert!(get(b, "m1").is_none());
    }

    #[test]
    fn mailboxes_nobody_asked_for_are_dropped() {
        let idle = std::time::Duration::from_secs(120);
        let mut c = Cache::default();
        let (a, b) = (Path::new("/nonexistent/hc-idle/a"), Path::new("/nonexistent/hc-idle/b"));
        let h: Headers = vec![("subject".to_string(), "x".to_string())].into();
        c.put(a, "m1", h.clone(), 1_000);
        c.put(a, "m2", h.clone(), 1_000);
        c.put(b, "m1", h.clone(), 1_000);
        // Asking for a header is a use.
        assert!(c.get(b, "m1", 100_000).is_some());
        assert_eq!(c.sweep(121_000, idle), 0, "idle for exactly 120 s: kept");
        assert_eq!(c.sweep(121_001, idle), 1);
        assert!(c.get(a, "m1", 121_001).is_none() && c.get(b, "m1", 121_001).is_some());
        assert_eq!(c.total, 1);
        assert_eq!(c.sweep(300_000, idle), 1);
        assert_eq!(c.total, 0);
    }
}
