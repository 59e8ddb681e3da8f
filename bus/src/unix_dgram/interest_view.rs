//! The publisher's view of one receiver's interest file: may an event of
//! a given user go to that receiver?

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::interest::{parse_header, InterestError, InterestLayout, HEADER_LEN};
use crate::rate_log::RateLimitedLog;

/// A bit seen set is believed set for this long without reading it again.
/// Believing a bit that was cleared meanwhile only costs a wasted datagram;
/// a clear bit is never cached (that could lose an event).
const POSITIVE_TTL: Duration = Duration::from_millis(10);

/// Largest bitmap whose positive bits are cached (2^16 bits = 8 KiB per receiver).
const MAX_CACHED_LOG2_BITS: u8 = 16;

/// Largest bitmap kept as a copy while the folder is watched (2^20 bits = 128 KiB).
const MAX_COPIED_LOG2_BITS: u8 = 20;

/// How a publisher chooses the events for one receiver.
#[derive(Debug)]
pub(crate) enum Routing {
    /// No interest file (a subscriber of an older version, or one that is
    /// still starting): every event; the file is looked for again at each
    /// folder rescan.
    NoFile,
    /// The interest file is unusable (logged once): every event.
    Unusable,
    /// Only events of users whose bit is set.
    Filter(InterestView),
}

impl Routing {
    /// Opens the interest file at `path`; a missing file is [`Routing::NoFile`],
    /// an unusable one is logged and [`Routing::Unusable`].
    pub(crate) fn open(path: &Path) -> Self {
        match InterestView::open(path) {
            Ok(Some(view)) => Routing::Filter(view),
            Ok(None) => Routing::NoFile,
            Err(e) => {
                tracing::warn!(error = %e, "bus: unusable interest file; sending every event to that receiver");
                Routing::Unusable
            }
        }
    }

    /// True if an event of the user with hash `user_hash` must go to this
    /// receiver. `watched`: the caller drained an [`super::interest_watch::InterestWatch`]
    /// after the event was committed and marked changed files with
    /// [`Routing::changed`], so an up-to-date copy of the bitmap may be used.
    pub(crate) fn wants(&mut self, user_hash: u64, now: Instant, log: &RateLimitedLog, watched: bool) -> bool {
        match self {
            Routing::NoFile | Routing::Unusable => true,
            Routing::Filter(view) if watched => view.wants_from_copy(user_hash, now, log),
            Routing::Filter(view) => view.wants(user_hash, now, log),
        }
    }

    /// What the copy of the bitmap says without any system call: `true`
    /// if the event goes here (no file, unusable file, or the bit set in
    /// a copy, which at worst is a stale "set": a wasted datagram), `false`
    /// if the copy must be confirmed (bit clear, or no fresh copy).
    pub(crate) fn surely_wants(&self, user_hash: u64) -> bool {
        match self {
            Routing::NoFile | Routing::Unusable => true,
            Routing::Filter(view) => view.broken || view.copy_has(user_hash),
        }
    }

    /// The interest file changed: the copy of its bitmap is stale.
    pub(crate) fn changed(&mut self) {
        if let Routing::Filter(view) = self {
            view.copy_fresh = false;
        }
    }
}

/// An open interest file and the bits recently seen set in it.
#[derive(Debug)]
pub(crate) struct InterestView {
    path: PathBuf,
    file: File,
    layout: InterestLayout,
    /// Bits seen set since `seen_since` (empty until the first one).
    seen: Vec<u64>,
    seen_since: Instant,
    /// The file was truncated or unreadable: every event goes.
    broken: bool,
    /// The whole bitmap as last read (used while the folder is watched).
    copy: Vec<u8>,
    /// No change was reported since `copy` was read.
    copy_fresh: bool,
}

