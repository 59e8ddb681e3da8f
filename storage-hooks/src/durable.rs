//! Durable file primitives: atomic replace (temp file, fsync, rename) and
//! directory fsync, with errors that carry the path.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::StoreError;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether the store fsyncs at all. `Fsync` (the default) makes every
/// acknowledged change survive a power loss or kernel crash; `NoFsync` only
/// survives process crashes (the page cache is kept) and is meant for tests
/// and benchmarks of everything but the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync message files, directories, uidlist and index (default).
    #[default]
    Fsync,
    /// Never fsync.
    NoFsync,
}

impl Durability {
    /// `Sync::Data` when fsyncing, else `Sync::Cache`.
    pub fn data(self) -> Sync {
        match self {
            Durability::Fsync => Sync::Data,
            Durability::NoFsync => Sync::Cache,
        }
    }

    /// fsyncs `dir` unless fsync is off.
    ///
    /// # Errors
    /// I/O errors.
    pub fn fsync_dir(self, dir: &Path) -> Result<(), StoreError> {
        match self {
            Durability::Fsync => fsync_dir(dir),
            Durability::NoFsync => Ok(()),
        }
    }

    /// fsyncs an open file unless fsync is off.
    ///
    /// # Errors
    /// I/O errors.
    pub fn fsync_file(self, f: &File, path: &Path) -> Result<(), StoreError> {
        match self {
            Durability::Fsync => f.sync_all().map_err(|e| StoreError::io(path, e)),
            Durability::NoFsync => Ok(()),
        }
    }
}

/// Whether to fsync the new file before renaming it into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// fsync the file (contents must survive a crash once renamed).
    Data,
    /// No fsync: the file is a cache that is rebuilt when missing or stale.
    Cache,
}

/// Mode of every file we create: mail is private to its owner (Dovecot
/// uses 0600 in a 0700 Maildir too).
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory we create.
pub const DIR_MODE: u32 = 0o700;

/// Creates (truncating) a file with [`FILE_MODE`].
///
/// # Errors
/// I/O errors.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)
}

/// Creates a new file (failing if it exists) with [`FILE_MODE`].
///
/// # Errors
/// I/O errors, `AlreadyExists`.
pub fn create_new_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)
}

/// Creates a directory with [`DIR_MODE`].
///
/// # Errors
/// I/O errors, `AlreadyExists`.
pub fn create_dir_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(DIR_MODE).create(path)
}

/// Creates a directory and its missing parents with [`DIR_MODE`].
///
/// # Errors
/// I/O errors.
pub fn create_dir_all_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)
}

/// A temp name next to `path`, unique across processes and threads.
pub fn temp_path(path: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.dormouse-tmp.{}.{n}", std::process::id()))
}

/// The pid that wrote a [`temp_path`] file, from its name; `None` for any
/// other name.
pub fn temp_writer_pid(file_name: &str) -> Option<i32> {
    let (_, rest) = file_name.rsplit_once(".dormouse-tmp.")?;
    let (pid, n) = rest.split_once('.')?;
    n.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
    pid.parse().ok()
}

/// Replaces `path` atomically with `data`. The caller fsyncs the directory
/// (once for several files) with [`fsync_dir`].
///
/// # Errors
/// I/O errors; the temp file is removed on failure.
pub fn replace_file(path: &Path, data: &[u8], sync: Sync) -> Result<(), StoreError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = create_private(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        f.write_all(data).map_err(|e| StoreError::io(&tmp, e))?;
        if sync == Sync::Data {
            f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes a batch durable with the fsyncs running in parallel (so the
/// filesystem can serve them with one journal commit): fsyncs `dirs`, and
/// writes + fsyncs each of `files` under a temp name; then renames the temp
/// files into place. The caller fsyncs the files' directory afterwards.
///
/// # Errors
/// The first I/O error; temp files are removed on failure.
pub fn sync_batch(dirs: &[PathBuf], files: &[(PathBuf, Vec<u8>)], durability: Durability) -> Result<(), StoreError> {
    sync_batch_with_appends(dirs, files, &[], durability)
}

/// [`sync_batch`] that also appends to existing files (see
/// [`append_durably`]), in parallel with the other fsyncs. When any part of
/// the batch fails the appended files are cut back to their old lengths, so
/// the batch leaves nothing behind (the caller holds the lock that every
/// appender takes).
///
/// # Errors
/// The first I/O error; temp files are removed on failure.
pub fn sync_batch_with_appends(
    dirs: &[PathBuf],
    files: &[(PathBuf, Vec<u8>)],
    appends: &[(PathBuf, Vec<u8>)],
    durability: Durability,
) -> Result<(), StoreError> {
    let temps: Vec<PathBuf> = files.iter().map(|(p, _)| temp_path(p)).collect();
    let old_lengths: Vec<Option<u64>> = appends.iter().map(|(p, _)| std::fs::metadata(p).ok().map(|m| m.len())).collect();
    let dirs = if durability == Durability::Fsync { dirs } else { &[] };
    let write_one = |tmp: &Path, data: &[u8]| -> Result<(), StoreError> {
        let mut f = create_private(tmp).map_err(|e| StoreError::io(tmp, e))?;
        f.write_all(data).map_err(|e| StoreError::io(tmp, e))?;
        durability.fsync_file(&f, tmp)
    };
    let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for dir in dirs.iter().skip(1) {
            handles.push(scope.spawn(move || fsync_dir(dir)));
        }
        for ((_, data), tmp) in files.iter().zip(&temps) {
            handles.push(scope.spawn(move || write_one(tmp, data)));
        }
        for (path, data) in appends {
            handles.push(scope.spawn(move || append_durably(path, data, durability)));
        }
        let mut results: Vec<Result<(), StoreError>> = dirs.first().map(|d| fsync_dir(d)).into_iter().collect();
        results.extend(handles.into_iter().map(|h| {
            h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }));
        results
    });
    let mut result = results.into_iter().collect::<Result<Vec<()>, StoreError>>().map(|_| ());
    if result.is_ok() {
        for ((path, _), tmp) in files.iter().zip(&temps) {
            if let Err(e) = std::fs::rename(tmp, path) {
                result = Err(StoreError::io(path, e));
                break;
            }
        }
    }
    if result.is_err() {
        for tmp in &temps {
            let _ = std::fs::remove_file(tmp);
        }
        for ((path, _), len) in appends.iter().zip(old_lengths) {
            let cut = len.map(|len| std::fs::OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(len)));
            if let Some(Err(e)) = cut {
                tracing::error!(path = %path.display(), error = %e, "cutting back an append of a failed batch");
            }
        }
    }
    result
}

