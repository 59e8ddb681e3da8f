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
//!
//! Bounded three ways ([`Limits`], set from the configuration's `[storage]`
//! section by [`configure`]): at most [`Limits::max_mailboxes`] mailboxes and
//! [`Limits::max_messages`] messages (least recently used go first), and an
//! entry unused for [`Limits::idle`] is dropped, by the next commit or by a
//! background sweep thread (started with the first entry), so a process
//! whose clients have left gives the memory back without any further call.
//! The core (`Cache`) takes the time as an argument.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

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
    /// Where the listing is in the directory's change log (see
    /// `dir_events`): the changes after it are known exactly, no listing
    /// needed. `None`: not watched, mtime rules only.
    pub events: Option<crate::dir_events::Token>,
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

/// Bounds of the cache (see [`configure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most messages over all cached mailboxes.
    pub max_messages: usize,
    /// Most cached mailboxes.
    pub max_mailboxes: usize,
    /// An entry not used for this long is dropped, also when nothing else
    /// happens (a background sweep, see [`SWEEP_EVERY_MAX`]): an idle
    /// process gives the memory back once its clients are gone.
    pub idle: Duration,
}

/// Default for [`Limits::max_mailboxes`].
pub const MAX_CACHED_MAILBOXES: usize = 256;

/// Default for [`Limits::idle`].
pub const IDLE_EVICT: Duration = Duration::from_secs(120);

/// Longest pause of the background sweep (it runs every quarter of
/// [`Limits::idle`], at most this long, at least a second).
pub const SWEEP_EVERY_MAX: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Limits { max_messages: MAX_CACHED_MESSAGES, max_mailboxes: MAX_CACHED_MAILBOXES, idle: IDLE_EVICT }
    }
}

/// The cache proper: entries by mailbox directory, each stamped with its
/// last use. All time comes in as `now` (milliseconds of [`now_ms`]; no
/// clock inside), so tests drive it.
#[derive(Default)]
pub(crate) struct Cache {
    /// Entry, use order (higher = more recent) and last-use time.
    entries: HashMap<PathBuf, (u64, u64, Cached)>,
    /// Messages over all `entries` (kept as they come and go, so a commit
    /// does not sum over every cached mailbox).
    messages: usize,
    clock: u64,
    /// INTERNALDATEs per mailbox and when they were last asked for.
    internal_dates: HashMap<PathBuf, (u64, Dates)>,
}

/// INTERNALDATEs of one mailbox by basename (see [`internal_dates`]).
pub type Dates = Arc<Mutex<foldhash::HashMap<String, i64>>>;

impl Cache {
    pub(crate) fn remove(&mut self, mailbox_dir: &Path) -> Option<Cached> {
        let (_, _, entry) = self.entries.remove(mailbox_dir)?;
        self.messages -= entry.uidlist.records.len();
        Some(entry)
    }

    /// Drops an entry and its INTERNALDATEs.
    fn evict(&mut self, mailbox_dir: &Path) {
        self.remove(mailbox_dir);
        self.internal_dates.remove(mailbox_dir);
        crate::dir_events::unwatch(&mailbox_dir.join("new"));
        crate::dir_events::unwatch(&mailbox_dir.join("cur"));
    }

    /// Stores `entry` as used at `now`, then applies `limits`.
    pub(crate) fn put(&mut self, mailbox_dir: &Path, entry: Cached, now: u64, limits: &Limits) {
        self.clock += 1;
        let clock = self.clock;
        self.remove(mailbox_dir);
        self.messages += entry.uidlist.records.len();
        self.entries.insert(mailbox_dir.to_path_buf(), (clock, now, entry));
        self.sweep(now, limits);
        let over = |c: &Cache| c.entries.len() > limits.max_mailboxes.max(1) || c.messages > limits.max_messages;
        while over(self) && self.entries.len() > 1 {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (used, _, _))| *used).map(|(p, _)| p.clone()) else {
                break;
            };
            self.evict(&oldest);
        }
    }

    /// Drops every entry (and INTERNALDATE table) not used since
    /// `now - limits.idle`. Returns the number of entries dropped.
    pub(crate) fn sweep(&mut self, now: u64, limits: &Limits) -> usize {
        let idle_ms = u64::try_from(limits.idle.as_millis()).unwrap_or(u64::MAX);
        let idle = |at: &u64| now.saturating_sub(*at) > idle_ms;
        let stale: Vec<PathBuf> = self.entries.iter().filter(|(_, (_, at, _))| idle(at)).map(|(p, _)| p.clone()).collect();
        for p in &stale {
            self.evict(p);
        }
        // A table without its entry that is still in use (its entry is
        // out for a load) is stamped by that use and stays.
        self.internal_dates.retain(|p, (at, _)| self.entries.contains_key(p) || !idle(at));
        stale.len()
    }

    /// The INTERNALDATE table of `mailbox_dir`, marked used at `now`.
    pub(crate) fn internal_dates(&mut self, mailbox_dir: &Path, now: u64) -> Dates {
        let slot = self.internal_dates.entry(mailbox_dir.to_path_buf()).or_insert_with(|| (now, Dates::default()));
        slot.0 = now;
        slot.1.clone()
    }

    /// Number of cached mailboxes.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if `mailbox_dir` has an entry.
    pub(crate) fn contains(&self, mailbox_dir: &Path) -> bool {
        self.entries.contains_key(mailbox_dir)
    }
}

