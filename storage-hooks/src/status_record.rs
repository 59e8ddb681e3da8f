//! `dormouse-status`, the per-mailbox status record that STATUS reads
//! without scanning the Maildir.
//!
//! It stores the [`MailboxStatus`] together with a [`FsStamp`]: the mtimes
//! of `cur/` and `new/` and the identity (inode, size, mtime) of
//! `dovecot-uidlist` and `dormouse-index`, taken right after our last change.
//! (Our uidlist/index writes replace the files, so every change of ours
//! gives them a new inode.) When any of them
//! differs, another program (Dovecot, procmail, a mail client) touched the
//! mailbox and the record is rebuilt by a scan. A directory mtime can only
//! be trusted once it is older than a timestamp tick (a change in the same
//! tick leaves it unchanged), so a record whose directories changed less
//! than a tick ago (see [`FsStamp::settled`]) when it was taken is not
//! trusted either: STATUS rescans for that short while after each change.
//!
//! Format: `DMST`, a version byte ([`STATUS_VERSION`]), postcard of [`StatusRecord`].

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::MailboxStatus;

/// File name inside the mailbox directory.
pub const STATUS_FILE: &str = "dormouse-status";
/// Format version.
pub const STATUS_VERSION: u8 = 2;
const MAGIC: &[u8; 4] = b"DMST";

/// Identity of the directories and uidlist at the time of a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsStamp {
    /// `cur/` mtime (seconds, nanoseconds).
    pub cur_mtime: (i64, i64),
    /// `new/` mtime.
    pub new_mtime: (i64, i64),
    /// `dovecot-uidlist` inode, size and mtime seconds/nanoseconds (zeros if missing).
    pub uidlist: (u64, u64, i64, i64),
    /// `dormouse-index` identity, same fields: catches changes that touch
    /// only our index (keywords beyond 26, MODSEQ reconciliation).
    pub index: (u64, u64, i64, i64),
    /// `dormouse-index.log` identity (changes appended to the index).
    pub index_log: (u64, u64, i64, i64),
}

impl FsStamp {
    /// Takes the stamp of the mailbox directory `dir`; `None` if `cur/` or
    /// `new/` is missing.
    pub fn take(dir: &Path) -> Option<Self> {
        let cur = std::fs::metadata(dir.join("cur")).ok()?;
        let new = std::fs::metadata(dir.join("new")).ok()?;
        let identity = |name: &str| {
            std::fs::metadata(dir.join(name)).map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec())).unwrap_or_default()
        };
        Some(FsStamp {
            cur_mtime: (cur.mtime(), cur.mtime_nsec()),
            new_mtime: (new.mtime(), new.mtime_nsec()),
            uidlist: identity("dovecot-uidlist"),
            index: identity(crate::index_file::INDEX_FILE),
            index_log: identity(crate::index_log::INDEX_LOG_FILE),
        })
    }
}

/// A whole-second directory mtime this close (or closer) to the time a
/// stamp was taken may share its timestamp tick with a later change, which
/// then would not change the mtime; such a stamp is not trusted. Generous
/// for coarse filesystems (some filesystems' ticks are 1-2 s); sub-second
/// mtimes wait [`crate::load_cache::FINE_SETTLE_MS`] (kernel tick clock).
pub const SETTLE_MS: i64 = 2000;

impl FsStamp {
    /// True if the timestamp ticks of both directory mtimes were over at
    /// `taken_at_ms` (when the stamp was taken; see
    /// [`crate::load_cache::settled`]), so any later change to the
    /// directories is bound to change their mtimes.
    pub fn settled(&self, taken_at_ms: u64) -> bool {
        [self.cur_mtime, self.new_mtime].into_iter().all(|(s, ns)| crate::load_cache::settled((0, s, ns), taken_at_ms))
    }
}

/// The persisted record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// Counters.
    pub status: MailboxStatus,
    /// Filesystem identity when the counters were computed.
    pub stamp: FsStamp,
    /// When the stamp was taken (ms since the epoch).
    pub taken_at_ms: u64,
}

impl StatusRecord {
    /// True if the record can be trusted for a directory now stamped `now`:
    /// the same stamp, and that stamp was settled when taken.
    pub fn is_current(&self, now: &FsStamp) -> bool {
        self.stamp == *now && self.stamp.settled(self.taken_at_ms)
    }
}

impl StatusRecord {
    /// Encodes with magic and version.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(STATUS_VERSION);
        out.extend(postcard::to_stdvec(self).expect("postcard encoding of an owned record"));
        out
    }

    /// Decodes; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let (&version, body) = rest.split_first()?;
        (version == STATUS_VERSION).then(|| postcard::from_bytes(body).ok()).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_stamp() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(FsStamp::take(dir.path()), None);
        std::fs::create_dir(dir.path().join("cur")).unwrap();
        std::fs::create_dir(dir.path().join("new")).unwrap();
        let stamp = FsStamp::take(dir.path()).unwrap();
        let rec = StatusRecord {
            status: MailboxStatus { messages: 3, highestmodseq: 9, ..Default::default() },
            stamp,
            taken_at_ms: crate::durable::now_ms(),
        };
        assert!(!rec.is_current(&stamp), "directories changed just now: not settled");
        let later = StatusRecord { taken_at_ms: rec.taken_at_ms + SETTLE_MS as u64 + 1000, ..rec };
        assert!(later.is_current(&stamp));
        let bytes = rec.encode();
        assert_eq!(StatusRecord::decode(&bytes), Some(rec));
        assert_eq!(StatusRecord::decode(&bytes[..5]), None);
        std::fs::write(dir.path().join("dovecot-uidlist"), "3 V1 N1\n").unwrap();
        assert_ne!(FsStamp::take(dir.path()), Some(stamp), "uidlist change is noticed");
    }
}
