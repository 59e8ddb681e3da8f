//! `dormouse-status`, the per-mailbox status record that STATUS reads
//! without scanning the Maildir.
//!
//! It stores the [`MailboxStatus`] together with a [`FsStamp`]: the mtimes
//! of `cur/` and `new/` and the identity (inode, size, mtime) of
//! `dovecot-uidlist`, taken right after our last change. When any of them
//! differs, another program (Dovecot, procmail, a mail client) touched the
//! mailbox and the record is rebuilt by a scan. Known limit: a foreign
//! change within the same filesystem timestamp tick as our own last change,
//! that touches neither the uidlist nor the directory sizes, goes unnoticed
//! until the next change.
//!
//! Format: `DMST`, a version byte ([`STATUS_VERSION`]), postcard of [`StatusRecord`].

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::MailboxStatus;

/// File name inside the mailbox directory.
pub const STATUS_FILE: &str = "dormouse-status";
/// Format version.
pub const STATUS_VERSION: u8 = 1;
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
}

impl FsStamp {
    /// Takes the stamp of the mailbox directory `dir`; `None` if `cur/` or
    /// `new/` is missing.
    pub fn take(dir: &Path) -> Option<Self> {
        let cur = std::fs::metadata(dir.join("cur")).ok()?;
        let new = std::fs::metadata(dir.join("new")).ok()?;
        let uidlist = std::fs::metadata(dir.join("dovecot-uidlist"))
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
            .unwrap_or_default();
        Some(FsStamp {
            cur_mtime: (cur.mtime(), cur.mtime_nsec()),
            new_mtime: (new.mtime(), new.mtime_nsec()),
            uidlist,
        })
    }
}

/// The persisted record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// Counters.
    pub status: MailboxStatus,
    /// Filesystem identity when the counters were computed.
    pub stamp: FsStamp,
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
        let rec = StatusRecord { status: MailboxStatus { messages: 3, highestmodseq: 9, ..Default::default() }, stamp };
        let bytes = rec.encode();
        assert_eq!(StatusRecord::decode(&bytes), Some(rec));
        assert_eq!(StatusRecord::decode(&bytes[..5]), None);
        std::fs::write(dir.path().join("dovecot-uidlist"), "3 V1 N1\n").unwrap();
        assert_ne!(FsStamp::take(dir.path()), Some(stamp), "uidlist change is noticed");
    }
}
