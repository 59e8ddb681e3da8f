//! Reading on a full disk: which failures mean "no space", and a log that
//! reports each cause once instead of once per request.
//!
//! When the filesystem (or the user's quota) is full, our caches and
//! indexes cannot be rewritten. Reads then serve the state already on disk
//! from memory (see `LockedMailbox::load_read_only`); this module keeps the
//! log readable: the first failure of one kind on one mailbox is logged at
//! `warn`, repeats are silent until a write on that mailbox works again,
//! which is logged once at `info`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::StoreError;

/// True if `e` is an I/O error meaning the filesystem or quota is full
/// (`ENOSPC`, `EDQUOT`).
pub fn is_storage_full_io(e: &std::io::Error) -> bool {
    matches!(rustix::io::Errno::from_io_error(e), Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT))
}

fn noted() -> MutexGuard<'static, HashSet<(PathBuf, &'static str)>> {
    static NOTED: OnceLock<Mutex<HashSet<(PathBuf, &'static str)>>> = OnceLock::new();
    NOTED.get_or_init(|| Mutex::new(HashSet::new())).lock().unwrap_or_else(|e| e.into_inner())
}

/// Logs that `what` could not be written for the mailbox at `path`, once
/// per (mailbox, what) until [`recovered`] is called for the mailbox.
pub fn note(path: &Path, what: &'static str, error: &StoreError) {
    if noted().insert((path.to_path_buf(), what)) {
        tracing::warn!(mailbox = %path.display(), what, error = %error,
            "storage full: serving from memory without writing (logged once until writes work again)");
    }
}

/// A write on the mailbox at `path` worked: earlier notes are cleared (and
/// the recovery is logged if there were any).
pub fn recovered(path: &Path) {
    let mut set = noted();
    if set.is_empty() {
        return;
    }
    let before = set.len();
    set.retain(|(p, _)| p != path);
    if set.len() != before {
        tracing::info!(mailbox = %path.display(), "storage writable again");
    }
}
