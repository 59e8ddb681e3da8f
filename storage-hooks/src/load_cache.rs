//! In-process cache of what [`crate::locked_mailbox::LockedMailbox::load`]
//! reads from disk: the parsed `dovecot-uidlist`, the index (snapshot plus
//! replayed log) and the directory listing of `new/` and `cur/`, per
//! mailbox directory, each with what proves it still current.
//!
//! Without it every locked load re-reads and re-parses the whole uidlist and
//! index and lists both directories: on a 30,000-message INBOX that is most
//! of the cost of a SELECT, a STATUS after a change, a STORE or an APPEND.
//! With it a load costs a few `stat` calls when nothing changed, reads only
//! the bytes other processes appended to the uidlist or the index log (see
//! `load_catch_up`), and lists only a directory whose mtime moved.
//!
//! Trust rules (the same ones the status record and Dovecot's maildir sync
//! use): a file is current when its (inode, size, mtime) is unchanged; a
//! directory's listing is current when its (inode, mtime) is unchanged *and*
//! that mtime's timestamp tick was over when the listing was read (see
//! [`settled`]), since a change in the same tick as an earlier one leaves
//! the mtime as it was. Right after any change to a directory (ours included) its next
//! load therefore lists it again, once.
//!
//! An entry is taken out of the cache by a locked load and put back by its
//! commit, still under the mailbox lock, so a load that fails or is dropped
//! leaves no entry behind that could be stale. Read-only loads (full disk)
//! do not use it. It is a cache: losing it costs one full load.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::index_file::IndexRecord;
use crate::mailbox_dir::Listing;
use crate::status_record::SETTLE_MS;
use crate::uidlist::UidList;

/// Identity of a file: inode, size, mtime seconds, mtime nanoseconds.
pub type FileId = (u64, u64, i64, i64);

/// Identity of a directory: inode, mtime seconds, mtime nanoseconds.
pub type DirId = (u64, i64, i64);

/// Most messages kept over all cached mailboxes of this process; the least
/// recently used mailboxes go first beyond it (one 30,000-message mailbox
/// takes about 10 MB).
pub const MAX_CACHED_MESSAGES: usize = 600_000;

/// A file we parsed, with its identity and its last bytes (see
/// `load_catch_up::appended`: they prove that a grown file is the same
/// file with records appended, not a rewrite that got the old inode).
#[derive(Debug, Clone, Default)]
pub struct CachedFile {
    /// Identity when it was read.
    pub id: FileId,
    /// Its last (at most [`TAIL_LEN`]) bytes then.
    pub tail: Vec<u8>,
}

/// How many last bytes of a file [`CachedFile::tail`] keeps.
pub const TAIL_LEN: u64 = 64;

impl CachedFile {
    /// Identity and tail of `path` now; `None` if it is missing or unreadable.
    pub fn take(path: &Path) -> Option<Self> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        let len = meta.size().min(TAIL_LEN);
        let mut tail = vec![0; len as usize];
        file.read_exact_at(&mut tail, meta.size() - len).ok()?;
        Some(CachedFile { id: (meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()), tail })
    }
}

/// What is known about one of `new/` and `cur/`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirState {
    /// Identity the listing belongs to.
    pub id: DirId,
    /// True if the listing was read when that mtime was already settled, so
    /// any later change must have moved it.
    pub trusted: bool,
}

/// Identity of directory `path`; `None` if missing.
pub fn dir_id(path: &Path) -> Option<DirId> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.mtime(), m.mtime_nsec()))
}

/// How long after a directory's mtime a listing of it is still not trusted
/// when the mtime has a sub-second part. Such timestamps come from the
/// kernel's tick clock (at most 10 ms a tick on Linux): once a tick is over,
/// any later change gets a later mtime. 200 ms also covers a modest clock
/// difference to an NFS server; whole-second mtimes (second-granularity
/// filesystems) wait [`SETTLE_MS`] as the status record does.
pub const FINE_SETTLE_MS: i64 = 200;

