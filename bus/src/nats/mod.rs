//! The NATS transport (core NATS, optionally captured by a JetStream stream).
//!
//! # Subject layout
//!
//! Every event of user `U` is published to
//!
//! ```text
//! <subject_prefix>.<token(U)>        default prefix: dormouse.v1.events
//! token(U) = first 16 bytes of SHA-256(U as UTF-8), lowercase hex (32 chars)
//! ```
//!
//! The token is opaque and always subject-safe, whatever the user name holds
//! (`.`, `*`, `>`, spaces, non-ASCII). The payload is the versioned frame of
//! [`crate::wire`] (one record per message). A subscriber holds exactly one
//! subscription per user that has sessions in it, and drops it when the last
//! session leaves, so the server only ever sends it the users it asked for.
//!
//! With `subscription_mode = "wildcard"` a subscriber instead holds one
//! subscription to `<subject_prefix>.>` and filters by user locally (like the
//! UNIX transport): constant client memory instead of about 5.3 KB per
//! subscribed user, for trusted consumers only, since every user's events
//! then reach the process.
//!
//! Core NATS does not replay: after a reconnect the subscriber asks the
//! application to resync every subscribed user ([`crate::ResyncReason::Reconnected`]),
//! after the client has re-sent its subscriptions and the server confirmed
//! them (a flush), so no event falls between the resync and the new
//! subscriptions.
//!
//! With `[bus.nats.jetstream] enabled = true` the publisher creates (if
//! missing) a stream bound to `<subject_prefix>.>` with the configured
//! `max_age`/`max_bytes`; every core publish is then also stored by the
//! server for durable consumers.
//!
//! # Permissions for a read-only push consumer
//!
//! ```text
//! authorization {
//!   users = [
//!     { user: dormouse, password: "...",            # the server itself
//!       permissions: { publish: ["dormouse.v1.events.>", "$JS.API.>", "_INBOX.>"],
//!                      subscribe: ["dormouse.v1.events.>", "_INBOX.>"] } }
//!     { user: push, password: "...",                # read-only consumer
//!       permissions: { publish: { deny: ["dormouse.v1.events.>"] },
//!                      subscribe: { allow: ["dormouse.v1.events.>"] } } }
//!   ]
//! }
//! ```
//!
//! A JetStream push consumer additionally needs `publish: ["$JS.API.CONSUMER.>"]`
//! (to create its consumer) and `subscribe` on its deliver subject; it still
//! cannot publish events.

mod connect;
mod local_server;
mod publisher;
mod subject;
mod subscriber;

pub use connect::{connect, redacted_url};
pub use local_server::LocalNatsServer;
pub use publisher::NatsPublisher;
pub use subject::{subject_for_user, user_token};
pub use subscriber::NatsSubscriber;
