//! The hand-over record: what a process passes along with a client's socket.
//!
//! When the master has authenticated a client it sends the client's
//! descriptor to an IMAP worker (see [`crate::fd_passing`]) together with one
//! [`Handover`] record. The hibernate process reuses the same record when a
//! worker parks an idle session and when it hands the session back.
//!
//! # Wire format (version 1)
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
//! | `user` | the authenticated login name |
//! | `peer` / `local` | the client's TCP addresses as the master saw them |
//! | `transport` | plain TCP, or TLS terminated in the master (the fd is then a UNIX socket carrying plaintext) |
//! | `enabled` | extensions switched on with `ENABLE` (upper-case names) |
//! | `selected` | the selected mailbox, if any (always `None` from the master) |
//! | `unprocessed_input` | bytes read from the client but not yet processed, e.g. commands pipelined after `LOGIN` |
//! | `authenticated_at_ms` | wall-clock time of the login, ms since the UNIX epoch |

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Version byte of the [`Handover`] wire format. Bump on any incompatible change.
pub const HANDOVER_VERSION: u8 = 1;

/// How the client's bytes reach the receiver of the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    /// The passed descriptor is the client's TCP socket itself.
    PlainTcp,
    /// TLS is terminated in the master; the passed descriptor is a UNIX
    /// stream socket carrying the decrypted IMAP stream.
    TlsProxied {
        /// True for implicit TLS (port 993), false for STARTTLS.
        implicit: bool,
    },
}

impl Transport {
    /// True if the client's connection is encrypted.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::TlsProxied { .. })
    }
}

/// The selected state of a session, for hand-overs of selected sessions
/// (hibernation). The master never sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectedMailbox {
    /// Mailbox name (UTF-8, `/`-separated).
    pub name: String,
    /// True for EXAMINE (read-only).
    pub read_only: bool,
    /// UIDVALIDITY the client knows.
    pub uidvalidity: u32,
    /// UIDs of the messages, in sequence order, as the client knows them.
    pub uids: Vec<u32>,
    /// HIGHESTMODSEQ the client was last told.
    pub highestmodseq: u64,
}

/// Everything a receiver needs to continue an authenticated IMAP session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// Session id assigned by the master.
    pub session_id: u64,
    /// The authenticated user's login name.
    pub user: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// How the passed descriptor carries the client's bytes.
    pub transport: Transport,
    /// Extensions enabled with `ENABLE`, upper-case.
    pub enabled: Vec<String>,
    /// The selected mailbox, if the session is in the selected state.
    pub selected: Option<SelectedMailbox>,
    /// Input already read from the client but not processed yet.
    pub unprocessed_input: Vec<u8>,
    /// Time of authentication, milliseconds since the UNIX epoch.
    pub authenticated_at_ms: u64,
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
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handover {
        Handover {
            session_id: 42,
            user: "alice@example.org".into(),
            peer: "192.0.2.7:51234".parse().unwrap(),
            local: "[::1]:993".parse().unwrap(),
            transport: Transport::TlsProxied { implicit: true },
            enabled: vec!["CONDSTORE".into(), "UTF8=ACCEPT".into()],
            selected: None,
            unprocessed_input: b"a2 SELECT INBOX\r\na3 FETCH 1:* (FLAGS)\r\n".to_vec(),
            authenticated_at_ms: 1_764_000_000_000,
        }
    }

    #[test]
    fn round_trip_plain() {
        let h = Handover { transport: Transport::PlainTcp, unprocessed_input: Vec::new(), ..sample() };
        let bytes = h.encode().unwrap();
        assert_eq!(bytes[0], HANDOVER_VERSION);
        assert_eq!(Handover::decode(&bytes).unwrap(), h);
    }

    #[test]
    fn round_trip_with_pipelined_input_and_selected_state() {
        let h = Handover {
            selected: Some(SelectedMailbox {
                name: "Archive/2024".into(),
                read_only: true,
                uidvalidity: 1_700_000_000,
                uids: vec![1, 2, 5, 900],
                highestmodseq: 77,
            }),
            ..sample()
        };
        let bytes = h.encode().unwrap();
        let back = Handover::decode(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.unprocessed_input, b"a2 SELECT INBOX\r\na3 FETCH 1:* (FLAGS)\r\n");
    }

    #[test]
    fn binary_input_survives() {
        let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let h = Handover { unprocessed_input: all_bytes.clone(), ..sample() };
        assert_eq!(Handover::decode(&h.encode().unwrap()).unwrap().unprocessed_input, all_bytes);
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
    fn transport_tls_flag() {
        assert!(Transport::TlsProxied { implicit: false }.is_tls());
        assert!(!Transport::PlainTcp.is_tls());
    }
}
