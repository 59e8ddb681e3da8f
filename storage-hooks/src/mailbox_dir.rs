//! One Maildir folder on disk: paths, directory scans and durable message
//! file creation (tmp/, fsync, rename into new/, fsync new/).

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::durable::{self, Durability};
use crate::mailbox_name::MailboxName;
use crate::maildir_file::{new_basename, MaildirFileName};
use crate::{StoreError, SystemFlags};

/// A listing of `new/` and `cur/` by basename (foldhash: a big mailbox's
/// listing is hashed several times per load, SipHash was a fifth of it).
pub type Listing = HashMap<String, FileEntry, foldhash::fast::RandomState>;

#[cfg(test)]
thread_local! {
    /// Directories this thread listed (tests count readdirs with it).
    pub(crate) static LISTED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Where a message file currently is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Full file name (basename plus info).
    pub file_name: String,
    /// True if in `new/`, false if in `cur/`.
    pub in_new: bool,
}

/// A mailbox directory: INBOX is the Maildir root, folders are `.Name`.
#[derive(Debug, Clone)]
pub struct MailboxDir {
    /// The user's Maildir root.
    pub root: PathBuf,
    /// This mailbox's directory.
    pub path: PathBuf,
    /// The mailbox name.
    pub name: MailboxName,
    /// Host name used in new file names.
    pub host: String,
    /// Whether writes are fsynced.
    pub durability: Durability,
}

impl MailboxDir {
    /// The directory of `name` below `root` (does not touch the disk).
    pub fn new(root: &Path, name: MailboxName, host: &str, durability: Durability) -> Self {
        let path = if name.is_inbox() { root.to_path_buf() } else { root.join(name.dir_name()) };
        MailboxDir { root: root.to_path_buf(), path, name, host: host.to_string(), durability }
    }

    /// True if the directory exists.
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Fails with `NoSuchMailbox` unless the directory exists; creates
    /// missing `cur/ new/ tmp/` (Maildir++ folders made by hand may lack them).
    ///
    /// # Errors
    /// `NoSuchMailbox`, I/O.
    pub fn require(&self) -> Result<(), StoreError> {
        if !self.exists() {
            return Err(StoreError::NoSuchMailbox(self.name.to_string()));
        }
        for sub in ["cur", "new", "tmp"] {
            let p = self.path.join(sub);
            if !p.is_dir() {
                match durable::create_dir_private(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(StoreError::io(p, e)),
                }
            }
        }
        Ok(())
    }

