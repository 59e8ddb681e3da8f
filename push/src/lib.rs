//! Mailbox events for consumers outside the IMAP server: phones, webmails,
//! other services that want to hear about mail without holding an IMAP
//! connection.
//!
//! Scope: the stable external event format ([`ExternalEvent`], JSON, RFC 5423
//! event names, versioned, with a JSON Schema in `push/schema/`), its
//! derivation from the store's internal [`storage_hooks::MailboxEvent`]
//! under a header privacy policy ([`HeaderPolicy`]), and the `[push]`
//! configuration ([`PushConfig`]). Out of scope: IMAP, storage, and the
//! internal bus wire format (crate `bus`).

pub mod config;
pub mod external_event;
pub mod nats_publisher;
pub mod registration;
pub mod registration_store;
pub mod relay;
pub mod web_push;

pub use config::{HeaderPolicy, PushConfig};
pub use external_event::{ExternalEvent, ExternalEventKind, EXTERNAL_EVENT_VERSION};
pub use nats_publisher::PushNatsPublisher;
pub use registration::{Registration, Target};
