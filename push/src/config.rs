//! The `[push]` configuration section.
//!
//! ```toml
//! [push]
//! max_event_bytes = 3800         # JSON size limit (Web Push allows ~3993)
//!
//! [push.headers]                 # what new-mail events reveal (privacy)
//! from = true
//! subject = true
//! snippet = true
//! snippet_bytes = 200
//!
//! [push.nats]                    # external events on NATS (uses [bus.nats] for the connection)
//! enabled = false
//! subject_prefix = "dormouse.v1.push"
//! stream = "DORMOUSE_PUSH"
//! max_age_secs = 604800
//! max_bytes = 1073741824
//! duplicate_window_secs = 120
//! ```
//!
//! `[push.relay]` and `[push.webpush]` are documented on
//! [`crate::relay::RelayConfig`] and [`crate::web_push::WebPushConfig`].

use serde::{Deserialize, Serialize};

use crate::relay::RelayConfig;
use crate::web_push::WebPushConfig;

/// Errors in the `[push]` section that serde cannot catch.
#[derive(Debug, thiserror::Error)]
#[error("invalid config value push.{key}: {reason}")]
pub struct PushConfigError {
    /// The key below `push.`.
    pub key: &'static str,
    /// Why it is refused.
    pub reason: String,
}

/// The whole `[push]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Largest external event in bytes of JSON; longer ones are shortened
    /// (see [`crate::ExternalEvent::to_json_bounded`]), never dropped.
    pub max_event_bytes: usize,
    /// Which message fields new-mail events carry.
    pub headers: HeaderPolicy,
    /// External events on NATS / JetStream.
    pub nats: PushNatsConfig,
    /// The `dormouse push-relay` process.
    pub relay: RelayConfig,
    /// Web Push (VAPID) settings.
    pub webpush: WebPushConfig,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            max_event_bytes: 3800,
            headers: HeaderPolicy::default(),
            nats: PushNatsConfig::default(),
            relay: RelayConfig::default(),
            webpush: WebPushConfig::default(),
        }
    }
}

impl PushConfig {
    /// Checks values serde cannot.
    ///
    /// # Errors
    /// [`PushConfigError`] naming the bad key.
    pub fn validate(&self) -> Result<(), PushConfigError> {
        if self.max_event_bytes < crate::external_event::MIN_EVENT_BYTES {
            return Err(PushConfigError {
                key: "max_event_bytes",
                reason: format!("must be at least {}", crate::external_event::MIN_EVENT_BYTES),
            });
        }
        let prefix = &self.nats.subject_prefix;
        if prefix.is_empty() || prefix.split('.').any(|t| t.is_empty() || t.contains(['*', '>']) || t.contains(char::is_whitespace)) {
            return Err(PushConfigError { key: "nats.subject_prefix", reason: format!("{prefix:?} is not a literal NATS subject") });
        }
        if self.nats.stream.is_empty() || self.nats.stream.contains(['.', ' ', '*', '>']) {
            return Err(PushConfigError { key: "nats.stream", reason: format!("{:?} is not a valid stream name", self.nats.stream) });
        }
        // JetStream turns 0 into its own default (which would look like a
        // changed setting at every start) and refuses a window above max_age.
        let nats = &self.nats;
        if nats.duplicate_window_secs == 0 || (nats.max_age_secs > 0 && nats.duplicate_window_secs > nats.max_age_secs) {
            return Err(PushConfigError {
                key: "nats.duplicate_window_secs",
                reason: "must be at least 1 and at most nats.max_age_secs (when that is not 0)".into(),
            });
        }
        self.relay.validate()?;
        self.webpush.validate()?;
        Ok(())
    }
}

/// Which fields of a new message external events may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderPolicy {
    /// Include the decoded `From` header.
    pub from: bool,
    /// Include the decoded `Subject` header.
    pub subject: bool,
    /// Include the start of the text.
    pub snippet: bool,
    /// Longest snippet in bytes (cut on a character boundary).
    pub snippet_bytes: usize,
}

impl Default for HeaderPolicy {
    fn default() -> Self {
        HeaderPolicy { from: true, subject: true, snippet: true, snippet_bytes: 200 }
    }
}

/// `[push.nats]`: publishing external events on NATS with a JetStream stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushNatsConfig {
    /// Publish external events (connection settings from `[bus.nats]`).
    pub enabled: bool,
    /// Subjects are `<prefix>.<user token>.<EventName>`.
    pub subject_prefix: String,
    /// JetStream stream capturing `<prefix>.>`, created if missing.
    pub stream: String,
    /// Keep events at most this long (seconds).
    pub max_age_secs: u64,
    /// Keep at most this many bytes of events.
    pub max_bytes: i64,
    /// JetStream drops a re-published event with the same id within this window.
    pub duplicate_window_secs: u64,
}

impl Default for PushNatsConfig {
    fn default() -> Self {
        PushNatsConfig {
            enabled: false,
            subject_prefix: "dormouse.v1.push".into(),
            stream: "DORMOUSE_PUSH".into(),
            max_age_secs: 7 * 24 * 3600,
            max_bytes: 1 << 30,
            duplicate_window_secs: 120,
        }
    }
}
