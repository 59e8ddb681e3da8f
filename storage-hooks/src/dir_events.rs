//! Keeps the load cache's listings of `new/` and `cur/` exact without
//! listing the directories again: one inotify instance per process (never
//! one per mailbox: `fs.inotify.max_user_instances` is 128 per user by
//! default) with a watch on `new/` and `cur/` of every mailbox in the load
//! cache, read without blocking by the loads themselves (no thread).
//!
//! Each watched directory keeps the names that arrived or went since the
//! last load, in order; a [`Token`] marks a point in that log. A load
//! ([`catch_up`]) gets the changes after the token its cached listing was
//! proved current at and applies them (see [`apply`]); the token it stores
//! is the one taken *before* it changed anything itself, so its own renames
//! are applied once more next time (harmless: replaying, in order, every
//! change after a listing's token gives the directory as it is, whatever
//! part of them the listing already had).
//!
//! When there is no inotify (not Linux, instance limit reached), a watch
//! cannot be added (`max_user_watches`), the queue overflowed, a directory
//! was removed or renamed, or too many changes piled up between two loads
//! ([`MAX_PENDING`]), [`catch_up`] answers `None` for the directories
//! concerned and the load falls back to the mtime rules of `load_cache`
//! (list the directory again when its mtime moved or was not settled);
//! so does a directory that lost its watch to more recently loaded ones
//! ([`MAX_WATCHED`]). Watches go with their load-cache entry ([`unwatch`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::mailbox_dir::{FileEntry, Listing};
use crate::maildir_file::MaildirFileName;

/// What happened to a name in a watched directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created or renamed here.
    Arrived,
    /// Removed or renamed away.
    Gone,
}

/// A point in a directory's change log (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Which log (a new one after the watch was lost and added again).
    log: u64,
    /// Number of changes of that log before this point.
    seq: u64,
}

/// How long a directory whose changes flooded its log ([`MAX_PENDING`],
/// or the queue overflowed) stays unwatched (mtime rules), so a program
/// renaming files all the time does not make every load read a flood of
/// events as well as list the directory.
pub const FLOOD_BACKOFF: std::time::Duration = std::time::Duration::from_secs(10);

/// Most directories one process watches (64 mailboxes): watches count
/// against `fs.inotify.max_user_watches` together with the Maildir
/// watcher's, which matter more (outside changes are announced through
/// them). Beyond, the least recently loaded directory loses its watch
/// (its next load uses the mtime rules).
pub const MAX_WATCHED: usize = 128;

/// Most changes a directory keeps between two loads; beyond, the log is
/// dropped and the next load lists the directory again (as cheap by then
/// as replaying them: a program renaming files all the time).
pub const MAX_PENDING: usize = 8192;

struct DirLog {
    id: u64,
    wd: i32,
    /// Sequence number of `changes[0]`.
    base: u64,
    changes: Vec<(String, Change)>,
    /// Events were lost: unusable, replaced by the next [`catch_up`].
    broken: bool,
    /// Lost to a flood of changes (see [`FLOOD_BACKOFF`]).
    flooded: bool,
    /// Last load (order of `State::clock`).
    used: u64,
}

