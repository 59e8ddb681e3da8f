//! Typed control messages on a hibernate socket (for `dormouse who`,
//! `dormouse stats`, `dormouse kick`, and the master's watch of ended
//! sessions), told apart from session records by their first byte.

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::channel::{self, ChannelError, MAX_MESSAGE};
use crate::core::{Counters, SessionInfo};

/// First byte of a control message (never a valid record version).
pub const CONTROL_VERSION: u8 = 0xC2;

/// Most sessions listed in one `Who` reply.
pub const MAX_WHO: usize = 500;

/// Most session ids in one [`ControlReply::Ended`] notice.
pub const MAX_ENDED: usize = 8_000;

/// Text of the BYE a kicked session gets (hibernate processes and IMAP
/// workers use the same words).
pub const KICK_BYE: &[u8] = b"* BYE [UNAVAILABLE] Disconnected by the administrator\r\n";

/// A question to a hibernate process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Counters.
    Stats,
    /// Held sessions (at most [`MAX_WHO`]).
    Who,
    /// Disconnect the held sessions matching every given filter with
    /// [`KICK_BYE`]; answered with [`ControlReply::Kicked`].
    Kick {
        /// Only this user's sessions.
        user: Option<String>,
        /// Only sessions from this address.
        peer: Option<IpAddr>,
    },
    /// Like [`ControlRequest::Who`], only the sessions matching every
    /// given filter (the cap applies after filtering).
    WhoMatching {
        /// Only this user's sessions.
        user: Option<String>,
        /// Only sessions from this address.
        peer: Option<IpAddr>,
    },
    /// Sent by the IMAP master: this connection receives
    /// [`ControlReply::Ended`] notices (and never hand-backs), so the
    /// master releases a session's limit counts when it really ends.
    Observe,
    /// Sent by a worker that is leaving (a restart moves its sessions to
    /// the next generation's workers): hand no more sessions back on this
    /// connection; answered with [`ControlReply::Retired`] after every
    /// hand-back already sent on it.
    Retire,
    /// Sent by a worker first on every connection: sessions may be handed
    /// back on it. Connections that never say so (control clients such as
    /// `dormouse stats`) never get one; a session record counts too.
    Register,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlReply {
    /// Counters of the process.
    Stats {
        /// Process id.
        pid: u32,
        /// Index of the hibernate process.
        index: u32,
        /// Connected workers.
        workers: u32,
        /// The counters.
        counters: Counters,
        /// Most sessions this process holds.
        capacity: u64,
    },
    /// Sessions held.
    Who {
        /// Up to [`MAX_WHO`] sessions.
        sessions: Vec<SessionInfo>,
        /// All sessions held.
        total: u64,
    },
    /// Sent to a worker, unasked, just before a session is handed back
    /// because this process is full: park elsewhere for a while.
    Full {
        /// Index of the hibernate process.
        index: u32,
    },
    /// Answer to [`ControlRequest::Kick`].
    Kicked {
        /// Sessions disconnected.
        count: u64,
    },
    /// Answer to [`ControlRequest::Retire`]: nothing more is handed back here.
    Retired {
        /// Index of the hibernate process.
        index: u32,
    },
    /// Sent to observers, unasked: these sessions ended here (logout,
    /// timeout, client gone, kicked); handed-back ones are not listed.
    Ended {
        /// Master session ids (at most [`MAX_ENDED`]).
        session_ids: Vec<u64>,
    },
}

/// Errors of a control exchange.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Socket trouble.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// Connect failure.
    #[error("cannot connect: {0}")]
    Io(#[from] std::io::Error),
    /// Undecodable message.
    #[error("bad control message")]
    Malformed,
}

/// Encodes a control message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![CONTROL_VERSION];
    // Plain owned data always serializes.
    out.extend_from_slice(&postcard::to_stdvec(msg).unwrap_or_default());
    out
}

/// Decodes a control message.
///
/// # Errors
/// [`ControlError::Malformed`].
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ControlError> {
    match bytes.split_first() {
        Some((&CONTROL_VERSION, body)) => postcard::from_bytes(body).map_err(|_| ControlError::Malformed),
        _ => Err(ControlError::Malformed),
    }
}

/// Asks the hibernate process listening at `socket` (blocking).
///
/// # Errors
/// [`ControlError`].
pub fn query(socket: &Path, request: ControlRequest) -> Result<ControlReply, ControlError> {
    let fd = channel::connect(socket)?;
    channel::send(fd.as_fd(), &encode(&request), None)?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let m = channel::recv(fd.as_fd(), &mut buf)?;
    decode(&buf[..m.len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        for reply in [
            ControlReply::Full { index: 3 },
            ControlReply::Stats { pid: 7, index: 1, workers: 2, counters: Counters::default(), capacity: 5 },
            ControlReply::Who { sessions: Vec::new(), total: 0 },
            ControlReply::Kicked { count: 9 },
            ControlReply::Ended { session_ids: vec![1, u64::MAX] },
        ] {
            assert_eq!(decode::<ControlReply>(&encode(&reply)).unwrap(), reply);
        }
        assert!(decode::<ControlReply>(&[0x01, 0x00]).is_err());
    }

    #[test]
    fn requests_round_trip() {
        for request in [
            ControlRequest::Stats,
            ControlRequest::Who,
            ControlRequest::Observe,
            ControlRequest::Kick { user: Some("bob".into()), peer: Some("10.0.0.1".parse().unwrap()) },
            ControlRequest::Kick { user: None, peer: None },
            ControlRequest::WhoMatching { user: Some("bob".into()), peer: None },
        ] {
            assert_eq!(decode::<ControlRequest>(&encode(&request)).unwrap(), request);
        }
    }

    #[test]
    fn the_largest_ended_notice_fits_a_message() {
        let notice = ControlReply::Ended { session_ids: vec![u64::MAX; MAX_ENDED] };
        assert!(encode(&notice).len() <= MAX_MESSAGE);
    }
}
