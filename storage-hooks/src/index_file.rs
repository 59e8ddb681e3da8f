//! `dormouse-index`, our per-mailbox index: per-message MODSEQ, the flags
//! as last seen (to notice flag changes made by other programs), keywords
//! that did not fit into the 26 Maildir letters, the CRLF size, the
//! HIGHESTMODSEQ and the expunge log. Dovecot does not read it. When it is
//! missing, unreadable or belongs to another UIDVALIDITY it is rebuilt from
//! the uidlist and the Maildir (every MODSEQ starts at 1).
//!
//! Format: the 4 bytes `DMIX`, a version byte ([`INDEX_VERSION`]), then the
//! postcard encoding of [`IndexRecord`].

use serde::{Deserialize, Serialize};

use crate::expunge_log::ExpungeLog;
use crate::Flags;

/// File name inside the mailbox directory.
pub const INDEX_FILE: &str = "dormouse-index";
/// Format version.
pub const INDEX_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"DMIX";

/// What the index remembers about one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMessage {
    /// UID.
    pub uid: u32,
    /// MODSEQ of the last change.
    pub modseq: u64,
    /// All flags as last seen.
    pub flags: Flags,
    /// Keywords stored only here (no Maildir letter left), sorted.
    pub extra_keywords: Vec<String>,
    /// Size with CRLF line endings.
    pub vsize: u64,
}

/// The whole index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// UIDVALIDITY the index belongs to.
    pub uidvalidity: u32,
    /// HIGHESTMODSEQ.
    pub highestmodseq: u64,
    /// Messages sorted by UID.
    pub messages: Vec<IndexMessage>,
    /// Expunges for QRESYNC.
    pub expunge_log: ExpungeLog,
}

/// Borrowed form of [`IndexMessage`] for encoding without copies; it
/// serializes to exactly the same bytes.
#[derive(Debug, Serialize)]
pub struct IndexMessageRef<'a> {
    /// UID.
    pub uid: u32,
    /// MODSEQ.
    pub modseq: u64,
    /// All flags.
    pub flags: &'a Flags,
    /// Index-only keywords.
    pub extra_keywords: &'a [String],
    /// CRLF size.
    pub vsize: u64,
}

#[derive(Serialize)]
struct IndexRecordRef<'a> {
    uidvalidity: u32,
    highestmodseq: u64,
    messages: &'a [IndexMessageRef<'a>],
    expunge_log: &'a ExpungeLog,
}

/// Encodes an index from borrowed parts (same bytes as [`IndexRecord::encode`]).
pub fn encode_parts(uidvalidity: u32, highestmodseq: u64, messages: &[IndexMessageRef<'_>], expunge_log: &ExpungeLog) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(INDEX_VERSION);
    let record = IndexRecordRef { uidvalidity, highestmodseq, messages, expunge_log };
    // Plain data always serializes.
    out.extend(postcard::to_stdvec(&record).expect("postcard encoding of plain data"));
    out
}

impl IndexRecord {
    /// Encodes with magic and version.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(INDEX_VERSION);
        // Owned plain data always serializes.
        out.extend(postcard::to_stdvec(self).expect("postcard encoding of an owned record"));
        out
    }

    /// Decodes; `None` for foreign, truncated or other-version data.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let (&version, body) = rest.split_first()?;
        if version != INDEX_VERSION {
            return None;
        }
        let rec: IndexRecord = postcard::from_bytes(body).ok()?;
        let sorted = rec.messages.windows(2).all(|w| w[0].uid < w[1].uid);
        sorted.then_some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SystemFlags, UidSet};

    #[test]
    fn round_trip_and_rejects_garbage() {
        let mut rec = IndexRecord { uidvalidity: 9, highestmodseq: 12, ..Default::default() };
        rec.messages.push(IndexMessage {
            uid: 3,
            modseq: 12,
            flags: Flags { system: SystemFlags::SEEN, keywords: vec!["$Junk".into(), "k27".into()] },
            extra_keywords: vec!["k27".into()],
            vsize: 100,
        });
        rec.expunge_log.record(11, &UidSet::from_range(1, 2));
        let bytes = rec.encode();
        let refs: Vec<IndexMessageRef<'_>> = rec
            .messages
            .iter()
            .map(|m| IndexMessageRef { uid: m.uid, modseq: m.modseq, flags: &m.flags, extra_keywords: &m.extra_keywords, vsize: m.vsize })
            .collect();
        assert_eq!(encode_parts(rec.uidvalidity, rec.highestmodseq, &refs, &rec.expunge_log), bytes);
        assert_eq!(IndexRecord::decode(&bytes), Some(rec));
        assert_eq!(IndexRecord::decode(&bytes[..bytes.len() - 3]), None);
        assert_eq!(IndexRecord::decode(b"DMIX\x02"), None);
        assert_eq!(IndexRecord::decode(b""), None);
    }
}
