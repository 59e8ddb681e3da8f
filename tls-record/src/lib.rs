//! A sans-I/O TLS 1.3 record layer for sessions that move between processes.
//!
//! rustls runs the handshake; afterwards it can give up the session's
//! secrets (`ServerConfig::enable_secret_extraction`,
//! `ServerConnection::dangerous_extract_secrets`) but cannot rebuild a
//! connection from them. This crate continues from there: a [`TlsState`]
//! (cipher suite, both directions' traffic secrets and sequence numbers,
//! unprocessed input, queued output) is a plain serde record that travels
//! with the client's socket, and a [`RecordLayer`] built from it decrypts
//! and encrypts records, answers KeyUpdate (RFC 8446 §4.6.3), handles
//! alerts and close_notify, and rekeys its own side before the AEAD's
//! confidentiality limit.
//!
//! The API is sans-I/O, like quinn-proto's and imap-next's: the caller reads
//! the socket and [`RecordLayer::enqueue_input`]s the bytes, pulls
//! [`Event`]s with [`RecordLayer::next`], writes what
//! [`RecordLayer::take_transmit`] and [`RecordLayer::seal`] return.
//!
//! Cryptography is `ring`'s (AEAD and HKDF); nothing here is a cipher.
//! TLS 1.2 is not supported: its sessions stay with whoever terminated them.

mod keys;
mod layer;
mod rustls_glue;
mod state;

pub use keys::{traffic_key_iv, CipherSuite, IV_LEN};
pub use layer::{Event, RecordLayer, MAX_CIPHERTEXT, MAX_PLAINTEXT};
pub use rustls_glue::{handover_server_config, state_from_rustls, SecretCapture};
pub use state::{DirectionState, TlsState, TLS_STATE_VERSION};

/// Errors of the record layer and of [`TlsState`] decoding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record failed authentication (forged, corrupted, or out of order);
    /// a `bad_record_mac` alert is queued.
    #[error("TLS record failed authentication (bad_record_mac)")]
    BadRecordMac,
    /// A record longer than RFC 8446 allows; a `record_overflow` alert is queued.
    #[error("TLS record too long (record_overflow)")]
    RecordOverflow,
    /// A record or message not allowed here; an `unexpected_message` alert is queued.
    #[error("unexpected TLS message: {0}")]
    UnexpectedMessage(&'static str),
    /// A malformed record or message; a `decode_error` alert is queued.
    #[error("malformed TLS message: {0}")]
    DecodeError(&'static str),
    /// A field with a value RFC 8446 does not allow; an `illegal_parameter` alert is queued.
    #[error("illegal TLS parameter: {0}")]
    IllegalParameter(&'static str),
    /// The peer sent a fatal alert (its description code).
    #[error("peer sent TLS alert {0}")]
    PeerAlert(u8),
    /// The session already ended (fatal error, or our close_notify was sent).
    #[error("TLS session is closed")]
    Closed,
    /// A sequence number would wrap (cannot happen while rekeying works).
    #[error("TLS sequence number exhausted")]
    SequenceExhausted,
    /// HKDF or AEAD setup failed (lengths out of range; not expected).
    #[error("TLS key schedule failure")]
    KeySchedule,
    /// A [`TlsState`] that cannot be run.
    #[error("invalid TLS state: {0}")]
    BadState(&'static str),
    /// A [`TlsState`] record of a version this build does not speak.
    #[error("unsupported TLS state version {found} (this build speaks {expected})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// [`TLS_STATE_VERSION`].
        expected: u8,
    },
    /// postcard could not encode or decode a [`TlsState`].
    #[error("TLS state encoding: {0}")]
    Codec(postcard::Error),
    /// The rustls session cannot be taken over (TLS 1.2, secrets not
    /// captured, extraction refused).
    #[error("cannot take over the rustls session: {0}")]
    NotTransferable(String),
}
