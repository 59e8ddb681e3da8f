//! `[push.webpush]`: Web Push settings.
//!
//! ```toml
//! [push.webpush]
//! vapid_key_file = ""           # PEM (P-256); empty = <state_dir>/vapid-private.pem, made on first use
//! subject = "mailto:postmaster@localhost"
//! ttl_secs = 86400
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::PushConfigError;

/// `[push.webpush]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebPushConfig {
    /// The VAPID private key (PEM, P-256); empty means
    /// `<relay state_dir>/vapid-private.pem`, created on first use.
    pub vapid_key_file: PathBuf,
    /// VAPID `sub` claim: a `mailto:` or `https:` contact.
    pub subject: String,
    /// How long the push service keeps an undelivered message (seconds).
    pub ttl_secs: u32,
}

impl Default for WebPushConfig {
    fn default() -> Self {
        WebPushConfig { vapid_key_file: PathBuf::new(), subject: "mailto:postmaster@localhost".into(), ttl_secs: 86_400 }
    }
}

impl WebPushConfig {
    /// Checks values serde cannot.
    ///
    /// # Errors
    /// [`PushConfigError`] naming the bad key.
    pub fn validate(&self) -> Result<(), PushConfigError> {
        if !(self.subject.starts_with("mailto:") || self.subject.starts_with("https://")) {
            return Err(PushConfigError { key: "webpush.subject", reason: "must start with mailto: or https://".into() });
        }
        Ok(())
    }
}
