//! Errors returned by the store.

use std::path::PathBuf;

/// Errors from storage operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a path.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The mailbox does not exist.
    #[error("mailbox does not exist: {0}")]
    NoSuchMailbox(String),
    /// The mailbox already exists.
    #[error("mailbox already exists: {0}")]
    MailboxExists(String),
    /// The mailbox name is not acceptable (empty, `..`, control chars, too long...).
    #[error("invalid mailbox name {name:?}: {reason}")]
    InvalidMailboxName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The operation is not allowed (e.g. deleting INBOX, renaming onto INBOX).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// A dot-lock could not be taken within the timeout.
    #[error("timed out waiting for lock {0}")]
    LockTimeout(PathBuf),
    /// A shared index file is corrupt beyond repair; the message says what was done.
    #[error("corrupt {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The message is empty or otherwise unacceptable.
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    /// The UID does not exist (any more).
    #[error("no message with UID {0}")]
    NoSuchMessage(u32),
}

impl StoreError {
    /// Helper to wrap an `io::Error` with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { path: path.into(), source }
    }

    /// True for errors worth retrying later (I/O, lock timeouts): delivery
    /// agents map these to a temporary failure (EX_TEMPFAIL / 4xx).
    pub fn is_temporary(&self) -> bool {
        matches!(self, StoreError::Io { .. } | StoreError::LockTimeout(_))
    }

    /// True if the filesystem or the user's quota is full (`ENOSPC`,
    /// `EDQUOT`): IMAP answers `NO [OVERQUOTA]`, LMTP `452 4.3.1`, and
    /// reads fall back to what is already on disk.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => crate::degraded::is_storage_full_io(source),
            _ => false,
        }
    }
}
