//! The selected mailbox as this client knows it: the sequence-number view
//! (RFC 3501 7.4.1) and how storage changes turn into untagged responses.
//!
//! The storage [`storage_hooks::Mailbox`] is shared by all sessions of the
//! process that have it selected ([`super::shared_mailbox`]); a session
//! keeps only a compact view of what its client was told (UID, MODSEQ and
//! flags per message, keyword lists interned per mailbox). Changes are found
//! by a merge of that view with the shared, UID-sorted message list.

use std::collections::BTreeSet;
use std::sync::{Arc, MutexGuard};

use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use storage_hooks::{Flags, MailboxStatus, MessageMeta, StoreError, SystemFlags, UidSet};

use super::response;
use super::shared_mailbox::{self, KeywordSet, KeywordSets, SharedMailbox, SharedMailboxRef};
use super::EnabledExtensions;

/// One message of the client's view (24 bytes).
#[derive(Debug, Clone)]
pub(crate) struct ViewEntry {
    /// The message's UID.
    pub uid: u32,
    /// System flags as last reported to the client.
    pub system: SystemFlags,
    /// Gone from storage but not yet reported with EXPUNGE / VANISHED.
    pub expunged: bool,
    /// MODSEQ as last reported to the client.
    pub modseq: u64,
    /// Keywords as last reported (interned in the shared mailbox).
    pub keywords: Option<KeywordSet>,
}

impl ViewEntry {
    /// An entry for `meta`, interning its keywords in `shared`.
    pub(crate) fn of(meta: &MessageMeta, sets: &mut KeywordSets) -> Self {
        ViewEntry {
            uid: meta.uid,
            system: meta.flags.system,
            expunged: false,
            modseq: meta.modseq,
            keywords: sets.intern(&meta.flags.keywords),
        }
    }

    /// An entry for a message known to be gone (flags unknown).
    pub(crate) fn gone(uid: u32) -> Self {
        ViewEntry { uid, system: SystemFlags::default(), expunged: true, modseq: 0, keywords: None }
    }

    /// The reported keywords.
    pub(crate) fn keywords(&self) -> &[String] {
        self.keywords.as_deref().map_or(&[], |k| &k[..])
    }

    /// The reported flags.
    pub(crate) fn flags(&self) -> Flags {
        Flags { system: self.system, keywords: self.keywords().to_vec() }
    }

    /// True if `flags` equal the reported flags.
    fn same_flags(&self, flags: &Flags) -> bool {
        self.system == flags.system && self.keywords() == flags.keywords.as_slice()
    }
}

/// A selected (or examined) mailbox.
#[derive(Debug)]
pub(crate) struct Selected {
    /// The storage mailbox, shared with other sessions of this process.
    pub shared: SharedMailboxRef,
    /// Mailbox name (UTF-8).
    name: String,
    pub read_only: bool,
    /// Status as of this session's last sync or own write (UIDVALIDITY,
    /// UIDNEXT and HIGHESTMODSEQ as this session knows them).
    pub status: MailboxStatus,
    /// The client's view; index + 1 is the sequence number.
    pub view: Vec<ViewEntry>,
    /// UIDs that are `\Recent` in this session.
    pub recent: UidSet,
    /// Number of messages last announced with EXISTS.
    pub announced_exists: usize,
    /// Number last announced with RECENT.
    pub announced_recent: usize,
    /// Keywords announced in the last `* FLAGS` response.
    pub keywords: BTreeSet<String>,
    /// UIDs saved by `SEARCH RETURN (SAVE)` (SEARCHRES `$`); see `op::searchres`.
    pub saved_result: UidSet,
}

/// A sequence set that names a message number beyond the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadSequence;

