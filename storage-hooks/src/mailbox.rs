//! An opened mailbox: a synced snapshot of its messages plus write operations.

use std::path::PathBuf;

use crate::event::{EventKind, MailboxEvent};
use crate::locked_mailbox::{Committed, DiskMessage, LockedMailbox};
use crate::mailbox_dir::{FileEntry, MailboxDir};
use crate::message::{CopyResult, FlagOp, MessageMeta, StoreFlagsResult, SyncChanges};
use crate::status_record::FsStamp;
use crate::{durable, Flags, MailboxStatus, StoreError, UidSet, UserStore};

/// An opened mailbox. Holds the message list (sorted by UID) as of the last
/// [`Mailbox::sync`]; write operations update it and emit events.
#[derive(Debug)]
pub struct Mailbox {
    store: UserStore,
    name: String,
    uidvalidity: u32,
    uidnext: u32,
    highestmodseq: u64,
    messages: Vec<MessageMeta>,
    dir: MailboxDir,
    /// Basename and last known location of each message, parallel to `messages`.
    files: Vec<(String, FileEntry)>,
    status: MailboxStatus,
    /// Filesystem stamp right after the view was last brought up to date.
    stamp: Option<FsStamp>,
}

impl Mailbox {
    /// Builds the view of a freshly opened mailbox.
    pub(crate) fn open(store: UserStore, dir: MailboxDir) -> Result<Self, StoreError> {
        dir.clean_tmp();
        let committed = crate::locked_mailbox::read_current(&dir, true)?;
        store.publish_outside_changes(&dir, &committed);
        let mut mailbox = Mailbox {
            store,
            name: dir.name.to_string(),
            uidvalidity: 0,
            uidnext: 0,
            highestmodseq: 0,
            messages: Vec::new(),
            dir,
            files: Vec::new(),
            status: MailboxStatus::default(),
            stamp: None,
        };
        mailbox.apply(committed);
        Ok(mailbox)
    }

    /// Replaces the view with `committed`, returning the differences.
    fn apply(&mut self, committed: Committed) -> SyncChanges {
        let uidvalidity_changed = committed.status.uidvalidity != self.uidvalidity;
        let mut changes = SyncChanges { uidvalidity_changed, ..Default::default() };
        let mut old = std::mem::take(&mut self.messages).into_iter().zip(std::mem::take(&mut self.files)).peekable();
        let mut messages = Vec::with_capacity(committed.messages.len());
        let mut files = Vec::with_capacity(committed.messages.len());
        let dates = crate::load_cache::internal_dates(&self.dir.path);
        let mut dates = dates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for disk in committed.messages {
            // Old messages below this UID are gone.
            while let Some((meta, _)) = old.peek() {
                if uidvalidity_changed || meta.uid < disk.uid {
                    changes.expunged.push(meta.uid);
                    old.next();
                } else {
                    break;
                }
            }
            let previous = match old.peek() {
                Some((meta, (basename, _))) if !uidvalidity_changed && meta.uid == disk.uid => {
                    let same_file = *basename == disk.basename;
                    let prev = old.next().map(|(m, _)| m);
                    if same_file {
                        prev
                    } else {
                        changes.expunged.push(disk.uid);
                        None
                    }
                }
                _ => None,
            };
            let meta = match previous {
                Some(prev) => {
                    if prev.flags != disk.flags || prev.modseq != disk.modseq {
                        changes.flags_changed.push(disk.uid);
                    }
                    MessageMeta { flags: disk.flags.clone(), modseq: disk.modseq, recent: disk.entry.in_new, ..prev }
                }
                None => {
                    changes.added.push(disk.uid);
                    let internal_date = match dates.get(&disk.basename) {
                        Some(&d) => d,
                        None => {
                            let d = self.dir.internal_date(&disk.entry);
                            // 0: the file is gone (or truly dated 1970): ask again next time.
                            if d != 0 {
                                dates.insert(disk.basename.clone(), d);
                            }
                            d
                        }
                    };
                    MessageMeta {
                        uid: disk.uid,
                        flags: disk.flags.clone(),
                        modseq: disk.modseq,
                        size: disk.vsize,
                        internal_date,
                        recent: disk.entry.in_new,
                    }
                }
            };
            messages.push(meta);
            files.push((disk.basename, disk.entry));
        }
        changes.expunged.extend(old.map(|(m, _)| m.uid));
        if dates.len() > 2 * files.len() + 1024 {
            // Expunged messages' dates: keep only the mailbox's current ones.
            let current: std::collections::HashSet<&str> = files.iter().map(|(b, _)| b.as_str()).collect();
            dates.retain(|b, _| current.contains(b.as_str()));
        }
        drop(dates);
        changes.expunged.sort_unstable();
        changes.expunged.dedup();
        self.messages = messages;
        self.files = files;
        self.set_status(committed.status);
        // Taken under the lock: a change by anyone after it alters the stamp.
        self.stamp = committed.settled_stamp;
        changes
    }

