//! Push registrations: who wants which events where.

use serde::{Deserialize, Serialize};

use crate::ExternalEventKind;

/// One registration: a user's events (optionally filtered by type) go to
/// one target. Stored durably by the relay's registration store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Stable id (`r-` and 16 hex digits), used to remove it.
    pub id: String,
    /// The user whose events are delivered.
    pub user: String,
    /// Event types to deliver; empty means all.
    pub events: Vec<ExternalEventKind>,
    /// Where to deliver.
    pub target: Target,
    /// Creation time, milliseconds since the UNIX epoch.
    pub created_ms: u64,
}

impl Registration {
    /// True if events of `kind` go to this registration.
    pub fn wants(&self, kind: ExternalEventKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }
}

/// A delivery target.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Target {
    /// An HTTP(S) webhook, signed with HMAC-SHA256.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// HMAC key for the signature header.
        secret: String,
    },
    /// A Web Push subscription (the browser's `PushSubscription`).
    Webpush {
        /// The push service URL.
        endpoint: String,
        /// The user agent's P-256 public key, base64url (65 bytes uncompressed).
        p256dh: String,
        /// The 16-byte authentication secret, base64url.
        auth: String,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets and subscription keys never reach logs.
        match self {
            Target::Webhook { url, .. } => f.debug_struct("Webhook").field("url", url).finish_non_exhaustive(),
            Target::Webpush { endpoint, .. } => f.debug_struct("Webpush").field("endpoint", endpoint).finish_non_exhaustive(),
        }
    }
}
