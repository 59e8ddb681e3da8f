//! The exact bytes of the responses a hibernated session writes. They match
//! what the worker's session writes for the same situation (see
//! `imap/src/session/selected.rs` and `imap/src/op/`), so a client cannot
//! tell which process answered.

use std::io::Write;

use storage_hooks::{Flags, MailboxStatus, UidSet};

use crate::record::Extensions;

/// Keepalive line written to idling clients.
pub const KEEPALIVE: &[u8] = b"* OK Still here\r\n";

/// Appends `* n EXPUNGE` lines (or one `* VANISHED` under QRESYNC) for
/// `gone`, a subset of `view` (the view before the change).
pub fn expunges(out: &mut Vec<u8>, view: &UidSet, gone: &UidSet, ext: Extensions) {
    if gone.is_empty() {
        return;
    }
    if ext.qresync {
        let _ = write!(out, "* VANISHED {}\r\n", gone.to_imap_string());
        return;
    }
    // Sequence numbers shift down by one after every EXPUNGE line.
    let mut removed = 0u64;
    for uid in gone.iter() {
        if let Some(rank) = view.rank(uid) {
            let _ = write!(out, "* {} EXPUNGE\r\n", rank + 1 - removed);
            removed += 1;
        }
    }
}

/// Appends `* n EXISTS`.
pub fn exists(out: &mut Vec<u8>, count: u64) {
    let _ = write!(out, "* {count} EXISTS\r\n");
}

/// Appends `* seq FETCH (UID u FLAGS (..) [MODSEQ (m)])`, the worker's
/// unsolicited flag update (without `\Recent`, which hibernated sessions
/// do not track).
pub fn flags_fetch(out: &mut Vec<u8>, seq: u64, uid: u32, flags: &Flags, modseq: u64, ext: Extensions) {
    let _ = write!(out, "* {seq} FETCH (UID {uid} FLAGS ({})", flags.to_imap_string());
    if ext.condstore {
        let _ = write!(out, " MODSEQ ({modseq})");
    }
    out.extend_from_slice(b")\r\n");
}

/// Items a STATUS command may ask for that we answer from a cached status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    /// MESSAGES.
    Messages,
    /// RECENT.
    Recent,
    /// UIDNEXT.
    UidNext,
    /// UIDVALIDITY.
    UidValidity,
    /// UNSEEN.
    Unseen,
    /// HIGHESTMODSEQ.
    HighestModSeq,
}

/// Appends `* STATUS "name" (ITEM n ...)`; `encoded_name` is the mailbox
/// name in modified UTF-7.
pub fn status(out: &mut Vec<u8>, encoded_name: &str, st: &MailboxStatus, items: &[StatusItem]) {
    out.extend_from_slice(b"* STATUS ");
    string(out, encoded_name.as_bytes());
    out.extend_from_slice(b" (");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        let _ = match item {
            StatusItem::Messages => write!(out, "MESSAGES {}", st.messages),
            StatusItem::Recent => write!(out, "RECENT {}", st.recent),
            StatusItem::UidNext => write!(out, "UIDNEXT {}", st.uidnext),
            StatusItem::UidValidity => write!(out, "UIDVALIDITY {}", st.uidvalidity),
            StatusItem::Unseen => write!(out, "UNSEEN {}", st.unseen),
            StatusItem::HighestModSeq => write!(out, "HIGHESTMODSEQ {}", st.highestmodseq),
        };
    }
    out.extend_from_slice(b")\r\n");
}

/// Appends `<tag> OK <text>`.
pub fn tagged_ok(out: &mut Vec<u8>, tag: &str, text: &str) {
    let _ = write!(out, "{tag} OK {text}\r\n");
}

/// Appends `s` as an IMAP `string`: quoted if it is short 7-bit text,
/// otherwise a literal. The IMAP worker writes strings with this same
/// function, so an answer from the hibernate process is byte-identical to
/// the worker's.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() <= 1024 && s.iter().all(|&b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80);
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        let _ = write!(out, "{{{}}}\r\n", s.len());
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_hooks::SystemFlags;

    #[test]
    fn expunge_numbers_shift() {
        let view = UidSet::from_range(1, 10);
        let gone: UidSet = [3, 4, 9].into_iter().collect();
        let mut out = Vec::new();
        expunges(&mut out, &view, &gone, Extensions::default());
        assert_eq!(out, b"* 3 EXPUNGE\r\n* 3 EXPUNGE\r\n* 7 EXPUNGE\r\n");
        out.clear();
        expunges(&mut out, &view, &gone, Extensions { condstore: true, qresync: true });
        assert_eq!(out, b"* VANISHED 3:4,9\r\n");
    }

    #[test]
    fn fetch_and_status_lines() {
        let mut out = Vec::new();
        let flags = Flags { system: SystemFlags::SEEN.union(SystemFlags::FLAGGED), keywords: vec!["$Junk".into()] };
        flags_fetch(&mut out, 4, 17, &flags, 99, Extensions { condstore: true, qresync: false });
        assert_eq!(out, b"* 4 FETCH (UID 17 FLAGS (\\Flagged \\Seen $Junk) MODSEQ (99))\r\n");
        out.clear();
        let st = MailboxStatus { messages: 3, unseen: 1, uidnext: 9, uidvalidity: 5, highestmodseq: 12, ..Default::default() };
        status(&mut out, "a \"b\"", &st, &[StatusItem::Messages, StatusItem::UidNext, StatusItem::HighestModSeq]);
        assert_eq!(out, b"* STATUS \"a \\\"b\\\"\" (MESSAGES 3 UIDNEXT 9 HIGHESTMODSEQ 12)\r\n");
    }
}
