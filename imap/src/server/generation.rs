//! Messages between two generations of `dormouse serve` during a restart
//! (`SIGUSR2`, `dormouse restart`).
//!
//! The running (old) generation starts the binary on disk as the new one
//! with one end of a `SOCK_SEQPACKET` pair as its standard input and
//! [`HANDOFF_ENV`] set. Over it, in this order:
//!
//! 1. old → new: [`GenerationMessage::Hello`] (generation number, the
//!    hibernate processes to adopt), then one [`GenerationMessage::Descriptor`]
//!    per inherited descriptor with that descriptor attached (`SCM_RIGHTS`):
//!    the data-directory lock, both ends of the lifeline pipe, every
//!    listening socket; then [`GenerationMessage::DescriptorsDone`].
//! 2. new → old: [`GenerationMessage::Ready`] once its listeners accept and
//!    its workers are ready and connected to the hibernate processes (or
//!    [`GenerationMessage::Failed`]). Without it within the restart timeout
//!    the old generation kills the new one and keeps serving (rollback).
//! 3. old → new: [`GenerationMessage::Finished`] with how many sessions
//!    moved and how many could not, after the old generation has parked its
//!    live sessions and stopped its workers; then the old one exits.
//!
//! # Wire format (version 1)
//!
//! One byte [`GENERATION_VERSION`], then a [`GenerationMessage`] in postcard.
//! Any incompatible change bumps the version; a receiver refuses other
//! versions ([`GenerationError::UnsupportedVersion`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version byte of the [`GenerationMessage`] wire format.
pub const GENERATION_VERSION: u8 = 1;

/// Set (to `1`) in the environment of a new generation: its standard input
/// is the hand-off channel.
pub const HANDOFF_ENV: &str = "DORMOUSE_RESTART_HANDOFF";

/// Session ids of generation `g` start at `g << SESSION_ID_SHIFT`, so the
/// new master never reuses an id of a session that moved to it.
pub const SESSION_ID_SHIFT: u32 = 40;

/// A hibernate process the new generation adopts instead of starting one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HibernateProcess {
    /// Its index (socket `hibernate-<index>.sock`).
    pub index: u32,
    /// Its process id.
    pub pid: u32,
}

/// What a passed descriptor is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Inherited {
    /// The open `serve.lock` holding the data directory's flock.
    DataDirLock,
    /// The read end of the lifeline pipe (children's standard input).
    LifelineRead,
    /// The write end of the lifeline pipe (held, never written).
    LifelineWrite,
    /// An IMAP listener.
    ImapListener {
        /// Its bound address.
        addr: SocketAddr,
        /// True for implicit TLS (port 993).
        implicit_tls: bool,
    },
    /// The LMTP TCP listener.
    LmtpTcp {
        /// Its bound address.
        addr: SocketAddr,
    },
    /// The LMTP UNIX-socket listener.
    LmtpUnix {
        /// Its path.
        path: PathBuf,
    },
    /// The metrics HTTP listener.
    Metrics {
        /// Its bound address.
        addr: SocketAddr,
    },
}

/// One message between generations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GenerationMessage {
    /// Old → new, first.
    Hello {
        /// The new generation's number (the old one's plus one).
        generation: u32,
        /// The old generation's process id.
        old_pid: u32,
        /// Hibernate processes running now.
        hibernate: Vec<HibernateProcess>,
    },
    /// Old → new: the attached descriptor is this.
    Descriptor(Inherited),
    /// Old → new: every descriptor has been sent.
    DescriptorsDone,
    /// New → old: serving; the old generation may hand off and exit.
    Ready {
        /// The new generation's process id.
        pid: u32,
    },
    /// New → old: the new generation cannot start; the old one keeps serving.
    Failed {
        /// Why.
        reason: String,
    },
    /// Old → new, last: the outcome.
    Finished {
        /// Sessions now served by the new generation (hibernated ones and
        /// live ones parked for the move).
        moved: u64,
        /// Sessions that could not move (closed with `* BYE`).
        lost: u64,
        /// From the restart signal to the end of the hand-off, ms.
        duration_ms: u64,
        /// Sessions moved by every restart since the first start, this one included.
        total_moved: u64,
        /// Sessions lost by every restart since the first start, this one included.
        total_lost: u64,
    },
}

/// Errors decoding a [`GenerationMessage`].
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// Nothing received.
    #[error("empty generation message")]
    Empty,
    /// Another wire version.
    #[error("unsupported generation message version {0}")]
    UnsupportedVersion(u8),
    /// Malformed body.
    #[error("malformed generation message: {0}")]
    Codec(#[from] postcard::Error),
}

impl GenerationMessage {
    /// Encodes the message (version byte + postcard).
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(self)
    }

    /// Decodes what [`GenerationMessage::encode`] produced.
    ///
    /// # Errors
    /// Empty input, another version, malformed or trailing data.
    pub fn decode(bytes: &[u8]) -> Result<Self, GenerationError> {
        decode_versioned(bytes)
    }
}