    /// Removes files in `tmp/` not touched for 36 hours (left by writers
    /// that crashed before renaming into `new/`; the Maildir convention
    /// Dovecot follows too). Age is the inode change time, not the mtime: an
    /// APPEND sets the mtime of its temp file to the INTERNALDATE, which may
    /// be years old, while the file is still being written (Dovecot looks at
    /// ctime for the same reason). Errors are logged, not returned.
    pub fn clean_tmp(&self) {
        use std::os::unix::fs::MetadataExt;
        let tmp = self.path.join("tmp");
        let Ok(rd) = std::fs::read_dir(&tmp) else {
            return;
        };
        let now = std::time::SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        for entry in rd.flatten() {
            let old = entry.metadata().is_ok_and(|m| abandoned_tmp(m.ctime(), now));
            if old {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), error = %e, "removing stale tmp file failed");
                }
            }
        }
    }

    /// Path of a file in `new/` or `cur/`.
    pub fn file_path(&self, in_new: bool, file_name: &str) -> PathBuf {
        self.path.join(if in_new { "new" } else { "cur" }).join(file_name)
    }

    /// Lists `new/` then `cur/` (in that order, so a file moving from new/
    /// to cur/ meanwhile is seen at least once), keyed by basename. A
    /// basename present in both is reported in `cur/`. A file another
    /// program renames within `cur/` (a flag change) while it is being read
    /// may be missing: callers that expect files look again (see
    /// `locked_mailbox::scan_expected`).
    ///
    /// # Errors
    /// I/O errors reading the directories.
    pub fn scan(&self) -> Result<Listing, StoreError> {
        self.rescan(Listing::default(), true, true)
    }

    /// [`MailboxDir::scan`] of `new/` and/or `cur/` only, starting from
    /// `known`, a listing taken earlier: entries of a directory not listed
    /// again are kept as they are, and names found again keep their
    /// entries (no new allocations for the names a big mailbox already had).
    ///
    /// # Errors
    /// I/O errors reading the directories.
    pub fn rescan(&self, known: Listing, new: bool, cur: bool) -> Result<Listing, StoreError> {
        let (mut out, mut reuse): (Listing, Listing) = if new && cur {
            (Listing::with_capacity_and_hasher(known.len(), Default::default()), known)
        } else {
            let mut keep = Listing::with_capacity_and_hasher(known.len(), Default::default());
            let mut reuse = Listing::default();
            for (k, e) in known {
                let listed_again = if e.in_new { new } else { cur };
                let side = if listed_again { &mut reuse } else { &mut keep };
                side.insert(k, e);
            }
            (keep, reuse)
        };
        for (sub, in_new) in [("new", true), ("cur", false)] {
            if !(if in_new { new } else { cur }) {
                continue;
            }
            let dir = self.path.join(sub);
            #[cfg(test)]
            LISTED.with(|c| c.set(c.get() + 1));
            let io_err = |e: rustix::io::Errno| StoreError::io(&dir, std::io::Error::from(e));
            // rustix's reader hands out borrowed names: a name already known
            // costs no allocation (std's `DirEntry::file_name` allocates each).
            let fd = rustix::fs::open(
                &dir,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(io_err)?;
            let mut rd = rustix::fs::Dir::new(fd).map_err(io_err)?;
            while let Some(entry) = rd.read() {
                let entry = entry.map_err(io_err)?;
                let Ok(file_name) = entry.file_name().to_str() else {
                    tracing::warn!(dir = %dir.display(), "skipping non-UTF-8 file name");
                    continue;
                };
                let Some(basename) = MaildirFileName::basename_of(file_name) else { continue };
                // A basename in both directories is reported in cur/.
                if in_new && !cur && out.get(basename).is_some_and(|e| !e.in_new) {
                    continue;
                }
                let (key, entry) = match reuse.remove_entry(basename) {
                    Some((key, mut e)) => {
                        if e.file_name != file_name {
                            e.file_name = file_name.to_string();
                        }
                        e.in_new = in_new;
                        (key, e)
                    }
                    None => (basename.to_string(), FileEntry { file_name: file_name.to_string(), in_new }),
                };
                out.insert(key, entry);
            }
        }
        Ok(out)
    }

    /// A new unique basename for a message of `size` bytes (stored as is,
    /// so its CRLF size is the same).
    pub fn new_message_basename(&self, size: u64) -> String {
        new_basename(&self.host, size, size)
    }

    /// Writes a complete message under `basename` (from
    /// [`MailboxDir::new_message_basename`]) into `new/` (with a `:2,` info part if
    /// `system` is not empty) and returns its parsed file name. The data is
    /// fsynced before the rename; the rename itself becomes durable with the
    /// `new/` fsync done by [`crate::locked_mailbox::LockedMailbox::commit`]
    /// (pass the basename as one of `own` to `load`). The mtime is set to
    /// `internal_date` if given.
    ///
    /// # Errors
    /// I/O errors; a partial temp file is removed.
    pub fn write_message(
        &self,
        basename: String,
        data: &[u8],
        system: SystemFlags,
        internal_date: Option<i64>,
    ) -> Result<MaildirFileName, StoreError> {
        let tmp = self.path.join("tmp").join(&basename);
        let result = (|| {
            let mut f = durable::create_new_private(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
            f.write_all(data).map_err(|e| StoreError::io(&tmp, e))?;
            if let Some(t) = internal_date {
                set_mtime(&f, t).map_err(|e| StoreError::io(&tmp, e))?;
            }
            self.durability.fsync_file(&f, &tmp)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let name = MaildirFileName { basename, system, keyword_indexes: Vec::new() };
        let target = self.file_path(true, &name.file_name(false));
        // Our own arrival: this process's watcher leaves it to the commit.
        crate::own_changes::record(&target, crate::own_changes::Change::Arrived);
        if let Err(e) = std::fs::rename(&tmp, &target) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io(target, e));
        }
        Ok(name)
    }

    /// Puts a copy of `source` at `tmp` (a path in `tmp/`): a hard link
    /// when possible (keeps the mtime, i.e. INTERNALDATE), else a copy with
    /// the data fsynced and the mtime carried over. Returns the file name
    /// the message is to have (a new basename with `system` flags).
    ///
    /// # Errors
    /// I/O errors; a partial copy is removed.
    pub fn link_or_copy_to(&self, source: &Path, tmp: &Path, vsize: u64, system: SystemFlags) -> Result<MaildirFileName, StoreError> {
        let meta = std::fs::metadata(source).map_err(|e| StoreError::io(source, e))?;
        let name = MaildirFileName { basename: new_basename(&self.host, meta.len(), vsize), system, keyword_indexes: Vec::new() };
        match std::fs::hard_link(source, tmp) {
            Ok(()) => return Ok(name),
            Err(e) => tracing::debug!(error = %e, "hard link failed, copying"),
        }
        let result = (|| {
            let mut f = durable::create_new_private(tmp).map_err(|e| StoreError::io(tmp, e))?;
            let mut src = File::open(source).map_err(|e| StoreError::io(source, e))?;
            std::io::copy(&mut src, &mut f).map_err(|e| StoreError::io(tmp, e))?;
            if let Ok(m) = meta.modified() {
                f.set_modified(m).map_err(|e| StoreError::io(tmp, e))?;
            }
            self.durability.fsync_file(&f, tmp)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
        Ok(name)
    }

    /// Reads a message by its last known location, looking it up again by
    /// basename if it was renamed meanwhile (flag change, new/ -> cur/).
    /// Returns the content converted to CRLF line endings.
    ///
    /// # Errors
    /// `NoSuchMessage(uid)` if the file is gone, other I/O errors.
    pub fn read_message(&self, uid: u32, basename: &str, last: &FileEntry) -> Result<Vec<u8>, StoreError> {
        let first = self.file_path(last.in_new, &last.file_name);
        match std::fs::read(&first) {
            Ok(data) => return Ok(to_crlf(data)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(first, e)),
        }
        for _ in 0..3 {
            let Some(entry) = self.scan()?.remove(basename) else {
                continue;
            };
            let path = self.file_path(entry.in_new, &entry.file_name);
            match std::fs::read(&path) {
                Ok(data) => return Ok(to_crlf(data)),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        Err(StoreError::NoSuchMessage(uid))
    }

    /// mtime of a message file in seconds (INTERNALDATE); 0 if it vanished.
    pub fn internal_date(&self, entry: &FileEntry) -> i64 {
        std::fs::metadata(self.file_path(entry.in_new, &entry.file_name))
            .ok()
            .and_then(|m| m.modified().ok())
            .map(|t| match t.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            })
            .unwrap_or(0)
    }

    /// CRLF size of a file (for files without a `W=` field).
    ///
    /// # Errors
    /// I/O errors.
    pub fn vsize_of(&self, entry: &FileEntry) -> Result<u64, StoreError> {
        let path = self.file_path(entry.in_new, &entry.file_name);
        let data = std::fs::read(&path).map_err(|e| StoreError::io(path, e))?;
        Ok(crlf_len(&data))
    }
}

/// True for a temp file whose inode last changed at `ctime` (seconds) and
/// is 36 hours old or more at `now`.
fn abandoned_tmp(ctime: i64, now: i64) -> bool {
    now.saturating_sub(ctime) >= 36 * 3600
}

/// Sets the mtime and atime of `f` to `secs` since the epoch (INTERNALDATE).
pub(crate) fn set_mtime(f: &File, secs: i64) -> std::io::Result<()> {
    let t = if secs >= 0 { UNIX_EPOCH + Duration::from_secs(secs as u64) } else { UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) };
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
}

/// Length of `data` once bare LFs are turned into CRLF.
pub fn crlf_len(data: &[u8]) -> u64 {
    let bare = data.iter().enumerate().filter(|&(i, &b)| b == b'\n' && (i == 0 || data[i - 1] != b'\r')).count();
    (data.len() + bare) as u64
}

/// Converts bare LF line endings to CRLF (existing CRLF are kept).
pub fn to_crlf(data: Vec<u8>) -> Vec<u8> {
    if crlf_len(&data) == data.len() as u64 {
        return data;
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_conversion() {
        assert_eq!(to_crlf(b"a\nb\r\nc\n".to_vec()), b"a\r\nb\r\nc\r\n");
        assert_eq!(to_crlf(b"\n".to_vec()), b"\r\n");
        assert_eq!(crlf_len(b"a\nb\r\n"), 6);
        assert_eq!(to_crlf(b"x\r\n".to_vec()), b"x\r\n");
    }

    #[test]
    fn write_scan_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let mb = MailboxDir::new(dir.path(), MailboxName::inbox(), "host", Durability::Fsync);
        std::fs::create_dir(dir.path().join("x")).unwrap();
        mb.require().unwrap();
        let data = b"Subject: x\r\n\r\nbody\r\n";
        let name = mb.write_message(mb.new_message_basename(data.len() as u64), data, SystemFlags::SEEN, Some(1_000_000)).unwrap();
        let listing = mb.scan().unwrap();
        let entry = &listing[&name.basename];
        assert!(entry.in_new);
        assert!(entry.file_name.ends_with(":2,S"));
        assert_eq!(mb.internal_date(entry), 1_000_000);
        // Renamed behind our back: still found by basename.
        let moved = FileEntry { file_name: format!("{}:2,ST", name.basename), in_new: false };
        std::fs::rename(mb.file_path(true, &entry.file_name), mb.file_path(false, &moved.file_name)).unwrap();
        assert_eq!(mb.read_message(1, &name.basename, entry).unwrap(), b"Subject: x\r\n\r\nbody\r\n");
        // An APPEND with an old INTERNALDATE in progress: its temp file's
        // mtime is old, but it was written just now and must stay.
        let in_progress = dir.path().join("tmp/in-progress");
        std::fs::write(&in_progress, b"x").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(40 * 3600);
        File::options().write(true).open(&in_progress).unwrap().set_modified(old).unwrap();
        mb.clean_tmp();
        assert!(in_progress.exists(), "a temp file being written is not stale");
        std::fs::remove_file(&in_progress).unwrap();
        assert!(abandoned_tmp(0, 36 * 3600) && !abandoned_tmp(1, 36 * 3600));
        let staged = dir.path().join("tmp/copy");
        let copy = mb.link_or_copy_to(&mb.file_path(false, &moved.file_name), &staged, 20, SystemFlags::empty()).unwrap();
        std::fs::rename(&staged, mb.file_path(true, &copy.file_name(false))).unwrap();
        assert_eq!(mb.scan().unwrap().len(), 2);
        assert_eq!(mb.internal_date(&mb.scan().unwrap()[&copy.basename]), 1_000_000);
        assert!(matches!(
            mb.read_message(7, "gone", &FileEntry { file_name: "gone".into(), in_new: true }),
            Err(StoreError::NoSuchMessage(7))
        ));
        assert!(matches!(
            MailboxDir::new(dir.path(), MailboxName::parse("nope").unwrap(), "h", Durability::Fsync).require(),
            Err(StoreError::NoSuchMailbox(_))
        ));
    }
}