#[derive(Default)]
struct State {
    #[cfg(target_os = "linux")]
    inotify: Option<inotify::Inotify>,
    /// Opening inotify was tried (and is not tried again if it failed).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    tried: bool,
    next_log: u64,
    clock: u64,
    dirs: HashMap<PathBuf, DirLog>,
    by_wd: HashMap<i32, PathBuf>,
    /// Flooded directories, unwatched until then.
    backoff: HashMap<PathBuf, std::time::Instant>,
    #[cfg(target_os = "linux")]
    descriptors: HashMap<i32, inotify::WatchDescriptor>,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Changes to `dir` (a `new/` or `cur/`) after `since`, and a token for
/// the state of `dir` right now (the watch is added if needed). The
/// changes are `None` when they are not known exactly (see the module
/// docs): the caller lists the directory instead. The token is `None`
/// when `dir` cannot be watched.
pub fn catch_up(dir: &Path, since: Option<Token>) -> (Option<Vec<(String, Change)>>, Option<Token>) {
    let mut s = state();
    s.drain();
    let changes = since.and_then(|t| {
        let log = s.dirs.get_mut(dir).filter(|l| !l.broken && l.id == t.log && t.seq >= l.base)?;
        let start = usize::try_from(t.seq - log.base).ok()?;
        let changes = log.changes.get(start..)?.to_vec();
        // Nobody needs what came before the token any more (one cache
        // entry per directory, and this is its load).
        log.changes.drain(..start);
        log.base = t.seq;
        Some(changes)
    });
    let token = s.token(dir);
    (changes, token)
}

/// Stops watching `dir` (its load-cache entry is gone).
pub fn unwatch(dir: &Path) {
    let mut s = state();
    if let Some(log) = s.dirs.remove(dir) {
        s.remove_watch(log.wd);
    }
    s.backoff.remove(dir);
}

/// Number of directories watched (for tests and stats).
pub fn watched() -> usize {
    state().dirs.values().filter(|l| !l.broken).count()
}

/// Applies `changes` of the directory `new/` (`in_new`) or `cur/`, in
/// order, to `listing` (keyed by basename; a basename in both directories
/// is kept in `cur/`, as `MailboxDir::rescan` does).
pub fn apply(listing: &mut Listing, in_new: bool, changes: &[(String, Change)]) {
    for (name, change) in changes {
        let Some(basename) = MaildirFileName::basename_of(name) else { continue };
        match change {
            Change::Arrived => {
                if in_new && listing.get(basename).is_some_and(|e| !e.in_new) {
                    continue;
                }
                match listing.get_mut(basename) {
                    Some(e) => {
                        e.file_name.clone_from(name);
                        e.in_new = in_new;
                    }
                    None => {
                        listing.insert(basename.to_string(), FileEntry { file_name: name.clone(), in_new });
                    }
                }
            }
            Change::Gone => {
                if listing.get(basename).is_some_and(|e| e.in_new == in_new && e.file_name == *name) {
                    listing.remove(basename);
                }
            }
        }
    }
}

impl State {
    /// The current token of `dir`, adding its watch (or a new log for a
    /// broken one) first.
    fn token(&mut self, dir: &Path) -> Option<Token> {
        self.clock += 1;
        let clock = self.clock;
        if let Some(log) = self.dirs.get_mut(dir).filter(|l| !l.broken) {
            log.used = clock;
            return Some(Token { log: log.id, seq: log.base + log.changes.len() as u64 });
        }
        let now = std::time::Instant::now();
        if let Some(old) = self.dirs.remove(dir) {
            self.remove_watch(old.wd);
            if old.flooded {
                self.backoff.insert(dir.to_path_buf(), now + FLOOD_BACKOFF);
            }
        }
        if let Some(until) = self.backoff.get(dir).copied() {
            if now < until {
                return None;
            }
            self.backoff.remove(dir);
        }
        while self.dirs.len() >= MAX_WATCHED {
            let Some(oldest) = self.dirs.iter().min_by_key(|(_, l)| l.used).map(|(p, _)| p.clone()) else { break };
            if let Some(old) = self.dirs.remove(&oldest) {
                self.remove_watch(old.wd);
            }
        }
        let wd = self.add_watch(dir)?;
        self.next_log += 1;
        let id = self.next_log;
        self.dirs.insert(dir.to_path_buf(), DirLog { id, wd, base: 0, changes: Vec::new(), broken: false, flooded: false, used: self.clock });
        self.by_wd.insert(wd, dir.to_path_buf());
        Some(Token { log: id, seq: 0 })
    }

