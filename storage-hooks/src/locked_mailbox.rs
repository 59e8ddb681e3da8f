//! A mailbox loaded under its `dovecot-uidlist.lock`: the Maildir listing
//! reconciled with `dovecot-uidlist`, `dovecot-keywords` and our index, plus
//! the mutations every write operation is built from. [`LockedMailbox::commit`]
//! makes the result durable and refreshes the status record; the lock is
//! released when it returns.
//!
//! Reconciliation rules (run on every load):
//! - files without a uidlist record get the next UIDs, foreign ones sorted by
//!   (mtime, name) (never by readdir order or name alone), then the caller's
//!   own new files in the caller's order;
//! - uidlist records whose file is gone (after re-scans, to ride out
//!   concurrent renames by other programs, see `load_catch_up::scan_expected`) are dropped
//!   and logged as expunged;
//! - a message whose flags differ from the index (changed by another
//!   program), or that is new, gets a new MODSEQ. Changes found here are
//!   recorded in `outside` and carried by [`Committed`]; the caller
//!   publishes them (see `outside_changes`).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::Path;

use crate::dotlock::{DotLock, DotLockOptions};
use crate::durable::{self, Sync};
use crate::expunge_log::ExpungeLog;
use crate::index_file::{self, IndexMessage, IndexMessageRef, IndexRecord, INDEX_FILE};
use crate::index_log::{LogRecord, INDEX_LOG_FILE};
use crate::keywords::KeywordTable;
use crate::load_cache::{Cached, CachedFile, DirState};
use crate::load_catch_up::UidlistRead;
use crate::mailbox_dir::{FileEntry, Listing, MailboxDir};
use crate::maildir_file::MaildirFileName;
use crate::status_record::{FsStamp, StatusRecord, STATUS_FILE};
use crate::uidlist::UidList;
use crate::{uidvalidity, Flags, MailboxStatus, StoreError, SystemFlags, UidSet};

/// Shared UID map file name.
pub const UIDLIST_FILE: &str = "dovecot-uidlist";
/// Keyword letter map file name.
pub const KEYWORDS_FILE: &str = "dovecot-keywords";

/// One message as it is on disk now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskMessage {
    /// UID.
    pub uid: u32,
    /// Stable basename (what the uidlist records).
    pub basename: String,
    /// Current location.
    pub entry: FileEntry,
    /// All flags, including index-only keywords.
    pub flags: Flags,
    /// Keywords without a Maildir letter (kept in our index only).
    pub extra_keywords: Vec<String>,
    /// MODSEQ of the last change.
    pub modseq: u64,
    /// Size with CRLF line endings.
    pub vsize: u64,
}

/// Result of a commit.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Status after the change.
    pub status: MailboxStatus,
    /// All messages, sorted by UID.
    pub messages: Vec<DiskMessage>,
    /// Filesystem stamp taken under the lock right after the change, if it
    /// was settled (see [`FsStamp::settled`]): equal to a later stamp only if
    /// nobody changed the mailbox since.
    pub settled_stamp: Option<FsStamp>,
    /// What the load found changed by other programs, now committed.
    pub outside: crate::outside_changes::OutsideChanges,
    /// HIGHESTMODSEQ right after the outside changes (before this operation).
    pub outside_modseq: u64,
}

/// A mailbox held under its uidlist dot-lock.
#[derive(Debug)]
pub struct LockedMailbox<'a> {
    dir: &'a MailboxDir,
    /// `None` for a read-only load (see [`LockedMailbox::load_read_only`]).
    _lock: Option<DotLock>,
    /// Basenames of the caller's own new files: removed again if the commit
    /// fails, so a refused append or copy leaves nothing behind.
    own_new: Vec<String>,
    /// The caller's own files that another process had already given a UID
    /// (it saw them first) but that are gone now (expunged by another
    /// program right away): basename -> that UID.
    vanished_own: HashMap<String, u32>,
    uidlist: UidList,
    keywords: KeywordTable,
    highestmodseq: u64,
    op_modseq: Option<u64>,
    expunge_log: ExpungeLog,
    messages: Vec<DiskMessage>,
    uidlist_dirty: bool,
    /// Number of records the uidlist file on disk holds when new records can
    /// simply be appended to it (Dovecot's way, O(change)); `None` when it
    /// must be rewritten (records dropped, damaged or missing file).
    uidlist_on_disk: Option<usize>,
    index_dirty: bool,
    /// The index as loaded (snapshot plus log), to write only the difference.
    index_base: Vec<IndexMessage>,
    /// HIGHESTMODSEQ of `index_base`.
    index_base_modseq: u64,
    /// Length of an intact `dormouse-index.log` (0: none yet) that changes
    /// can be appended to; `None` when the next write compacts (no usable
    /// snapshot, torn log).
    index_log_len: Option<u64>,
    /// Expunge-log entries recorded by this load and operation, in order.
    expunge_records: Vec<(u64, UidSet)>,
    /// UIDs of uidlist records whose messages are expunged (the records
    /// stay until the file is compacted, see [`compaction_threshold`]).
    dead_records: UidSet,
    /// Files of `new/` and `cur/` by basename, kept up to date with our own
    /// renames and removals (for `load_cache`).
    listing: Listing,
    /// What the load knew of `new/` for `listing` (see `load_cache`).
    new_dir: DirState,
    /// Same for `cur/`.
    cur_dir: DirState,
    new_changed: bool,
    cur_changed: bool,
    /// HIGHESTMODSEQ after reconciling outside changes, before this operation.
    pub base_modseq: u64,
    /// What this load found changed by other programs (see `outside_changes`).
    pub outside: crate::outside_changes::OutsideChanges,
}

