//! Users from a Dovecot-format passwd file: password schemes, the Maildir
//! location template, and the reloading [`UserDb`] the IMAP login, LMTP and
//! `deliver` share.

mod mail_location;
mod passwd_edit;
mod passwd_file;
mod password;
mod user_db;
mod verified_cache;

pub use mail_location::{MailLocation, MailLocationError};
pub use passwd_edit::{add_user, remove_user, set_password};
pub use passwd_file::{parse_passwd, PasswdEntry, PasswdLineError, UnrepresentableField};
pub use password::{constant_time_eq, CostExceeded, CostKey, CostLimits, HashError, PasswordScheme, StoredPassword};
pub use user_db::{UserDb, UserRecord};

/// Errors of the user database and password checks. Messages never
/// contain passwords.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No such user.
    #[error("unknown user {0}")]
    UnknownUser(String),
    /// The password does not match.
    #[error("wrong password for user {0}")]
    WrongPassword(String),
    /// The user has no usable password (empty field): login is disabled.
    #[error("login disabled for user {0} (no password set)")]
    NoPassword(String),
    /// The user's stored hash asks for more work than the configured cost
    /// limits allow; treated as a failed login (logged for the admin).
    #[error("password hash of user {0} is over the cost limits")]
    CostExceeded(String),
    /// A user of that name already exists.
    #[error("user {0} already exists")]
    UserExists(String),
    /// The name cannot be used in a passwd file.
    #[error("invalid user name {0:?}")]
    InvalidUserName(String),
    /// A field of a new passwd line cannot be written in the format.
    #[error(transparent)]
    Unrepresentable(#[from] UnrepresentableField),
    /// The mail location cannot be computed.
    #[error(transparent)]
    MailLocation(#[from] MailLocationError),
    /// Reading or writing the passwd file failed.
    #[error("passwd file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
