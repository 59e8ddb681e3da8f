//! Header fields of messages as SEARCH matches them, kept in memory once a
//! search has parsed a message, so the next SEARCH FROM/SUBJECT/HEADER over
//! a big mailbox does not open and parse every file again.
//!
//! Keyed by mailbox directory and basename: a Maildir file's content never
//! changes under its basename, so an entry never goes stale (an expunged
//! message's entry is just never asked for again). It is a cache: bounded
//! ([`MAX_CACHED_MESSAGES`], emptied whole when full), it emits no events,
//! and losing it only costs reading the files again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Header fields of one message: lower-case name, value as the caller
/// stores it (SEARCH: raw and decoded text, lower-cased).
pub type Headers = Arc<[(String, String)]>;

/// Most messages whose headers are kept per process.
pub const MAX_CACHED_MESSAGES: usize = 400_000;

#[derive(Default)]
struct Cache {
    mailboxes: HashMap<PathBuf, foldhash::HashMap<String, Headers>>,
    total: usize,
}

fn cache() -> MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The cached headers of `basename` in `mailbox_dir`.
pub fn get(mailbox_dir: &Path, basename: &str) -> Option<Headers> {
    cache().mailboxes.get(mailbox_dir)?.get(basename).cloned()
}

/// Caches the headers of `basename` in `mailbox_dir`.
pub fn put(mailbox_dir: &Path, basename: &str, headers: Headers) {
    let mut c = cache();
    if c.total >= MAX_CACHED_MESSAGES {
        c.mailboxes.clear();
        c.total = 0;
    }
    let fresh = c.mailboxes.entry(mailbox_dir.to_path_buf()).or_default().insert(basename.to_string(), headers).is_none();
    c.total += usize::from(fresh);
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
}