    fn set_status(&mut self, status: MailboxStatus) {
        self.uidvalidity = status.uidvalidity;
        self.uidnext = status.uidnext;
        self.highestmodseq = status.highestmodseq;
        self.status = status;
    }

    /// Updates known messages' flags, MODSEQ, recent state and file location
    /// from a commit, without adding or removing messages (those are
    /// reported by the next [`Mailbox::sync`]).
    fn refresh_known(&mut self, committed: &Committed) {
        let mut disk = committed.messages.iter().peekable();
        for (meta, file) in self.messages.iter_mut().zip(self.files.iter_mut()) {
            while disk.peek().is_some_and(|d| d.uid < meta.uid) {
                disk.next();
            }
            if let Some(d) = disk.peek().filter(|d| d.uid == meta.uid && d.basename == file.0) {
                meta.flags = d.flags.clone();
                meta.modseq = d.modseq;
                meta.recent = d.entry.in_new;
                file.1 = d.entry.clone();
            }
        }
        self.set_status(committed.status);
        // Additions/expunges by others may be in `committed` but not in the
        // view: the next sync must look.
        self.stamp = None;
    }

    fn position(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// Loads the mailbox under its lock, refusing if UIDVALIDITY changed
    /// since our view was built (our UIDs would mean other messages).
    fn lock(&self) -> Result<LockedMailbox<'_>, StoreError> {
        let locked = LockedMailbox::load(&self.dir, &[])?;
        if locked.uidvalidity() != self.uidvalidity {
            return Err(StoreError::NotAllowed(format!(
                "UIDVALIDITY of {} changed from {} to {}; sync first",
                self.name,
                self.uidvalidity,
                locked.uidvalidity()
            )));
        }
        Ok(locked)
    }

    fn event(&self, kind: EventKind, uids: UidSet, flags: Flags, modseq_before: u64) -> MailboxEvent {
        MailboxEvent {
            kind,
            user: self.store.user().to_string(),
            mailbox: self.name.clone(),
            old_mailbox: None,
            uidvalidity: self.status.uidvalidity,
            uids,
            flags,
            status: self.status,
            modseq_before,
            modseq_after: self.status.highestmodseq,
            summary: None,
            timestamp_ms: durable::now_ms(),
        }
    }

    /// The mailbox name (UTF-8).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store this mailbox belongs to.
    pub fn store(&self) -> &UserStore {
        &self.store
    }