fn read_text(path: &Path) -> Result<Option<String>, StoreError> {
    Ok(durable::read_optional(path)?.map(|d| String::from_utf8_lossy(&d).into_owned()))
}

impl<'a> LockedMailbox<'a> {
    /// Locks and loads `dir`. `own` lists basenames of files this operation
    /// just put into `new/`; if still unlisted they get UIDs after all other
    /// unlisted files, in the given order, and the operation's MODSEQ.
    ///
    /// # Errors
    /// `NoSuchMailbox`, I/O, `LockTimeout`.
    pub fn load(dir: &'a MailboxDir, own: &[String]) -> Result<Self, StoreError> {
        dir.require()?;
        let lock = Self::lock(dir)?;
        Self::load_locked(dir, own, lock)
    }

    /// Takes the mailbox's dot-lock and finishes a copy that a killed
    /// process had committed (see `copy_txn`) and the source side of a
    /// killed move (see `move_txn`), for [`LockedMailbox::load_locked`].
    ///
    /// # Errors
    /// I/O, `LockTimeout`.
    pub fn lock(dir: &MailboxDir) -> Result<DotLock, StoreError> {
        let lock = DotLock::acquire(&dir.path.join(UIDLIST_FILE), DotLockOptions::default())?;
        crate::copy_txn::recover(dir)?;
        crate::move_txn::recover(dir)?;
        Ok(lock)
    }

    /// [`LockedMailbox::load`] with the lock of [`LockedMailbox::lock`]
    /// already held.
    ///
    /// # Errors
    /// I/O.
    pub fn load_locked(dir: &'a MailboxDir, own: &[String], lock: DotLock) -> Result<Self, StoreError> {
        Self::load_inner(dir, own, Some(lock))
    }

    /// Loads without the lock and without writing anything, for reads when
    /// the disk is full: only messages that already have a UID are in the
    /// view (files without one wait until the uidlist can be written), no
    /// MODSEQ is allocated, nothing is repaired, and [`LockedMailbox::commit`]
    /// writes nothing. A missing or unreadable uidlist is an error (no
    /// consistent view without writing one).
    ///
    /// # Errors
    /// `NoSuchMailbox`, I/O, `Corrupt`.
    pub fn load_read_only(dir: &'a MailboxDir) -> Result<Self, StoreError> {
        if !dir.exists() {
            return Err(StoreError::NoSuchMailbox(dir.name.to_string()));
        }
        Self::load_inner(dir, &[], None)
    }

    fn load_inner(dir: &'a MailboxDir, own: &[String], lock: Option<DotLock>) -> Result<Self, StoreError> {
        let read_only = lock.is_none();
        let uidlist_path = dir.path.join(UIDLIST_FILE);
        // A read-only load may not see the newest state: it neither uses
        // nor fills the cache.
        let cached = if read_only { None } else { crate::load_cache::take(&dir.path) };
        let inputs = crate::load_catch_up::read(dir, cached, !read_only)?;
        let (mut uidlist, mut uidlist_dirty, mut uidlist_on_disk) = match inputs.uidlist {
            UidlistRead::Missing if read_only => {
                return Err(StoreError::io(&uidlist_path, std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error())))
            }
            UidlistRead::Missing => (UidList::new(uidvalidity::allocate(&dir.root)?), true, None),
            UidlistRead::Parsed { list, appendable } => {
                let on_disk = appendable.then_some(list.records.len());
                (list, false, on_disk)
            }
            UidlistRead::Unreadable(e) if read_only => {
                return Err(StoreError::Corrupt {
                    path: uidlist_path,
                    reason: format!("unreadable, not repaired while the disk is full: {e}"),
                })
            }
            UidlistRead::Unreadable(e) => {
                let aside = dir.path.join(format!("{UIDLIST_FILE}.broken.{}", durable::now_ms()));
                tracing::error!(path = %uidlist_path.display(), error = %e, aside = %aside.display(),
                    "unreadable dovecot-uidlist: moved aside, mailbox gets a new UIDVALIDITY");
                std::fs::rename(&uidlist_path, &aside).map_err(|e| StoreError::io(&uidlist_path, e))?;
                (UidList::new(uidvalidity::allocate(&dir.root)?), true, None)
            }
        };
        let keywords = read_text(&dir.path.join(KEYWORDS_FILE))?.map(|t| KeywordTable::parse(&t)).unwrap_or_default();
        let (index, mut index_log_len) = (inputs.index, inputs.index_log_len);
        let index = index.filter(|i| i.uidvalidity == uidlist.uidvalidity);
        let fresh = index.is_none();
        if fresh {
            index_log_len = None;
        }
        let (mut highestmodseq, mut expunge_log, index_messages) = match index {
            Some(i) => (i.highestmodseq.max(1), i.expunge_log, i.messages),
            None => (1, ExpungeLog::starting_at(1), Vec::new()),
        };

