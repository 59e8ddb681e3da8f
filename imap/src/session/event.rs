//! What [`crate::session::Session::next`] asks its driver to do.

use std::time::Instant;

use super::HandOver;

/// The next thing the driver must do for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Write these bytes to the client (complete response lines).
    Output(Vec<u8>),
    /// All buffered input is processed: read more, then call
    /// [`crate::session::Session::enqueue_input`] and `next` again. Also call
    /// `next` at `deadline` (IDLE timeout, autologout, pre-auth timeout) and
    /// after [`crate::session::Session::on_mailbox_event`] while idling.
    NeedMoreInput {
        /// When the session wants `next` called even without input.
        deadline: Instant,
    },
    /// The `OK` to STARTTLS was output: do the TLS handshake, then call
    /// [`crate::session::Session::tls_started`]. Buffered plaintext input was discarded.
    StartTls,
    /// The `OK` to COMPRESS DEFLATE was output: compress everything written
    /// from now on and inflate everything read, starting with
    /// `compressed_input` (bytes the client sent after the command).
    StartCompression {
        /// Input already received after the COMPRESS line: compressed.
        compressed_input: Vec<u8>,
    },
    /// Master mode only: login succeeded and its `OK` was output; pass this
    /// record to a worker and stop using this session.
    Authenticated(Box<HandOver>),
    /// The session is over (LOGOUT, BYE, timeout): flush output and close.
    Close,
    /// [`crate::session::SessionOptions::defer_auth`] only: check these
    /// credentials, then call [`crate::session::Session::login_verified`].
    /// Until then the session processes no input.
    VerifyLogin(LoginRequest),
}

/// Credentials to check for a deferred login. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginRequest {
    /// The user name as sent.
    pub user: String,
    /// The password as sent.
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}
