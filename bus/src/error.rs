//! Errors of the bus.

use std::path::PathBuf;

/// Errors creating or using a bus endpoint.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus folder could not be created or has unsafe ownership/permissions.
    #[error("bus folder {path}: {reason}")]
    BusDir {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A socket operation failed.
    #[error("bus socket {path}: {source}")]
    Socket {
        /// The socket path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Connecting to NATS failed.
    #[error("NATS connect to {url}: {reason}")]
    NatsConnect {
        /// Server URL (never credentials).
        url: String,
        /// What failed.
        reason: String,
    },
    /// A NATS operation failed.
    #[error("NATS {op}: {reason}")]
    Nats {
        /// The operation.
        op: &'static str,
        /// What failed.
        reason: String,
    },
    /// The configuration is inconsistent.
    #[error("bus configuration: {0}")]
    Config(String),
    /// The publisher's queue is full; the event was dropped (receivers resync).
    #[error("bus publish queue full, event dropped")]
    QueueFull,
    /// The endpoint's background task has stopped.
    #[error("bus endpoint closed")]
    Closed,
}
