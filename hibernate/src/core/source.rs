//! What the core reads from storage, behind a trait so the core stays
//! deterministic and testable without a Maildir.

use std::path::Path;

use storage_hooks::{Flags, MailboxStatus, UidSet};

/// A storage read failed (the mailbox may be gone).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage read failed: {0}")]
pub struct SourceError(pub String);

/// One message whose flags changed after a given MODSEQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFlags {
    /// The message's UID.
    pub uid: u32,
    /// Its complete current flags.
    pub flags: Flags,
    /// Its current per-message MODSEQ.
    pub modseq: u64,
}

/// A mailbox's state as storage has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxSnapshot {
    /// The status record.
    pub status: MailboxStatus,
    /// Every UID in the mailbox.
    pub uids: UidSet,
}

/// Storage reads the hibernate core needs. Every call is for one user's
/// mailbox; implementations must not emit change events.
pub trait StateSource {
    /// The status record of `mailbox` (cheap: no Maildir scan).
    ///
    /// # Errors
    /// The mailbox does not exist or cannot be read.
    fn status(&self, user: &str, maildir: &Path, mailbox: &str) -> Result<MailboxStatus, SourceError>;

    /// Status and UID list of `mailbox` (a resync after a gap).
    ///
    /// # Errors
    /// The mailbox does not exist or cannot be read.
    fn snapshot(&self, user: &str, maildir: &Path, mailbox: &str) -> Result<MailboxSnapshot, SourceError>;

    /// Messages whose per-message MODSEQ is greater than `since`, with
    /// their full flags, ascending by UID.
    ///
    /// # Errors
    /// The mailbox does not exist or cannot be read.
    fn changed_flags(
        &self,
        user: &str,
        maildir: &Path,
        mailbox: &str,
        since: u64,
    ) -> Result<Vec<ChangedFlags>, SourceError>;
}
