//! Changes other programs made to a mailbox behind our back, turned into
//! the same events our own writes publish.
//!
//! Every locked load of a mailbox ([`crate::locked_mailbox::LockedMailbox::load`])
//! reconciles the Maildir with `dovecot-uidlist` and our index: files
//! without a record get UIDs, vanished files are dropped, flag-only renames
//! get a new MODSEQ. The load records what it found in an
//! [`OutsideChanges`]; [`UserStore::reconcile_outside_changes`] (called by
//! the file-system watcher) commits that and publishes one event per kind:
//! `MessageNew` with all new UIDs, `FlagsSet` / `FlagsClear`, and
//! `MessageExpunge`. Our own writes are never reported here: they update the
//! uidlist and index in the same locked step, so a later load finds nothing
//! new.
//!
//! Any other locked load (an IMAP `NOOP`, `SELECT`, a `STATUS` rescan, a
//! delivery) also absorbs outside changes. With
//! [`crate::Hooks::with_outside_change_reporting`] on, every such load
//! publishes what it found the same way (whoever commits first publishes;
//! later loads find nothing); off (`change_source = "hooks"`), those loads
//! stay silent and only the watcher's reconcile publishes.

use crate::event::{EventKind, MailboxEvent};
use crate::locked_mailbox::{Committed, LockedMailbox};
use crate::mailbox_dir::MailboxDir;
use crate::{durable, summary, Flags, MailboxStatus, StoreError, UidSet, UserStore};

/// What a locked load found changed by other programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutsideChanges {
    /// UIDs given to files that appeared without a uidlist record.
    pub added: UidSet,
    /// Union of the flags of the added messages.
    pub added_flags: Flags,
    /// UIDs whose files vanished.
    pub expunged: UidSet,
    /// UIDs that gained flags (file renamed by another program).
    pub flags_set: UidSet,
    /// Union of the flags gained.
    pub set_flags: Flags,
    /// UIDs that lost flags.
    pub flags_cleared: UidSet,
    /// Union of the flags lost.
    pub cleared_flags: Flags,
}

impl OutsideChanges {
    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.expunged.is_empty() && self.flags_set.is_empty() && self.flags_cleared.is_empty()
    }

    /// Records that `uid`'s flags went from `old` to `new`.
    pub(crate) fn note_flags(&mut self, uid: u32, old: &Flags, new: &Flags) {
        let added = new.difference(old);
        let removed = old.difference(new);
        if !added.is_empty() {
            self.flags_set.insert(uid);
            self.set_flags = self.set_flags.union(&added);
        }
        if !removed.is_empty() {
            self.flags_cleared.insert(uid);
            self.cleared_flags = self.cleared_flags.union(&removed);
        }
    }
}

/// The result of one reconcile of a mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// What was found and published.
    pub changes: OutsideChanges,
    /// The mailbox status afterwards.
    pub status: MailboxStatus,
    /// Number of events emitted.
    pub events: usize,
}

impl UserStore {
    /// Reconciles mailbox `name` with what other programs did to its files
    /// (under the uidlist dot-lock) and emits one event per kind of change
    /// found, in this order: `MessageNew` (all new UIDs, ascending, with the
    /// summary of the first), `FlagsSet`, `FlagsClear`, `MessageExpunge`.
    /// The first event's `modseq_before` is HIGHESTMODSEQ before the outside
    /// changes; the following ones have `modseq_before == modseq_after`.
    /// A mailbox that no longer exists reports nothing.
    ///
    /// # Errors
    /// `InvalidMailboxName`, I/O, `LockTimeout`.
    pub fn reconcile_outside_changes(&self, name: &str) -> Result<ReconcileReport, StoreError> {
        let dir = self.mailbox_dir(name)?;
        if !dir.exists() {
            return Ok(ReconcileReport::default());
        }
        let locked = match LockedMailbox::load(&dir, &[]) {
            Ok(l) => l,
            // Deleted between the check and the lock.
            Err(StoreError::NoSuchMailbox(_)) => return Ok(ReconcileReport::default()),
            Err(e) => return Err(e),
        };
        let committed = locked.commit()?;
        let events = outside_change_events(self.user(), &dir, &committed);
        for ev in &events {
            self.hooks().emit(ev);
        }
        Ok(ReconcileReport { changes: committed.outside, status: committed.status, events: events.len() })
    }

