//! The exclusive claim of `serve` on its data directory: an advisory
//! `flock` on `<data_dir>/serve.lock`, held for the server's lifetime.
//!
//! Two servers on one data directory would fight over the run directory's
//! sockets (a second one used to take over `hibernate-0.sock`) and run
//! two Maildir watchers and bus publishers for the same mail. The kernel
//! releases the lock when its holder dies, however it dies, so a lock file
//! left behind by a crash does not block the next start; the file itself is
//! never removed (removing it would let a third server lock a new file
//! while a second one still holds the old).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rustix::fs::FlockOperation;

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "serve.lock";

/// The held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` and writes our pid into the file.
    ///
    /// # Errors
    /// Another live `serve` holds it (the message names its pid), or the
    /// file cannot be opened or written.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                let owner = if owner.is_empty() { "unknown".to_string() } else { owner.to_string() };
                anyhow::bail!(
                    "the data directory {} is in use by another `dormouse serve` (pid {owner}, lock {}); \
                     stop it first, or give this server its own data_dir",
                    data_dir.display(),
                    path.display()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
        Self::claim(file, path)
    }

    /// Takes over the lock the previous generation of a restart holds and
    /// passed on (`file` is its open lock file: the same open file, so the
    /// flock never lapses), and writes our pid into it.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn adopt(file: File, data_dir: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let path = data_dir.join(LOCK_FILE);
        let held = file.metadata().with_context(|| format!("cannot stat the inherited {}", path.display()))?;
        let here = std::fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?;
        anyhow::ensure!(
            (held.dev(), held.ino()) == (here.dev(), here.ino()),
            "the previous generation serves another data directory than {} (data_dir changed?); \
             a restart cannot move to another data directory: stop and start instead",
            data_dir.display()
        );
        Self::claim(file, path)
    }

    fn claim(mut file: File, path: PathBuf) -> anyhow::Result<Self> {
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write our pid to {}", path.display()))?;
        Ok(Self { _file: file, path })
    }

    /// Writes our pid into the lock file again (after a failed restart whose
    /// new generation may have written its own).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn rewrite_pid(&self) -> std::io::Result<()> {
        let mut file = &self._file;
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()
    }

    /// The open lock file (passed on to the next generation in a restart).
    pub fn file(&self) -> &File {
        &self._file
    }

    /// The pid written in `data_dir`'s lock file (the running `serve`), if any.
    pub fn owner(data_dir: &Path) -> Option<u32> {
        std::fs::read_to_string(data_dir.join(LOCK_FILE)).ok()?.trim().parse().ok()
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
