//! An opened mailbox: a synced snapshot of its messages plus write operations.

use crate::message::{CopyResult, FlagOp, MessageMeta, StoreFlagsResult, SyncChanges};
use crate::{Flags, StoreError, UidSet, UserStore};

/// An opened mailbox. Holds the message list (sorted by UID) as of the last
/// [`Mailbox::sync`]; write operations update it and emit events.
#[derive(Debug)]
pub struct Mailbox {
    store: UserStore,
    name: String,
    uidvalidity: u32,
    uidnext: u32,
    highestmodseq: u64,
    messages: Vec<MessageMeta>,
}

impl Mailbox {
    /// The mailbox name (UTF-8).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store this mailbox belongs to.
    pub fn store(&self) -> &UserStore {
        &self.store
    }

    /// UIDVALIDITY.
    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }

    /// UIDNEXT.
    pub fn uidnext(&self) -> u32 {
        self.uidnext
    }

    /// HIGHESTMODSEQ.
    pub fn highestmodseq(&self) -> u64 {
        self.highestmodseq
    }

    /// Messages sorted by UID.
    pub fn messages(&self) -> &[MessageMeta] {
        &self.messages
    }

    /// Re-reads the Maildir and uidlist; returns what changed since the last
    /// sync. New files found here (written behind our back) get UIDs, but
    /// emit nothing: outside changes are reported by the watcher, not here.
    ///
    /// # Errors
    /// I/O, `LockTimeout`.
    pub fn sync(&mut self) -> Result<SyncChanges, StoreError> {
        todo!("storage helper")
    }

    /// Reads the full raw message (CRLF line endings).
    ///
    /// # Errors
    /// `NoSuchMessage` if expunged meanwhile, I/O.
    pub fn read_message(&self, uid: u32) -> Result<Vec<u8>, StoreError> {
        let _ = uid;
        todo!("storage helper")
    }

    /// Moves `\Recent` messages from `new/` to `cur/` (a SELECT, not EXAMINE,
    /// does this). Our own rename: emits nothing.
    ///
    /// # Errors
    /// I/O.
    pub fn clear_recent(&mut self) -> Result<Vec<u32>, StoreError> {
        todo!("storage helper")
    }

    /// Changes flags of `uids`. With `unchanged_since`, messages whose MODSEQ
    /// is greater are left alone and reported in `modified` (CONDSTORE).
    /// Emits `FlagsSet` and/or `FlagsClear` for the messages that changed,
    /// each changed message getting a new MODSEQ.
    ///
    /// # Errors
    /// I/O, `LockTimeout`.
    pub fn store_flags(
        &mut self,
        uids: &UidSet,
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<StoreFlagsResult, StoreError> {
        let _ = (uids, op, flags, unchanged_since);
        todo!("storage helper")
    }

    /// Expunges messages flagged `\Deleted` (only those in `uids` if given,
    /// for UID EXPUNGE). Emits `MessageExpunge`. Returns the expunged UIDs.
    ///
    /// # Errors
    /// I/O, `LockTimeout`.
    pub fn expunge(&mut self, uids: Option<&UidSet>) -> Result<Vec<u32>, StoreError> {
        let _ = uids;
        todo!("storage helper")
    }

    /// Copies messages to `target` keeping flags and INTERNALDATE. Emits
    /// `MessageAppend` on the target.
    ///
    /// # Errors
    /// `NoSuchMailbox` (target), I/O.
    pub fn copy_to(&self, uids: &UidSet, target: &str) -> Result<CopyResult, StoreError> {
        let _ = (uids, target);
        todo!("storage helper")
    }

    /// Moves messages to `target`: copy then expunge from this mailbox, each
    /// step durable. Emits `MessageAppend` on the target, `MessageExpunge` here.
    ///
    /// # Errors
    /// `NoSuchMailbox` (target), I/O.
    pub fn move_to(&mut self, uids: &UidSet, target: &str) -> Result<CopyResult, StoreError> {
        let _ = (uids, target);
        todo!("storage helper")
    }

    /// UIDs expunged after `modseq` (for QRESYNC `VANISHED (EARLIER)`), as far
    /// as the expunge log reaches; `None` if the log does not reach back that far.
    ///
    /// # Errors
    /// I/O.
    pub fn expunged_since(&self, modseq: u64) -> Result<Option<UidSet>, StoreError> {
        let _ = modseq;
        todo!("storage helper")
    }
}
