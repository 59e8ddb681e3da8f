//! The selected mailbox as this client knows it: the sequence-number view
//! (RFC 3501 7.4.1) and how storage changes turn into untagged responses.

use std::collections::BTreeSet;

use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use storage_hooks::{Flags, Mailbox, MessageMeta, StoreError};

use super::response;
use super::EnabledExtensions;

/// One message of the client's view.
#[derive(Debug, Clone)]
pub(crate) struct ViewEntry {
    /// Metadata as last reported to the client.
    pub meta: MessageMeta,
    /// Gone from storage but not yet reported with EXPUNGE / VANISHED.
    pub expunged: bool,
}

/// A selected (or examined) mailbox.
#[derive(Debug)]
pub(crate) struct Selected {
    pub mailbox: Mailbox,
    pub read_only: bool,
    /// The client's view; index + 1 is the sequence number.
    pub view: Vec<ViewEntry>,
    /// UIDs that are `\Recent` in this session.
    pub recent: BTreeSet<u32>,
    /// Number of messages last announced with EXISTS.
    pub announced_exists: usize,
    /// Number last announced with RECENT.
    pub announced_recent: usize,
    /// Keywords announced in the last `* FLAGS` response.
    pub keywords: BTreeSet<String>,
}

/// A sequence set that names a message number beyond the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadSequence;

impl Selected {
    /// Opens the view over a freshly opened mailbox. For read-write opens,
    /// messages in `new/` become this session's `\Recent`.
    pub(crate) fn open(mut mailbox: Mailbox, read_only: bool) -> Result<Self, StoreError> {
        let mut recent = BTreeSet::new();
        if read_only {
            recent.extend(mailbox.messages().iter().filter(|m| m.recent).map(|m| m.uid));
        } else {
            recent.extend(mailbox.clear_recent()?);
        }
        let view: Vec<ViewEntry> =
            mailbox.messages().iter().map(|m| ViewEntry { meta: m.clone(), expunged: false }).collect();
        let n = view.len();
        let r = recent.len();
        let keywords = view.iter().flat_map(|e| e.meta.flags.keywords.iter().cloned()).collect();
        Ok(Selected { mailbox, read_only, view, recent, announced_exists: n, announced_recent: r, keywords })
    }

    /// A view restored from a hibernated session (no `\Recent` carried).
    pub(crate) fn from_view(mailbox: Mailbox, read_only: bool, view: Vec<ViewEntry>) -> Self {
        let n = view.len();
        let keywords = view.iter().flat_map(|e| e.meta.flags.keywords.iter().cloned()).collect();
        Selected { mailbox, read_only, view, recent: BTreeSet::new(), announced_exists: n, announced_recent: 0, keywords }
    }

    /// The mailbox name.
    pub(crate) fn name(&self) -> &str {
        self.mailbox.name()
    }

    /// Sequence number (1-based) of `uid` in the view.
    pub(crate) fn seq_of(&self, uid: u32) -> Option<usize> {
        self.view.binary_search_by_key(&uid, |e| e.meta.uid).ok().map(|i| i + 1)
    }

