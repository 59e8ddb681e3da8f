//! The record a master process passes to a worker after login.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version of the [`HandOver`] encoding. Bump on any incompatible change.
pub const HANDOVER_VERSION: u8 = 1;

/// Extensions the client turned on with ENABLE (or implicitly, CONDSTORE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnabledExtensions {
    /// RFC 7162 CONDSTORE is active (MODSEQ in FETCH responses).
    pub condstore: bool,
    /// RFC 7162 QRESYNC is enabled (VANISHED instead of EXPUNGE).
    pub qresync: bool,
}

/// An authenticated connection's state, as passed from the pre-login stage
/// (master) to the worker that serves the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOver {
    /// Login name.
    pub user: String,
    /// The user's Maildir root.
    pub maildir: PathBuf,
    /// Extensions already enabled.
    pub enabled: EnabledExtensions,
    /// True if the connection is TLS-protected.
    pub tls_active: bool,
    /// Input the client already sent after the login command (pipelined),
    /// to be processed by the worker first.
    pub pending_input: Vec<u8>,
}

/// Errors decoding a [`HandOver`].
#[derive(Debug, thiserror::Error)]
pub enum HandOverDecodeError {
    /// The buffer was empty.
    #[error("empty hand-over record")]
    Empty,
    /// Unknown version byte.
    #[error("unknown hand-over version {0}")]
    UnknownVersion(u8),
    /// Malformed payload.
    #[error("malformed hand-over record: {0}")]
    Malformed(#[from] postcard::Error),
}

impl HandOver {
    /// Encodes as `[HANDOVER_VERSION] ++ postcard(self)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![HANDOVER_VERSION];
        // Serializing owned plain data into a Vec cannot fail.
        out.extend_from_slice(&postcard::to_stdvec(self).expect("postcard encoding of an owned record"));
        out
    }

    /// Decodes bytes made by [`HandOver::encode`]; never panics.
    ///
    /// # Errors
    /// [`HandOverDecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, HandOverDecodeError> {
        let (&v, body) = bytes.split_first().ok_or(HandOverDecodeError::Empty)?;
        if v != HANDOVER_VERSION {
            return Err(HandOverDecodeError::UnknownVersion(v));
        }
        Ok(postcard::from_bytes(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_input() {
        let h = HandOver {
            user: "bob".into(),
            maildir: "/home/bob/Maildir".into(),
            enabled: EnabledExtensions { condstore: true, qresync: false },
            tls_active: true,
            pending_input: b"a SELECT INBOX\r\n".to_vec(),
        };
        let bytes = h.encode();
        assert_eq!(HandOver::decode(&bytes).unwrap(), h);
        assert!(matches!(HandOver::decode(&[]), Err(HandOverDecodeError::Empty)));
        assert!(matches!(HandOver::decode(&[9, 0]), Err(HandOverDecodeError::UnknownVersion(9))));
        assert!(matches!(HandOver::decode(&bytes[..bytes.len() - 3]), Err(HandOverDecodeError::Malformed(_))));
    }
}
