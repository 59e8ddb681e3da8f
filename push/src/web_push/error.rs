//! Why the Web Push sender could not be set up.

use std::path::PathBuf;

/// Errors of [`crate::web_push::WebPushSender::new`] and the VAPID key file.
#[derive(Debug, thiserror::Error)]
pub enum WebPushError {
    /// The key file exists but cannot be read.
    #[error("cannot read VAPID key file {path}: {source}")]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file holds no usable P-256 private key.
    #[error(
        "invalid VAPID key file {path}: {reason} (expected a PEM P-256 private key, \"BEGIN PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\"; \
         remove the file to have a new key made, which invalidates every existing Web Push subscription)"
    )]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it (never the key itself).
        reason: String,
    },
    /// A new key file could not be written.
    #[error("cannot create VAPID key file {path}: {source}")]
    WriteKey {
        /// The key file (or its directory).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The VAPID `sub` claim is not a `mailto:` or `https:` URI.
    #[error("invalid Web Push subject {0:?}: must start with mailto: or https://")]
    InvalidSubject(String),
}
