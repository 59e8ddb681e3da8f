//! The master's per-connection wrapper around the real [`Authenticator`]:
//! counts the user's session against the per-user limit at the moment the
//! password checks out, and remembers failed attempts so the driver can
//! delay the answer (the delay grows per IP, see [`super::limits::LoginDelay`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::session::{AuthFailure, AuthenticatedUser, Authenticator};

use super::limits::ConnectionLimits;

/// Wraps an [`Authenticator`] for one pre-login connection.
pub struct LoginGuard {
    inner: Arc<dyn Authenticator>,
    limits: Arc<ConnectionLimits>,
    failed: AtomicBool,
    counted_user: Mutex<Option<String>>,
}

impl std::fmt::Debug for LoginGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginGuard").finish_non_exhaustive()
    }
}

impl LoginGuard {
    /// A guard for one connection.
    pub fn new(inner: Arc<dyn Authenticator>, limits: Arc<ConnectionLimits>) -> Arc<Self> {
        Arc::new(Self { inner, limits, failed: AtomicBool::new(false), counted_user: Mutex::new(None) })
    }

    /// True (once) if a login failed since the last call.
    pub fn take_failure(&self) -> bool {
        self.failed.swap(false, Ordering::Relaxed)
    }

    /// The user whose session was counted by a successful login, if any;
    /// the caller becomes responsible for releasing it.
    pub fn take_counted_user(&self) -> Option<String> {
        self.counted_user.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Authenticator for LoginGuard {
    fn verify(&self, user: &str, password: &str) -> Result<AuthenticatedUser, AuthFailure> {
        match self.inner.verify(user, password) {
            Ok(authenticated) => {
                if let Err(limit) = self.limits.open_session(&authenticated.name) {
                    tracing::warn!(user = %authenticated.name, %limit, "login refused by session limit");
                    // Capitalized sentence for the `NO [LIMIT] ...` text.
                    let text = limit.to_string();
                    let mut chars = text.chars();
                    let text = match chars.next() {
                        Some(first) => first.to_uppercase().chain(chars).collect::<String>() + ".",
                        None => text,
                    };
                    return Err(AuthFailure::Limit(text));
                }
                let previous =
                    self.counted_user.lock().unwrap_or_else(|e| e.into_inner()).replace(authenticated.name.clone());
                if let Some(previous) = previous {
                    // Cannot happen (a session logs in once), but never leak a count.
                    self.limits.close_session(&previous);
                }
                Ok(authenticated)
            }
            Err(failure) => {
                if failure == AuthFailure::InvalidCredentials {
                    self.failed.store(true, Ordering::Relaxed);
                }
                Err(failure)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Authenticator for Fixed {
        fn verify(&self, user: &str, password: &str) -> Result<AuthenticatedUser, AuthFailure> {
            if password == "right" {
                Ok(AuthenticatedUser { name: user.to_owned(), maildir: "/tmp/none".into() })
            } else {
                Err(AuthFailure::InvalidCredentials)
            }
        }
    }

    #[test]
    fn counts_success_flags_failure_and_enforces_limit() {
        let limits = Arc::new(ConnectionLimits::new(0, 1));
        let g1 = LoginGuard::new(Arc::new(Fixed), limits.clone());
        assert!(g1.verify("alice", "wrong").is_err());
        assert!(g1.take_failure());
        assert!(!g1.take_failure());
        assert_eq!(g1.verify("alice", "right").unwrap().name, "alice");
        assert_eq!(limits.sessions_of("alice"), 1);

        let g2 = LoginGuard::new(Arc::new(Fixed), limits.clone());
        assert_eq!(
            g2.verify("alice", "right"),
            Err(AuthFailure::Limit("Too many simultaneous sessions of this user (limit 1).".into()))
        );
        assert!(!g2.take_failure(), "a limit is not a failed password");
        assert_eq!(g2.take_counted_user(), None);

        assert_eq!(g1.take_counted_user().as_deref(), Some("alice"));
        limits.close_session("alice");
        assert!(g2.verify("alice", "right").is_ok());
    }
}