    #[cfg(target_os = "linux")]
    fn add_watch(&mut self, dir: &Path) -> Option<i32> {
        use inotify::WatchMask;
        if !self.tried {
            self.tried = true;
            match inotify::Inotify::init() {
                Ok(i) => self.inotify = Some(i),
                Err(e) => {
                    tracing::warn!(error = %e, "no inotify instance for the load cache (fs.inotify.max_user_instances?): directories are listed by mtime");
                }
            }
        }
        let inotify = self.inotify.as_ref()?;
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR
            | WatchMask::DONT_FOLLOW;
        match inotify.watches().add(dir, mask) {
            Ok(wd) => {
                let id = wd.get_watch_descriptor_id();
                // The same directory under another path shares the kernel's
                // watch: the older log cannot tell its changes apart any more.
                if let Some(other) = self.by_wd.get(&id).filter(|p| p.as_path() != dir).cloned() {
                    if let Some(l) = self.dirs.get_mut(&other) {
                        l.broken = true;
                    }
                }
                self.descriptors.insert(id, wd);
                Some(id)
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "no inotify watch: listed by mtime");
                None
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn add_watch(&mut self, _dir: &Path) -> Option<i32> {
        None
    }

    fn remove_watch(&mut self, wd: i32) {
        self.by_wd.remove(&wd);
        #[cfg(target_os = "linux")]
        if let (Some(inotify), Some(d)) = (self.inotify.as_ref(), self.descriptors.remove(&wd)) {
            // EINVAL: the kernel dropped it already (directory gone).
            let _ = inotify.watches().remove(d);
        }
    }

    /// Reads every queued event into the logs, without blocking.
    #[cfg(target_os = "linux")]
    fn drain(&mut self) {
        use inotify::EventMask;
        let Some(inotify) = self.inotify.as_mut() else { return };
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let events = match inotify.read_events(&mut buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        tracing::warn!(error = %e, "reading load-cache inotify events failed: listing by mtime");
                        self.dirs.values_mut().for_each(|l| l.broken = true);
                    }
                    return;
                }
            };
            let mut any = false;
            for ev in events {
                any = true;
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    self.dirs.values_mut().for_each(|l| {
                        l.broken = true;
                        l.flooded = true;
                    });
                    continue;
                }
                let Some(log) = self.by_wd.get(&ev.wd.get_watch_descriptor_id()).and_then(|p| self.dirs.get_mut(p)) else {
                    continue;
                };
                if ev.mask.intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::UNMOUNT) {
                    log.broken = true;
                    continue;
                }
                if ev.mask.contains(EventMask::ISDIR) || log.broken {
                    continue;
                }
                let change = if ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                    Change::Arrived
                } else if ev.mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
                    Change::Gone
                } else {
                    continue;
                };
                let Some(name) = ev.name.and_then(|n| n.to_str()) else {
                    continue;
                };
                if log.changes.len() >= MAX_PENDING {
                    log.broken = true;
                    log.flooded = true;
                    log.changes = Vec::new();
                    continue;
                }
                log.changes.push((name.to_string(), change));
            }
            if !any {
                return;
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn drain(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(entries: &[(&str, bool)]) -> Listing {
        entries
            .iter()
            .map(|(f, n)| (MaildirFileName::basename_of(f).unwrap().to_string(), FileEntry { file_name: f.to_string(), in_new: *n }))
            .collect()
    }

    #[test]
    fn replaying_changes_gives_the_directory_whatever_the_listing_already_had() {
        let changes: Vec<(String, Change)> = vec![
            ("a:2,".into(), Change::Gone),
            ("a:2,S".into(), Change::Arrived),
            ("b:2,".into(), Change::Arrived),
            ("a:2,S".into(), Change::Gone),
            ("a:2,ST".into(), Change::Arrived),
        ];
        let want = listing(&[("a:2,ST", false), ("b:2,", false), ("c:2,", false)]);
        for prefix in 0..=changes.len() {
            // The listing taken at the token, with some of the changes in it already.
            let mut l = listing(&[("a:2,", false), ("c:2,", false)]);
            apply(&mut l, false, &changes[..prefix]);
            apply(&mut l, false, &changes);
            assert_eq!(l, want, "with {prefix} changes already in the listing");
        }
        // new/ -> cur/: either order of the two directories' events.
        let mut l = listing(&[("d", true)]);
        apply(&mut l, true, &[("d".into(), Change::Gone)]);
        apply(&mut l, false, &[("d:2,".into(), Change::Arrived)]);
        assert_eq!(l, listing(&[("d:2,", false)]));
        let mut l = listing(&[("d", true)]);
        apply(&mut l, false, &[("d:2,".into(), Change::Arrived)]);
        apply(&mut l, true, &[("d".into(), Change::Gone)]);
        assert_eq!(l, listing(&[("d:2,", false)]));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn at_most_max_watched_directories_the_least_recently_loaded_lose_theirs() {
        let base = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..MAX_WATCHED + 2).map(|i| base.path().join(i.to_string())).collect();
        dirs.iter().for_each(|d| std::fs::create_dir(d).unwrap());
        // Its own instance: the process's shared state stays out of it.
        let mut s = State::default();
        let first = s.token(&dirs[0]).expect("a watch");
        for d in &dirs[1..MAX_WATCHED] {
            assert!(s.token(d).is_some());
        }
        assert_eq!(s.token(&dirs[0]), Some(first), "loaded again: the most recent now");
        assert!(s.token(&dirs[MAX_WATCHED]).is_some());
        assert!(s.token(&dirs[MAX_WATCHED + 1]).is_some());
        assert_eq!(s.dirs.len(), MAX_WATCHED);
        assert!(s.dirs.contains_key(&dirs[0]));
        assert!(!s.dirs.contains_key(&dirs[1]) && !s.dirs.contains_key(&dirs[2]), "the least recently loaded went");
        assert_eq!(s.by_wd.len(), MAX_WATCHED);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn changes_after_a_token_are_reported_once_and_a_removed_directory_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("cur");
        std::fs::create_dir(&cur).unwrap();
        let (none, token) = catch_up(&cur, None);
        assert!(none.is_none());
        let token = token.expect("a watch");
        std::fs::write(cur.join("x:2,"), b"x").unwrap();
        std::fs::rename(cur.join("x:2,"), cur.join("x:2,S")).unwrap();
        let (changes, next) = catch_up(&cur, Some(token));
        assert_eq!(
            changes.unwrap(),
            [("x:2,".to_string(), Change::Arrived), ("x:2,".to_string(), Change::Gone), ("x:2,S".to_string(), Change::Arrived)]
        );
        let (changes, _) = catch_up(&cur, next);
        assert_eq!(changes.unwrap(), []);
        std::fs::remove_file(cur.join("x:2,S")).unwrap();
        std::fs::remove_dir(&cur).unwrap();
        assert!(catch_up(&cur, next).0.is_none(), "the directory went: its changes are not known");
        unwatch(&cur);
    }
}