    /// UIDVALIDITY.
    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }

    /// UIDNEXT.
    pub fn uidnext(&self) -> u32 {
        self.uidnext
    }

    /// HIGHESTMODSEQ.
    pub fn highestmodseq(&self) -> u64 {
        self.highestmodseq
    }

    /// The mailbox status as of the last sync or write operation.
    pub fn status(&self) -> MailboxStatus {
        self.status
    }

    /// Messages sorted by UID.
    pub fn messages(&self) -> &[MessageMeta] {
        &self.messages
    }

    /// The message with `uid`, if it is in the view.
    pub fn message(&self, uid: u32) -> Option<&MessageMeta> {
        self.position(uid).map(|i| &self.messages[i])
    }

    /// Re-reads the Maildir and uidlist; returns what changed since the last
    /// sync. New files found here (written behind our back) get UIDs, but
    /// emit nothing: outside changes are reported by the watcher, not here.
    ///
    /// Cheap when nothing changed: if the mtimes of `cur/`/`new/` and the
    /// identity of the uidlist and index are as they were after the last
    /// sync, it returns at once (4 `stat` calls, no lock). Only trusted when
    /// the directories had been quiet for a while (see
    /// [`crate::status_record::SETTLE_MS`]).
    ///
    /// # Errors
    /// I/O, `LockTimeout`.
    pub fn sync(&mut self) -> Result<SyncChanges, StoreError> {
        // Nothing touched the mailbox since our view was current: no lock, no scan.
        if self.stamp.is_some() && FsStamp::take(&self.dir.path) == self.stamp {
            return Ok(SyncChanges::default());
        }
        let committed = crate::locked_mailbox::read_current(&self.dir, false)?;
        self.store.publish_outside_changes(&self.dir, &committed);
        Ok(self.apply(committed))
    }

    /// [`Mailbox::sync`] for a read-write session, which claims `\Recent`:
    /// the same one locked load that brings the view up to date also moves
    /// every message still in `new/` to `cur/` (as [`Mailbox::clear_recent`]
    /// would after the sync, without loading the mailbox a second time).
    /// Returns the changes and the UIDs moved (the caller's `\Recent`).
    /// Like `sync`, it returns at once when nothing changed on disk and
    /// no message of the view is in `new/`. Emits nothing.
    ///
    /// # Errors
    /// I/O, `LockTimeout`.
    pub fn sync_claiming_recent(&mut self) -> Result<(SyncChanges, Vec<u32>), StoreError> {
        let quiet = self.stamp.is_some() && FsStamp::take(&self.dir.path) == self.stamp;
        if quiet && !self.messages.iter().any(|m| m.recent) {
            return Ok((SyncChanges::default(), Vec::new()));
        }
        // A full disk: see `sync_degraded`.
        let mut locked = match LockedMailbox::load(&self.dir, &[]) {
            Err(e) if e.is_storage_full() => return self.sync_degraded(&e, Vec::new()),
            other => other?,
        };
        let mut claimed = Vec::new();
        for idx in 0..locked.messages().len() {
            if locked.messages()[idx].entry.in_new && locked.move_to_cur(idx)? {
                claimed.push(locked.messages()[idx].uid);
            }
        }
        let committed = match locked.commit() {
            Err(e) if e.is_storage_full() => return self.sync_degraded(&e, claimed),
            other => other?,
        };
        self.store.publish_outside_changes(&self.dir, &committed);
        Ok((self.apply(committed), claimed))
    }

    /// [`Mailbox::sync_claiming_recent`] when the disk is full: the view as
    /// on disk (renames need no space; files are found by basename), the
    /// messages moved to `cur/` so far stay claimed, the others `\Recent`.
    fn sync_degraded(&mut self, e: &StoreError, claimed: Vec<u32>) -> Result<(SyncChanges, Vec<u32>), StoreError> {
        crate::degraded::note(&self.dir.path, "clearing \\Recent", e);
        let committed = crate::locked_mailbox::read_current(&self.dir, false)?;
        self.store.publish_outside_changes(&self.dir, &committed);
        Ok((self.apply(committed), claimed))
    }

    /// Reads the full raw message (CRLF line endings).
    ///
    /// # Errors
    /// `NoSuchMessage` if expunged meanwhile, I/O.
    pub fn read_message(&self, uid: u32) -> Result<Vec<u8>, StoreError> {
        let idx = self.position(uid).ok_or(StoreError::NoSuchMessage(uid))?;
        let (basename, entry) = &self.files[idx];
        self.dir.read_message(uid, basename, entry)
    }

    /// The header fields cached for `uid` by an earlier SEARCH (see
    /// [`crate::header_cache`]).
    pub fn cached_headers(&self, uid: u32) -> Option<crate::header_cache::Headers> {
        let idx = self.position(uid)?;
        crate::header_cache::get(&self.dir.path, &self.files[idx].0)
    }

    /// Caches the header fields of `uid` (see [`crate::header_cache`]).
    pub fn cache_headers(&self, uid: u32, headers: crate::header_cache::Headers) {
        if let Some(idx) = self.position(uid) {
            crate::header_cache::put(&self.dir.path, &self.files[idx].0, headers);
        }
    }

    /// Moves `\Recent` messages from `new/` to `cur/` (a SELECT, not EXAMINE,
    /// does this). Our own rename: emits nothing.
    ///
    /// # Errors
    /// I/O.
    pub fn clear_recent(&mut self) -> Result<Vec<u32>, StoreError> {
        // Only messages of this view are moved: none in new/, nothing to
        // do (no lock, no load; a re-SELECT of a quiet mailbox).
        if !self.messages.iter().any(|m| m.recent) {
            return Ok(Vec::new());
        }
        let mut locked = match self.lock() {
            // SELECT must work on a full disk: the messages stay \Recent.
            Err(e) if e.is_storage_full() => {
                crate::degraded::note(&self.dir.path, "clearing \\Recent", &e);
                return Ok(Vec::new());
            }
            other => other?,
        };
        let mut cleared = Vec::new();
        for idx in 0..locked.messages().len() {
            let uid = locked.messages()[idx].uid;
            if self.position(uid).is_some() && locked.move_to_cur(idx)? {
                cleared.push(uid);
            }
        }
        let committed = match locked.commit() {
            // The renames to cur/ happened (they need no space); only the
            // index or uidlist could not be written: the view keeps its
            // locations (reads follow renamed files by basename).
            Err(e) if e.is_storage_full() => {
                crate::degraded::note(&self.dir.path, "clearing \\Recent", &e);
                self.stamp = None;
                return Ok(cleared);
            }
            other => other?,
        };
        self.store.publish_outside_changes(&self.dir, &committed);
        self.refresh_known(&committed);
        Ok(cleared)
    }

    /// Changes flags of `uids`. With `unchanged_since`, messages whose MODSEQ
    /// is greater are left alone and reported in `modified` (CONDSTORE).
    /// Emits `FlagsSet` and/or `FlagsClear` for the messages that changed,
    /// each changed message getting a new MODSEQ.
    ///
    /// Keywords get a `dovecot-keywords` letter while one of the 26 is free;
    /// further keywords are kept in our index only (Dovecot does not see them).
    ///
    /// # Errors
    /// I/O, `LockTimeout`, `InvalidMessage` for an invalid keyword.
    pub fn store_flags(
        &mut self,
        uids: &UidSet,
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<StoreFlagsResult, StoreError> {
        crate::user_store::check_keywords(flags)?;
        let mut flags = flags.clone();
        flags.normalize();
        let mut locked = self.lock()?;
        let before = locked.base_modseq;
        let mut result = StoreFlagsResult::default();
        let (mut set_uids, mut set_flags) = (UidSet::new(), Flags::default());
        let (mut clear_uids, mut clear_flags) = (UidSet::new(), Flags::default());
        for idx in 0..locked.messages().len() {
            let msg = &locked.messages()[idx];
            if !uids.contains(msg.uid) {
                continue;
            }
            if unchanged_since.is_some_and(|since| msg.modseq > since) {
                result.modified.insert(msg.uid);
                continue;
            }
            let new = match op {
                FlagOp::Add => msg.flags.union(&flags),
                FlagOp::Remove => msg.flags.difference(&flags),
                FlagOp::Replace => flags.clone(),
            };
            if new == msg.flags {
                continue;
            }
            let (uid, added, removed) = (msg.uid, new.difference(&msg.flags), msg.flags.difference(&new));
            if !locked.set_flags(idx, &new)? {
                continue;
            }
            if !added.is_empty() {
                set_uids.insert(uid);
                set_flags = set_flags.union(&added);
            }
            if !removed.is_empty() {
                clear_uids.insert(uid);
                clear_flags = clear_flags.union(&removed);
            }
            let m = &locked.messages()[idx];
            result.changed.push((uid, m.flags.clone(), m.modseq));
        }
        let committed = locked.commit()?;
        self.store.publish_outside_changes(&self.dir, &committed);
        self.refresh_known(&committed);
        let mut before = before;
        if !set_uids.is_empty() {
            let ev = self.event(EventKind::FlagsSet, set_uids, set_flags, before);
            self.store.hooks().emit(&ev);
            // One MODSEQ per operation: a following FlagsClear starts where this ended.
            before = ev.modseq_after;
        }
        if !clear_uids.is_empty() {
            let ev = self.event(EventKind::FlagsClear, clear_uids, clear_flags, before);
            self.store.hooks().emit(&ev);
        }
        Ok(result)
    }

    /// Expunges messages flagged `\Deleted` (only those in `uids` if given,
    /// for UID EXPUNGE). Emits `MessageExpunge`. Returns the expunged UIDs.
    ///
    /// Only messages known to this view are expunged (a message delivered
    /// since the last sync is left alone even if flagged `\Deleted`).
    ///
    /// # Errors
    /// I/O, `LockTimeout`.
    pub fn expunge(&mut self, uids: Option<&UidSet>) -> Result<Vec<u32>, StoreError> {
        self.expunge_where(|m| m.flags.system.contains(crate::SystemFlags::DELETED) && uids.is_none_or(|set| set.contains(m.uid)))
    }

    fn expunge_where(&mut self, select: impl Fn(&DiskMessage) -> bool) -> Result<Vec<u32>, StoreError> {
        let mut locked = self.lock()?;
        let before = locked.base_modseq;
        let targets: UidSet = locked.messages().iter().filter(|m| self.position(m.uid).is_some() && select(m)).map(|m| m.uid).collect();
        let removed = if targets.is_empty() { UidSet::new() } else { locked.expunge(&targets)? };
        let committed = locked.commit()?;
        self.store.publish_outside_changes(&self.dir, &committed);
        let keep: Vec<bool> = self.messages.iter().map(|m| !removed.contains(m.uid)).collect();
        let mut keep_iter = keep.iter();
        self.messages.retain(|_| *keep_iter.next().unwrap_or(&true));
        let mut keep_iter = keep.iter();
        self.files.retain(|_| *keep_iter.next().unwrap_or(&true));
        self.refresh_known(&committed);
        if !removed.is_empty() {
            let ev = self.event(EventKind::MessageExpunge, removed.clone(), Flags::default(), before);
            self.store.hooks().emit(&ev);
        }
        Ok(removed.iter().collect())
    }

    /// Copies messages to `target` keeping flags and INTERNALDATE (hard
    /// links when on the same filesystem). Emits `MessageAppend` on the target.
    ///
    /// All or nothing, also across a crash: the copies are staged in the
    /// target's `tmp/` and committed in one step (see `copy_txn`); on an
    /// error the target is left as it was. UIDs of `uids` that are not in
    /// this view are skipped.
    ///
    /// # Errors
    /// `NoSuchMailbox` (target), `NoSuchMessage` if a message's file is gone
    /// (expunged by another session; nothing is copied, as in Dovecot), I/O.
    pub fn copy_to(&self, uids: &UidSet, target: &str) -> Result<CopyResult, StoreError> {
        self.copy_inner(uids, target, false).map(|(r, _)| r)
    }

    /// [`Mailbox::copy_to`]; with `for_move`, a move record (see `move_txn`)
    /// is written before the commit point and its path returned.
    fn copy_inner(&self, uids: &UidSet, target: &str, for_move: bool) -> Result<(CopyResult, Option<PathBuf>), StoreError> {
        let target_dir = self.store.mailbox_dir(target)?;
        target_dir.require()?;
        let lock = LockedMailbox::lock(&target_dir)?;
        crate::copy_txn::remove_uncommitted(&target_dir);
        let mut txn = crate::copy_txn::CopyTxn::new(&target_dir);
        let mut source_uids = Vec::new();
        let mut flags = Vec::new();
        let mut first_raw = None;
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (idx, meta) in self.messages.iter().enumerate() {
            if !uids.contains(meta.uid) {
                continue;
            }
            let (basename, entry) = &self.files[idx];
            let mut path = self.dir.file_path(entry.in_new, &entry.file_name);
            let mut attempts = 0;
            // Follows a file renamed meanwhile (flag change by another
            // program); one that is gone was expunged by another session:
            // the whole copy is refused (dropping `txn` removes what was staged).
            let staged = loop {
                match txn.stage(&path, meta.size, meta.flags.system) {
                    Ok(name) => break name.basename.clone(),
                    Err(e) => {
                        let vanished = matches!(&e, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
                        attempts += 1;
                        if !vanished || attempts > 3 {
                            return Err(e);
                        }
                        match self.dir.scan()?.remove(basename) {
                            Some(e) => path = self.dir.file_path(e.in_new, &e.file_name),
                            None => return Err(StoreError::NoSuchMessage(meta.uid)),
                        }
                    }
                }
            };
            pairs.push((basename.clone(), staged));
            if first_raw.is_none() {
                first_raw = Some(path);
            }
            source_uids.push(meta.uid);
            flags.push(meta.flags.clone());
        }
        if txn.is_empty() {
            drop(lock);
            let status = self.store.status(target)?;
            return Ok((CopyResult { uidvalidity: status.uidvalidity, ..Default::default() }, None));
        }
        // A move records what to expunge here before the copy commits, so
        // that a crash after the commit point cannot leave both copies.
        let record = if for_move { Some(crate::move_txn::write(&self.dir, &target_dir, &pairs)?) } else { None };
        let basenames = match txn.commit() {
            Ok(b) => b,
            Err(e) => {
                // The record stays if the copy may have committed (its
                // intent record exists): recovery decides then.
                if let Some(r) = record.as_ref().filter(|_| !target_dir.path.join(crate::copy_txn::INTENT_FILE).exists()) {
                    crate::move_txn::done(r);
                }
                return Err(e);
            }
        };
        crate::copy_txn::crash_point("copy-before-uids");
        let own: Vec<(String, Flags)> = basenames.into_iter().zip(flags).collect();
        let summary = first_raw.and_then(|p| std::fs::read(p).ok()).map(|raw| crate::summary::summarize(&raw));
        let (uidvalidity, target_uids) = self.store.add_files(&target_dir, &own, EventKind::MessageAppend, summary, Some(lock))?;
        Ok((CopyResult { uidvalidity, source_uids, target_uids }, record))
    }

    /// Moves messages to `target`: copy then expunge from this mailbox, each
    /// step durable. Emits `MessageAppend` on the target, `MessageExpunge` here.
    ///
    /// # Errors
    /// `NoSuchMailbox` (target), `NoSuchMessage` (see [`Mailbox::copy_to`]), I/O.
    pub fn move_to(&mut self, uids: &UidSet, target: &str) -> Result<CopyResult, StoreError> {
        let (result, record) = self.copy_inner(uids, target, true)?;
        if !result.source_uids.is_empty() {
            let moved: UidSet = result.source_uids.iter().copied().collect();
            crate::copy_txn::crash_point("move-before-expunge");
            self.expunge_where(|m| moved.contains(m.uid))?;
        }
        if let Some(r) = record {
            crate::move_txn::done(&r);
        }
        Ok(result)
    }

    /// UIDs expunged after `modseq` (for QRESYNC `VANISHED (EARLIER)`), as far
    /// as the expunge log reaches; `None` if the log does not reach back that far.
    ///
    /// # Errors
    /// I/O.
    pub fn expunged_since(&self, modseq: u64) -> Result<Option<UidSet>, StoreError> {
        let Some(record) = crate::index_log::load(&self.dir.path)?.0 else {
            return Ok(None);
        };
        if record.uidvalidity != self.uidvalidity {
            return Ok(None);
        }
        Ok(record.expunge_log.since(modseq))
    }
}
