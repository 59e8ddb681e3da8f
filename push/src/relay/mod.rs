//! `dormouse push-relay`: turns external events into HTTP webhooks and Web
//! Push messages, per registration, without ever slowing the IMAP side.
//!
//! Events come from a source ([`bus_source`]: the internal bus, best effort;
//! [`jetstream_source`]: the durable JetStream stream, at-least-once) and go
//! to the [`Relay`], which queues one delivery per matching endpoint
//! (registration or global endpoint) on that endpoint's bounded queue
//! ([`endpoint_queue`]). Workers send them ([`webhook`], signed per
//! [`signature`]) with retries ([`backoff`]) until each is delivered or
//! written to the dead-letter log ([`dead_letter`]). [`runner`] ties a
//! source, the registration reload and the counters log together.

pub mod attempt;
pub mod backoff;
pub mod bus_source;
pub mod completion;
pub mod config;
pub mod counters;
pub mod dead_letter;
pub mod delivered_log;
pub mod delivery;
pub mod dispatcher;
pub mod endpoint;
pub mod endpoint_queue;
pub mod jetstream_source;
pub mod runner;
pub mod signature;
pub mod webhook;

pub use attempt::AttemptOutcome;
pub use config::{GlobalEndpoint, RelayConfig, RelaySource};
pub use counters::RelayCountersSnapshot;
pub use dispatcher::{Relay, RelayError, RelaySettings};
pub use signature::{signature_header, verify_signature, SignatureError, SIGNATURE_HEADER};
