//! The per-mailbox status record: what STATUS answers, without a Maildir scan.

use serde::{Deserialize, Serialize};

/// Counters of one mailbox, kept current by the store with every change and
/// persisted next to the mailbox, so that STATUS (and the hibernate process)
/// can answer without scanning the Maildir.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxStatus {
    /// Number of messages.
    pub messages: u32,
    /// Number of messages without `\Seen`.
    pub unseen: u32,
    /// Number of messages still in `new/` (never seen by a selecting session).
    pub recent: u32,
    /// The UID the next message will get.
    pub uidnext: u32,
    /// UIDVALIDITY of the mailbox.
    pub uidvalidity: u32,
    /// Highest MODSEQ of any change in the mailbox (RFC 7162).
    pub highestmodseq: u64,
    /// Total size of all messages in bytes (RFC 8438 STATUS SIZE).
    pub size: u64,
}
