//! Maildir storage that tells the world about every real change.
//!
//! This crate owns the on-disk mail store (Maildir++, compatible with Dovecot's
//! file names, `dovecot-uidlist` version 3 and `dovecot-keywords`) and the event
//! model: after every *durable, real* change (delivery, append, expunge, flag
//! change, mailbox create/delete/rename, subscribe) the store calls its
//! [`ChangeHook`]s with a typed [`MailboxEvent`] that carries the mailbox's new
//! [`MailboxStatus`]. Reads and writes to our own index, uidlist, status and lock
//! files never produce events. Transport of events (UNIX datagram, NATS) lives
//! in the `bus` crate; IMAP semantics (sequence numbers, sessions) live in `imap`.
//!
//! # On-disk format
//!
//! Full description: `storage-hooks/FORMAT.md`. In short, per mailbox
//! directory (INBOX = the Maildir root, folders = `.Level1.Level2` in
//! modified UTF-7):
//!
//! | file | owner | content |
//! |---|---|---|
//! | `cur/ new/ tmp/` | shared | messages `<basename>[:2,<DFPRST + keyword letters>]`, CRLF |
//! | `dovecot-uidlist` | shared | version 3: `3 V<uidvalidity> N<next> G<guid>`, lines `<uid> [ext] :<basename>` |
//! | `dovecot-uidlist.lock` | shared | dot-lock (`O_EXCL`, `<pid>:<host>`) guarding all per-mailbox writes |
//! | `dovecot-keywords` | shared | `<index> <keyword>` lines, letter `a` = index 0 (26 letters) |
//! | `dormouse-index` | ours | `DMIX` v1 postcard: MODSEQs, index-only keywords (beyond 26), expunge log |
//! | `dormouse-index.log` | ours | `DMIL` v1: checksummed change records appended after that snapshot |
//! | `dormouse-status` | ours | `DMST` v1 postcard: [`MailboxStatus`] + stamp of cur/new/uidlist |
//!
//! In memory only: `load_cache` (parsed uidlist, index and listing per
//! mailbox, caught up from what changed; bounded by mailboxes, messages
//! and idle time), `dir_events` (one inotify instance per process keeping
//! the cached `new/`/`cur/` listings exact, so a load after a change lists
//! no directory; mtime rules without it) and `header_cache` (header fields
//! SEARCH parsed).
//!
//! At the root: `subscriptions` (Dovecot 2.3 `V\t2` format) and
//! `dovecot-uidvalidity`. Events are [`MailboxEvent`] format version
//! [`EVENT_VERSION`] (see [`event`]).

pub mod event;
pub mod flags;
pub mod hook;
pub mod status;
pub mod uid_set;

pub use event::{EventKind, MailboxEvent, MessageSummary, EVENT_VERSION};
pub use flags::{Flags, SystemFlags};
pub use hook::{ChangeHook, CollectingHook, HookError, Hooks};
pub use status::MailboxStatus;
pub use uid_set::{UidRange, UidSet};
pub mod error;
pub mod mailbox;
pub mod message;
pub mod user_store;

pub use error::StoreError;
pub use incoming::IncomingMessage;
pub use mailbox::Mailbox;
pub use message::{AppendKind, AppendOptions, AppendResult, CopyResult, FlagOp, MailboxInfo, MessageMeta, StoreFlagsResult, SyncChanges};
pub use user_store::UserStore;

pub mod append_queue;
pub mod auto_mailboxes;
pub mod copy_txn;
pub mod degraded;
pub mod dir_events;
pub mod dotlock;
pub mod durable;
pub mod expunge_log;
pub mod header_cache;
pub mod incoming;
pub mod index_file;
pub mod index_log;
pub mod keywords;
pub mod load_cache;
pub mod load_catch_up;
pub mod locked_mailbox;
pub mod mailbox_dir;
pub mod mailbox_name;
pub mod maildir_file;
pub mod move_txn;
pub mod mutf7;
pub mod outside_changes;
pub mod own_changes;
pub mod special_use;
pub mod status_record;
pub mod subscriptions;
pub mod summary;
pub mod uidlist;
pub mod uidvalidity;
pub mod watcher;

pub use durable::Durability;
pub use mailbox_name::MailboxName;
