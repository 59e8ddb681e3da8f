//! Tells a publisher which interest files changed, so it can keep a copy
//! of each receiver's bitmap instead of reading one byte per event and
//! receiver.
//!
//! An inotify watch on the bus folder reports `IN_MODIFY` for every
//! `pwrite` (and truncation) of a file in it. The kernel queues the event
//! inside the write system call, before it returns, so when a subscriber's
//! `subscribe` has returned, the event is already queued: a publisher that
//! drains the queue (one non-blocking `read`) after the event it publishes
//! was committed, and re-reads the files named there, sees every
//! subscription made before the commit. A full queue (`IN_Q_OVERFLOW`)
//! makes every copy stale.

use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// What draining the watch found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// The files passed to the callback changed (possibly none).
    Listed,
    /// Events were lost: treat every file as changed.
    Overflow,
}

/// A non-blocking inotify watch on the bus folder.
#[derive(Debug)]
pub(crate) struct InterestWatch {
    fd: OwnedFd,
    buf: Vec<MaybeUninit<u8>>,
}

impl InterestWatch {
    /// Watches `dir` for modified files.
    ///
    /// # Errors
    /// The inotify instance or watch could not be created (limits reached).
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        inotify::add_watch(&fd, dir, WatchFlags::MODIFY)?;
        Ok(Self { fd, buf: vec![MaybeUninit::uninit(); 8192] })
    }

    /// Reads every queued event, calling `changed` with the name of each
    /// modified file.
    ///
    /// # Errors
    /// Reading the inotify descriptor failed; the watch is no longer usable.
    pub(crate) fn drain(&mut self, mut changed: impl FnMut(&OsStr)) -> std::io::Result<Drained> {
        let mut outcome = Drained::Listed;
        let mut reader = inotify::Reader::new(&self.fd, &mut self.buf);
        loop {
            match reader.next() {
                Ok(ev) => {
                    if ev.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                        outcome = Drained::Overflow;
                    } else if let Some(name) = ev.file_name() {
                        changed(OsStr::from_bytes(name.to_bytes()));
                    }
                }
                Err(e) if e == Errno::AGAIN => return Ok(outcome),
                Err(e) if e == Errno::INTR => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