    /// Resolves a sequence set (message numbers or UIDs) to view indices,
    /// ascending and without duplicates. Message numbers beyond the view are
    /// an error (RFC 3501); UIDs that do not exist are ignored.
    pub(crate) fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, BadSequence> {
        let mut out = BTreeSet::new();
        if uid {
            let max_uid = self.view.last().map_or(0, |e| e.meta.uid);
            for seq in set.0.as_ref() {
                let (a, b) = bounds(seq, max_uid);
                let (lo, hi) = (a.min(b), a.max(b));
                let start = self.view.partition_point(|e| e.meta.uid < lo);
                for (i, e) in self.view.iter().enumerate().skip(start) {
                    if e.meta.uid > hi {
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

    /// Re-reads the mailbox and writes untagged updates to `out`.
    /// Returns `Ok(false)` if the view is void (UIDVALIDITY changed).
    pub(crate) fn sync(
        &mut self,
        allow_expunge: bool,
        ext: EnabledExtensions,
        out: &mut Vec<u8>,
    ) -> Result<bool, StoreError> {
        let changes = match self.mailbox.sync() {
            Ok(c) => c,
            Err(StoreError::NoSuchMailbox(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if changes.uidvalidity_changed {
            return Ok(false);
        }
        let mut new_recent = Vec::new();
        if !self.read_only && self.mailbox.messages().iter().any(|m| m.recent) {
            new_recent = self.mailbox.clear_recent()?;
        }
        self.recent.extend(new_recent);
        let current = self.mailbox.messages();
        // Flag changes and expunges of known messages.
        let mut flag_changed = Vec::new();
        for (i, e) in self.view.iter_mut().enumerate() {
            if e.expunged {
                continue;
            }
            match current.binary_search_by_key(&e.meta.uid, |m| m.uid) {
                Ok(j) => {
                    let m = &current[j];
                    if m.flags != e.meta.flags || m.modseq != e.meta.modseq {
                        e.meta.flags = m.flags.clone();
                        e.meta.modseq = m.modseq;
                        flag_changed.push(i);
                    }
                }
                Err(_) => e.expunged = true,
            }
        }
        // New messages (UIDs only grow).
        let max_uid = self.view.last().map_or(0, |e| e.meta.uid);
        let start = current.partition_point(|m| m.uid <= max_uid);
        let added: Vec<ViewEntry> =
            current[start..].iter().map(|m| ViewEntry { meta: m.clone(), expunged: false }).collect();
        if !self.read_only {
            // Recent-ness was claimed above via clear_recent.
        } else {
            self.recent.extend(added.iter().filter(|e| e.meta.recent).map(|e| e.meta.uid));
        }
        // Report expunges first, so the following numbers are current.
        let mut flag_uids: Vec<u32> = flag_changed.iter().map(|&i| self.view[i].meta.uid).collect();
        if allow_expunge {
            self.report_expunges(ext, out);
        }
        flag_uids.retain(|&u| self.seq_of(u).is_some_and(|s| !self.view[s - 1].expunged));
        let new_keywords: Vec<Flags> = flag_uids
            .iter()
            .filter_map(|&u| self.seq_of(u).map(|s| self.view[s - 1].meta.flags.clone()))
            .chain(added.iter().map(|e| e.meta.flags.clone()))
            .collect();
        for f in &new_keywords {
            self.announce_keywords(f, out);
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
        let recent_now = self.view.iter().filter(|e| self.recent.contains(&e.meta.uid)).count();
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
                gone.push(e.meta.uid);
                removed += 1;
            }
        }
        if ext.qresync {
            out.extend_from_slice(format!("* VANISHED {}\r\n", response::number_set(&gone)).as_bytes());
        }
        self.view.retain(|e| !e.expunged);
        for uid in &gone {
            self.recent.remove(uid);
        }
        self.announced_exists = self.view.len();
        self.announced_recent = self.view.iter().filter(|e| self.recent.contains(&e.meta.uid)).count();
    }

    /// Writes `* FLAGS` and `* OK [PERMANENTFLAGS]` if `flags` has keywords
    /// the client was not told about yet (RFC 3501 7.2.6).
    pub(crate) fn announce_keywords(&mut self, flags: &Flags, out: &mut Vec<u8>) {
        if flags.keywords.iter().all(|k| self.keywords.contains(k)) {
            return;
        }
        self.keywords.extend(flags.keywords.iter().cloned());
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
    pub(crate) fn set_flags(&mut self, uid: u32, flags: Flags, modseq: u64) {
        if let Some(seq) = self.seq_of(uid) {
            let e = &mut self.view[seq - 1];
            e.meta.flags = flags;
            e.meta.modseq = modseq;
        }
    }

    /// `* seq FETCH (FLAGS (...) [UID n] [MODSEQ (m)])` for an unsolicited
    /// or STORE-caused flag update.
    pub(crate) fn write_flags_fetch(&self, seq: usize, ext: EnabledExtensions, with_uid: bool, out: &mut Vec<u8>) {
        let e = &self.view[seq - 1];
        out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
        if with_uid || ext.qresync {
            out.extend_from_slice(format!("UID {} ", e.meta.uid).as_bytes());
        }
        out.extend_from_slice(b"FLAGS ");
        response::flag_list(out, &e.meta.flags, self.recent.contains(&e.meta.uid));
        if ext.condstore {
            out.extend_from_slice(format!(" MODSEQ ({})", e.meta.modseq).as_bytes());
        }
        out.extend_from_slice(b")\r\n");
    }

    /// `\Recent` count in the view.
    pub(crate) fn recent_count(&self) -> usize {
        self.view.iter().filter(|e| self.recent.contains(&e.meta.uid)).count()
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
