//! Durable file primitives: atomic replace (temp file, fsync, rename) and
//! directory fsync, with errors that carry the path.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::StoreError;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether to fsync the new file before renaming it into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// fsync the file (contents must survive a crash once renamed).
    Data,
    /// No fsync: the file is a cache that is rebuilt when missing or stale.
    Cache,
}

/// A temp name next to `path`, unique across processes and threads.
pub fn temp_path(path: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.dormouse-tmp.{}.{n}", std::process::id()))
}

/// Replaces `path` atomically with `data`. The caller fsyncs the directory
/// (once for several files) with [`fsync_dir`].
///
/// # Errors
/// I/O errors; the temp file is removed on failure.
pub fn replace_file(path: &Path, data: &[u8], sync: Sync) -> Result<(), StoreError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
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
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp files left");
        assert!(replace_file(&dir.path().join("missing/f"), b"x", Sync::Data).is_err());
    }
}
