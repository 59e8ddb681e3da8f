//! The durable registration store: `<state_dir>/registrations.json`.
//!
//! The file is replaced atomically (temp file, fsync, rename, directory
//! fsync) with mode 0600 in a 0700 directory. Changes (`add`, `remove`)
//! read, modify and write the file under a dot-lock
//! (`registrations.json.lock`, [`storage_hooks::dotlock`]), so concurrent
//! CLI invocations never lose each other's entries. The relay notices a
//! change by the file's [`FileStamp`] (a rename always makes a new inode)
//! and reloads without a restart.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use storage_hooks::dotlock::{DotLock, DotLockOptions};
use storage_hooks::durable;

use crate::Registration;

/// Name of the registration file in the state directory.
pub const REGISTRATIONS_FILE: &str = "registrations.json";

/// Version of the registration file format.
const FILE_VERSION: u32 = 1;

/// Errors of the registration store and of registration checks.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// Reading or writing a file failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The registration file does not parse.
    #[error("{path} is not a valid registration file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The store lock could not be taken.
    #[error("cannot lock the registration store: {0}")]
    Lock(String),
    /// A webhook URL was refused.
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl {
        /// The URL without credentials.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// A webhook secret was refused (the secret itself is never shown).
    #[error("invalid secret: {0}")]
    InvalidSecret(String),
    /// An event name is not an RFC 5423 name.
    #[error("{0}")]
    UnknownEvent(String),
    /// The user is not in the passwd file.
    #[error("unknown user {0:?}: not in the passwd file")]
    UnknownUser(String),
    /// No registration has this id.
    #[error("no registration with id {0:?}")]
    NotFound(String),
    /// A Web Push subscription was refused.
    #[error("invalid Web Push subscription: {0}")]
    InvalidSubscription(String),
}

/// The on-disk form.
#[derive(Debug, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    registrations: Vec<Registration>,
}

/// Identity of one version of the registration file: it changes whenever
/// the file is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

/// The registration file of one state directory.
#[derive(Debug, Clone)]
pub struct RegistrationStore {
    dir: PathBuf,
    path: PathBuf,
}

impl RegistrationStore {
    /// The store in `state_dir` (nothing is touched until used).
    pub fn new(state_dir: &Path) -> Self {
        RegistrationStore { dir: state_dir.to_path_buf(), path: state_dir.join(REGISTRATIONS_FILE) }
    }

    /// The registration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the state directory (mode 0700) if missing.
    ///
    /// # Errors
    /// [`RegistrationError::Io`].
    pub fn ensure_dir(&self) -> Result<(), RegistrationError> {
        durable::create_dir_all_private(&self.dir).map_err(|source| RegistrationError::Io { path: self.dir.clone(), source })
    }

    /// All registrations (none if the file does not exist yet).
    ///
    /// # Errors
    /// [`RegistrationError::Io`], [`RegistrationError::Corrupt`].
    pub fn load(&self) -> Result<Vec<Registration>, RegistrationError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(RegistrationError::Io { path: self.path.clone(), source }),
        };
        let file: StoreFile = serde_json::from_slice(&bytes)
            .map_err(|e| RegistrationError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
        if file.version != FILE_VERSION {
            return Err(RegistrationError::Corrupt {
                path: self.path.clone(),
                reason: format!("unknown version {} (this build reads {FILE_VERSION})", file.version),
            });
        }
        Ok(file.registrations)
    }

    /// The current file's stamp, `None` if it does not exist.
    pub fn stamp(&self) -> Option<FileStamp> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some(FileStamp { ino: m.ino(), mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()), len: m.len() })
    }

    /// Adds `registration` if `user_known(&registration.user)`.
    ///
    /// # Errors
    /// [`RegistrationError::UnknownUser`], lock and I/O errors.
    pub fn add(&self, registration: Registration, user_known: impl Fn(&str) -> bool) -> Result<(), RegistrationError> {
        if !user_known(&registration.user) {
            return Err(RegistrationError::UnknownUser(registration.user));
        }
        self.modify(|regs| {
            regs.push(registration);
            Ok(())
        })
    }

    /// Removes the registration `id` and returns it.
    ///
    /// # Errors
    /// [`RegistrationError::NotFound`], lock and I/O errors.
    pub fn remove(&self, id: &str) -> Result<Registration, RegistrationError> {
        let mut removed = None;
        self.modify(|regs| {
            let pos = regs.iter().position(|r| r.id == id).ok_or_else(|| RegistrationError::NotFound(id.to_owned()))?;
            removed = Some(regs.remove(pos));
            Ok(())
        })?;
        removed.ok_or_else(|| RegistrationError::NotFound(id.to_owned()))
    }

    /// Read-modify-write under the store lock.
    fn modify(
        &self,
        change: impl FnOnce(&mut Vec<Registration>) -> Result<(), RegistrationError>,
    ) -> Result<(), RegistrationError> {
        self.ensure_dir()?;
        let opts = DotLockOptions { timeout: Duration::from_secs(30), stale_after: Duration::from_secs(60) };
        let _lock = DotLock::acquire(&self.path, opts).map_err(|e| RegistrationError::Lock(e.to_string()))?;
        let mut regs = self.load()?;
        change(&mut regs)?;
        let file = StoreFile { version: FILE_VERSION, registrations: regs };
        let mut bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| RegistrationError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
        bytes.push(b'\n');
        let io = |e: storage_hooks::StoreError| RegistrationError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        };
        durable::replace_file(&self.path, &bytes, durable::Sync::Data).map_err(io)?;
        durable::fsync_dir(&self.dir).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Target;
    use std::os::unix::fs::PermissionsExt;

    fn hook(user: &str) -> Registration {
        let target = Target::Webhook { url: "http://127.0.0.1:9/x".into(), secret: crate::registration::generate_secret() };
        Registration::new(user, &[], target).unwrap()
    }

    #[test]
    fn add_list_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistrationStore::new(&dir.path().join("push"));
        assert!(store.load().unwrap().is_empty());
        assert!(store.stamp().is_none());
        let a = hook("alice");
        store.add(a.clone(), |_| true).unwrap();
        let stamp = store.stamp().unwrap();
        store.add(hook("bob"), |_| true).unwrap();
        assert_ne!(store.stamp().unwrap(), stamp);
        assert_eq!(store.load().unwrap().len(), 2);
        assert_eq!(store.remove(&a.id).unwrap(), a);
        assert!(matches!(store.remove(&a.id), Err(RegistrationError::NotFound(_))));
        assert_eq!(store.load().unwrap()[0].user, "bob");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(mode(&dir.path().join("push")), 0o700);
    }

    #[test]
    fn unknown_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistrationStore::new(dir.path());
        let err = store.add(hook("mallory"), |u| u == "alice").unwrap_err();
        assert!(err.to_string().contains("mallory"), "{err}");
        assert!(store.load().unwrap().is_empty());
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistrationStore::new(dir.path());
        std::fs::write(store.path(), b"{ nope").unwrap();
        assert!(matches!(store.load(), Err(RegistrationError::Corrupt { .. })));
        assert!(store.add(hook("a"), |_| true).is_err());
    }
}