/// True if a listing read at `now_ms` of a directory with identity `id`
/// can be trusted later while the identity stays the same: the timestamp
/// tick of its mtime was over when it was read, so a later change in that
/// directory must have moved the mtime.
pub fn settled(id: DirId, now_ms: u64) -> bool {
    let mtime_ms = id.1.saturating_mul(1000).saturating_add(id.2 / 1_000_000);
    let window = if id.2 != 0 { FINE_SETTLE_MS } else { SETTLE_MS };
    mtime_ms.saturating_add(window) <= i64::try_from(now_ms).unwrap_or(i64::MAX)
}

/// The parsed state of one mailbox directory as of its last commit.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The uidlist as on disk.
    pub uidlist: UidList,
    /// Its identity and tail.
    pub uidlist_file: CachedFile,
    /// Whether records can be appended to the file as it is (see
    /// `UidList::parse_appendable`).
    pub uidlist_appendable: bool,
    /// Snapshot plus replayed log (`None`: no usable snapshot).
    pub index: Option<IndexRecord>,
    /// Identity of `dormouse-index` (`None`: missing).
    pub index_file: Option<FileId>,
    /// Identity and tail of `dormouse-index.log` (`None`: missing).
    pub index_log_file: Option<CachedFile>,
    /// Length of the intact log (see `index_log::load`).
    pub index_log_len: Option<u64>,
    /// Files of `new/` and `cur/` by basename.
    pub listing: Listing,
    /// State of `new/` for `listing`.
    pub new_dir: DirState,
    /// State of `cur/` for `listing`.
    pub cur_dir: DirState,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<PathBuf, (u64, Cached)>,
    /// Messages over all `entries` (kept as they come and go, so a commit
    /// does not sum over every cached mailbox).
    messages: usize,
    clock: u64,
    internal_dates: HashMap<PathBuf, Arc<Mutex<foldhash::HashMap<String, i64>>>>,
}

impl Cache {
    fn remove(&mut self, mailbox_dir: &Path) -> Option<Cached> {
        let (_, entry) = self.entries.remove(mailbox_dir)?;
        self.messages -= entry.uidlist.records.len();
        Some(entry)
    }
}

fn cache() -> MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    // A panic while holding the lock leaves plain data: still usable.
    CACHE.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes the entry of `mailbox_dir` out of the cache (the caller holds the
/// mailbox lock and puts it back with [`put`] after its commit).
pub fn take(mailbox_dir: &Path) -> Option<Cached> {
    cache().remove(mailbox_dir)
}

/// Stores the state of `mailbox_dir` right after a commit (under its lock),
/// evicting the least recently used mailboxes beyond [`MAX_CACHED_MESSAGES`].
pub fn put(mailbox_dir: &Path, entry: Cached) {
    let mut c = cache();
    c.clock += 1;
    let clock = c.clock;
    c.remove(mailbox_dir);
    c.messages += entry.uidlist.records.len();
    c.entries.insert(mailbox_dir.to_path_buf(), (clock, entry));
    while c.messages > MAX_CACHED_MESSAGES && c.entries.len() > 1 {
        let Some(oldest) = c.entries.iter().min_by_key(|(_, (used, _))| *used).map(|(p, _)| p.clone()) else {
            break;
        };
        c.remove(&oldest);
        c.internal_dates.remove(&oldest);
    }
}

/// Drops what is cached about `mailbox_dir` (deleted or renamed mailbox).
pub fn forget(mailbox_dir: &Path) {
    let mut c = cache();
    c.remove(mailbox_dir);
    c.internal_dates.remove(mailbox_dir);
}

/// INTERNALDATEs (file mtimes) of one mailbox's messages by basename, read
/// once per message: the mtime of a message file is set before it enters
/// `new/` and survives every rename, so it never has to be read again.
pub fn internal_dates(mailbox_dir: &Path) -> Arc<Mutex<foldhash::HashMap<String, i64>>> {
    cache().internal_dates.entry(mailbox_dir.to_path_buf()).or_default().clone()
}

#[cfg(test)]
#[path = "load_cache_tests.rs"]
mod tests;