struct Global {
    cache: Mutex<Cache>,
    limits: Mutex<Limits>,
    sweeper: Once,
}

fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| Global { cache: Mutex::default(), limits: Mutex::new(Limits::default()), sweeper: Once::new() })
}

fn cache() -> MutexGuard<'static, Cache> {
    // A panic while holding the lock leaves plain data: still usable.
    global().cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The limits in force.
pub fn limits() -> Limits {
    *global().limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sets the limits of this process's cache (from the configuration's
/// `[storage]` section) and applies them at once.
pub fn configure(limits: Limits) {
    *global().limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = limits;
    sweep(now_ms());
}

/// The cache's clock: milliseconds on the monotonic clock, from an origin
/// one day before this process first asked (so any "a while ago" a test
/// needs is a plain subtraction).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let since = START.get_or_init(Instant::now).elapsed();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX).saturating_add(86_400_000)
}

/// Drops entries idle at `now` ([`now_ms`]; see [`Limits::idle`]);
/// returns how many. The background sweep calls it; so can a process's
/// own periodic tick.
pub fn sweep(now: u64) -> usize {
    let limits = limits();
    // SEARCH's header cache gives its memory back the same way.
    crate::header_cache::sweep(now, limits.idle);
    cache().sweep(now, &limits)
}

/// Starts the background sweep once per process, at the first entry: a
/// thread that wakes every quarter of the idle time (1 s to
/// [`SWEEP_EVERY_MAX`]) and drops idle entries, so memory is given back
/// even when no load happens any more.
fn start_sweeper() {
    global().sweeper.call_once(|| {
        let spawned = std::thread::Builder::new().name("load-cache-sweep".into()).spawn(|| {
            let mut last = now_ms();
            loop {
                // Wakes every second, so new limits (`configure`) apply soon.
                std::thread::sleep(Duration::from_secs(1));
                let pause = (limits().idle / 4).clamp(Duration::from_secs(1), SWEEP_EVERY_MAX);
                let now = now_ms();
                if now.saturating_sub(last) + 10 < u64::try_from(pause.as_millis()).unwrap_or(u64::MAX) {
                    continue;
                }
                last = now;
                let dropped = sweep(now);
                if dropped > 0 {
                    tracing::debug!(dropped, "load cache: dropped idle mailboxes");
                }
            }
        });
        if let Err(e) = spawned {
            // Only the background part: loads and commits still sweep.
            tracing::warn!(error = %e, "load cache: no background sweep thread");
        }
    });
}

/// Takes the entry of `mailbox_dir` out of the cache (the caller holds the
/// mailbox lock and puts it back with [`put`] after its commit).
pub fn take(mailbox_dir: &Path) -> Option<Cached> {
    cache().remove(mailbox_dir)
}

/// Stores the state of `mailbox_dir` right after a commit (under its lock),
/// dropping idle entries and the least recently used ones beyond the
/// [`Limits`].
pub fn put(mailbox_dir: &Path, entry: Cached) {
    put_at(mailbox_dir, entry, now_ms());
}

/// [`put`] as of `now` ([`now_ms`]; tests backdate entries with it).
pub fn put_at(mailbox_dir: &Path, entry: Cached, now: u64) {
    let limits = limits();
    cache().put(mailbox_dir, entry, now, &limits);
    start_sweeper();
}

/// True if `mailbox_dir` has an entry now.
pub fn is_cached(mailbox_dir: &Path) -> bool {
    cache().contains(mailbox_dir)
}

/// Drops what is cached about `mailbox_dir` (deleted or renamed mailbox).
pub fn forget(mailbox_dir: &Path) {
    cache().evict(mailbox_dir);
}

/// INTERNALDATEs (file mtimes) of one mailbox's messages by basename, read
/// once per message: the mtime of a message file is set before it enters
/// `new/` and survives every rename, so it never has to be read again.
pub fn internal_dates(mailbox_dir: &Path) -> Dates {
    cache().internal_dates(mailbox_dir, now_ms())
}

#[cfg(test)]
#[path = "load_cache_tests.rs"]
mod tests;