        // Records of messages we expunged stay in the uidlist until it is
        // compacted (see `expunge`): known by the expunge log, they are not
        // expected on disk and not reported again.
        let expunged = if fresh {
            UidSet::new()
        } else {
            UidSet::from_ranges(expunge_log.entries.iter().flat_map(|(_, s)| s.ranges().iter().copied()))
        };
        let indexed = |uid: u32| index_messages.binary_search_by_key(&uid, |m| m.uid).is_ok();
        let is_dead = |uid: u32| expunged.contains(uid) && !indexed(uid);
        // Re-scans for files renamed while listed (`load_catch_up::scan_expected`); none for a listing the change logs kept exact.
        let mut listing =
            if inputs.exact { inputs.listing } else { crate::load_catch_up::scan_expected(dir, &uidlist, own, inputs.listing, &is_dead)? };
        let own_all: foldhash::HashSet<&str> = own.iter().map(String::as_str).collect();
        let mut vanished_own = HashMap::new();
        let mut gone = UidSet::new();
        let mut dead_records = UidSet::new();
        let mut compact_uidlist = false;
        uidlist.records.retain(|r| {
            let present = listing.contains_key(&r.basename);
            let dead = is_dead(r.uid);
            if !present && own_all.contains(r.basename.as_str()) {
                vanished_own.insert(r.basename.clone(), r.uid);
            }
            if dead {
                // A file back under an expunged record's name (restored from
                // a backup?) must not revive the UID: the record goes and the
                // file gets a new UID.
                compact_uidlist |= present;
                if !present {
                    dead_records.insert(r.uid);
                }
                return !present;
            }
            if !present {
                gone.insert(r.uid);
            }
            present
        });
        let dead_count = dead_records.len() as usize;
        if !gone.is_empty() || compact_uidlist || dead_count > compaction_threshold(uidlist.records.len() - dead_count) {
            uidlist.records.retain(|r| !dead_records.contains(r.uid));
            dead_records = UidSet::new();
            uidlist_dirty = true;
            uidlist_on_disk = None;
        }

        // Unlisted files: foreign ones by (mtime, name), then ours in order.
        // Every live record kept above has its file in the listing: when the
        // listing holds no more names than that, no file lacks a record and
        // the search for them (a set of all names) is skipped.
        let all_listed = listing.len() == uidlist.records.len() - dead_records.len() as usize;
        let listed: foldhash::HashSet<&str> =
            if all_listed { Default::default() } else { uidlist.records.iter().map(|r| r.basename.as_str()).collect() };
        let own_set: foldhash::HashSet<&str> = own.iter().map(String::as_str).collect();
        // A read-only view numbers nothing: files without a UID stay out.
        if read_only && !all_listed {
            listing.retain(|b, _| listed.contains(b.as_str()));
        }
        // Files other threads of this process are appending right now are
        // theirs to number (see `append_queue`), not foreign deliveries.
        let in_flight = if all_listed { Default::default() } else { crate::append_queue::in_flight(&dir.path) };
        let mut foreign: Vec<(std::time::SystemTime, String)> = listing
            .iter()
            .filter(|_| !all_listed)
            .filter(|(b, _)| !listed.contains(b.as_str()) && !own_set.contains(b.as_str()) && !in_flight.contains(b.as_str()))
            .map(|(b, e)| {
                let mtime =
                    std::fs::metadata(dir.file_path(e.in_new, &e.file_name)).and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                (mtime, b.clone())
            })
            .collect();
        foreign.sort();
        let own_new: Vec<String> =
            own.iter().filter(|b| !all_listed && listing.contains_key(b.as_str()) && !listed.contains(b.as_str())).cloned().collect();
        let own_new_set: foldhash::HashSet<&str> = own_new.iter().map(String::as_str).collect();
        for (_, b) in &foreign {
            uidlist.push(b);
            uidlist_dirty = true;
        }
        for b in &own_new {
            uidlist.push(b);
            uidlist_dirty = true;
        }

