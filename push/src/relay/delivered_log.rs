//! The delivered log: which (registration, event id) pairs already reached
//! a final state (delivered or dead-lettered), kept across restarts so a
//! JetStream redelivery after a crash is not sent again to endpoints that
//! already had it.
//!
//! `<state_dir>/delivered.log` holds one `<registration> <event id>` line
//! per pair, appended (no fsync: it survives a killed process through the
//! page cache; after a power loss it may miss recent lines, which only
//! means a duplicate, never a loss). The newest [`DeliveredLog::capacity`]
//! pairs are kept in memory as 128-bit digests (about 10 MB for the
//! default 200,000); when the file holds twice that many lines it is
//! rewritten with the newest half (temp file and rename).

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Name of the delivered log in the state directory.
pub const DELIVERED_FILE: &str = "delivered.log";

/// Pairs remembered by default: far more than the messages a relay holds
/// un-acknowledged ([`super::RelayConfig::max_ack_pending`]) times the
/// registrations one event usually reaches.
pub const DEFAULT_CAPACITY: usize = 200_000;

#[derive(Debug)]
struct Inner {
    // 128 bits of SHA-256 per pair (the text stays in the file): a fraction
    // of the memory of the text, and a collision (a wrongly skipped
    // delivery) is out of reach.
    set: HashSet<u128>,
    order: VecDeque<u128>,
    file: File,
    lines_in_file: usize,
}

/// Recently finished (registration, event id) pairs, durable across restarts.
#[derive(Debug)]
pub struct DeliveredLog {
    path: PathBuf,
    capacity: usize,
    inner: Mutex<Inner>,
}

fn key(registration: &str, event_id: &str) -> String {
    format!("{registration} {event_id}")
}

fn digest(key: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl DeliveredLog {
    /// Opens (or creates) the log at `path`, loading its newest `capacity` pairs.
    ///
    /// # Errors
    /// I/O errors reading or creating the file.
    pub fn open(path: PathBuf, capacity: usize) -> std::io::Result<Self> {
        let capacity = capacity.max(1);
        let mut order = VecDeque::new();
        let mut lines_in_file = 0;
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        for line in text.lines() {
            // A line cut by a crash mid-write has no space; skip it.
            if !line.contains(' ') {
                continue;
            }
            lines_in_file += 1;
            order.push_back(digest(line));
            if order.len() > capacity {
                order.pop_front();
            }
        }
        let set = order.iter().copied().collect();
        let mut file = open_append(&path)?;
        if !text.is_empty() && !text.ends_with('\n') {
            // End the torn line so the next record starts a line of its own.
            file.write_all(b"\n")?;
        }
        Ok(DeliveredLog { path, capacity, inner: Mutex::new(Inner { set, order, file, lines_in_file }) })
    }

    /// Pairs kept in memory.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if `event_id` already reached a final state for `registration`.
    pub fn contains(&self, registration: &str, event_id: &str) -> bool {
        self.lock().set.contains(&digest(&key(registration, event_id)))
    }

    /// Number of pairs in memory.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// True if no pair is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a finished pair. A write failure is logged: it can only
    /// cause a duplicate after a restart.
    pub fn record(&self, registration: &str, event_id: &str) {
        let k = key(registration, event_id);
        let d = digest(&k);
        let mut inner = self.lock();
        if !inner.set.insert(d) {
            return;
        }
        let line = format!("{k}\n");
        if let Err(e) = inner.file.write_all(line.as_bytes()) {
            tracing::warn!(path = %self.path.display(), error = %e, "push-relay: cannot append to the delivered log");
        }
        inner.lines_in_file += 1;
        inner.order.push_back(d);
        if inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.set.remove(&old);
            }
        }
        if inner.lines_in_file >= 2 * self.capacity {
            if let Err(e) = self.compact(&mut inner) {
                tracing::warn!(path = %self.path.display(), error = %e, "push-relay: cannot compact the delivered log");
            }
        }
    }

    /// Rewrites the file with its newest `capacity` lines (the pairs in memory).
    fn compact(&self, inner: &mut Inner) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(&std::fs::read(&self.path)?).into_owned();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(' ')).collect();
        let keep = &lines[lines.len().saturating_sub(self.capacity)..];
        let mut out = String::with_capacity(keep.iter().map(|l| l.len() + 1).sum());
        for line in keep {
            out.push_str(line);
            out.push('\n');
        }
        // A lost compaction only costs a longer file: no fsync.
        storage_hooks::durable::replace_file(&self.path, out.as_bytes(), storage_hooks::durable::Sync::Cache)
            .map_err(std::io::Error::other)?;
        inner.file = open_append(&self.path)?;
        inner.lines_in_file = keep.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DELIVERED_FILE);
        let log = DeliveredLog::open(path.clone(), 10).unwrap();
        for i in 0..25 {
            log.record("r-1", &format!("ev{i}"));
        }
        log.record("r-1", "ev24"); // already there
        assert_eq!(log.len(), 10);
        assert!(log.contains("r-1", "ev24") && !log.contains("r-1", "ev14") && !log.contains("r-2", "ev24"));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 20, "compacted: {lines}");
        drop(log);
        // A torn last line is ignored.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"r-1").unwrap();
        let log = DeliveredLog::open(path.clone(), 10).unwrap();
        assert!(log.contains("r-1", "ev20") && log.contains("r-1", "ev24") && !log.contains("r-1", "ev3"));
        log.record("r-2", "ev1");
        drop(log);
        assert!(DeliveredLog::open(path, 10).unwrap().contains("r-2", "ev1"));
    }
}
