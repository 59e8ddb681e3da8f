//! Messages a worker sends back to the master over its channel.
//!
//! # Wire format (version 1)
//!
//! One byte [`WORKER_REPORT_VERSION`], then a [`WorkerReport`] in postcard.
//! The master → worker direction carries [`crate::handover::Handover`]
//! records, each with the client's descriptor attached, and descriptor-less
//! [`WorkerRequest`]s (first byte [`WORKER_REQUEST_VERSION`], which is never
//! a hand-over version).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Version byte of the [`WorkerReport`] wire format.
pub const WORKER_REPORT_VERSION: u8 = 1;

/// Version byte of the [`WorkerRequest`] wire format.
pub const WORKER_REQUEST_VERSION: u8 = 0xD1;

/// Most sessions one worker lists in a [`WorkerReport::Sessions`] reply
/// (with names cut to [`MAX_LISTED_NAME`] bytes, the reply fits one
/// channel message).
pub const MAX_LISTED: usize = 200;

/// Longest user or mailbox name in a [`LiveSession`], in bytes.
pub const MAX_LISTED_NAME: usize = 200;

/// What the master asks a worker (for `dormouse who` and `dormouse kick`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerRequest {
    /// List the live sessions matching every given filter; answered with
    /// [`WorkerReport::Sessions`].
    List {
        /// Echoed in the reply.
        request: u64,
        /// Only this user's sessions.
        user: Option<String>,
        /// Only sessions from this address.
        peer: Option<IpAddr>,
    },
    /// Disconnect the sessions matching every given filter (after the
    /// command in progress); answered with [`WorkerReport::Kicked`].
    Kick {
        /// Echoed in the reply.
        request: u64,
        /// Only this user's sessions.
        user: Option<String>,
        /// Only sessions from this address.
        peer: Option<IpAddr>,
    },
    /// A restart: park every session in a hibernate process at its next
    /// command boundary (a command in progress finishes first), ask the
    /// hibernate processes to hand nothing back here, and close what cannot
    /// move (TLS relayed by this master, not parkable within the shutdown
    /// grace) with `* BYE`; answered with [`WorkerReport::Detached`].
    Detach {
        /// Echoed in the reply.
        request: u64,
    },
}

/// One live session in a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSession {
    /// Master session id.
    pub session_id: u64,
    /// Login name.
    pub user: String,
    /// Client address.
    pub peer: SocketAddr,
    /// True if the client talks TLS (1.3 run in the worker, or 1.2 proxied by the master).
    pub tls: bool,
    /// True while in IDLE.
    pub idle: bool,
    /// Selected mailbox.
    pub mailbox: Option<String>,
    /// In this worker since (ms since the UNIX epoch).
    pub since_ms: u64,
}

/// What a worker tells the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerReport {
    /// The worker is running and accepts hand-overs.
    Ready {
        /// The worker's process id.
        pid: u32,
    },
    /// A session handed to the worker has ended (logout, timeout, error);
    /// the master releases its per-user and per-IP counts.
    SessionEnded {
        /// The master-assigned session id.
        session_id: u64,
    },
    /// A session was parked in hibernate process `process`: it still
    /// counts toward the limits until that process reports its end.
    SessionParked {
        /// The master-assigned session id.
        session_id: u64,
        /// Index of the hibernate process.
        process: u32,
    },
    /// A session came back from a hibernate process to this worker.
    SessionResumed {
        /// The master-assigned session id.
        session_id: u64,
    },
    /// Answer to [`WorkerRequest::List`].
    Sessions {
        /// The request's number.
        request: u64,
        /// Up to [`MAX_LISTED`] sessions.
        sessions: Vec<LiveSession>,
        /// All live sessions of the worker.
        total: u64,
    },
    /// Answer to [`WorkerRequest::Kick`].
    Kicked {
        /// The request's number.
        request: u64,
        /// Sessions told to go.
        count: u64,
    },
    /// Answer to [`WorkerRequest::Detach`]: the worker holds no session now.
    Detached {
        /// The request's number.
        request: u64,
        /// Sessions parked for the move.
        parked: u64,
        /// Sessions that could not move (closed with `* BYE`).
        lost: u64,
    },
    /// The worker could not take a hand-over (bad record, no descriptor);
    /// the master treats the session as ended.
    HandoverRejected {
        /// The session id, if the record could be decoded.
        session_id: Option<u64>,
        /// Why.
        reason: String,
    },
}

