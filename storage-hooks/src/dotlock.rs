//! Dot-locks (`<file>.lock` created with `O_EXCL`), the lock Dovecot itself
//! uses for `dovecot-uidlist`. No fcntl locks: they do not mix with
//! Dovecot's dot-locks and break over some network filesystems.
//!
//! The lock file holds `<pid>:<hostname>`, the format Dovecot's
//! `file-dotlock.c` writes and checks; like Dovecot we write it to a temp
//! file first and `link()` that to the lock name, so a lock is never empty. A lock is *stale* and broken when its
//! owner is a dead process on this host, or when it is older than
//! [`DotLockOptions::stale_after`] (covers other hosts and lock files whose
//! content we cannot read, e.g. Dovecot's replace-style locks). Breaking is
//! serialized by a short-lived `<lock>.break` file so that two waiters never
//! remove each other's fresh lock.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::StoreError;

/// Timing of a dot-lock.
#[derive(Debug, Clone, Copy)]
pub struct DotLockOptions {
    /// Give up with `LockTimeout` after waiting this long.
    pub timeout: Duration,
    /// A lock whose mtime is older than this is stale even if its owner
    /// cannot be checked. Dovecot uses 2 minutes for the uidlist lock.
    pub stale_after: Duration,
}

impl Default for DotLockOptions {
    fn default() -> Self {
        DotLockOptions { timeout: Duration::from_secs(60), stale_after: Duration::from_secs(120) }
    }
}

/// A held dot-lock; removed on drop.
#[derive(Debug)]
pub struct DotLock {
    path: PathBuf,
    ino: u64,
}

/// This host's name, as written into lock files.
pub fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// True if a process with `pid` runs on this host. A zombie (killed, not
/// yet reaped by its parent) is dead: it holds nothing any more.
pub(crate) fn pid_alive(pid: i32) -> bool {
    let Some(raw) = rustix::process::Pid::from_raw(pid) else { return false };
    let exists = match rustix::process::test_kill_process(raw) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    };
    exists && !is_zombie(pid)
}

/// Linux: the state field of `/proc/<pid>/stat` (after the command name in
/// parentheses) is `Z` or `X` for a dead process. Elsewhere: false.
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, Some('Z' | 'X'))
}

/// True for a temp file of [`DotLock::acquire`] (`<name>.lock.<pid>.<8 hex>`)
/// whose process is dead: left behind by a process killed mid-attempt.
pub fn is_abandoned_temp(file_name: &str) -> bool {
    let Some((_, rest)) = file_name.rsplit_once(".lock.") else { return false };
    let Some((pid, tag)) = rest.split_once('.') else { return false };
    let well_formed = tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit());
    match pid.parse::<i32>() {
        Ok(pid) if well_formed => !pid_alive(pid),
        _ => false,
    }
}

/// Owner of a lock file as written by us or Dovecot: `pid:host`.
fn parse_owner(content: &[u8]) -> Option<(i32, String)> {
    let text = std::str::from_utf8(content).ok()?;
    let (pid, host) = text.trim_end().split_once(':')?;
    Some((pid.parse().ok()?, host.to_string()))
}

impl DotLock {
    /// Takes `<target>.lock`, e.g. `dovecot-uidlist.lock` for `dovecot-uidlist`.
    ///
    /// # Errors
    /// `LockTimeout` after `opts.timeout`; I/O errors other than contention.
    pub fn acquire(target: &Path, opts: DotLockOptions) -> Result<DotLock, StoreError> {
        let mut lock_name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        lock_name.push(".lock");
        let path = target.with_file_name(lock_name);
        let start = Instant::now();
        let mut delay = Duration::from_micros(100);
        let content = format!("{}:{}", std::process::id(), hostname());
        loop {
            // A stat first: waiters do not churn the directory with temp
            // files while the lock is visibly held.
            let looks_free = std::fs::symlink_metadata(&path).is_err();
            if looks_free {
                if let Some(lock) = Self::try_create(&path, &content)? {
                    return Ok(lock);
                }
            }
            if Self::break_if_stale(&path, opts)? {
                continue;
            }
            if start.elapsed() >= opts.timeout {
                return Err(StoreError::LockTimeout(path));
            }
            let jitter = Duration::from_micros(rand::random::<u64>() % 200);
            std::thread::sleep(delay + jitter);
            delay = (delay * 2).min(Duration::from_millis(2));
        }
    }

