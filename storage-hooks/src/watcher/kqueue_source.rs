//! The BSD/macOS system-call part of the watcher: one kqueue per process,
//! one `EVFILT_VNODE` registration per watched directory (an open directory
//! descriptor), and reading its events without blocking forever.
//!
//! kqueue only says "this directory changed" (`NOTE_WRITE`, `NOTE_EXTEND`,
//! `NOTE_ATTRIB`, `NOTE_LINK`, `NOTE_DELETE`, `NOTE_RENAME`), never which
//! name, so every event becomes [`RawKind::DirChanged`]: the shared logic
//! reconciles that mailbox or re-reads the folders of that Maildir root.
//! Differences from inotify:
//! - Every watch holds an open descriptor; running out of descriptors
//!   (`EMFILE`/`ENFILE`) is reported as `ENOSPC`, so the shared watch budget
//!   and its "exhausted: log once, stat-poll the user" path apply unchanged.
//! - There is no queue overflow: the kernel keeps one pending note per
//!   registration (flags are or-ed together), so nothing is lost and
//!   [`RawEvent::Overflow`] is never produced.
//! - There is no close-after-write note: a file copied straight into `new/`
//!   (not through `tmp/`) may be reconciled before its writer closed it.
//! - The `kqueue` crate re-submits every registration when one is added
//!   (`Watcher::watch`), so adding N watches costs O(N²) kernel changes in
//!   total, and it finds an event's registration by a linear scan.
//!
//! - A change in `new/` lists `new/` to find files a live dormouse is still
//!   numbering (see `own_files.rs`); while such a file stays in `new/`, every
//!   change there waits its short grace before the reconcile.
//!
//! This backend and its tests have only been compile- and clippy-checked
//! for `x86_64-unknown-freebsd`; they have never run on a BSD or macOS kernel.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kqueue::{EventData, EventFilter, FilterFlag, Ident, Vnode, Watcher};

use super::{DirKind, EventReader, RawEvent, RawKind, WatchId, WatchRegistry};

/// Longest the kqueue lock is held while waiting, so adding a watch from a
/// session thread waits at most this long for the watcher thread.
const WAIT_SLICE: Duration = Duration::from_millis(10);

/// The kqueue and the directories registered on it.
struct Queue {
    watcher: Watcher,
    /// Open directory per id (the descriptor number).
    dirs: HashMap<i32, File>,
}

type SharedQueue = Arc<Mutex<Queue>>;

fn lock(queue: &SharedQueue) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds and removes directory registrations on the process's kqueue.
pub(crate) struct KqueueWatches {
    queue: SharedQueue,
}

/// Reads the kqueue's events.
pub(crate) struct KqueueReader {
    queue: SharedQueue,
}

/// Opens the process's kqueue.
pub(crate) fn open() -> io::Result<(Box<dyn WatchRegistry>, Box<dyn EventReader>)> {
    let queue = Arc::new(Mutex::new(Queue { watcher: Watcher::new()?, dirs: HashMap::new() }));
    Ok((Box::new(KqueueWatches { queue: queue.clone() }), Box::new(KqueueReader { queue })))
}

/// Notes that mean "an entry of this directory was added, removed or renamed".
fn vnode_flags() -> FilterFlag {
    FilterFlag::NOTE_WRITE
        | FilterFlag::NOTE_EXTEND
        | FilterFlag::NOTE_ATTRIB
        | FilterFlag::NOTE_LINK
        | FilterFlag::NOTE_DELETE
        | FilterFlag::NOTE_RENAME
}

/// Descriptor exhaustion is the kqueue form of "no watches left".
fn budget_error(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => io::Error::from_raw_os_error(libc::ENOSPC),
        _ => e,
    }
}