impl Selected {
    /// Opens the view over a freshly synced shared mailbox. For read-write
    /// opens, messages in `new/` become this session's `\Recent`.
    pub(crate) fn open(shared: SharedMailboxRef, read_only: bool) -> Result<Self, StoreError> {
        let mut recent = UidSet::new();
        let handle = Arc::clone(&shared);
        let mut guard = shared_mailbox::lock(&handle);
        let g = &mut *guard;
        if read_only {
            for m in g.mailbox.messages().iter().filter(|m| m.recent) {
                recent.insert(m.uid);
            }
        } else {
            for uid in g.mailbox.clear_recent()? {
                recent.insert(uid);
            }
        }
        let metas = g.mailbox.messages();
        let mut view = Vec::with_capacity(metas.len());
        let mut keywords = BTreeSet::new();
        for m in metas {
            keywords.extend(m.flags.keywords.iter().cloned());
            view.push(ViewEntry::of(m, &mut g.keyword_sets));
        }
        let name = g.mailbox.name().to_string();
        let status = g.mailbox.status();
        drop(guard);
        let n = view.len();
        let mut sel = Selected {
            shared,
            name,
            read_only,
            status,
            view,
            recent,
            announced_exists: n,
            announced_recent: 0,
            keywords,
            saved_result: UidSet::new(),
        };
        sel.announced_recent = sel.recent_count();
        Ok(sel)
    }

    /// A view restored from a hibernated session (no `\Recent` carried).
    pub(crate) fn from_view(shared: SharedMailboxRef, read_only: bool, view: Vec<ViewEntry>) -> Self {
        let (name, status) = {
            let g = shared_mailbox::lock(&shared);
            (g.mailbox.name().to_string(), g.mailbox.status())
        };
        let n = view.len();
        let keywords = view.iter().flat_map(|e| e.keywords().iter().cloned()).collect();
        Selected {
            shared,
            name,
            read_only,
            status,
            view,
            recent: UidSet::new(),
            announced_exists: n,
            announced_recent: 0,
            keywords,
            saved_result: UidSet::new(),
        }
    }

    /// Gives back capacity the view does not use (after expunges).
    pub(crate) fn release_spare_capacity(&mut self) {
        if self.view.capacity() > self.view.len() + self.view.len() / 8 + 8 {
            self.view.shrink_to_fit();
        }
    }

    /// The mailbox name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Sequence number (1-based) of `uid` in the view.
    pub(crate) fn seq_of(&self, uid: u32) -> Option<usize> {
        self.view.binary_search_by_key(&uid, |e| e.uid).ok().map(|i| i + 1)
    }

    /// Resolves a sequence set (message numbers or UIDs) to view indices,
    /// ascending and without duplicates. Message numbers beyond the view are
    /// an error (RFC 3501); UIDs that do not exist are ignored.
    pub(crate) fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, BadSequence> {
        let mut out = BTreeSet::new();
        if uid {
            let max_uid = self.view.last().map_or(0, |e| e.uid);
            for seq in set.0.as_ref() {
                let (a, b) = bounds(seq, max_uid);
                let (lo, hi) = (a.min(b), a.max(b));
                let start = self.view.partition_point(|e| e.uid < lo);
                for (i, e) in self.view.iter().enumerate().skip(start) {
                    if e.uid > hi {
                        break;
                    }
                    out.insert(i);
                }
            }
        } else {
            let n = u32::try_from(self.view.len()).unwrap_or(u32::MAX);
            for seq in set.0.as_ref() {
                let (a, b) = bounds(seq, n);
                let (lo, hi) = (a.min(b), a.max(b));
                if hi > n || lo == 0 {
                    return Err(BadSequence);
                }
                out.extend((lo as usize - 1)..(hi as usize));
            }
        }
        Ok(out.into_iter().collect())
    }

    /// True if the view has entries whose expunge was not reported yet.
    pub(crate) fn has_pending_expunges(&self) -> bool {
        self.view.iter().any(|e| e.expunged)
    }