/// Appends `data` to the existing file `path` and fsyncs it (unless fsync
/// is off). On failure the file is cut back to its old length, so a failed
/// append leaves no partial record behind.
///
/// # Errors
/// I/O errors (also when `path` does not exist).
pub fn append_durably(path: &Path, data: &[u8], durability: Durability) -> Result<(), StoreError> {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).map_err(|e| StoreError::io(path, e))?;
    let old_len = f.metadata().map_err(|e| StoreError::io(path, e))?.len();
    let result = f.write_all(data).map_err(|e| StoreError::io(path, e)).and_then(|()| durability.fsync_file(&f, path));
    if result.is_err() {
        if let Err(e) = f.set_len(old_len) {
            tracing::error!(path = %path.display(), error = %e, "cutting back a failed append");
        }
    }
    result
}

/// fsyncs a directory so that renames/creates/unlinks in it are durable.
///
/// # Errors
/// I/O errors opening or syncing the directory.
pub fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    let f = File::open(dir).map_err(|e| StoreError::io(dir, e))?;
    f.sync_all().map_err(|e| StoreError::io(dir, e))
}

/// Reads a file, `Ok(None)` if it does not exist.
///
/// # Errors
/// Other I/O errors.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Current time in milliseconds since the UNIX epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Renames the mailbox directory `from` to `to`, failing with `EEXIST` or
/// `ENOTEMPTY` instead of replacing an existing `to`.
///
/// Linux has `RENAME_NOREPLACE`. Elsewhere a plain POSIX `rename` is used:
/// it also fails onto a non-empty directory, and a mailbox directory is never
/// empty (it is populated under a temporary name, then renamed), so only a
/// stray empty directory could be replaced there.
///
/// # Errors
/// The `rename` error number.
pub fn rename_dir_noreplace(from: &Path, to: &Path) -> rustix::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::fs::renameat_with(rustix::fs::CWD, from, rustix::fs::CWD, to, rustix::fs::RenameFlags::NOREPLACE)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        rustix::fs::renameat(rustix::fs::CWD, from, rustix::fs::CWD, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert_eq!(read_optional(&p).unwrap(), None);
        replace_file(&p, b"one", Sync::Data).unwrap();
        replace_file(&p, b"two", Sync::Cache).unwrap();
        fsync_dir(dir.path()).unwrap();
        assert_eq!(read_optional(&p).unwrap().unwrap(), b"two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, FILE_MODE);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp files left");
        assert!(replace_file(&dir.path().join("missing/f"), b"x", Sync::Data).is_err());
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        sync_batch(&[dir.path().to_path_buf()], &[(a.clone(), b"A".to_vec()), (b.clone(), b"B".to_vec())], Durability::Fsync)
            .unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"A");
        assert_eq!(std::fs::read(&b).unwrap(), b"B");
        let bad = dir.path().join("missing/c");
        assert!(sync_batch(&[], &[(a.clone(), b"A2".to_vec()), (bad, b"C".to_vec())], Durability::NoFsync).is_err());
        assert_eq!(std::fs::read(&a).unwrap(), b"A", "nothing renamed when one write fails");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "no temp files left");
    }
}
