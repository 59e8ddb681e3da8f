//! What a hibernate process knows about one mailbox of a user: the cached
//! status, the current UID list (shared by every session whose view is
//! current) and the MODSEQ chain used to detect missed events.

use std::sync::{Arc, Weak};

use storage_hooks::{EventKind, MailboxEvent, MailboxStatus, UidSet};

use super::SessionKey;

/// Cached state of one mailbox.
#[derive(Debug)]
pub(crate) struct MailboxState {
    pub user: u32,
    pub name: Box<str>,
    /// Cached status record; `None` = read storage on the next STATUS.
    pub status: Option<MailboxStatus>,
    /// Current UIDs, known while a session has this mailbox selected.
    pub current: Option<Arc<UidSet>>,
    /// The view replaced by the last change, to share it with sessions
    /// that arrive with the same (slightly old) view.
    pub previous: Weak<UidSet>,
    /// HIGHESTMODSEQ of the last applied change (the chain position).
    pub modseq: u64,
    /// MODSEQ of the last flag change seen on the bus.
    pub last_flag_modseq: u64,
    /// Flag changes at or below this MODSEQ are unknown to us (state built
    /// from storage at this point): sessions that saw less read storage.
    pub flag_floor: u64,
    /// Sessions that have this mailbox selected.
    pub sessions: Vec<SessionKey>,
}

impl MailboxState {
    pub(crate) fn new(user: u32, name: &str) -> Self {
        MailboxState {
            user,
            name: name.into(),
            status: None,
            current: None,
            previous: Weak::new(),
            modseq: 0,
            last_flag_modseq: 0,
            flag_floor: 0,
            sessions: Vec::new(),
        }
    }

    /// Replaces the current view, remembering the old one for sharing.
    pub(crate) fn set_current(&mut self, next: UidSet) {
        if let Some(old) = self.current.take() {
            self.previous = Arc::downgrade(&old);
        }
        self.current = Some(Arc::new(next));
    }

    /// An `Arc` for a session arriving with `view`: the current or previous
    /// shared one when equal, else a new one.
    pub(crate) fn share(&self, view: UidSet) -> Arc<UidSet> {
        if let Some(cur) = &self.current {
            if **cur == view {
                return cur.clone();
            }
        }
        if let Some(prev) = self.previous.upgrade() {
            if *prev == view {
                return prev;
            }
        }
        Arc::new(view)
    }
}

/// `a` without the members of `b`, computed on ranges.
pub(crate) fn difference(a: &UidSet, b: &UidSet) -> UidSet {
    let mut out = Vec::new();
    let br = b.ranges();
    let mut j = 0;
    for r in a.ranges() {
        let mut first = r.first;
        let last = r.last;
        while j < br.len() && br[j].last < first {
            j += 1;
        }
        let mut k = j;
        let mut done = false;
        while k < br.len() && br[k].first <= last {
            if br[k].first > first {
                out.push(storage_hooks::UidRange { first, last: br[k].first - 1 });
            }
            if br[k].last >= last {
                done = true;
                break;
            }
            first = br[k].last + 1;
            k += 1;
        }
        if !done {
            out.push(storage_hooks::UidRange { first, last });
        }
    }
    UidSet::from_ranges(out)
}

/// Whether an event whose MODSEQ is not above the cached one is provably
/// reflected in `state` already: a storage read at or after its MODSEQ, or
/// its UIDs all present (new mail) or all absent (expunge).
pub(crate) fn already_in_view(state: &MailboxState, ev: &MailboxEvent) -> bool {
    if ev.modseq_after <= state.flag_floor {
        return true;
    }
    let Some(current) = state.current.as_deref() else { return false };
    match ev.kind {
        EventKind::MessageNew | EventKind::MessageAppend => difference(&ev.uids, current).is_empty(),
        EventKind::MessageExpunge => difference(current, &ev.uids).len() == current.len(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_difference() {
        let a: UidSet = [1, 2, 3, 4, 5, 8, 9, 10, 20].into_iter().collect();
        let b: UidSet = [2, 3, 9, 20, 30].into_iter().collect();
        assert_eq!(difference(&a, &b).to_imap_string(), "1,4:5,8,10");
        assert_eq!(difference(&b, &a).to_imap_string(), "30");
        assert!(difference(&a, &a).is_empty());
        assert_eq!(difference(&UidSet::from_range(1, 100), &UidSet::from_range(50, 60)).to_imap_string(), "1:49,61:100");
    }
}
