//! The typed change events the store publishes (RFC 5423 event names).
//!
//! # Format (version 1)
//!
//! A [`MailboxEvent`] is a plain serde record; on the wire (bus) it is encoded
//! with postcard after a one-byte format version ([`EVENT_VERSION`]). Fields:
//!
//! | field | meaning |
//! |---|---|
//! | `kind` | one of [`EventKind`] (RFC 5423 names) |
//! | `user` | the user's login name |
//! | `mailbox` | mailbox name in UTF-8 (`INBOX`, `Archive/2024`), `/` as separator |
//! | `old_mailbox` | previous name, only for `MailboxRename` |
//! | `uidvalidity` | UIDVALIDITY of `mailbox` after the change |
//! | `uids` | UIDs affected, as ranges (empty for mailbox-level events) |
//! | `flags` | flags set (`FlagsSet`), cleared (`FlagsClear`), or the initial flags of new messages |
//! | `status` | the mailbox's [`MailboxStatus`] after the change |
//! | `modseq_before` | HIGHESTMODSEQ before the change |
//! | `modseq_after` | HIGHESTMODSEQ after the change (`== status.highestmodseq`) |
//! | `summary` | for `MessageNew`/`MessageAppend`: from, subject, snippet of the first new message |
//! | `timestamp_ms` | wall-clock time of the change, milliseconds since the UNIX epoch |
//!
//! A receiver that caches a mailbox's HIGHESTMODSEQ detects a missed event
//! when an event's `modseq_before` differs from its cached value, and then
//! resyncs the mailbox from storage instead of trusting its cache.

use serde::{Deserialize, Serialize};

use crate::{Flags, MailboxStatus, UidSet};

/// Version of the [`MailboxEvent`] format. Bump on any incompatible change.
pub const EVENT_VERSION: u8 = 1;

/// What kind of change happened (names from RFC 5423).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A message was delivered (LMTP, `deliver`, or found by the watcher).
    MessageNew,
    /// A message was added by APPEND, or is the target of COPY/MOVE.
    MessageAppend,
    /// Messages were expunged.
    MessageExpunge,
    /// Flags were added to messages.
    FlagsSet,
    /// Flags were removed from messages.
    FlagsClear,
    /// A mailbox was created.
    MailboxCreate,
    /// A mailbox was deleted.
    MailboxDelete,
    /// A mailbox was renamed (`old_mailbox` -> `mailbox`).
    MailboxRename,
    /// A mailbox was subscribed.
    MailboxSubscribe,
    /// A mailbox was unsubscribed.
    MailboxUnsubscribe,
}

impl EventKind {
    /// The RFC 5423 name, e.g. `"MessageNew"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageNew => "MessageNew",
            EventKind::MessageAppend => "MessageAppend",
            EventKind::MessageExpunge => "MessageExpunge",
            EventKind::FlagsSet => "FlagsSet",
            EventKind::FlagsClear => "FlagsClear",
            EventKind::MailboxCreate => "MailboxCreate",
            EventKind::MailboxDelete => "MailboxDelete",
            EventKind::MailboxRename => "MailboxRename",
            EventKind::MailboxSubscribe => "MailboxSubscribe",
            EventKind::MailboxUnsubscribe => "MailboxUnsubscribe",
        }
    }
}

/// A short summary of a new message, for push consumers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSummary {
    /// The `From` header, decoded, at most [`MessageSummary::MAX_FIELD`] bytes.
    pub from: String,
    /// The `Subject` header, decoded, at most [`MessageSummary::MAX_FIELD`] bytes.
    pub subject: String,
    /// The start of the first text part, whitespace collapsed, at most
    /// [`MessageSummary::MAX_SNIPPET`] bytes.
    pub snippet: String,
}

impl MessageSummary {
    /// Maximum bytes kept of `from` and `subject`.
    pub const MAX_FIELD: usize = 256;
    /// Maximum bytes kept of `snippet`.
    pub const MAX_SNIPPET: usize = 256;
}

