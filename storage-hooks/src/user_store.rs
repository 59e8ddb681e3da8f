//! One user's Maildir++ store: mailbox-level operations and delivery.

use std::path::{Path, PathBuf};

use crate::message::{AppendOptions, AppendResult, MailboxInfo};
use crate::{Hooks, Mailbox, MailboxStatus, StoreError};

/// A user's mail store rooted at their Maildir (INBOX at the root, folders
/// as `.Name` directories). Cheap to clone; holds no open files. Safe to use
/// from several processes at once: shared files are guarded by dot-locks.
#[derive(Debug, Clone)]
pub struct UserStore {
    user: String,
    root: PathBuf,
    hooks: Hooks,
}

impl UserStore {
    /// Opens (creating `cur/ new/ tmp/` if missing) the Maildir at `root` for `user`.
    ///
    /// # Errors
    /// I/O errors creating the directories.
    pub fn open(user: &str, root: impl Into<PathBuf>, hooks: Hooks) -> Result<Self, StoreError> {
        let _ = (user, root.into(), hooks);
        todo!("storage helper")
    }

    /// The user's login name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The Maildir root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The hooks this store calls.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Lists all mailboxes (INBOX first), with subscription state.
    ///
    /// # Errors
    /// I/O errors reading the Maildir root.
    pub fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>, StoreError> {
        todo!("storage helper")
    }

    /// Creates a mailbox (and missing parents). Emits `MailboxCreate`.
    ///
    /// # Errors
    /// `MailboxExists`, `InvalidMailboxName`, I/O.
    pub fn create_mailbox(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        todo!("storage helper")
    }

    /// Deletes a mailbox and its messages. Emits `MailboxDelete`.
    ///
    /// # Errors
    /// `NoSuchMailbox`, `NotAllowed` for INBOX, I/O.
    pub fn delete_mailbox(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        todo!("storage helper")
    }

    /// Renames a mailbox and its children. Emits `MailboxRename`.
    /// Renaming INBOX moves its messages to a new mailbox, per RFC 3501.
    ///
    /// # Errors
    /// `NoSuchMailbox`, `MailboxExists`, `InvalidMailboxName`, I/O.
    pub fn rename_mailbox(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let _ = (from, to);
        todo!("storage helper")
    }

    /// Subscribes a mailbox (Dovecot's `subscriptions` file). Emits `MailboxSubscribe`.
    ///
    /// # Errors
    /// `InvalidMailboxName`, I/O.
    pub fn subscribe(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        todo!("storage helper")
    }

    /// Unsubscribes a mailbox. Emits `MailboxUnsubscribe`.
    ///
    /// # Errors
    /// I/O.
    pub fn unsubscribe(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        todo!("storage helper")
    }

    /// The mailbox's status record, read without scanning the Maildir
    /// (rebuilt by a scan only if the record is missing or stale).
    ///
    /// # Errors
    /// `NoSuchMailbox`, I/O.
    pub fn status(&self, mailbox: &str) -> Result<MailboxStatus, StoreError> {
        let _ = mailbox;
        todo!("storage helper")
    }

    /// Opens a mailbox: syncs the Maildir with the uidlist (new files get
    /// UIDs) and returns a snapshot. Emits nothing (our own index writes).
    ///
    /// # Errors
    /// `NoSuchMailbox`, I/O, `LockTimeout`.
    pub fn open_mailbox(&self, name: &str) -> Result<Mailbox, StoreError> {
        let _ = name;
        todo!("storage helper")
    }

    /// Adds a message durably (tmp/, fsync, rename, dir fsync, uidlist) and
    /// emits `MessageNew` or `MessageAppend` per `opts.kind`. Bare LF line
    /// endings are stored as CRLF.
    ///
    /// # Errors
    /// `NoSuchMailbox`, `InvalidMessage` (empty), I/O, `LockTimeout`.
    pub fn append(&self, mailbox: &str, raw: &[u8], opts: &AppendOptions) -> Result<AppendResult, StoreError> {
        let _ = (mailbox, raw, opts);
        todo!("storage helper")
    }
}
