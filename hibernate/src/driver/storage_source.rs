//! [`StateSource`] over the Maildir store. Reads happen on the driver
//! thread; they are rare (first session of a mailbox, a STATUS of an
//! uncached mailbox, a flag change, a resync) and never per session.

use std::path::Path;

use storage_hooks::{Hooks, MailboxStatus, UserStore};

use crate::core::source::{ChangedFlags, MailboxSnapshot, SourceError, StateSource};

/// Reads mailbox state with `storage_hooks::UserStore`. Reads of our own
/// state emit nothing; with outside-change reporting on in `hooks`, a read
/// that is the first to find a change made by another program publishes it
/// (otherwise the change would be numbered here and never announced).
#[derive(Debug, Default, Clone)]
pub struct StorageSource {
    hooks: Hooks,
}

impl StorageSource {
    /// A source whose stores call `hooks`.
    pub fn new(hooks: Hooks) -> Self {
        StorageSource { hooks }
    }

    fn open(&self, user: &str, maildir: &Path) -> Result<UserStore, SourceError> {
        UserStore::open(user, maildir, self.hooks.clone()).map_err(|e| SourceError(e.to_string()))
    }
}

impl StateSource for StorageSource {
    fn status(&self, user: &str, maildir: &Path, mailbox: &str) -> Result<MailboxStatus, SourceError> {
        self.open(user, maildir)?.status(mailbox).map_err(|e| SourceError(e.to_string()))
    }

    fn snapshot(&self, user: &str, maildir: &Path, mailbox: &str) -> Result<MailboxSnapshot, SourceError> {
        let mb = self.open(user, maildir)?.open_mailbox(mailbox).map_err(|e| SourceError(e.to_string()))?;
        Ok(MailboxSnapshot { status: mb.status(), uids: mb.messages().iter().map(|m| m.uid).collect() })
    }

    fn changed_flags(
        &self,
        user: &str,
        maildir: &Path,
        mailbox: &str,
        since: u64,
    ) -> Result<Vec<ChangedFlags>, SourceError> {
        let mb = self.open(user, maildir)?.open_mailbox(mailbox).map_err(|e| SourceError(e.to_string()))?;
        Ok(mb
            .messages()
            .iter()
            .filter(|m| m.modseq > since)
            .map(|m| ChangedFlags { uid: m.uid, flags: m.flags.clone(), modseq: m.modseq })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use storage_hooks::{AppendOptions, CollectingHook, EventKind};

    use super::*;

    /// A change another program made is announced by whichever read finds it
    /// first, here the hibernate process's STATUS, when reporting is on.
    #[test]
    fn a_read_that_finds_an_outside_change_publishes_it_when_reporting() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("Maildir");
        let store = UserStore::open("ann", &maildir, Hooks::default()).unwrap();
        store.append("INBOX", b"Subject: ours\r\n\r\nx\r\n", &AppendOptions::default()).unwrap();
        std::fs::write(maildir.join("new").join("outside.1:2,"), b"Subject: theirs\r\n\r\ny\r\n").unwrap();

        let silent = CollectingHook::new();
        let quiet_source = StorageSource::new(Hooks::new().with(silent.clone()));
        let reporting = CollectingHook::new();
        let source = StorageSource::new(Hooks::new().with(reporting.clone()).with_outside_change_reporting(true));

        assert_eq!(quiet_source.snapshot("ann", &maildir, "INBOX").unwrap().status.messages, 2);
        assert!(silent.is_empty(), "without reporting a read stays silent");

        std::fs::write(maildir.join("new").join("outside.2:2,"), b"Subject: again\r\n\r\nz\r\n").unwrap();
        let status = source.status("ann", &maildir, "INBOX").unwrap();
        assert_eq!(status.messages, 3);
        let events = reporting.take();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, EventKind::MessageNew);
        assert_eq!(events[0].uids.len(), 1);
    }
}
