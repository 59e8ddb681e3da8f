//! One storage [`Mailbox`] per user and mailbox in a worker process, shared
//! by every session that has it selected.
//!
//! A `Mailbox` holds the full message list (metadata and file names) of the
//! mailbox; keeping one per selected session made a session's memory grow
//! with the mailbox size. Sessions now share one behind a mutex and keep
//! only a compact view of what their client was told (see
//! [`super::selected`]). Whichever session needs fresh state syncs the
//! shared mailbox under the lock; each session then finds its own changes
//! by comparing its view with the shared message list, so it does not
//! matter which session's `sync` consumed the storage's change report.
//!
//! The registry holds weak references: the mailbox is dropped with the last
//! session that has it selected.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use storage_hooks::{Mailbox, StoreError, UserStore};

/// An interned, shared keyword list (as stored: same order).
pub(crate) type KeywordSet = Arc<Box<[String]>>;

/// Registry key: user, Maildir root and mailbox name.
type Key = (String, PathBuf, String);

/// Handle to a shared mailbox.
pub(crate) type SharedMailboxRef = Arc<Mutex<SharedMailbox>>;

/// Shared mailboxes of this process.
static REGISTRY: LazyLock<Mutex<HashMap<Key, Weak<Mutex<SharedMailbox>>>>> = LazyLock::new(Default::default);

/// Interned keyword sets above this count are pruned of unused ones.
const KEYWORD_SETS_PRUNE_AT: usize = 256;

/// The storage mailbox plus the keyword sets the sessions' views point to.
#[derive(Debug)]
pub(crate) struct SharedMailbox {
    /// The storage mailbox (synced by whichever session needs it).
    pub mailbox: Mailbox,
    /// Distinct keyword lists, shared by all views of this mailbox.
    pub keyword_sets: KeywordSets,
    /// SORT/THREAD fields of the messages read so far.
    pub sort_cache: crate::op::sort_keys::SortCache,
}

/// Interned keyword lists of one mailbox.
#[derive(Debug, Default)]
pub(crate) struct KeywordSets(HashSet<InternedKeywords>);

/// Hash-set entry that can be looked up by `&[String]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InternedKeywords(KeywordSet);

impl Borrow<[String]> for InternedKeywords {
    fn borrow(&self) -> &[String] {
        &self.0
    }
}

impl KeywordSets {
    /// The shared copy of `keywords`; `None` for no keywords.
    pub(crate) fn intern(&mut self, keywords: &[String]) -> Option<KeywordSet> {
        if keywords.is_empty() {
            return None;
        }
        if let Some(found) = self.0.get(keywords) {
            return Some(Arc::clone(&found.0));
        }
        if self.0.len() >= KEYWORD_SETS_PRUNE_AT {
            self.0.retain(|k| Arc::strong_count(&k.0) > 1);
        }
        let set: KeywordSet = Arc::new(keywords.to_vec().into_boxed_slice());
        self.0.insert(InternedKeywords(Arc::clone(&set)));
        Some(set)
    }
}

/// Locks a shared mailbox. A panic in another session while it held the
/// lock leaves the mailbox usable (it is re-synced from disk anyway).
pub(crate) fn lock(shared: &SharedMailboxRef) -> MutexGuard<'_, SharedMailbox> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared mailbox `name` of `store`, synced to the current disk state;
/// opened (and registered) if no session of this process has it.
///
/// # Errors
/// As [`UserStore::open_mailbox`].
pub(crate) fn open(store: &UserStore, name: &str) -> Result<SharedMailboxRef, StoreError> {
    let name = if name.eq_ignore_ascii_case("INBOX") { "INBOX" } else { name };
    let key: Key = (store.user().to_string(), store.root().to_path_buf(), name.to_string());
    let existing = registry().get(&key).and_then(Weak::upgrade);
    if let Some(shared) = existing {
        let fresh = lock(&shared).mailbox.sync().is_ok();
        if fresh {
            return Ok(shared);
        }
        // Deleted, renamed or unreadable: open it anew (sessions holding the
        // old one notice on their next sync).
    }
    let mailbox = store.open_mailbox(name)?;
    let shared = Arc::new(Mutex::new(SharedMailbox { mailbox, keyword_sets: KeywordSets::default(), sort_cache: Default::default() }));
    let mut reg = registry();
    reg.retain(|_, w| w.strong_count() > 0);
    reg.insert(key, Arc::downgrade(&shared));
    Ok(shared)
}

fn registry() -> MutexGuard<'static, HashMap<Key, Weak<Mutex<SharedMailbox>>>> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, UserStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open("alice", dir.path().join("mail"), storage_hooks::Hooks::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn sessions_of_one_mailbox_share_it_until_the_last_is_gone() {
        let (_dir, store) = store();
        let a = open(&store, "INBOX").unwrap();
        let b = open(&store, "inbox").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        let key: Key = ("alice".into(), store.root().to_path_buf(), "INBOX".into());
        assert!(registry().get(&key).and_then(Weak::upgrade).is_none());
    }

    #[test]
    fn keyword_sets_are_interned() {
        let (_dir, store) = store();
        let shared = open(&store, "INBOX").unwrap();
        let mut g = lock(&shared);
        assert!(g.keyword_sets.intern(&[]).is_none());
        let one = g.keyword_sets.intern(&["$Junk".to_string()]).unwrap();
        let two = g.keyword_sets.intern(&["$Junk".to_string()]).unwrap();
        assert!(Arc::ptr_eq(&one, &two));
        assert_eq!(&one[..], &["$Junk".to_string()]);
    }
}
