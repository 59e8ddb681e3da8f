//! The passwd-file user database as the session's [`Authenticator`].

use std::sync::Arc;

use crate::auth::{AuthError, UserDb};
use crate::session::{AuthFailure, AuthenticatedUser, Authenticator};

/// Checks logins against a [`UserDb`]. Unknown users, wrong passwords and
/// disabled logins all look the same to the client.
#[derive(Debug, Clone)]
pub struct UserDbAuthenticator {
    db: Arc<UserDb>,
}

impl UserDbAuthenticator {
    /// Wraps `db`.
    pub fn new(db: Arc<UserDb>) -> Arc<Self> {
        Arc::new(Self { db })
    }
}

impl Authenticator for UserDbAuthenticator {
    fn verify(&self, user: &str, password: &str) -> Result<AuthenticatedUser, AuthFailure> {
        match self.db.verify(user, password.as_bytes()) {
            Ok(record) => Ok(AuthenticatedUser { name: record.name, maildir: record.maildir }),
            Err(AuthError::UnknownUser(_)
                | AuthError::WrongPassword(_)
                | AuthError::NoPassword(_)
                | AuthError::CostExceeded(_)
                | AuthError::InvalidUserName(_)) => {
                Err(AuthFailure::InvalidCredentials)
            }
            Err(other) => {
                tracing::error!(error = %other, "user database error during login");
                Err(AuthFailure::Temporary(other.to_string()))
            }
        }
    }
}