    /// One attempt: the owner line is written to a unique temp file which is
    /// then hard-linked to the lock name (atomic, fails if it exists), so a
    /// lock file is never seen empty, even if we are killed half-way. Falls
    /// back to `O_EXCL` creation where hard links are not supported.
    fn try_create(path: &Path, content: &str) -> Result<Option<DotLock>, StoreError> {
        let mut temp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        temp_name.push(format!(".{}.{:08x}", std::process::id(), rand::random::<u32>()));
        let temp = path.with_file_name(temp_name);
        let mut f = crate::durable::create_new_private(&temp).map_err(|e| StoreError::io(&temp, e))?;
        let written = f.write_all(content.as_bytes());
        drop(f);
        let linked = written.and_then(|()| std::fs::hard_link(&temp, path));
        let _ = std::fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                let ino = std::fs::metadata(path).map_err(|e| StoreError::io(path, e))?.ino();
                Ok(Some(DotLock { path: path.to_path_buf(), ino }))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(None),
            Err(_) => match crate::durable::create_new_private(path) {
                Ok(mut f) => {
                    let ino = f.metadata().map_err(|e| StoreError::io(path, e))?.ino();
                    // Advisory content; without it the lock is judged by age.
                    let _ = f.write_all(content.as_bytes());
                    Ok(Some(DotLock { path: path.to_path_buf(), ino }))
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(StoreError::io(path, e)),
            },
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if the existing lock at `path` is stale: owner dead on this host,
    /// or older than `stale_after`.
    fn is_stale(path: &Path, opts: DotLockOptions) -> Option<(u64, bool)> {
        let meta = std::fs::metadata(path).ok()?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        if age > opts.stale_after {
            return Some((meta.ino(), true));
        }
        let content = std::fs::read(path).ok()?;
        let stale = match parse_owner(&content) {
            Some((pid, host)) if host == hostname() => !pid_alive(pid),
            // An empty lock file is being created right now (or its owner
            // died before writing): trust it only for a short while.
            _ if content.is_empty() => age > Duration::from_secs(5),
            _ => false,
        };
        Some((meta.ino(), stale))
    }

    /// Removes `path` if it is stale; true if it was removed.
    fn break_if_stale(path: &Path, opts: DotLockOptions) -> Result<bool, StoreError> {
        let Some((ino, true)) = Self::is_stale(path, opts) else { return Ok(false) };
        let mut breaker_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        breaker_name.push(".break");
        let breaker = path.with_file_name(breaker_name);
        match crate::durable::create_new_private(&breaker) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // A breaker that died mid-break leaves this behind; it is
                // held for microseconds, so an old one is safe to remove.
                let old = std::fs::metadata(&breaker)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_some_and(|age| age > Duration::from_secs(10));
                if old {
                    let _ = std::fs::remove_file(&breaker);
                }
                return Ok(false);
            }
            Err(e) => return Err(StoreError::io(&breaker, e)),
        }
        // Re-check under the breaker: the same lock file must still be stale.
        let removed = match Self::is_stale(path, opts) {
            Some((ino2, true)) if ino2 == ino => {
                tracing::warn!(lock = %path.display(), "breaking stale dot-lock");
                std::fs::remove_file(path).is_ok()
            }
            _ => false,
        };
        let _ = std::fs::remove_file(&breaker);
        Ok(removed)
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        // Only remove the lock if it is still ours (not broken and re-taken).
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(lock = %self.path.display(), error = %e, "removing dot-lock failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Exited but not reaped yet: a zombie.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !is_zombie(pid) {
            assert!(std::time::Instant::now() < deadline, "child never became a zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!pid_alive(pid));
        assert!(pid_alive(std::process::id() as i32));
        child.wait().unwrap();
    }

    fn opts(ms: u64) -> DotLockOptions {
        DotLockOptions { timeout: Duration::from_millis(ms), stale_after: Duration::from_secs(120) }
    }

    #[test]
    fn exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("dovecot-uidlist");
        let lock = DotLock::acquire(&target, opts(100)).unwrap();
        assert_eq!(lock.path(), dir.path().join("dovecot-uidlist.lock"));
        let content = std::fs::read_to_string(lock.path()).unwrap();
        assert_eq!(content, format!("{}:{}", std::process::id(), hostname()));
        assert!(matches!(DotLock::acquire(&target, opts(50)), Err(StoreError::LockTimeout(_))));
        drop(lock);
        assert!(!dir.path().join("dovecot-uidlist.lock").exists());
        DotLock::acquire(&target, opts(50)).unwrap();
    }

    #[test]
    fn abandoned_temps() {
        assert!(is_abandoned_temp(&format!("dovecot-uidlist.lock.{}.0badcafe", 1 << 30)));
        assert!(!is_abandoned_temp(&format!("dovecot-uidlist.lock.{}.0badcafe", std::process::id())));
        assert!(!is_abandoned_temp("dovecot-uidlist.lock"));
        assert!(!is_abandoned_temp("x.lock.12.nothex!!"));
    }

    #[test]
    fn breaks_lock_of_dead_pid() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        // A pid that does not exist: above the kernel's pid_max.
        std::fs::write(dir.path().join("f.lock"), format!("{}:{}", 1 << 30, hostname())).unwrap();
        DotLock::acquire(&target, opts(1000)).unwrap();
    }

    #[test]
    fn keeps_live_foreign_lock_and_breaks_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        let lock_path = dir.path().join("f.lock");
        // Our own (live) pid on this host: not stale.
        std::fs::write(&lock_path, format!("{}:{}", std::process::id(), hostname())).unwrap();
        assert!(DotLock::acquire(&target, opts(50)).is_err());
        // Another host's lock: only age counts.
        std::fs::write(&lock_path, "1:elsewhere.example").unwrap();
        assert!(DotLock::acquire(&target, opts(50)).is_err());
        let old = SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options().write(true).open(&lock_path).unwrap().set_modified(old).unwrap();
        DotLock::acquire(&target, opts(1000)).unwrap();
    }
}