/// Errors decoding a [`WorkerReport`].
#[derive(Debug, thiserror::Error)]
pub enum WorkerReportError {
    /// Empty message.
    #[error("empty worker report")]
    Empty,
    /// Unknown version byte.
    #[error("unsupported worker report version {0}")]
    UnsupportedVersion(u8),
    /// postcard failed.
    #[error("worker report encoding: {0}")]
    Codec(#[from] postcard::Error),
}

impl WorkerReport {
    /// Encodes: version byte, then postcard.
    ///
    /// # Errors
    /// postcard serialization failures (not expected for this type).
    pub fn encode(&self) -> Result<Vec<u8>, WorkerReportError> {
        let mut out = vec![WORKER_REPORT_VERSION];
        out.extend_from_slice(&postcard::to_stdvec(self)?);
        Ok(out)
    }

    /// Decodes what [`WorkerReport::encode`] produced.
    ///
    /// # Errors
    /// Empty input, other version, malformed or trailing data.
    pub fn decode(bytes: &[u8]) -> Result<Self, WorkerReportError> {
        let (&version, body) = bytes.split_first().ok_or(WorkerReportError::Empty)?;
        if version != WORKER_REPORT_VERSION {
            return Err(WorkerReportError::UnsupportedVersion(version));
        }
        let (report, rest) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(WorkerReportError::Codec(postcard::Error::DeserializeBadEncoding));
        }
        Ok(report)
    }
}

impl WorkerRequest {
    /// Encodes: version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WORKER_REQUEST_VERSION];
        // Plain owned data always serializes.
        out.extend_from_slice(&postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    /// Decodes what [`WorkerRequest::encode`] produced.
    ///
    /// # Errors
    /// Empty input, other version, malformed or trailing data.
    pub fn decode(bytes: &[u8]) -> Result<Self, WorkerReportError> {
        let (&version, body) = bytes.split_first().ok_or(WorkerReportError::Empty)?;
        if version != WORKER_REQUEST_VERSION {
            return Err(WorkerReportError::UnsupportedVersion(version));
        }
        let (request, rest) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(WorkerReportError::Codec(postcard::Error::DeserializeBadEncoding));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(i: u64) -> LiveSession {
        LiveSession {
            session_id: i,
            user: "u".repeat(MAX_LISTED_NAME),
            peer: "[2001:db8::1]:65535".parse().unwrap(),
            tls: true,
            idle: false,
            mailbox: Some("m".repeat(MAX_LISTED_NAME)),
            since_ms: u64::MAX,
        }
    }

    #[test]
    fn requests_round_trip_and_are_not_handovers() {
        assert_ne!(WORKER_REQUEST_VERSION, crate::handover::HANDOVER_VERSION);
        for request in [
            WorkerRequest::List { request: 1, user: None, peer: None },
            WorkerRequest::List { request: 2, user: Some("alice".into()), peer: Some("10.0.0.1".parse().unwrap()) },
            WorkerRequest::Kick { request: u64::MAX, user: Some("bob".into()), peer: Some("::1".parse().unwrap()) },
            WorkerRequest::Kick { request: 0, user: None, peer: None },
        ] {
            assert_eq!(WorkerRequest::decode(&request.encode()).unwrap(), request);
        }
        assert!(WorkerRequest::decode(&[]).is_err());
        assert!(WorkerRequest::decode(&[WORKER_REPORT_VERSION, 0]).is_err());
    }

    #[test]
    fn a_full_session_list_fits_one_message() {
        let report = WorkerReport::Sessions { request: 1, sessions: (0..MAX_LISTED as u64).map(live).collect(), total: 1 };
        assert!(report.encode().unwrap().len() <= crate::fd_passing::MAX_MESSAGE_LEN);
    }

    #[test]
    fn round_trips() {
        for report in [
            WorkerReport::Ready { pid: 4242 },
            WorkerReport::SessionEnded { session_id: u64::MAX },
            WorkerReport::HandoverRejected { session_id: None, reason: "no descriptor".into() },
            WorkerReport::HandoverRejected { session_id: Some(7), reason: String::new() },
            WorkerReport::SessionParked { session_id: 3, process: 2 },
            WorkerReport::SessionResumed { session_id: 3 },
            WorkerReport::Sessions { request: 5, sessions: vec![live(1), live(2)], total: 9 },
            WorkerReport::Kicked { request: 5, count: 2 },
        ] {
            let bytes = report.encode().unwrap();
            assert_eq!(WorkerReport::decode(&bytes).unwrap(), report);
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(WorkerReport::decode(&[]), Err(WorkerReportError::Empty)));
        assert!(matches!(WorkerReport::decode(&[9, 0]), Err(WorkerReportError::UnsupportedVersion(9))));
        assert!(WorkerReport::decode(&[WORKER_REPORT_VERSION, 200]).is_err());
        let mut bytes = WorkerReport::Ready { pid: 1 }.encode().unwrap();
        bytes.push(1);
        assert!(WorkerReport::decode(&bytes).is_err());
    }
}
