//! What one delivery attempt to an endpoint came to.

use std::time::Duration;

/// The result of one HTTP delivery attempt (webhook or Web Push); the relay
/// decides from it whether to retry, dead-letter, or drop a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The endpoint accepted the event (2xx).
    Delivered {
        /// HTTP status.
        status: u16,
    },
    /// A temporary failure (timeout, connection refused, 5xx, 408, 429):
    /// try again after the backoff, or after `retry_after` if the endpoint
    /// said so.
    Retry {
        /// What went wrong, for logs and the dead-letter log (no secrets).
        reason: String,
        /// The endpoint's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// A failure retrying cannot fix (other 4xx, a redirect, a payload the
    /// endpoint refuses): the event goes to the dead-letter log at once.
    Permanent {
        /// What went wrong.
        reason: String,
    },
    /// The subscription no longer exists (Web Push 404/410): the event is
    /// dead-lettered and the registration removed.
    Gone {
        /// What the push service said.
        reason: String,
    },
}
