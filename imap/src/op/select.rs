//! SELECT and EXAMINE, with CONDSTORE and QRESYNC parameters (RFC 7162).

use imap_types::command::SelectParameter;
use imap_types::mailbox::Mailbox;
use imap_types::sequence::SequenceSet;

use crate::session::response::number_set;
use crate::session::selected::Selected;
use crate::session::shared_mailbox;
use crate::session::Session;

/// Flags this server stores, for FLAGS and PERMANENTFLAGS.
pub(crate) const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

impl Session {
    /// SELECT / EXAMINE.
    pub(crate) fn op_select(&mut self, tag: &str, mailbox: &Mailbox<'_>, params: &[SelectParameter], read_only: bool) {
        // Kept until the new selection is open: re-selecting the same
        // mailbox then reuses the process's open mailbox (a sync, usually a
        // few stat calls) instead of rebuilding it from disk (a full scan
        // and a stat per message).
        let previous = self.selected.take();
        if previous.is_some() {
            self.out.extend_from_slice(b"* OK [CLOSED] Previous mailbox closed.\r\n");
        }
        let Some(name) = self.mailbox_name(tag, mailbox) else { return };
        let mut qresync = None;
        for p in params {
            match p {
                SelectParameter::CondStore => self.enabled.condstore = true,
                SelectParameter::QResync { uid_validity, mod_sequence_value, known_uids, .. } => {
                    if !self.enabled.qresync {
                        self.bad(tag, "QRESYNC must be enabled first.");
                        return;
                    }
                    qresync = Some((uid_validity.get(), mod_sequence_value.get(), known_uids.clone()));
                }
            }
        }
        let Some(store) = self.store.clone() else { return };
        let mailbox = match shared_mailbox::open(&store, &name) {
            Ok(m) => m,
            Err(e) => return self.no_store(tag, &e),
        };
        drop(previous);
        let sel = match Selected::open(mailbox, read_only) {
            Ok(s) => s,
            Err(e) => return self.no_store(tag, &e),
        };
        let keywords: Vec<&String> = sel.keywords.iter().collect();
        let kw: String = keywords.iter().map(|k| format!(" {k}")).collect();
        let mut o = String::new();
        o.push_str(&format!("* FLAGS ({SYSTEM_FLAGS}{kw})\r\n"));
        if read_only {
            o.push_str("* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
        } else {
            o.push_str(&format!("* OK [PERMANENTFLAGS ({SYSTEM_FLAGS}{kw} \\*)] Flags permitted.\r\n"));
        }
        o.push_str(&format!("* {} EXISTS\r\n", sel.view.len()));
        o.push_str(&format!("* {} RECENT\r\n", sel.recent_count()));
        if let Some(i) = sel.view.iter().position(|e| !e.system.contains(storage_hooks::SystemFlags::SEEN)) {
            o.push_str(&format!("* OK [UNSEEN {}] First unseen.\r\n", i + 1));
        }
        o.push_str(&format!("* OK [UIDVALIDITY {}] UIDs valid\r\n", sel.status.uidvalidity));
        o.push_str(&format!("* OK [UIDNEXT {}] Predicted next UID\r\n", sel.status.uidnext));
        o.push_str(&format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", sel.status.highestmodseq));
        self.out.extend_from_slice(o.as_bytes());
        if let Some((uidvalidity, modseq, known)) = qresync {
            if uidvalidity == sel.status.uidvalidity {
                self.qresync_report(&sel, modseq, known.as_ref());
            }
        }
        self.selected = Some(sel);
        let mode = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        let what = if read_only { "Examine" } else { "Select" };
        self.ok(tag, &format!("[{mode}] {what} completed."));
    }

    /// QRESYNC: VANISHED (EARLIER) for known UIDs that are gone, then FETCH
    /// for messages changed since `modseq`.
    fn qresync_report(&mut self, sel: &Selected, modseq: u64, known: Option<&SequenceSet>) {
        let existing: Vec<u32> = sel.view.iter().map(|e| e.uid).collect();
        let max_known = sel.status.uidnext.saturating_sub(1);
        let in_known = |uid: u32| match known {
            Some(set) => set.0.as_ref().iter().any(|s| {
                let (a, b) = seq_bounds(s, max_known);
                (a.min(b)..=a.max(b)).contains(&uid)
            }),
            None => true,
        };
        let expunged = Selected::lock_mailbox(&sel.shared, &sel.status).and_then(|g| g.mailbox.expunged_since(modseq));
        let vanished: Vec<u32> = match expunged {
            Ok(Some(set)) => set.iter().filter(|&u| in_known(u)).collect(),
            _ => {
                // The expunge log does not reach back: every known UID not
                // present now is reported (RFC 7162 3.2.5.1 allows this).
                let mut v = Vec::new();
                // Bounded work: a client may name 1:4294967295.
                let mut budget: u32 = 1_000_000;
                // Without known UIDs, every UID below UIDNEXT is "known".
                let ranges: Vec<(u32, u32)> = match known {
                    Some(set) => set.0.as_ref().iter().map(|s| seq_bounds(s, max_known)).collect(),
                    None => vec![(1, max_known)],
                };
                'ranges: for (a, b) in ranges {
                    for uid in a.min(b).max(1)..=a.max(b).min(max_known) {
                        if existing.binary_search(&uid).is_err() {
                            v.push(uid);
                        }
                        budget -= 1;
                        if budget == 0 {
                            break 'ranges;
                        }
                    }
                }
                v.sort_unstable();
                v.dedup();
                v
            }
        };
        if !vanished.is_empty() {
            self.out.extend_from_slice(format!("* VANISHED (EARLIER) {}\r\n", number_set(&vanished)).as_bytes());
        }
        for (i, e) in sel.view.iter().enumerate() {
            if e.modseq > modseq {
                sel.write_flags_fetch(i + 1, self.enabled, true, &mut self.out);
            }
        }
    }
}

/// Bounds of one sequence element with `*` = `star`.
pub(crate) fn seq_bounds(s: &imap_types::sequence::Sequence, star: u32) -> (u32, u32) {
    use imap_types::sequence::{SeqOrUid, Sequence};
    let v = |x: &SeqOrUid| match x {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => star,
    };
    match s {
        Sequence::Single(x) => (v(x), v(x)),
        Sequence::Range(a, b) => (v(a), v(b)),
    }
}