impl WatchRegistry for KqueueWatches {
    fn add(&mut self, path: &Path, _kind: DirKind) -> io::Result<WatchId> {
        // The same notes for every kind: kqueue cannot narrow them by name.
        let dir = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path).map_err(budget_error)?;
        let fd = dir.as_raw_fd();
        let mut queue = lock(&self.queue);
        queue.watcher.add_fd(fd, EventFilter::EVFILT_VNODE, vnode_flags())?;
        if let Err(e) = queue.watcher.watch() {
            let _ = queue.watcher.remove_fd(fd, EventFilter::EVFILT_VNODE);
            return Err(budget_error(e));
        }
        queue.dirs.insert(fd, dir);
        Ok(WatchId(fd))
    }

    fn remove(&mut self, id: WatchId) {
        let mut queue = lock(&self.queue);
        if let Some(dir) = queue.dirs.remove(&id.0) {
            // Closing the descriptor drops the registration anyway; the
            // explicit removal also forgets it in the crate's table.
            let _ = queue.watcher.remove_fd(id.0, EventFilter::EVFILT_VNODE);
            drop(dir);
        }
    }
}

impl EventReader for KqueueReader {
    fn wait(&mut self, timeout: Duration, out: &mut Vec<RawEvent>) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut changed = BTreeSet::new();
        loop {
            let now = Instant::now();
            let slice = deadline.saturating_duration_since(now).min(WAIT_SLICE);
            {
                let queue = lock(&self.queue);
                if queue.dirs.is_empty() {
                    drop(queue);
                    std::thread::sleep(slice);
                } else {
                    // The first wait may block for the slice; then drain what is ready.
                    let mut next = queue.watcher.poll(Some(slice));
                    while let Some(event) = next {
                        if let Some(fd) = changed_dir(&event) {
                            if queue.dirs.contains_key(&fd) {
                                changed.insert(fd);
                            }
                        } else if let EventData::Error(e) = event.data {
                            // An event for a directory removed meanwhile is harmless.
                            if e.kind() != io::ErrorKind::NotFound {
                                return Err(e);
                            }
                        }
                        next = queue.watcher.poll(None);
                    }
                }
            }
            if !changed.is_empty() || Instant::now() >= deadline {
                break;
            }
        }
        out.extend(changed.into_iter().map(dir_changed));
        Ok(())
    }
}

/// The descriptor of the directory a vnode event is about, if it says the
/// directory's entries may have changed.
fn changed_dir(event: &kqueue::Event) -> Option<i32> {
    let EventData::Vnode(note) = &event.data else { return None };
    let relevant = matches!(note, Vnode::Write | Vnode::Extend | Vnode::Attrib | Vnode::Link | Vnode::Delete | Vnode::Rename);
    match event.ident {
        Ident::Fd(fd) if relevant => Some(fd),
        _ => None,
    }
}

/// The system-independent form of "directory `fd` changed".
fn dir_changed(fd: i32) -> RawEvent {
    RawEvent::Changed { watch: WatchId(fd), kind: RawKind::DirChanged, is_dir: true, cookie: 0, name: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_exhaustion_counts_as_an_exhausted_budget() {
        assert_eq!(budget_error(io::Error::from_raw_os_error(libc::EMFILE)).raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(budget_error(io::Error::from_raw_os_error(libc::ENOENT)).raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn sees_a_file_created_in_a_watched_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (mut registry, mut reader) = open().unwrap();
        let id = registry.add(dir.path(), DirKind::New).unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.is_empty() && Instant::now() < deadline {
            reader.wait(Duration::from_millis(100), &mut out).unwrap();
        }
        assert!(out.iter().any(|e| matches!(e, RawEvent::Changed { watch, kind: RawKind::DirChanged, name: None, .. } if *watch == id)));
        registry.remove(id);
        // A removed watch reports nothing more.
        std::fs::write(dir.path().join("g"), b"y").unwrap();
        out.clear();
        reader.wait(Duration::from_millis(200), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_missing_directory_is_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut registry, _reader) = open().unwrap();
        let e = registry.add(&dir.path().join("absent"), DirKind::Cur).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}
