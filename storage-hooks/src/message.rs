//! Per-message metadata and options of write operations.

use crate::Flags;

/// What the store knows about one message of an opened mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// The message's UID.
    pub uid: u32,
    /// Current flags (system flags and keywords).
    pub flags: Flags,
    /// MODSEQ of the last change to this message (RFC 7162).
    pub modseq: u64,
    /// Size in bytes of the stored message (CRLF line endings).
    pub size: u64,
    /// INTERNALDATE, seconds since the UNIX epoch (the file's mtime).
    pub internal_date: i64,
    /// True while the file is still in `new/` (IMAP `\Recent`).
    pub recent: bool,
}

/// Which event a write produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendKind {
    /// A delivery (LMTP, `deliver`): emits `MessageNew`.
    #[default]
    Delivery,
    /// IMAP APPEND or COPY/MOVE target: emits `MessageAppend`.
    Append,
}

/// Options for adding a message.
#[derive(Debug, Clone, Default)]
pub struct AppendOptions {
    /// Initial flags.
    pub flags: Flags,
    /// INTERNALDATE (seconds since the epoch); `None` means now.
    pub internal_date: Option<i64>,
    /// Which event to emit.
    pub kind: AppendKind,
}

/// Result of adding a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// UIDVALIDITY of the target mailbox.
    pub uidvalidity: u32,
    /// UID the message got.
    pub uid: u32,
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    /// `+FLAGS`: add.
    Add,
    /// `-FLAGS`: remove.
    Remove,
    /// `FLAGS`: replace.
    Replace,
}

/// Result of a flag change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFlagsResult {
    /// Messages whose flags actually changed: UID, new flags, new MODSEQ.
    pub changed: Vec<(u32, Flags, u64)>,
    /// UIDs not changed because their MODSEQ was above UNCHANGEDSINCE.
    pub modified: crate::UidSet,
}

/// Result of COPY / MOVE, for the UIDPLUS `COPYUID` response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyResult {
    /// UIDVALIDITY of the target mailbox.
    pub uidvalidity: u32,
    /// Source UIDs, in the order copied.
    pub source_uids: Vec<u32>,
    /// Target UIDs, position by position.
    pub target_uids: Vec<u32>,
}

/// Mailbox listing entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// UTF-8 name with `/` as hierarchy separator; `INBOX` for the root.
    pub name: String,
    /// RFC 6154 special use attribute, e.g. `\Sent`, derived from well-known names.
    pub special_use: Option<&'static str>,
    /// True if another mailbox lives below this one (CHILDREN).
    pub has_children: bool,
    /// True if subscribed.
    pub subscribed: bool,
    /// False for a parent that does not exist itself but has children
    /// (Maildir++ keeps `.a.b` when `a` is deleted): IMAP `\NonExistent`
    /// / `\Noselect`. Selecting it fails with `NoSuchMailbox`.
    pub selectable: bool,
}

/// What changed in an opened mailbox since the last [`crate::Mailbox::sync`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncChanges {
    /// UIDs that disappeared.
    pub expunged: Vec<u32>,
    /// UIDs that appeared.
    pub added: Vec<u32>,
    /// UIDs whose flags changed.
    pub flags_changed: Vec<u32>,
    /// True if UIDVALIDITY changed: every cached view is invalid.
    pub uidvalidity_changed: bool,
}