impl InterestView {
    /// Opens and checks the interest file; `Ok(None)` if it does not exist.
    ///
    /// # Errors
    /// [`InterestError`] if it cannot be read or its header is not understood.
    pub(crate) fn open(path: &Path) -> Result<Option<Self>, InterestError> {
        let io = |source| InterestError::Io { path: path.to_owned(), source };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let len = file.metadata().map_err(io)?.len();
        let mut header = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match file.read_at(&mut header[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        let layout = parse_header(&header[..got], len)
            .map_err(|reason| InterestError::Format { path: path.to_owned(), reason })?;
        Ok(Some(Self {
            path: path.to_owned(),
            file,
            layout,
            seen: Vec::new(),
            seen_since: Instant::now(),
            broken: false,
            copy: Vec::new(),
            copy_fresh: false,
        }))
    }

    /// True if a copy of the bitmap exists and has the user's bit set.
    fn copy_has(&self, user_hash: u64) -> bool {
        let bit = self.layout.bit(user_hash);
        self.copy.get((bit / 8) as usize).is_some_and(|b| b & (1 << (bit % 8)) != 0)
    }

    /// Like [`InterestView::wants`], from a copy of the bitmap that is
    /// re-read (one `pread`) only after a change was reported.
    fn wants_from_copy(&mut self, user_hash: u64, now: Instant, log: &RateLimitedLog) -> bool {
        if self.broken {
            return true;
        }
        if self.layout.log2_bits > MAX_COPIED_LOG2_BITS {
            return self.wants(user_hash, now, log);
        }
        if !self.copy_fresh {
            let len = (1usize << self.layout.log2_bits) / 8;
            self.copy.resize(len, 0);
            let mut got = 0;
            while got < len {
                match self.file.read_at(&mut self.copy[got..], (HEADER_LEN + got) as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        if let Some(suppressed) = log.allow() {
                            tracing::warn!(path = %self.path.display(), error = %e, suppressed,
                                "bus: cannot read interest file; sending the event anyway");
                        }
                        return true;
                    }
                }
            }
            if got < len {
                tracing::warn!(path = %self.path.display(), "bus: interest file was truncated; sending every event to that receiver");
                self.broken = true;
                return true;
            }
            self.copy_fresh = true;
        }
        let bit = self.layout.bit(user_hash);
        self.copy[(bit / 8) as usize] & (1 << (bit % 8)) != 0
    }

    /// True if the user's bit is set (or the file can no longer be read).
    pub(crate) fn wants(&mut self, user_hash: u64, now: Instant, log: &RateLimitedLog) -> bool {
        if self.broken {
            return true;
        }
        let bit = self.layout.bit(user_hash);
        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        if !self.seen.is_empty() {
            if now.saturating_duration_since(self.seen_since) >= POSITIVE_TTL {
                self.seen.fill(0);
                self.seen_since = now;
            } else if self.seen[word] & mask != 0 {
                return true;
            }
        }
        let mut byte = [0u8; 1];
        let set = match self.file.read_at(&mut byte, HEADER_LEN as u64 + bit / 8) {
            Ok(1) => byte[0] & (1 << (bit % 8)) != 0,
            Ok(_) => {
                // The subscriber truncates the file when it cannot keep it up to date.
                tracing::warn!(path = %self.path.display(), "bus: interest file was truncated; sending every event to that receiver");
                self.broken = true;
                true
            }
            Err(e) => {
                if let Some(suppressed) = log.allow() {
                    tracing::warn!(path = %self.path.display(), error = %e, suppressed,
                        "bus: cannot read interest file; sending the event anyway");
                }
                true
            }
        };
        if set && self.layout.log2_bits <= MAX_CACHED_LOG2_BITS {
            if self.seen.is_empty() {
                self.seen = vec![0; ((1usize << self.layout.log2_bits) / 64).max(1)];
                self.seen_since = now;
            }
            self.seen[word] |= mask;
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::super::interest::{user_hash, InterestFile};
    use super::*;

    #[test]
    fn follows_the_subscriber_and_falls_back_to_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("1-1.sock");
        let log = RateLimitedLog::new(Duration::from_secs(10));
        assert!(matches!(Routing::open(&super::super::interest::interest_path(&sock)), Routing::NoFile));
        let mut file = InterestFile::create(&sock).unwrap();
        let mut view = Routing::open(file.path());
        let (alice, bob) = (user_hash("alice"), user_hash("bob"));
        let now = Instant::now();
        assert!(!view.wants(alice, now, &log, false));
        file.add("alice");
        assert!(view.wants(alice, now, &log, false), "a set bit is seen at once");
        assert!(!view.wants(bob, now, &log, false));
        file.remove("alice");
        // Believed for POSITIVE_TTL, then read again.
        assert!(view.wants(alice, now, &log, false));
        assert!(!view.wants(alice, now + POSITIVE_TTL, &log, false));
        file.set_wildcard(true);
        assert!(view.wants(bob, now + POSITIVE_TTL, &log, false));
        // Truncated by a subscriber that gave up: everything.
        std::fs::OpenOptions::new().write(true).open(file.path()).unwrap().set_len(0).unwrap();
        assert!(view.wants(user_hash("carol"), now + POSITIVE_TTL * 3, &log, false));
        // From a copy, re-read only when told the file changed.
        let mut file2 = InterestFile::create(&tmp.path().join("2-2.sock")).unwrap();
        let mut copied = Routing::open(file2.path());
        assert!(!copied.wants(alice, now, &log, true));
        file2.add("alice");
        assert!(!copied.wants(alice, now, &log, true), "stale copy until a change is reported");
        copied.changed();
        assert!(copied.wants(alice, now, &log, true));
        assert!(!copied.wants(bob, now, &log, true));
        assert!(copied.surely_wants(alice) && !copied.surely_wants(bob));
        // Garbage: everything.
        std::fs::write(file.path(), b"garbage").unwrap();
        assert!(matches!(Routing::open(file.path()), Routing::Unusable));
    }
}