    /// Publishes the outside changes a committed locked load found, if this
    /// store's hooks report outside changes on every load (see
    /// [`crate::Hooks::with_outside_change_reporting`]). Whoever commits
    /// first under the uidlist lock owns (and publishes) a change: later
    /// loads, including the watcher's reconcile, find nothing, so nothing is
    /// published twice. Returns the number of events emitted.
    pub(crate) fn publish_outside_changes(&self, dir: &MailboxDir, committed: &Committed) -> usize {
        if !self.hooks().reports_outside_changes() || committed.outside.is_empty() {
            return 0;
        }
        let events = outside_change_events(self.user(), dir, committed);
        for ev in &events {
            self.hooks().emit(ev);
        }
        events.len()
    }

    /// Reconciles every mailbox of the user (after an inotify queue
    /// overflow, or for a stat-poll). Returns the total number of events.
    ///
    /// # Errors
    /// I/O errors listing the mailboxes; a mailbox that fails is logged and skipped.
    pub fn reconcile_all_outside_changes(&self) -> Result<usize, StoreError> {
        let mut events = 0;
        for info in self.list_mailboxes()? {
            if !info.selectable {
                continue;
            }
            match self.reconcile_outside_changes(&info.name) {
                Ok(r) => events += r.events,
                Err(e) => tracing::warn!(user = %self.user(), mailbox = %info.name, error = %e, "reconcile failed"),
            }
        }
        Ok(events)
    }
}

/// The events describing the outside changes found by the load behind
/// `committed`, in this order: `MessageNew` (all new UIDs, ascending, with
/// the summary of the first), `FlagsSet`, `FlagsClear`, `MessageExpunge`.
/// All outside changes of one load share one MODSEQ: the first event goes
/// from HIGHESTMODSEQ before them to [`Committed::outside_modseq`], the
/// following ones have `modseq_before == modseq_after`. Any operation of the
/// same load (a flag change, an append) gets a later MODSEQ and its own events.
fn outside_change_events(user: &str, dir: &MailboxDir, committed: &Committed) -> Vec<MailboxEvent> {
    let c = &committed.outside;
    let mut events = Vec::new();
    if c.is_empty() {
        return events;
    }
    let status = committed.status;
    let after = committed.outside_modseq;
    let mut before = after.saturating_sub(1);
    let event = |kind: EventKind, uids: &UidSet, flags: &Flags, before: u64| MailboxEvent {
        kind,
        user: user.to_string(),
        mailbox: dir.name.to_string(),
        old_mailbox: None,
        uidvalidity: status.uidvalidity,
        uids: uids.clone(),
        flags: flags.clone(),
        status,
        modseq_before: before,
        modseq_after: after,
        summary: None,
        timestamp_ms: durable::now_ms(),
    };
    if !c.added.is_empty() {
        let mut ev = event(EventKind::MessageNew, &c.added, &c.added_flags, before);
        let first = c.added.first().and_then(|uid| committed.messages.iter().find(|m| m.uid == uid));
        ev.summary = first
            .and_then(|m| std::fs::read(dir.file_path(m.entry.in_new, &m.entry.file_name)).ok())
            .map(|raw| summary::summarize(&raw));
        events.push(ev);
    }
    for (kind, uids, flags) in [
        (EventKind::FlagsSet, &c.flags_set, &c.set_flags),
        (EventKind::FlagsClear, &c.flags_cleared, &c.cleared_flags),
        (EventKind::MessageExpunge, &c.expunged, &Flags::default()),
    ] {
        if !uids.is_empty() {
            events.push(event(kind, uids, flags, before));
        }
        if let Some(last) = events.last() {
            before = last.modseq_after;
        }
    }
    events
}