        // Build messages and reconcile MODSEQs (records and index are both
        // sorted by UID: one merge walk).
        let mut index_dirty = fresh;
        let mut foreign_modseq: Option<u64> = None;
        let mut outside = crate::outside_changes::OutsideChanges::default();
        let foreign_set: foldhash::HashSet<&str> = foreign.iter().map(|(_, b)| b.as_str()).collect();
        let mut own_slots: Vec<usize> = Vec::new();
        let mut messages: Vec<DiskMessage> = Vec::with_capacity(uidlist.records.len());
        let index_base_modseq = highestmodseq;
        let mut index_iter = index_messages.iter().peekable();
        for rec in &uidlist.records {
            while index_iter.peek().is_some_and(|p| p.uid < rec.uid) {
                if let Some(p) = index_iter.next() {
                    gone.insert(p.uid);
                }
            }
            let prev = index_iter.next_if(|p| p.uid == rec.uid);
            let Some(entry) = listing.get(&rec.basename).cloned() else {
                continue;
            };
            let Some(parsed) = MaildirFileName::parse(&entry.file_name) else {
                continue;
            };
            let extra_keywords = prev.as_ref().map(|p| p.extra_keywords.clone()).unwrap_or_default();
            let mut flags = Flags { system: parsed.system, keywords: extra_keywords.clone() };
            flags.keywords.extend(parsed.keyword_indexes.iter().filter_map(|&i| keywords.name(i)).map(str::to_string));
            flags.normalize();
            let vsize = match (parsed.size_field('W'), &prev) {
                (Some(w), _) => w,
                (None, Some(p)) if p.vsize > 0 => p.vsize,
                _ => match dir.vsize_of(&entry) {
                    Ok(v) => v,
                    Err(StoreError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => 0,
                    Err(e) => return Err(e),
                },
            };
            if !foreign_set.is_empty() && foreign_set.contains(rec.basename.as_str()) {
                outside.added.insert(rec.uid);
                outside.added_flags = outside.added_flags.union(&flags);
            } else if let Some(p) = prev.as_ref().filter(|p| !fresh && p.flags != flags) {
                outside.note_flags(rec.uid, &p.flags, &flags);
            }
            let modseq = if !own_new_set.is_empty() && own_new_set.contains(rec.basename.as_str()) {
                own_slots.push(messages.len());
                0
            } else if fresh {
                1
            } else if let Some(p) = prev.as_ref().filter(|p| p.flags == flags) {
                p.modseq
            } else {
                index_dirty = true;
                alloc(&mut highestmodseq, &mut foreign_modseq)
            };
            if prev.as_ref().is_none_or(|p| p.vsize != vsize) {
                index_dirty = true;
            }
            messages.push(DiskMessage { uid: rec.uid, basename: rec.basename.clone(), entry, flags, extra_keywords, modseq, vsize });
        }
        gone.extend(index_iter.map(|p| p.uid));
        let mut me = LockedMailbox {
            dir,
            _lock: lock,
            uidlist,
            keywords,
            highestmodseq,
            op_modseq: None,
            expunge_log: ExpungeLog::default(),
            messages,
            index_base: Vec::new(),
            index_base_modseq,
            index_log_len,
            expunge_records: Vec::new(),
            own_new: own_new.clone(),
            vanished_own,
            uidlist_dirty,
            uidlist_on_disk,
            index_dirty,
            dead_records,
            listing,
            new_dir: inputs.new_dir,
            cur_dir: inputs.cur_dir,
            new_changed: false,
            cur_changed: false,
            base_modseq: 0,
            outside: crate::outside_changes::OutsideChanges::default(),
        };
        // Index entries without a message any more were expunged outside.
        if !gone.is_empty() {
            let m = alloc(&mut highestmodseq, &mut foreign_modseq);
            expunge_log.record(m, &gone);
            me.expunge_records.push((m, gone.clone()));
            me.index_dirty = true;
        }
        me.index_base = index_messages;
        me.highestmodseq = highestmodseq;
        me.expunge_log = expunge_log;
        me.base_modseq = highestmodseq;
        outside.expunged = gone;
        // Nothing is recorded by a read-only load: reporting outside changes
        // would repeat them on every read until the index can be written.
        if !read_only {
            me.outside = outside;
        }
        if !own.is_empty() {
            // The caller's files were renamed into new/ without a directory
            // fsync: the commit does it, in parallel with the uidlist's.
            me.new_changed = true;
        }
        if !own_slots.is_empty() {
            let m = me.op_modseq();
            for i in own_slots {
                me.messages[i].modseq = m;
            }
            me.index_dirty = true;
        }
        Ok(me)
    }

