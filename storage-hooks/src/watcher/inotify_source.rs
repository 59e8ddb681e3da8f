//! The Linux system-call part of the watcher: one inotify instance per
//! process, its watches, and reading its events without blocking forever.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

use super::{DirKind, EventReader, RawEvent, RawKind, WatchId, WatchRegistry};

/// Adds and removes watches on the process's inotify instance.
pub(crate) struct InotifyWatches {
    watches: Watches,
    /// Descriptor per id (the kernel's `wd` number), needed for removal.
    descriptors: Arc<Mutex<HashMap<i32, WatchDescriptor>>>,
}

/// Reads the instance's events.
pub(crate) struct InotifyReader {
    inotify: Inotify,
    buffer: Vec<u8>,
}

/// Opens the process's inotify instance.
pub(crate) fn open() -> io::Result<(Box<dyn WatchRegistry>, Box<dyn EventReader>)> {
    let inotify = Inotify::init()?;
    let watches = InotifyWatches { watches: inotify.watches(), descriptors: Arc::default() };
    Ok((Box::new(watches), Box::new(InotifyReader { inotify, buffer: vec![0; 64 * 1024] })))
}

impl WatchRegistry for InotifyWatches {
    fn add(&mut self, path: &Path, kind: DirKind) -> io::Result<WatchId> {
        let mask = match kind {
            // Folder directories created, removed or renamed; our lock files.
            DirKind::Root => WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_FROM | WatchMask::MOVED_TO,
            // Message files arriving, leaving, renamed; a plain `cp` is
            // complete at CLOSE_WRITE.
            DirKind::New | DirKind::Cur => {
                WatchMask::CREATE
                    | WatchMask::DELETE
                    | WatchMask::MOVED_FROM
                    | WatchMask::MOVED_TO
                    | WatchMask::CLOSE_WRITE
                    | WatchMask::ONLYDIR
            }
        };
        let wd = self.watches.add(path, mask | WatchMask::ONLYDIR)?;
        let id = wd.get_watch_descriptor_id();
        self.descriptors.lock().unwrap_or_else(|e| e.into_inner()).insert(id, wd);
        Ok(WatchId(id))
    }

    fn remove(&mut self, id: WatchId) {
        let wd = self.descriptors.lock().unwrap_or_else(|e| e.into_inner()).remove(&id.0);
        if let Some(wd) = wd {
            // EINVAL: the directory is gone and the kernel dropped the watch already.
            let _ = self.watches.remove(wd);
        }
    }
}

impl EventReader for InotifyReader {
    fn wait(&mut self, timeout: Duration, out: &mut Vec<RawEvent>) -> io::Result<()> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let ts = rustix::event::Timespec { tv_sec: i64::from(ms / 1000), tv_nsec: i64::from(ms % 1000) * 1_000_000 };
        let fd = self.inotify.as_fd();
        let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        loop {
            let events = match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut any = false;
            for ev in events {
                any = true;
                out.push(convert(ev.wd.get_watch_descriptor_id(), ev.mask, ev.cookie, ev.name.map(|n| n.to_os_string())));
            }
            if !any {
                return Ok(());
            }
        }
    }
}

/// Translates one inotify event into the watcher's system-independent form.
fn convert(wd: i32, mask: EventMask, cookie: u32, name: Option<std::ffi::OsString>) -> RawEvent {
    if mask.contains(EventMask::Q_OVERFLOW) {
        return RawEvent::Overflow;
    }
    let kind = if mask.contains(EventMask::CREATE) {
        RawKind::Created
    } else if mask.contains(EventMask::DELETE) {
        RawKind::Deleted
    } else if mask.contains(EventMask::MOVED_FROM) {
        RawKind::MovedFrom
    } else if mask.contains(EventMask::MOVED_TO) {
        RawKind::MovedTo
    } else if mask.contains(EventMask::CLOSE_WRITE) {
        RawKind::Written
    } else {
        // IGNORED, DELETE_SELF, UNMOUNT...: the directory's own fate is
        // seen through its parent.
        RawKind::Other
    };
    RawEvent::Changed { watch: WatchId(wd), kind, is_dir: mask.contains(EventMask::ISDIR), cookie, name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_becomes_a_rescan_request() {
        assert!(matches!(convert(-1, EventMask::Q_OVERFLOW, 0, None), RawEvent::Overflow));
        let ev = convert(3, EventMask::MOVED_TO | EventMask::ISDIR, 7, Some(".A".into()));
        assert!(matches!(ev, RawEvent::Changed { watch: WatchId(3), kind: RawKind::MovedTo, is_dir: true, cookie: 7, .. }));
    }

    #[test]
    fn sees_a_file_created_in_a_watched_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (mut registry, mut reader) = open().unwrap();
        let id = registry.add(dir.path(), DirKind::New).unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.len() < 2 && std::time::Instant::now() < deadline {
            reader.wait(Duration::from_millis(100), &mut out).unwrap();
        }
        assert!(out.iter().any(|e| matches!(e, RawEvent::Changed { watch, kind: RawKind::Created, .. } if *watch == id)));
        assert!(out.iter().any(|e| matches!(e, RawEvent::Changed { kind: RawKind::Written, .. })));
        registry.remove(id);
    }
}