    /// Locks the shared mailbox for a read or write on behalf of this view,
    /// refusing if its UIDVALIDITY is not the one the client knows (our
    /// UIDs would name other messages).
    ///
    /// # Errors
    /// `NotAllowed` after a UIDVALIDITY change.
    pub(crate) fn lock_mailbox<'a>(
        shared: &'a SharedMailboxRef,
        status: &MailboxStatus,
    ) -> Result<MutexGuard<'a, SharedMailbox>, StoreError> {
        let g = shared_mailbox::lock(shared);
        if g.mailbox.uidvalidity() != status.uidvalidity {
            return Err(StoreError::NotAllowed(format!(
                "UIDVALIDITY of {} changed from {} to {}",
                g.mailbox.name(),
                status.uidvalidity,
                g.mailbox.uidvalidity()
            )));
        }
        Ok(g)
    }

    /// Brings the shared mailbox up to date, compares it with the view and
    /// writes untagged updates to `out`.
    /// Returns `Ok(false)` if the view is void (UIDVALIDITY changed).
    pub(crate) fn sync(
        &mut self,
        allow_expunge: bool,
        ext: EnabledExtensions,
        out: &mut Vec<u8>,
    ) -> Result<bool, StoreError> {
        let handle = Arc::clone(&self.shared);
        let mut guard = shared_mailbox::lock(&handle);
        let g = &mut *guard;
        // Another session may have consumed the storage's change report:
        // the changes are found by comparing the view with the message list.
        // A read-write session claims `\Recent` in the same locked load.
        let synced = if self.read_only { g.mailbox.sync().map(|_| Vec::new()) } else { g.mailbox.sync_claiming_recent().map(|(_, c)| c) };
        let claimed = match synced {
            Ok(claimed) => claimed,
            Err(StoreError::NoSuchMailbox(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if g.mailbox.uidvalidity() != self.status.uidvalidity {
            return Ok(false);
        }
        for uid in claimed {
            self.recent.insert(uid);
        }
        let current = g.mailbox.messages();
        // Flag changes and expunges of known messages: a merge of two
        // UID-sorted lists.
        let mut flag_changed = Vec::new();
        let mut j = 0;
        for (i, e) in self.view.iter_mut().enumerate() {
            if e.expunged {
                continue;
            }
            while current.get(j).is_some_and(|m| m.uid < e.uid) {
                j += 1;
            }
            match current.get(j) {
                Some(m) if m.uid == e.uid => {
                    if !e.same_flags(&m.flags) || m.modseq != e.modseq {
                        e.system = m.flags.system;
                        e.keywords = g.keyword_sets.intern(&m.flags.keywords);
                        e.modseq = m.modseq;
                        flag_changed.push(i);
                    }
                }
                _ => e.expunged = true,
            }
        }
        // New messages (UIDs only grow).
        let max_uid = self.view.last().map_or(0, |e| e.uid);
        let start = current.partition_point(|m| m.uid <= max_uid);
        let mut added = Vec::with_capacity(current.len() - start);
        for m in &current[start..] {
            added.push(ViewEntry::of(m, &mut g.keyword_sets));
            // Read-write sessions claimed recent-ness above (sync_claiming_recent).
            if self.read_only && m.recent {
                self.recent.insert(m.uid);
            }
        }
        self.status = g.mailbox.status();
        drop(guard);
        // Report expunges first, so the following numbers are current.
        let mut flag_uids: Vec<u32> = flag_changed.iter().map(|&i| self.view[i].uid).collect();
        if allow_expunge {
            self.report_expunges(ext, out);
        }
        flag_uids.retain(|&u| self.seq_of(u).is_some_and(|s| !self.view[s - 1].expunged));
        let new_keywords: Vec<KeywordSet> = flag_uids
            .iter()
            .filter_map(|&u| self.seq_of(u).and_then(|s| self.view[s - 1].keywords.clone()))
            .chain(added.iter().filter_map(|e| e.keywords.clone()))
            .collect();
        for k in &new_keywords {
            self.announce_keywords(k, out);
        }
        for uid in flag_uids {
            if let Some(seq) = self.seq_of(uid) {
                self.write_flags_fetch(seq, ext, false, out);
            }
        }
        self.view.extend(added);
        if self.view.len() != self.announced_exists {
            out.extend_from_slice(format!("* {} EXISTS\r\n", self.view.len()).as_bytes());
            self.announced_exists = self.view.len();
        }
        let recent_now = self.recent_count();
        if recent_now != self.announced_recent {
            out.extend_from_slice(format!("* {recent_now} RECENT\r\n").as_bytes());
            self.announced_recent = recent_now;
        }
        Ok(true)
    }

    /// Removes expunged entries from the view, writing `* n EXPUNGE` (or one
    /// `* VANISHED` under QRESYNC).
    pub(crate) fn report_expunges(&mut self, ext: EnabledExtensions, out: &mut Vec<u8>) {
        if !self.has_pending_expunges() {
            return;
        }
        let mut gone = Vec::new();
        let mut removed = 0usize;
        for (i, e) in self.view.iter().enumerate() {
            if e.expunged {
                if !ext.qresync {
                    out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1 - removed).as_bytes());
                }
                gone.push(e.uid);
                removed += 1;
            }
        }
        if ext.qresync {
            out.extend_from_slice(format!("* VANISHED {}\r\n", response::number_set(&gone)).as_bytes());
        }
        self.view.retain(|e| !e.expunged);
        for &uid in &gone {
            self.recent.remove(uid);
        }
        self.announced_exists = self.view.len();
        self.announced_recent = self.recent_count();
    }

    /// Writes `* FLAGS` and `* OK [PERMANENTFLAGS]` if `keywords` has some
    /// the client was not told about yet (RFC 3501 7.2.6).
    pub(crate) fn announce_keywords(&mut self, keywords: &[String], out: &mut Vec<u8>) {
        if keywords.iter().all(|k| self.keywords.contains(k)) {
            return;
        }
        self.keywords.extend(keywords.iter().cloned());
        let kw: String = self.keywords.iter().map(|k| format!(" {k}")).collect();
        let sys = crate::op::select::SYSTEM_FLAGS;
        out.extend_from_slice(format!("* FLAGS ({sys}{kw})\r\n").as_bytes());
        if self.read_only {
            out.extend_from_slice(b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
        } else {
            out.extend_from_slice(format!("* OK [PERMANENTFLAGS ({sys}{kw} \\*)] Flags permitted.\r\n").as_bytes());
        }
    }

    /// Marks UIDs as expunged in the view (after our own EXPUNGE / MOVE).
    pub(crate) fn mark_expunged(&mut self, uids: &[u32]) {
        for &uid in uids {
            if let Some(seq) = self.seq_of(uid) {
                self.view[seq - 1].expunged = true;
            }
        }
    }

    /// Updates the view's flags for `uid` (after our own STORE).
    pub(crate) fn set_flags(&mut self, uid: u32, flags: &Flags, modseq: u64, sets: &mut KeywordSets) {
        if let Some(seq) = self.seq_of(uid) {
            let e = &mut self.view[seq - 1];
            e.system = flags.system;
            e.keywords = sets.intern(&flags.keywords);
            e.modseq = modseq;
        }
    }

    /// `* seq FETCH (FLAGS (...) [UID n] [MODSEQ (m)])` for an unsolicited
    /// or STORE-caused flag update.
    pub(crate) fn write_flags_fetch(&self, seq: usize, ext: EnabledExtensions, with_uid: bool, out: &mut Vec<u8>) {
        let e = &self.view[seq - 1];
        out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
        if with_uid || ext.qresync {
            out.extend_from_slice(format!("UID {} ", e.uid).as_bytes());
        }
        out.extend_from_slice(b"FLAGS ");
        response::flag_list(out, &e.flags(), self.recent.contains(e.uid));
        if ext.condstore {
            out.extend_from_slice(format!(" MODSEQ ({})", e.modseq).as_bytes());
        }
        out.extend_from_slice(b")\r\n");
    }

    /// `\Recent` count in the view.
    pub(crate) fn recent_count(&self) -> usize {
        if self.recent.is_empty() {
            return 0;
        }
        self.view.iter().filter(|e| self.recent.contains(e.uid)).count()
    }
}

/// Numeric bounds of one sequence element, `*` being `star`.
fn bounds(seq: &Sequence, star: u32) -> (u32, u32) {
    let v = |s: &SeqOrUid| match s {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => star,
    };
    match seq {
        Sequence::Single(s) => (v(s), v(s)),
        Sequence::Range(a, b) => (v(a), v(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_entry_is_compact() {
        assert!(std::mem::size_of::<ViewEntry>() <= 24, "{}", std::mem::size_of::<ViewEntry>());
    }
}
