//! `[push.relay]`: the relay process.
//!
//! ```toml
//! [push.relay]
//! source = "auto"               # "bus" (UNIX datagram / core NATS), "jetstream", or auto
//! state_dir = ""                # registrations + dead letters; empty = <data_dir>/push
//! consumer = "dormouse-push-relay"
//! timeout_ms = 5000
//! max_attempts = 8
//! backoff_initial_ms = 500
//! backoff_max_ms = 60000
//! queue_per_endpoint = 1000
//! concurrency_per_endpoint = 4
//! max_ack_pending = 10000       # JetStream: messages in work at once
//! ack_wait_secs = 30            # JetStream: redelivery of un-acked messages after
//!
//! [[push.relay.endpoints]]      # global endpoints: every user's events
//! url = "https://hooks.example.org/mail"
//! secret = "shared-hmac-secret"
//! events = ["MessageNew"]       # empty = all
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::PushConfigError;

/// Where the relay reads events from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelaySource {
    /// JetStream when `[push.nats] enabled` and the bus is NATS, else the bus.
    #[default]
    Auto,
    /// The internal bus (UNIX datagram on one machine): best effort.
    Bus,
    /// The durable JetStream stream of `[push.nats]`.
    Jetstream,
}

/// `[push.relay]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Where events come from.
    pub source: RelaySource,
    /// Registrations and dead-letter log; empty means `<data_dir>/push`.
    pub state_dir: PathBuf,
    /// Durable JetStream consumer name.
    pub consumer: String,
    /// Per-request timeout (connect + response), milliseconds.
    pub timeout_ms: u64,
    /// Attempts per event and endpoint before it goes to the dead-letter log.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    pub backoff_max_ms: u64,
    /// Events waiting per endpoint; beyond it events go to the dead-letter log.
    pub queue_per_endpoint: usize,
    /// Requests in flight per endpoint.
    pub concurrency_per_endpoint: usize,
    /// JetStream source: most stream messages in work (un-acknowledged) at
    /// once; the server sends no more until some are final.
    pub max_ack_pending: i64,
    /// JetStream source: the server redelivers a message not acknowledged
    /// within this many seconds (after a crash: how soon a restarted relay
    /// gets the open messages again).
    pub ack_wait_secs: u64,
    /// Endpoints that receive every user's events.
    pub endpoints: Vec<GlobalEndpoint>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            source: RelaySource::Auto,
            state_dir: PathBuf::new(),
            consumer: "dormouse-push-relay".into(),
            timeout_ms: 5000,
            max_attempts: 8,
            backoff_initial_ms: 500,
            backoff_max_ms: 60_000,
            queue_per_endpoint: 1000,
            concurrency_per_endpoint: 4,
            max_ack_pending: 10_000,
            ack_wait_secs: 30,
            endpoints: Vec::new(),
        }
    }
}

impl RelayConfig {
    /// Checks values serde cannot.
    ///
    /// # Errors
    /// [`PushConfigError`] naming the bad key.
    pub fn validate(&self) -> Result<(), PushConfigError> {
        let bad = |key, reason: &str| Err(PushConfigError { key, reason: reason.into() });
        if self.timeout_ms == 0 {
            return bad("relay.timeout_ms", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("relay.max_attempts", "must be at least 1");
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return bad("relay.backoff_initial_ms", "must be at least 1 and not above relay.backoff_max_ms");
        }
        if self.queue_per_endpoint == 0 || self.concurrency_per_endpoint == 0 {
            return bad("relay.queue_per_endpoint", "queue_per_endpoint and concurrency_per_endpoint must be at least 1");
        }
        if self.consumer.is_empty() || self.consumer.contains(['.', ' ', '*', '>']) {
            return bad("relay.consumer", "must be a non-empty name without '.', ' ', '*' or '>'");
        }
        if self.max_ack_pending < 1 {
            return bad("relay.max_ack_pending", "must be at least 1");
        }
        if self.ack_wait_secs == 0 {
            return bad("relay.ack_wait_secs", "must be at least 1");
        }
        for ep in &self.endpoints {
            for name in &ep.events {
                crate::ExternalEventKind::parse(name).map_err(|reason| PushConfigError { key: "relay.endpoints.events", reason })?;
            }
            crate::registration::parse_webhook_url(&ep.url)
                .map_err(|e| PushConfigError { key: "relay.endpoints.url", reason: e.to_string() })?;
            crate::registration::check_secret(&ep.secret)
                .map_err(|e| PushConfigError { key: "relay.endpoints.secret", reason: e.to_string() })?;
        }
        Ok(())
    }
}

/// A webhook endpoint from the configuration that receives every user's events.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalEndpoint {
    /// `http://` or `https://` URL.
    pub url: String,
    /// HMAC-SHA256 key for the signature header.
    pub secret: String,
    /// RFC 5423 names to deliver; empty means all.
    #[serde(default)]
    pub events: Vec<String>,
}

impl std::fmt::Debug for GlobalEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches logs.
        f.debug_struct("GlobalEndpoint").field("url", &self.url).field("secret", &"<redacted>").field("events", &self.events).finish()
    }
}
