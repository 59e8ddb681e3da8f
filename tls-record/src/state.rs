//! [`TlsState`]: everything a process needs to continue a TLS 1.3 session,
//! as one serde record that travels with the client's socket.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::keys::CipherSuite;
use crate::Error;

/// Version byte of [`TlsState::encode`]. Bump on any incompatible change.
pub const TLS_STATE_VERSION: u8 = 1;

/// One direction of the session: the current traffic secret (key and IV are
/// derived from it, and so is the next secret at a KeyUpdate) and the
/// sequence number of the next record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionState {
    /// `application_traffic_secret_N` for this direction.
    pub secret: Vec<u8>,
    /// Sequence number of the next record under this secret.
    pub seq: u64,
}

impl std::fmt::Debug for DirectionState {
    // Never print key material into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectionState")
            .field("secret", &"<redacted>")
            .field("seq", &self.seq)
            .finish()
    }
}

impl Drop for DirectionState {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// A TLS 1.3 session after its handshake, between two owners.
///
/// Exactly one [`crate::RecordLayer`] may run a given state: the layer is
/// built from it by value and gives it up by value
/// ([`crate::RecordLayer::into_state`]), so a (key, sequence number) pair is
/// used once as long as a process that sent its state away drops its copy —
/// and keeps the state it still has if the hand-over was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsState {
    /// The negotiated cipher suite.
    pub suite: CipherSuite,
    /// Records from the peer.
    pub read: DirectionState,
    /// Records to the peer.
    pub write: DirectionState,
    /// Bytes received from the peer and not yet processed: a partial record,
    /// or several records.
    pub incoming: Vec<u8>,
    /// Handshake-message bytes of a post-handshake message split over records.
    pub handshake_partial: Vec<u8>,
    /// Sealed records that must reach the peer before anything else (our
    /// answer to a KeyUpdate, an alert).
    pub transmit: Vec<u8>,
}

impl TlsState {
    /// Encodes the state: version byte, then postcard.
    ///
    /// # Errors
    /// postcard serialization failures (not expected for this type).
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = vec![TLS_STATE_VERSION];
        out.extend_from_slice(&postcard::to_stdvec(self).map_err(Error::Codec)?);
        Ok(out)
    }

    /// Decodes a state produced by [`TlsState::encode`].
    ///
    /// # Errors
    /// Empty input, another version byte, malformed postcard (including
    /// trailing bytes), or secrets of the wrong length for the suite.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let (&version, body) = bytes
            .split_first()
            .ok_or(Error::BadState("empty TLS state record"))?;
        if version != TLS_STATE_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                expected: TLS_STATE_VERSION,
            });
        }
        let (state, rest) = postcard::take_from_bytes::<TlsState>(body).map_err(Error::Codec)?;
        if !rest.is_empty() {
            return Err(Error::BadState("trailing bytes after the TLS state record"));
        }
        state.check()?;
        Ok(state)
    }

    /// Consistency checks a state from elsewhere (untrusted) must pass
    /// before it is run; [`TlsState::decode`] and
    /// [`crate::RecordLayer::from_state`] apply them.
    ///
    /// # Errors
    /// [`Error::BadState`] for secrets of the wrong length for the suite.
    pub fn check(&self) -> Result<(), Error> {
        let len = self.suite.secret_len();
        if self.read.secret.len() != len || self.write.secret.len() != len {
            return Err(Error::BadState(
                "traffic secret length does not match the cipher suite",
            ));
        }
        Ok(())
    }
}

impl Drop for TlsState {
    fn drop(&mut self) {
        // Plaintext of a partial handshake message is not secret, but the
        // pending input may hold a client's next command; clear it too.
        self.incoming.zeroize();
        self.handshake_partial.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TlsState {
        TlsState {
            suite: CipherSuite::Aes256GcmSha384,
            read: DirectionState {
                secret: vec![1; 48],
                seq: 7,
            },
            write: DirectionState {
                secret: vec![2; 48],
                seq: u64::MAX - 3,
            },
            incoming: vec![23, 3, 3, 0, 40, 9, 9],
            handshake_partial: vec![24, 0],
            transmit: vec![23, 3, 3, 0, 1, 0],
        }
    }

    #[test]
    fn round_trip() {
        let state = sample();
        let bytes = state.encode().unwrap();
        assert_eq!(bytes[0], TLS_STATE_VERSION);
        assert_eq!(TlsState::decode(&bytes).unwrap(), state);
    }

    #[test]
    fn refuses_other_versions_truncation_and_trailing_bytes() {
        let mut bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                TlsState::decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes must not decode"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(TlsState::decode(&longer).is_err());
        bytes[0] = TLS_STATE_VERSION + 1;
        assert!(
            matches!(TlsState::decode(&bytes), Err(Error::UnsupportedVersion { found, .. }) if found == TLS_STATE_VERSION + 1)
        );
    }

    #[test]
    fn refuses_secrets_of_the_wrong_length() {
        let mut state = sample();
        state.suite = CipherSuite::Aes128GcmSha256;
        assert!(matches!(
            TlsState::decode(&state.encode().unwrap()),
            Err(Error::BadState(_))
        ));
    }

    #[test]
    fn debug_does_not_print_secrets() {
        let text = format!("{:?}", sample());
        assert!(text.contains("redacted"));
        assert!(!text.contains("[1, 1"));
    }
}
