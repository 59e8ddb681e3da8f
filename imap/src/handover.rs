//! The hand-over record: what a process passes along with a client's socket.
//!
//! When the master has authenticated a client it sends the client's
//! descriptor to an IMAP worker (see [`crate::fd_passing`]) together with one
//! [`Handover`] record. The hibernate process reuses the same record when a
//! worker parks an idle session and when it hands the session back.
//!
//! # Wire format (version 2)
//!
//! One byte [`HANDOVER_VERSION`], then the [`Handover`] struct encoded with
//! postcard. A receiver refuses any other version byte with
//! [`HandoverError::UnsupportedVersion`] (and closes the passed descriptor),
//! so a mixed-version master/worker pair fails loudly instead of
//! misinterpreting fields. Any incompatible field change bumps the version.
//!
//! | field | meaning |
//! |---|---|
//! | `session_id` | master-assigned id, unique per master run; appears in every log line |
//! | `peer` / `local` | the client's TCP addresses as the master saw them |
//! | `transport` | plain TCP; TLS whose state moved with the TCP socket (`tls` holds it); or TLS 1.2 terminated in the master (the fd is then a UNIX socket carrying plaintext) |
//! | `authenticated_at_ms` | wall-clock time of the login, ms since the UNIX epoch |
//! | `tls` | for [`Transport::Tls`]: the TLS 1.3 session state ([`tls_record::TlsState`]: suite, traffic secrets, sequence numbers, unprocessed ciphertext); the receiver runs the record layer and is its only owner |
//! | `session` | the protocol state from [`crate::session::HandOver`]: user, Maildir, enabled extensions, TLS flag, and the input read but not yet processed (e.g. commands pipelined after `LOGIN`) |
//!
//! The `session` part is embedded as a serde struct (not with its own
//! version byte), so any incompatible change to
//! [`crate::session::HandOver`] must bump [`HANDOVER_VERSION`] here too.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::session::HandOver;

/// Version byte of the [`Handover`] wire format. Bump on any incompatible change.
pub const HANDOVER_VERSION: u8 = 2;

/// How the client's bytes reach the receiver of the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    /// The passed descriptor is the client's TCP socket itself.
    PlainTcp,
    /// TLS 1.3: the passed descriptor is the client's TCP socket, and the
    /// TLS session's state travels in [`Handover::tls`]; the receiver runs
    /// the record layer.
    Tls {
        /// True for implicit TLS (port 993), false for STARTTLS.
        implicit: bool,
    },
    /// TLS (1.2, whose state we cannot run) is terminated in the master;
    /// the passed descriptor is a UNIX stream socket carrying the decrypted
    /// IMAP stream.
    TlsProxied {
        /// True for implicit TLS (port 993), false for STARTTLS.
        implicit: bool,
    },
}

impl Transport {
    /// True if the client's connection is encrypted.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::TlsProxied { .. } | Transport::Tls { .. })
    }
}

/// Everything a receiver needs to continue an authenticated IMAP session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// Session id assigned by the master.
    pub session_id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// How the passed descriptor carries the client's bytes.
    pub transport: Transport,
    /// Time of authentication, milliseconds since the UNIX epoch.
    pub authenticated_at_ms: u64,
    /// The TLS session state for [`Transport::Tls`] (`None` otherwise).
    pub tls: Option<tls_record::TlsState>,
    /// The IMAP protocol state to resume from.
    pub session: HandOver,
}

/// Errors encoding or decoding a [`Handover`].
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The record was empty (no version byte).
    #[error("empty hand-over record")]
    Empty,
    /// The version byte is not one this build understands.
    #[error("unsupported hand-over version {found} (this build speaks {expected})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// [`HANDOVER_VERSION`].
        expected: u8,
    },
    /// postcard could not encode or decode the record.
    #[error("hand-over record encoding: {0}")]
    Codec(#[from] postcard::Error),
    /// A TLS transport without TLS state, or state for a non-TLS transport.
    #[error("hand-over record: TLS state does not match the transport")]
    TlsMismatch,
    /// The TLS state cannot be run.
    #[error("hand-over record: {0}")]
    Tls(tls_record::Error),
}

impl Handover {
    /// Encodes the record: version byte, then postcard.
    ///
    /// # Errors
    /// postcard serialization failures (not expected for this type).
    pub fn encode(&self) -> Result<Vec<u8>, HandoverError> {
        let mut out = vec![HANDOVER_VERSION];
        out.extend_from_slice(&postcard::to_stdvec(self)?);
        Ok(out)
    }

