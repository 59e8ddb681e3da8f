//! SEARCHRES (RFC 5182): `SEARCH RETURN (SAVE)` keeps the result, and `$`
//! stands for it in FETCH, STORE, COPY, MOVE, UID EXPUNGE and in search
//! criteria (SEARCH, SORT, THREAD).
//!
//! imap-codec 2.0-alpha parses neither `SAVE` nor `$`. SAVE is taken with
//! the other RETURN options (`op::esearch`); `$` is replaced here, before
//! decoding, by the saved messages written as an ordinary set: their UIDs
//! (UID commands and search criteria, as `UID set`) or their current
//! sequence numbers. The result lives with the selected mailbox, so SELECT
//! and EXAMINE reset it, and a message expunged since is left out.

use crate::op::search::Hit;
use crate::session::machine::trim_crlf;
use crate::session::response::number_set;
use crate::session::Session;

/// A UID no message has: the set that names nothing, for an empty `$` in
/// a command that needs a set (UID commands answer OK for it).
const NO_UID: &str = "4294967295";

/// Positions of the `$` atoms in `bytes` outside quoted strings and
/// literals (a `$` alone, between spaces or parentheses).
fn dollar_positions(bytes: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut i = 0;
    let mut in_quote = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quote {
            match b {
                b'\\' => i += 1,
                b'"' => in_quote = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_quote = true,
            b'{' => {
                // `{n}` or `{n+}` then CRLF then n bytes of data.
                let digits: Vec<u8> = bytes[i + 1..].iter().take_while(|c| c.is_ascii_digit()).copied().collect();
                let n: usize = std::str::from_utf8(&digits).ok().and_then(|d| d.parse().ok()).unwrap_or(0);
                let mut j = i + 1 + digits.len();
                if bytes.get(j) == Some(&b'+') {
                    j += 1;
                }
                if !digits.is_empty() && bytes.get(j) == Some(&b'}') {
                    let data = bytes[j..].iter().position(|&c| c == b'\n').map_or(bytes.len(), |p| j + p + 1);
                    i = data + n;
                    continue;
                }
            }
            b'$' => {
                let before = i.checked_sub(1).map(|p| bytes[p]);
                let after = bytes.get(i + 1).copied();
                if matches!(before, Some(b' ' | b'(')) && matches!(after, None | Some(b' ' | b')' | b'\r' | b'\n')) {
                    found.push(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// What a command does with `$`.
enum Use {
    /// A search criterion (SEARCH, SORT, THREAD): every `$`.
    Criteria,
    /// The sequence set after the command name, at this byte offset.
    Set { at: usize, uid: bool },
}

/// How `line` (the command's first line) uses `$`, if it may.
fn use_of(line: &[u8]) -> Option<Use> {
    let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let (uid, name_index) = match words.get(1) {
        Some(w) if w.eq_ignore_ascii_case(b"UID") => (true, 2),
        Some(_) => (false, 1),
        None => return None,
    };
    let name = words.get(name_index)?.to_ascii_uppercase();
    match name.as_slice() {
        b"SEARCH" | b"SORT" | b"THREAD" => return Some(Use::Criteria),
        b"FETCH" | b"STORE" | b"COPY" | b"MOVE" => {}
        b"EXPUNGE" if uid => {}
        _ => return None,
    }
    let at: usize = words[..=name_index].iter().map(|w| w.len() + 1).sum();
    (words.get(name_index + 1) == Some(&&b"$"[..])).then_some(Use::Set { at, uid })
}

impl Session {
    /// `bytes` with `$` replaced by the saved result; `None` when nothing
    /// is replaced (no `$`, no selected mailbox, another command).
    pub(crate) fn substitute_saved_result(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let sel = self.selected.as_ref()?;
        let line_end = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| p + 1);
        let usage = use_of(trim_crlf(&bytes[..line_end]))?;
        // The saved messages still in the view, as (UID, sequence number).
        let saved: Vec<(u32, u32)> = sel
            .saved_result
            .iter()
            .filter_map(|uid| {
                let seq = sel.seq_of(uid)?;
                (!sel.view[seq - 1].expunged).then(|| (uid, u32::try_from(seq).unwrap_or(u32::MAX)))
            })
            .collect();
        let uids: Vec<u32> = saved.iter().map(|&(u, _)| u).collect();
        let mut out = Vec::with_capacity(bytes.len() + 16);
        match usage {
            Use::Criteria => {
                let positions = dollar_positions(bytes);
                if positions.is_empty() {
                    return None;
                }
                let key = if uids.is_empty() { "NOT ALL".to_string() } else { format!("UID {}", number_set(&uids)) };
                let mut last = 0;
                for p in positions {
                    out.extend_from_slice(&bytes[last..p]);
                    out.extend_from_slice(key.as_bytes());
                    last = p + 1;
                }
                out.extend_from_slice(&bytes[last..]);
            }
            Use::Set { at, uid } => {
                let set = match (uid, saved.is_empty()) {
                    (_, true) => NO_UID.to_string(),
                    (true, false) => number_set(&uids),
                    (false, false) => number_set(&saved.iter().map(|&(_, s)| s).collect::<Vec<_>>()),
                };
                // An empty `$` names no message: the UID form of the
                // command, which answers OK for a UID nobody has (the
                // command's untagged output would be empty either way).
                let (head, name) = bytes[..at].split_at(bytes[..at - 1].iter().rposition(|&b| b == b' ').map_or(0, |p| p + 1));
                out.extend_from_slice(head);
                if !uid && saved.is_empty() {
                    out.extend_from_slice(b"UID ");
                }
                out.extend_from_slice(name);
                out.extend_from_slice(set.as_bytes());
                out.extend_from_slice(&bytes[at + 1..]);
            }
        }
        Some(out)
    }

    /// Replaces the saved result of the selected mailbox.
    pub(crate) fn set_saved_result(&mut self, uids: Vec<u32>) {
        if let Some(sel) = self.selected.as_mut() {
            sel.saved_result = uids.into_iter().collect();
        }
    }

    /// Saves a SEARCH result (`RETURN (SAVE ...)`): with MIN and/or MAX
    /// but neither ALL nor COUNT, only those messages (RFC 5182 §2.1).
    pub(crate) fn save_search_result(&mut self, r: crate::op::esearch::ReturnOptions, found: &[Hit]) {
        let uids: Vec<u32> = if (r.min || r.max) && !(r.all || r.count) {
            let mut ends = Vec::new();
            if let (true, Some(h)) = (r.min, found.first()) {
                ends.push(h.uid);
            }
            if let (true, Some(h)) = (r.max, found.last()) {
                ends.push(h.uid);
            }
            ends.sort_unstable();
            ends.dedup();
            ends
        } else {
            found.iter().map(|h| h.uid).collect()
        };
        self.set_saved_result(uids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_dollar_atoms_only() {
        assert_eq!(dollar_positions(b"a SEARCH $ UNSEEN\r\n"), [9]);
        assert_eq!(dollar_positions(b"a SEARCH OR $ (1 $)\r\n"), [12, 17]);
        assert!(dollar_positions(b"a SEARCH SUBJECT \"$\" KEYWORD $x\r\n").is_empty());
        assert!(dollar_positions(b"a SEARCH SUBJECT {3+}\r\n $ \r\n").is_empty());
        assert!(matches!(use_of(b"a UID FETCH $ FLAGS"), Some(Use::Set { at: 12, uid: true })));
        assert!(matches!(use_of(b"a COPY $ Trash"), Some(Use::Set { at: 7, uid: false })));
        assert!(use_of(b"a FETCH 1:* FLAGS").is_none());
        assert!(use_of(b"a EXPUNGE $").is_none());
    }
}