    /// Removes temp files of our atomic replaces (`<file>.dormouse-tmp.*`)
    /// and of dot-lock attempts of dead processes, left in the mailbox
    /// directory by a process killed mid-write. Only a dead writer's temps
    /// go: not every such file is written under this mailbox's lock (a
    /// MOVE writes its record in the source while holding only the
    /// destination's), so a live writer's temp may be about to be renamed.
    /// Errors are logged, not returned.
    pub fn remove_stale_temps(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir.path) else {
            return;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let replace_temp = [UIDLIST_FILE, KEYWORDS_FILE, INDEX_FILE, INDEX_LOG_FILE, STATUS_FILE, crate::copy_txn::INTENT_FILE]
                .iter()
                .any(|f| name.strip_prefix(f).is_some_and(|rest| rest.starts_with(".dormouse-tmp.")))
                || name.starts_with(crate::move_txn::RECORD_PREFIX) && name.contains(".dormouse-tmp.");
            let writer_dead = || durable::temp_writer_pid(name).is_none_or(|pid| !crate::dotlock::pid_alive(pid));
            let ours = replace_temp && writer_dead() || crate::dotlock::is_abandoned_temp(name);
            if ours {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), error = %e, "removing stale temp file failed");
                }
            }
        }
    }

    /// The MODSEQ of this operation (allocated on first use).
    pub fn op_modseq(&mut self) -> u64 {
        alloc(&mut self.highestmodseq, &mut self.op_modseq)
    }

    /// UIDVALIDITY.
    pub fn uidvalidity(&self) -> u32 {
        self.uidlist.uidvalidity
    }

    /// HIGHESTMODSEQ now.
    pub fn highestmodseq(&self) -> u64 {
        self.highestmodseq
    }

    /// Messages sorted by UID.
    pub fn messages(&self) -> &[DiskMessage] {
        &self.messages
    }

    /// Position of `uid`.
    pub fn find(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// The UID of one of the caller's own files (see [`LockedMailbox::load`])
    /// that another process numbered before this load and that is already
    /// gone again (expunged by another program). The message was stored and
    /// had that UID: an APPEND reports it rather than failing.
    pub fn vanished_own_uid(&self, basename: &str) -> Option<u32> {
        self.vanished_own.get(basename).copied()
    }

    /// Position of the message with `basename`.
    pub fn find_basename(&self, basename: &str) -> Option<usize> {
        self.messages.iter().position(|m| m.basename == basename)
    }

    /// Renames message `idx`'s file to `target(current location)` (same
    /// basename), following the file if another program renamed it
    /// meanwhile (the target is recomputed from where it really is, so a
    /// file moved to `cur/` is never moved back). Returns the new entry, or
    /// `None` if the file is gone.
    fn rename_file(&mut self, idx: usize, target: impl Fn(&FileEntry) -> FileEntry) -> Result<Option<FileEntry>, StoreError> {
        let mut current = self.messages[idx].entry.clone();
        for _ in 0..3 {
            let to_entry = target(&current);
            if current == to_entry {
                return Ok(Some(to_entry));
            }
            let from = self.dir.file_path(current.in_new, &current.file_name);
            let to = self.dir.file_path(to_entry.in_new, &to_entry.file_name);
            match std::fs::rename(&from, &to) {
                Ok(()) => {
                    crate::own_changes::record(&from, crate::own_changes::Change::Gone);
                    crate::own_changes::record(&to, crate::own_changes::Change::Arrived);
                    self.mark_changed(current.in_new);
                    self.mark_changed(to_entry.in_new);
                    self.listing.insert(self.messages[idx].basename.clone(), to_entry.clone());
                    return Ok(Some(to_entry));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.listing_outdated();
                    match self.dir.scan()?.remove(&self.messages[idx].basename) {
                        Some(found) => current = found,
                        None => return Ok(None),
                    }
                }
                Err(e) => return Err(StoreError::io(from, e)),
            }
        }
        Ok(None)
    }

    /// Another program changed the directories under us: `listing` is not
    /// to be trusted by the next load.
    fn listing_outdated(&mut self) {
        self.new_dir = DirState::default();
        self.cur_dir = DirState::default();
    }

    fn mark_changed(&mut self, in_new: bool) {
        if in_new {
            self.new_changed = true;
        } else {
            self.cur_changed = true;
        }
    }

    /// Gives message `idx` the flags `new` (renaming its file; keywords get
    /// letters while there are free ones, the rest live in our index) and
    /// this operation's MODSEQ. Returns false if the file is gone.
    ///
    /// # Errors
    /// I/O errors.
    pub fn set_flags(&mut self, idx: usize, new: &Flags) -> Result<bool, StoreError> {
        if new.keywords.iter().any(|k| self.keywords.index_of(k).is_none()) {
            return self.set_flags_new_keywords(idx, new);
        }
        self.set_flags_locked_keywords(idx, new)
    }

    /// [`LockedMailbox::set_flags`] when a keyword needs a new letter: the
    /// table is re-read and extended under `dovecot-keywords.lock`, so a
    /// Dovecot process adding keywords at the same time cannot hand the same
    /// letter to another keyword.
    fn set_flags_new_keywords(&mut self, idx: usize, new: &Flags) -> Result<bool, StoreError> {
        let path = self.dir.path.join(KEYWORDS_FILE);
        let _keywords_lock = DotLock::acquire(&path, DotLockOptions::default())?;
        if let Some(text) = read_text(&path)? {
            let disk = KeywordTable::parse(&text);
            if disk.is_superset_of(&self.keywords) {
                self.keywords = disk;
            } else {
                tracing::warn!(path = %path.display(), "dovecot-keywords changed letters under us; keeping ours");
            }
        }
        self.set_flags_locked_keywords(idx, new)
    }

    fn set_flags_locked_keywords(&mut self, idx: usize, new: &Flags) -> Result<bool, StoreError> {
        let mut indexes = Vec::new();
        let mut extra = Vec::new();
        for k in &new.keywords {
            match self.keywords.ensure(k) {
                Some(i) => indexes.push(i),
                None => extra.push(k.clone()),
            }
        }
        if self.keywords.is_dirty() {
            // The letter map must be durable before any file uses a new letter.
            let durability = self.dir.durability;
            durable::replace_file(&self.dir.path.join(KEYWORDS_FILE), self.keywords.serialize().as_bytes(), durability.data())?;
            durability.fsync_dir(&self.dir.path)?;
            self.keywords.mark_clean();
        }
        indexes.sort_unstable();
        let name = MaildirFileName { basename: self.messages[idx].basename.clone(), system: new.system, keyword_indexes: indexes };
        let target = |cur: &FileEntry| FileEntry {
            // Stays in its directory; files in cur/ always carry `:2,`.
            file_name: name.file_name(!cur.in_new || cur.file_name.contains(":2,")),
            in_new: cur.in_new,
        };
        let Some(entry) = self.rename_file(idx, target)? else {
            return Ok(false);
        };
        let modseq = self.op_modseq();
        let msg = &mut self.messages[idx];
        msg.entry = entry;
        msg.flags = new.clone();
        msg.extra_keywords = extra;
        msg.modseq = modseq;
        self.index_dirty = true;
        Ok(true)
    }

    /// Moves message `idx` from `new/` to `cur/` (adding the `:2,` info part).
    /// Not a change to the message: its MODSEQ stays.
    ///
    /// # Errors
    /// I/O errors.
    pub fn move_to_cur(&mut self, idx: usize) -> Result<bool, StoreError> {
        let msg = &self.messages[idx];
        if !msg.entry.in_new {
            return Ok(false);
        }
        let target = |cur: &FileEntry| FileEntry {
            file_name: MaildirFileName::parse(&cur.file_name).map_or_else(|| cur.file_name.clone(), |p| p.file_name(true)),
            in_new: false,
        };
        let Some(entry) = self.rename_file(idx, target)? else {
            return Ok(false);
        };
        self.messages[idx].entry = entry;
        Ok(true)
    }

    /// Deletes the files of the messages in `uids` and drops them from the
    /// uidlist; logs them in the expunge log at this operation's MODSEQ.
    /// Returns the UIDs actually removed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn expunge(&mut self, uids: &UidSet) -> Result<UidSet, StoreError> {
        let mut removed = UidSet::new();
        for idx in 0..self.messages.len() {
            let msg = &self.messages[idx];
            if !uids.contains(msg.uid) {
                continue;
            }
            let mut entry = Some(msg.entry.clone());
            for _ in 0..3 {
                let Some(e) = entry.take() else { break };
                let path = self.dir.file_path(e.in_new, &e.file_name);
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        crate::own_changes::record(&path, crate::own_changes::Change::Gone);
                        self.mark_changed(e.in_new);
                        self.listing.remove(&self.messages[idx].basename);
                        break;
                    }
                    Err(err) if err.kind() == ErrorKind::NotFound => {
                        self.listing_outdated();
                        entry = self.dir.scan()?.remove(&self.messages[idx].basename);
                    }
                    Err(err) => return Err(StoreError::io(path, err)),
                }
            }
            removed.insert(self.messages[idx].uid);
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        self.messages.retain(|m| !removed.contains(m.uid));
        // The records stay (the expunge log tells loads they are dead): an
        // expunge does not rewrite the whole uidlist, only a compaction does.
        self.dead_records.extend(removed.iter());
        let dead = self.dead_records.len() as usize;
        if dead > compaction_threshold(self.uidlist.records.len().saturating_sub(dead)) {
            let dead = std::mem::take(&mut self.dead_records);
            self.uidlist.records.retain(|r| !dead.contains(r.uid));
            self.uidlist_dirty = true;
            self.uidlist_on_disk = None;
        }
        let m = self.op_modseq();
        self.expunge_log.record(m, &removed);
        self.expunge_records.push((m, removed.clone()));
        self.index_dirty = true;
        Ok(removed)
    }

    /// Computes the status from the loaded state.
    pub fn status(&self) -> MailboxStatus {
        MailboxStatus {
            messages: self.messages.len() as u32,
            unseen: self.messages.iter().filter(|m| !m.flags.system.contains(SystemFlags::SEEN)).count() as u32,
            recent: self.messages.iter().filter(|m| m.entry.in_new).count() as u32,
            uidnext: self.uidlist.next_uid,
            uidvalidity: self.uidlist.uidvalidity,
            highestmodseq: self.highestmodseq,
            size: self.messages.iter().map(|m| m.vsize).sum(),
        }
    }

    /// Makes everything durable (directory fsyncs, uidlist, index), refreshes
    /// the status record and releases the lock.
    ///
    /// # Errors
    /// I/O errors.
    pub fn commit(mut self) -> Result<Committed, StoreError> {
        if self._lock.is_none() {
            return Ok(Committed {
                status: self.status(),
                messages: std::mem::take(&mut self.messages),
                settled_stamp: None,
                outside: std::mem::take(&mut self.outside),
                outside_modseq: self.base_modseq,
            });
        }
        match self.write_out() {
            Ok(()) => {}
            Err(e) => {
                self.remove_own_files();
                return Err(e);
            }
        }
        crate::degraded::recovered(&self.dir.path);
        let path = self.dir.path.clone();
        let status = self.status();
        self.fill_cache();
        let stamp = FsStamp::take(&path);
        let now = durable::now_ms();
        if let Some(stamp) = stamp {
            let record = StatusRecord { status, stamp, taken_at_ms: now };
            let current = durable::read_optional(&path.join(STATUS_FILE)).ok().flatten().and_then(|b| StatusRecord::decode(&b));
            let outdated = match current {
                None => true,
                Some(c) => c.status != status || c.stamp != stamp || (!c.stamp.settled(c.taken_at_ms) && stamp.settled(now)),
            };
            if outdated {
                // Only a cache: STATUS rescans without it.
                if let Err(e) = durable::replace_file(&path.join(STATUS_FILE), &record.encode(), Sync::Cache) {
                    crate::degraded::note(&path, "status cache", &e);
                }
            }
        }
        let settled_stamp = stamp.filter(|s| s.settled(now));
        Ok(Committed {
            status,
            messages: std::mem::take(&mut self.messages),
            settled_stamp,
            outside: std::mem::take(&mut self.outside),
            outside_modseq: self.base_modseq,
        })
    }

    /// Leaves the state just committed in `load_cache` for the next load
    /// (still under the lock, so it is exactly what is on disk). The
    /// directory listings stay trusted only if nothing changed them since
    /// they were read (our own changes moved their mtimes: the next load
    /// lists them again, to find what others did in the same tick).
    fn fill_cache(&mut self) {
        let path = &self.dir.path;
        let Some(uidlist_file) = CachedFile::take(&path.join(UIDLIST_FILE)) else {
            return;
        };
        let dir_state = |sub: &str, before: DirState| {
            let id = crate::load_cache::dir_id(&path.join(sub)).unwrap_or_default();
            // The change-log token stays the one taken before our own
            // changes: the next load replays them (see `dir_events`).
            DirState { id, trusted: before.trusted && before.id == id, events: before.events }
        };
        let index = IndexRecord {
            uidvalidity: self.uidlist.uidvalidity,
            // Nothing written: a MODSEQ allocated without a change is not on disk.
            highestmodseq: if self.index_dirty { self.highestmodseq } else { self.index_base_modseq },
            messages: self
                .messages
                .iter()
                .map(|m| IndexMessage {
                    uid: m.uid,
                    modseq: m.modseq,
                    flags: m.flags.clone(),
                    extra_keywords: m.extra_keywords.clone(),
                    vsize: m.vsize,
                })
                .collect(),
            expunge_log: self.expunge_log.clone(),
        };
        let index_file = crate::load_catch_up::file_id(&path.join(INDEX_FILE));
        let uidvalidity = self.uidlist.uidvalidity;
        let entry = Cached {
            uidlist: std::mem::replace(&mut self.uidlist, UidList::new(uidvalidity)),
            uidlist_file,
            // Written (appended or rewritten whole), or read intact.
            uidlist_appendable: self.uidlist_dirty || self.uidlist_on_disk.is_some(),
            index: index_file.is_some().then_some(index),
            index_file,
            index_log_file: CachedFile::take(&path.join(INDEX_LOG_FILE)),
            index_log_len: self.index_log_len,
            listing: std::mem::take(&mut self.listing),
            new_dir: dir_state("new", self.new_dir),
            cur_dir: dir_state("cur", self.cur_dir),
        };
        crate::load_cache::put(path, entry);
    }

    /// After a failed commit: the caller's own new files never got a UID
    /// anyone was told about, so they go (the caller answers NO / 4xx and
    /// the sender's retry must not find a duplicate). Still under the lock.
    fn remove_own_files(&self) {
        if self.own_new.is_empty() {
            return;
        }
        let own: foldhash::HashSet<&str> = self.own_new.iter().map(String::as_str).collect();
        for m in self.messages.iter().filter(|m| own.contains(m.basename.as_str())) {
            let path = self.dir.file_path(m.entry.in_new, &m.entry.file_name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "removing a message whose commit failed")
                }
            }
        }
    }

    /// The durable part of [`LockedMailbox::commit`]: directory fsyncs,
    /// uidlist and index.
    fn write_out(&mut self) -> Result<(), StoreError> {
        let path = self.dir.path.clone();
        let mut dirs = Vec::new();
        if self.new_changed {
            dirs.push(path.join("new"));
        }
        if self.cur_changed {
            dirs.push(path.join("cur"));
        }
        let mut files = Vec::new();
        let mut appends = Vec::new();
        if self.uidlist_dirty {
            match self.uidlist_on_disk {
                // Only new records: appended like Dovecot does, header kept
                // (readers take max(N, last UID + 1)).
                Some(on_disk) => {
                    let records = self.uidlist.serialize_records_from(on_disk);
                    if !records.is_empty() {
                        appends.push((path.join(UIDLIST_FILE), records.into_bytes()));
                    }
                }
                None => {
                    let after_last = self.uidlist.records.last().map_or(1, |r| r.uid.saturating_add(1));
                    self.uidlist.next_uid = self.uidlist.next_uid.max(after_last);
                    files.push((path.join(UIDLIST_FILE), self.uidlist.serialize().into_bytes()));
                }
            }
        }
        let mut remove_index_log = false;
        let delta = self.index_log_len.filter(|&len| {
            // Replay orders records by HIGHESTMODSEQ: only a change that
            // allocated one can be logged; a long log is compacted.
            let limit = 64 * 1024 + 16 * self.index_base.len() as u64;
            self.index_dirty && self.highestmodseq > self.index_base_modseq && len < limit
        });
        if let Some(log_len) = delta {
            let record = crate::index_log::encode_record(&self.index_delta());
            let log_path = path.join(INDEX_LOG_FILE);
            if log_len == 0 {
                let mut bytes = crate::index_log::header();
                bytes.extend(record);
                self.index_log_len = Some(bytes.len() as u64);
                files.push((log_path, bytes));
            } else {
                self.index_log_len = Some(log_len + record.len() as u64);
                appends.push((log_path, record));
            }
        } else if self.index_dirty {
            remove_index_log = true;
            let refs: Vec<IndexMessageRef<'_>> = self
                .messages
                .iter()
                .map(|m| IndexMessageRef {
                    uid: m.uid,
                    modseq: m.modseq,
                    flags: &m.flags,
                    extra_keywords: &m.extra_keywords,
                    vsize: m.vsize,
                })
                .collect();
            let bytes = index_file::encode_parts(self.uidlist.uidvalidity, self.highestmodseq, &refs, &self.expunge_log);
            files.push((path.join(INDEX_FILE), bytes));
        }
        if !dirs.is_empty() || !files.is_empty() || !appends.is_empty() {
            // Renames in new/ and cur/ and the new uidlist/index contents
            // become durable together; then the uidlist/index renames.
            durable::sync_batch_with_appends(&dirs, &files, &appends, self.dir.durability)?;
        }
        if !files.is_empty() {
            self.dir.durability.fsync_dir(&path)?;
        }
        if remove_index_log {
            // Compacted: the snapshot holds everything. A log that survives
            // (failed removal, crash) only has records at or below the
            // snapshot's HIGHESTMODSEQ, which replay skips.
            self.index_log_len = Some(0);
            match std::fs::remove_file(path.join(INDEX_LOG_FILE)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    // Its records are all at or below the snapshot: the next
                    // write compacts again.
                    self.index_log_len = None;
                    tracing::error!(path = %path.display(), error = %e, "removing the compacted dormouse-index.log");
                }
            }
        }
        Ok(())
    }

    /// What changed in the index since the load, as one log record.
    fn index_delta(&self) -> LogRecord {
        let mut upserts = Vec::new();
        let mut removed = Vec::new();
        let mut base = self.index_base.iter().peekable();
        for m in &self.messages {
            while let Some(b) = base.next_if(|b| b.uid < m.uid) {
                removed.push(b.uid);
            }
            let same = base
                .next_if(|b| b.uid == m.uid)
                .is_some_and(|b| b.modseq == m.modseq && b.flags == m.flags && b.extra_keywords == m.extra_keywords && b.vsize == m.vsize);
            if !same {
                upserts.push(IndexMessage {
                    uid: m.uid,
                    modseq: m.modseq,
                    flags: m.flags.clone(),
                    extra_keywords: m.extra_keywords.clone(),
                    vsize: m.vsize,
                });
            }
        }
        removed.extend(base.map(|b| b.uid));
        LogRecord {
            uidvalidity: self.uidlist.uidvalidity,
            highestmodseq: self.highestmodseq,
            upserts,
            removed,
            expunges: self.expunge_records.clone(),
        }
    }
}

