//! [`StateSource`] over the Maildir store. Reads happen on the driver
//! thread; they are rare (first session of a mailbox, a STATUS of an
//! uncached mailbox, a flag change, a resync) and never per session.

use std::path::Path;

use storage_hooks::{Hooks, MailboxStatus, UserStore};

use crate::core::source::{ChangedFlags, MailboxSnapshot, SourceError, StateSource};

/// Reads mailbox state with `storage_hooks::UserStore` (no hooks: reads
/// emit nothing).
#[derive(Debug, Default, Clone, Copy)]
pub struct StorageSource;

fn open(user: &str, maildir: &Path) -> Result<UserStore, SourceError> {
    UserStore::open(user, maildir, Hooks::default()).map_err(|e| SourceError(e.to_string()))
}

impl StateSource for StorageSource {
    fn status(&self, user: &str, maildir: &Path, mailbox: &str) -> Result<MailboxStatus, SourceError> {
        open(user, maildir)?.status(mailbox).map_err(|e| SourceError(e.to_string()))
    }

    fn snapshot(&self, user: &str, maildir: &Path, mailbox: &str) -> Result<MailboxSnapshot, SourceError> {
        let mb = open(user, maildir)?.open_mailbox(mailbox).map_err(|e| SourceError(e.to_string()))?;
        Ok(MailboxSnapshot { status: mb.status(), uids: mb.messages().iter().map(|m| m.uid).collect() })
    }

    fn changed_flags(
        &self,
        user: &str,
        maildir: &Path,
        mailbox: &str,
        since: u64,
    ) -> Result<Vec<ChangedFlags>, SourceError> {
        let mb = open(user, maildir)?.open_mailbox(mailbox).map_err(|e| SourceError(e.to_string()))?;
        Ok(mb
            .messages()
            .iter()
            .filter(|m| m.modseq > since)
            .map(|m| ChangedFlags { uid: m.uid, flags: m.flags.clone(), modseq: m.modseq })
            .collect())
    }
}
