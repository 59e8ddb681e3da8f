//! Per-connection settings and resource limits of a [`crate::session::Session`].

use std::time::Duration;

/// Resource limits enforced by the session before any parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted command line in bytes (without literal data).
    pub max_line: usize,
    /// Largest accepted APPEND literal (message size) in bytes.
    pub max_append_literal: u32,
    /// Largest accepted literal in any other command (LOGIN, SEARCH, ...).
    pub max_other_literal: u32,
    /// IDLE ends with `* BYE` after this long without DONE (RFC 2177: 29 min).
    pub idle_timeout: Duration,
    /// An authenticated session without any command for this long is logged
    /// out (RFC 3501 5.4: at least 30 minutes).
    pub autologout: Duration,
    /// A not-yet-authenticated session is dropped after this long.
    pub preauth_timeout: Duration,
    /// Failed LOGIN/AUTHENTICATE attempts before the connection is closed.
    pub max_auth_failures: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 64 * 1024,
            max_append_literal: 64 * 1024 * 1024,
            max_other_literal: 64 * 1024,
            idle_timeout: Duration::from_secs(30 * 60),
            autologout: Duration::from_secs(30 * 60),
            preauth_timeout: Duration::from_secs(60),
            max_auth_failures: 3,
        }
    }
}

/// What the session may offer and how it behaves after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// The connection is already encrypted (implicit TLS, or after STARTTLS).
    pub tls_active: bool,
    /// The driver can do STARTTLS (advertised and accepted while `!tls_active`).
    pub starttls_available: bool,
    /// Allow LOGIN / AUTHENTICATE PLAIN on an unencrypted connection
    /// (otherwise `LOGINDISABLED` is advertised and LOGIN gets `NO`).
    pub allow_plaintext_auth: bool,
    /// Master-process mode: after a successful login the session emits
    /// [`crate::session::SessionEvent::Authenticated`] with a
    /// [`crate::session::HandOver`] and processes no further input; a worker
    /// continues with [`crate::session::Session::resume`].
    pub hand_over_on_auth: bool,
    /// The driver checks credentials itself: LOGIN / AUTHENTICATE PLAIN emit
    /// [`crate::session::SessionEvent::VerifyLogin`] instead of calling the
    /// [`crate::session::Authenticator`] inline, and the driver answers with
    /// [`crate::session::Session::login_verified`]. Lets the master verify on
    /// a bounded thread pool without blocking an async thread.
    pub defer_auth: bool,
    /// Name in the greeting, e.g. `dormouse`.
    pub server_name: String,
    /// Mailboxes created and subscribed at login when missing.
    pub auto_mailboxes: Vec<String>,
    /// Offer UNAUTHENTICATE (RFC 8437). Only for a driver whose session
    /// may log in again as another user by itself: the server's workers
    /// keep per-user state (session counts, wake-up registration) keyed by
    /// the user the session started with, so they leave it off.
    pub allow_unauthenticate: bool,
    /// Limits.
    pub limits: Limits,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            tls_active: false,
            starttls_available: false,
            allow_plaintext_auth: false,
            hand_over_on_auth: false,
            defer_auth: false,
            server_name: "dormouse".to_string(),
            auto_mailboxes: Vec::new(),
            allow_unauthenticate: false,
            limits: Limits::default(),
        }
    }
}