/// One real change to a user's mail store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxEvent {
    /// What happened.
    pub kind: EventKind,
    /// Login name of the mailbox owner.
    pub user: String,
    /// Mailbox name (UTF-8, `/`-separated); the new name for renames.
    pub mailbox: String,
    /// Previous mailbox name, for `MailboxRename` only.
    pub old_mailbox: Option<String>,
    /// UIDVALIDITY of the mailbox.
    pub uidvalidity: u32,
    /// UIDs affected.
    pub uids: UidSet,
    /// Flags involved (set, cleared, or initial flags of new messages).
    pub flags: Flags,
    /// Mailbox status after the change.
    pub status: MailboxStatus,
    /// HIGHESTMODSEQ before the change.
    pub modseq_before: u64,
    /// HIGHESTMODSEQ after the change.
    pub modseq_after: u64,
    /// Header summary for `MessageNew` / `MessageAppend`.
    pub summary: Option<MessageSummary>,
    /// Time of the change in milliseconds since the UNIX epoch.
    pub timestamp_ms: u64,
}

/// Errors decoding an event from bytes.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// The buffer was empty.
    #[error("empty event buffer")]
    Empty,
    /// The version byte is not one we understand.
    #[error("unknown event format version {0}")]
    UnknownVersion(u8),
    /// The payload did not decode.
    #[error("malformed event: {0}")]
    Malformed(#[from] postcard::Error),
}

impl MailboxEvent {
    /// Encodes as `[EVENT_VERSION] ++ postcard(self)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![EVENT_VERSION];
        // Serializing plain owned data into a Vec cannot fail.
        let body = postcard::to_stdvec(self).expect("postcard encoding of an owned record");
        out.extend_from_slice(&body);
        out
    }

    /// Decodes bytes produced by [`MailboxEvent::encode`].
    ///
    /// # Errors
    /// [`EventDecodeError`] for an empty buffer, an unknown version, or a
    /// malformed payload; never panics on untrusted input.
    pub fn decode(bytes: &[u8]) -> Result<Self, EventDecodeError> {
        let (&version, body) = bytes.split_first().ok_or(EventDecodeError::Empty)?;
        if version != EVENT_VERSION {
            return Err(EventDecodeError::UnknownVersion(version));
        }
        let mut ev: MailboxEvent = postcard::from_bytes(body)?;
        // Untrusted ranges are re-normalized so the invariants of UidSet hold.
        ev.uids = UidSet::from_ranges(ev.uids.ranges().iter().copied());
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemFlags;

    fn sample() -> MailboxEvent {
        MailboxEvent {
            kind: EventKind::MessageNew,
            user: "a.b*c> d ü".into(),
            mailbox: "INBOX".into(),
            old_mailbox: None,
            uidvalidity: 1_700_000_000,
            uids: UidSet::from_range(5, 9),
            flags: Flags::system(SystemFlags::SEEN),
            status: MailboxStatus { messages: 9, uidnext: 10, ..Default::default() },
            modseq_before: 4,
            modseq_after: 5,
            summary: Some(MessageSummary { from: "x@y".into(), subject: "hi".into(), snippet: "hello".into() }),
            timestamp_ms: 1,
        }
    }

    #[test]
    fn round_trip() {
        let ev = sample();
        let bytes = ev.encode();
        assert_eq!(bytes[0], EVENT_VERSION);
        assert_eq!(MailboxEvent::decode(&bytes).unwrap(), ev);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(MailboxEvent::decode(&[]), Err(EventDecodeError::Empty)));
        assert!(matches!(MailboxEvent::decode(&[99, 1, 2]), Err(EventDecodeError::UnknownVersion(99))));
        let mut bytes = sample().encode();
        bytes.truncate(bytes.len() / 2);
        assert!(matches!(MailboxEvent::decode(&bytes), Err(EventDecodeError::Malformed(_))));
    }
}
