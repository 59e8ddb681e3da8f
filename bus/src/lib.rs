//! Transport of mailbox change events from the storage layer to the
//! processes that wait for them (hibernate, push relays).
//!
//! One interface, two transports: [`BusPublisher`] (a storage
//! [`storage_hooks::ChangeHook`] that never blocks the storage thread) and
//! [`BusSubscriber`] (per-user subscribe/unsubscribe at run time, yielding
//! [`BusMessage::Event`] for subscribed users only and
//! [`BusMessage::Resync`] whenever something may have been missed). The
//! default transport is a broker-less UNIX-datagram bus in a private folder
//! ([`unix_dgram`]); the other is NATS with optional JetStream ([`nats`],
//! whose module docs describe the subject layout and a read-only permission
//! set). Both carry the versioned frames of [`wire`]; undecodable input is
//! dropped, counted ([`CountersSnapshot`]) and logged rate-limited, never a
//! panic. Out of scope: reading state from storage on resync (the caller
//! does it) and IMAP semantics.

pub mod config;
pub mod counters;
pub mod dispatch;
pub mod endpoint;
pub mod error;
pub mod message;
pub mod nats;
pub mod rate_log;
pub mod unix_dgram;
pub mod wire;

pub use config::{BusConfig, JetStreamConfig, NatsConfig, SubscriptionMode, Transport, UnixConfig};
pub use counters::{BusCounters, CountersSnapshot};
pub use endpoint::{BusPublisher, BusSubscriber};
pub use error::BusError;
pub use message::{BusMessage, ResyncReason};
pub use nats::{LocalNatsServer, NatsPublisher, NatsSubscriber};
pub use unix_dgram::{UnixPublisher, UnixSubscriber};
