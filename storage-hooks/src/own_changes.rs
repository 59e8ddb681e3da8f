//! Renames and removals this process just made in `new/` and `cur/` (flag
//! changes, `\Recent` moves, expunges under a mailbox lock; new messages
//! renamed into `new/` by APPEND, delivery and COPY, numbered by the commit
//! that follows), so that this
//! process's watcher does not take its own change for another program's and
//! reconcile (a full locked load) after every STORE or EXPUNGE of a session.
//!
//! Each change is remembered as the exact inotify event it causes (a path and
//! whether a name went or arrived) and is consumed by that one event: another
//! program touching the same name afterwards still causes its own event,
//! which is not in the set. Entries the watcher never consumes (no watcher
//! in this process, or an event lost in an overflow, which rescans anyway)
//! expire after [`OWN_CHANGE_TTL`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long an own change waits for its event.
pub const OWN_CHANGE_TTL: Duration = Duration::from_secs(10);

/// What happened to a name in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// Renamed away or removed (inotify `IN_MOVED_FROM` / `IN_DELETE`).
    Gone,
    /// Renamed here (inotify `IN_MOVED_TO`).
    Arrived,
}

type Pending = HashMap<(PathBuf, Change), (u32, Instant)>;

fn pending() -> MutexGuard<'static, Pending> {
    static PENDING: OnceLock<Mutex<Pending>> = OnceLock::new();
    PENDING.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Notes that this process just made `change` to the file at `path`.
pub fn record(path: &Path, change: Change) {
    let now = Instant::now();
    let mut p = pending();
    if p.len() > 4096 {
        p.retain(|_, (_, at)| now.duration_since(*at) < OWN_CHANGE_TTL);
    }
    let slot = p.entry((path.to_path_buf(), change)).or_insert((0, now));
    *slot = (slot.0 + 1, now);
}

/// True (and forgotten) if an event of `change` at `path` is one of ours.
pub fn take(path: &Path, change: Change) -> bool {
    let mut p = pending();
    let key = (path.to_path_buf(), change);
    let Some((count, at)) = p.get_mut(&key) else { return false };
    let ours = at.elapsed() < OWN_CHANGE_TTL;
    *count -= 1;
    if *count == 0 || !ours {
        p.remove(&key);
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_taken_once_and_only_for_its_kind() {
        let path = Path::new("/nonexistent/own-changes-test/cur/a:2,S");
        record(path, Change::Arrived);
        assert!(!take(path, Change::Gone), "another kind of event is not ours");
        assert!(take(path, Change::Arrived));
        assert!(!take(path, Change::Arrived), "a second event at the same name is someone else's");
    }
}