/// [`GENERATION_VERSION`] byte, then postcard: the wire format of every
/// record in this module.
fn encode_versioned<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![GENERATION_VERSION];
    // Plain owned data always serializes.
    out.extend_from_slice(&postcard::to_stdvec(value).unwrap_or_default());
    out
}

/// The inverse of [`encode_versioned`]: refuses another version and
/// trailing bytes.
fn decode_versioned<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, GenerationError> {
    let (&version, body) = bytes.split_first().ok_or(GenerationError::Empty)?;
    if version != GENERATION_VERSION {
        return Err(GenerationError::UnsupportedVersion(version));
    }
    let (value, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(GenerationError::Codec(postcard::Error::DeserializeBadEncoding));
    }
    Ok(value)
}

/// The outcome of one restart attempt, as the old generation writes it to
/// `<run_dir>/restart.status` for `dormouse restart` (same wire format:
/// [`GENERATION_VERSION`] byte, then postcard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartOutcome {
    /// The generation that was restarted.
    pub old_pid: u32,
    /// The generation now serving (`None`: the restart failed and the old one serves on).
    pub new_pid: Option<u32>,
    /// When the restart began, ms since the UNIX epoch.
    pub started_ms: u64,
    /// Sessions moved.
    pub moved: u64,
    /// Sessions that could not move.
    pub lost: u64,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
}

impl RestartOutcome {
    /// Encodes the outcome.
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(self)
    }

    /// Decodes what [`RestartOutcome::encode`] produced.
    ///
    /// # Errors
    /// Empty input, another version, malformed or trailing data.
    pub fn decode(bytes: &[u8]) -> Result<Self, GenerationError> {
        decode_versioned(bytes)
    }
}

/// The first session id of generation `generation`.
pub fn session_id_base(generation: u32) -> u64 {
    u64::from(generation) << SESSION_ID_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<GenerationMessage> {
        vec![
            GenerationMessage::Hello {
                generation: 3,
                old_pid: 4242,
                hibernate: vec![HibernateProcess { index: 0, pid: 10 }, HibernateProcess { index: 2, pid: 12 }],
            },
            GenerationMessage::Descriptor(Inherited::DataDirLock),
            GenerationMessage::Descriptor(Inherited::LifelineRead),
            GenerationMessage::Descriptor(Inherited::LifelineWrite),
            GenerationMessage::Descriptor(Inherited::ImapListener { addr: "127.0.0.1:143".parse().unwrap(), implicit_tls: false }),
            GenerationMessage::Descriptor(Inherited::ImapListener { addr: "[::1]:993".parse().unwrap(), implicit_tls: true }),
            GenerationMessage::Descriptor(Inherited::LmtpTcp { addr: "127.0.0.1:24".parse().unwrap() }),
            GenerationMessage::Descriptor(Inherited::LmtpUnix { path: "/var/spool/postfix/private/dormouse".into() }),
            GenerationMessage::Descriptor(Inherited::Metrics { addr: "127.0.0.1:9143".parse().unwrap() }),
            GenerationMessage::DescriptorsDone,
            GenerationMessage::Ready { pid: 77 },
            GenerationMessage::Failed { reason: "cannot bind".into() },
            GenerationMessage::Finished { moved: 10_000, lost: 2, duration_ms: 350, total_moved: 30_000, total_lost: 3 },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all() {
            let bytes = m.encode();
            assert_eq!(bytes[0], GENERATION_VERSION);
            assert_eq!(GenerationMessage::decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn other_versions_empty_and_trailing_bytes_are_refused() {
        let mut bytes = GenerationMessage::Ready { pid: 1 }.encode();
        assert!(matches!(GenerationMessage::decode(&[]), Err(GenerationError::Empty)));
        bytes[0] = 9;
        assert!(matches!(GenerationMessage::decode(&bytes), Err(GenerationError::UnsupportedVersion(9))));
        let mut bytes = GenerationMessage::Ready { pid: 1 }.encode();
        bytes.push(0);
        assert!(matches!(GenerationMessage::decode(&bytes), Err(GenerationError::Codec(_))));
    }

    #[test]
    fn restart_outcomes_round_trip() {
        for o in [
            RestartOutcome { old_pid: 1, new_pid: Some(2), started_ms: 3, moved: 4, lost: 5, duration_ms: 6, error: None },
            RestartOutcome { old_pid: 1, new_pid: None, started_ms: 3, moved: 0, lost: 0, duration_ms: 9, error: Some("exit 1".into()) },
        ] {
            assert_eq!(RestartOutcome::decode(&o.encode()).unwrap(), o);
        }
        assert!(RestartOutcome::decode(&[GENERATION_VERSION + 1, 0]).is_err());
    }

    #[test]
    fn generations_get_disjoint_session_ids() {
        assert_eq!(session_id_base(0), 0);
        assert!(session_id_base(1) > u64::from(u32::MAX));
        assert!(session_id_base(2) > session_id_base(1));
    }
}