    /// Decodes a record produced by [`Handover::encode`].
    ///
    /// # Errors
    /// Empty input, a different version byte, or malformed postcard data
    /// (including trailing bytes).
    pub fn decode(bytes: &[u8]) -> Result<Self, HandoverError> {
        let (&version, body) = bytes.split_first().ok_or(HandoverError::Empty)?;
        if version != HANDOVER_VERSION {
            return Err(HandoverError::UnsupportedVersion { found: version, expected: HANDOVER_VERSION });
        }
        let (record, rest) = postcard::take_from_bytes::<Handover>(body)?;
        if !rest.is_empty() {
            return Err(HandoverError::Codec(postcard::Error::DeserializeBadEncoding));
        }
        if matches!(record.transport, Transport::Tls { .. }) != record.tls.is_some() {
            return Err(HandoverError::TlsMismatch);
        }
        if let Some(state) = &record.tls {
            state.check().map_err(HandoverError::Tls)?;
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::EnabledExtensions;

    fn sample() -> Handover {
        Handover {
            session_id: 42,
            peer: "192.0.2.7:51234".parse().unwrap(),
            local: "[::1]:993".parse().unwrap(),
            transport: Transport::TlsProxied { implicit: true },
            authenticated_at_ms: 1_764_000_000_000,
            tls: None,
            session: HandOver {
                user: "alice@example.org".into(),
                maildir: "/srv/mail/alice/Maildir".into(),
                enabled: EnabledExtensions { condstore: true, qresync: false },
                tls_active: true,
                pending_input: b"a2 SELECT INBOX\r\na3 FETCH 1:* (FLAGS)\r\n".to_vec(),
            },
        }
    }

    #[test]
    fn round_trip_plain() {
        let mut h = sample();
        h.transport = Transport::PlainTcp;
        h.session.tls_active = false;
        h.session.pending_input.clear();
        let bytes = h.encode().unwrap();
        assert_eq!(bytes[0], HANDOVER_VERSION);
        assert_eq!(Handover::decode(&bytes).unwrap(), h);
    }

    #[test]
    fn round_trip_with_pipelined_input() {
        let h = sample();
        let back = Handover::decode(&h.encode().unwrap()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.session.pending_input, b"a2 SELECT INBOX\r\na3 FETCH 1:* (FLAGS)\r\n");
    }

    #[test]
    fn binary_input_survives() {
        let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let mut h = sample();
        h.session.pending_input = all_bytes.clone();
        assert_eq!(Handover::decode(&h.encode().unwrap()).unwrap().session.pending_input, all_bytes);
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut bytes = sample().encode().unwrap();
        bytes[0] = HANDOVER_VERSION + 1;
        assert!(matches!(
            Handover::decode(&bytes),
            Err(HandoverError::UnsupportedVersion { found, expected }) if found == HANDOVER_VERSION + 1 && expected == HANDOVER_VERSION
        ));
    }

    #[test]
    fn empty_and_truncated_are_refused() {
        assert!(matches!(Handover::decode(&[]), Err(HandoverError::Empty)));
        let bytes = sample().encode().unwrap();
        for cut in 1..bytes.len() {
            assert!(Handover::decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes must not decode");
        }
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let mut bytes = sample().encode().unwrap();
        bytes.push(0);
        assert!(Handover::decode(&bytes).is_err());
    }

    #[test]
    fn fits_in_one_channel_message() {
        let mut h = sample();
        h.session.pending_input = vec![b'x'; crate::server::MAX_PENDING_INPUT];
        // With the largest partial record a TLS state carries.
        h.transport = Transport::Tls { implicit: true };
        let mut state = tls_state();
        state.incoming = vec![0; tls_record::MAX_CIPHERTEXT + 4];
        h.tls = Some(state);
        assert!(h.encode().unwrap().len() <= crate::fd_passing::MAX_MESSAGE_LEN);
    }

    fn tls_state() -> tls_record::TlsState {
        tls_record::TlsState {
            suite: tls_record::CipherSuite::Chacha20Poly1305Sha256,
            read: tls_record::DirectionState { secret: vec![3; 32], seq: 9 },
            write: tls_record::DirectionState { secret: vec![4; 32], seq: 2 },
            incoming: vec![23, 3, 3, 0],
            handshake_partial: Vec::new(),
            transmit: Vec::new(),
        }
    }

    #[test]
    fn round_trip_with_tls_state() {
        let mut h = sample();
        h.transport = Transport::Tls { implicit: false };
        h.tls = Some(tls_state());
        assert_eq!(Handover::decode(&h.encode().unwrap()).unwrap(), h);
    }

    #[test]
    fn tls_state_must_match_the_transport() {
        let mut h = sample();
        h.transport = Transport::Tls { implicit: true };
        assert!(matches!(Handover::decode(&h.encode().unwrap()), Err(HandoverError::TlsMismatch)));
        h.transport = Transport::PlainTcp;
        h.tls = Some(tls_state());
        assert!(matches!(Handover::decode(&h.encode().unwrap()), Err(HandoverError::TlsMismatch)));
        h.transport = Transport::Tls { implicit: true };
        h.tls.as_mut().unwrap().read.secret.pop();
        assert!(matches!(Handover::decode(&h.encode().unwrap()), Err(HandoverError::Tls(_))));
    }

    #[test]
    fn transport_tls_flag() {
        assert!(Transport::Tls { implicit: true }.is_tls());
        assert!(Transport::TlsProxied { implicit: false }.is_tls());
        assert!(!Transport::PlainTcp.is_tls());
    }
}
