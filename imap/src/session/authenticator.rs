//! The login check the session calls for LOGIN and AUTHENTICATE PLAIN.

use std::path::PathBuf;

/// A successfully authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// Login name (as stored, e.g. canonical case).
    pub name: String,
    /// The user's Maildir root.
    pub maildir: PathBuf,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// Unknown user or wrong password (never say which).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The credentials are right but a limit refuses the login (e.g. too
    /// many sessions of this user); answered `NO [LIMIT] <text>` and not
    /// counted as a failed attempt.
    #[error("limit reached: {0}")]
    Limit(String),
    /// The user database could not be consulted; try again later.
    #[error("authentication temporarily unavailable: {0}")]
    Temporary(String),
}

/// Checks a user name and password. Implemented by the passwd-file user
/// database; called inline by [`crate::session::Session::next`], so it may
/// block for the duration of a password hash.
pub trait Authenticator: Send + Sync {
    /// Verifies `password` for `user`.
    ///
    /// # Errors
    /// [`AuthFailure`] if the credentials are wrong or cannot be checked.
    fn verify(&self, user: &str, password: &str) -> Result<AuthenticatedUser, AuthFailure>;
}