/// Most records of expunged messages a uidlist keeps before it is rewritten
/// without them, for `live` records: 1024 + 1/8 of them, so compaction costs
/// O(1) per expunge on average; at most 2048, well within what the expunge
/// log (4096 entries) remembers, which is how loads know them dead.
pub fn compaction_threshold(live: usize) -> usize {
    (1024 + live / 8).min(2048)
}

fn alloc(highestmodseq: &mut u64, slot: &mut Option<u64>) -> u64 {
    *slot.get_or_insert_with(|| {
        *highestmodseq += 1;
        *highestmodseq
    })
}

/// Loads and commits `dir` for a read (open, sync, STATUS). When a write
/// fails because the disk is full, the mailbox is served as it is on disk
/// instead (see [`LockedMailbox::load_read_only`]), logged once per cause.
/// With `cleanup`, leftovers of killed processes are removed first.
///
/// # Errors
/// `NoSuchMailbox`, I/O, `LockTimeout`.
pub fn read_current(dir: &MailboxDir, cleanup: bool) -> Result<Committed, StoreError> {
    let attempt = LockedMailbox::load(dir, &[]).and_then(|l| {
        if cleanup {
            l.remove_stale_temps();
            crate::copy_txn::remove_uncommitted(dir);
        }
        l.commit()
    });
    match attempt {
        Err(e) if e.is_storage_full() => {
            crate::degraded::note(&dir.path, "mailbox view", &e);
            LockedMailbox::load_read_only(dir)?.commit()
        }
        other => other,
    }
}

/// Reads the status record of `dir` if it is current (no scan).
pub fn fresh_status(dir: &MailboxDir) -> Option<MailboxStatus> {
    let record = StatusRecord::decode(&std::fs::read(dir.path.join(STATUS_FILE)).ok()?)?;
    record.is_current(&FsStamp::take(&dir.path)?).then_some(record.status)
}

#[cfg(test)]
#[path = "locked_mailbox_tests.rs"]
mod tests;
