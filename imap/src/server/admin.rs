//! The master's control socket protocol (`<run_dir>/master.sock`, mode
//! 0600, `SOCK_SEQPACKET`): `dormouse who` and `dormouse kick` ask the
//! master about the sessions it and its workers hold.
//!
//! # Wire format (version 1)
//!
//! One message per request and per reply: the byte [`ADMIN_VERSION`], then
//! an [`AdminRequest`] or [`AdminReply`] in postcard. Hibernated sessions
//! are not the master's to list: the CLI asks the hibernate processes over
//! their own sockets ([`hibernate::driver::control`]).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::Path;

use hibernate::driver::channel;
use serde::{Deserialize, Serialize};

/// First byte of every admin message.
pub const ADMIN_VERSION: u8 = 0xA1;

/// Most sessions in one [`AdminReply::Sessions`] (the reply fits one message).
pub const MAX_ADMIN_ROWS: usize = 250;

/// Name of the master's control socket in the run directory.
pub const ADMIN_SOCKET: &str = "master.sock";

/// Which sessions a request is about: those matching every given filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFilter {
    /// Only this user's sessions (pre-login sessions have no user and never match).
    pub user: Option<String>,
    /// Only sessions from this address.
    pub peer: Option<IpAddr>,
}

impl SessionFilter {
    /// True if a session of `user` (none before login) from `peer` matches.
    pub fn matches(&self, user: Option<&str>, peer: IpAddr) -> bool {
        self.user.as_deref().is_none_or(|u| user == Some(u)) && self.peer.is_none_or(|p| p == peer)
    }
}

/// A question to the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Sessions in pre-login and in the workers.
    Who(SessionFilter),
    /// Disconnect the matching sessions (workers: after the command in
    /// progress) with `* BYE [UNAVAILABLE] Disconnected by the administrator`.
    Kick(SessionFilter),
}

/// Where a listed session is and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    /// Not logged in yet (in the master).
    PreLogin,
    /// In a worker, not in IDLE.
    Live,
    /// In a worker, in IDLE.
    Idle,
}

impl SessionState {
    /// The word `dormouse who` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::PreLogin => "pre-login",
            SessionState::Live => "live",
            SessionState::Idle => "idle",
        }
    }
}

/// One session as `dormouse who` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminSession {
    /// Master session id.
    pub session_id: u64,
    /// Login name (none before login).
    pub user: Option<String>,
    /// Client address.
    pub peer: SocketAddr,
    /// True if the client talks TLS.
    pub tls: bool,
    /// State.
    pub state: SessionState,
    /// Selected mailbox.
    pub mailbox: Option<String>,
    /// In this state since (ms since the UNIX epoch).
    pub since_ms: u64,
    /// Process holding it: 0 for the master, else the worker's pid.
    pub pid: u32,
}

/// The master's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReply {
    /// Answer to [`AdminRequest::Who`].
    Sessions {
        /// Up to [`MAX_ADMIN_ROWS`] sessions.
        sessions: Vec<AdminSession>,
        /// Matching sessions not listed (over the cap, or over a worker's own cap).
        more: u64,
        /// Workers that did not answer in time.
        silent_workers: u32,
    },
    /// Answer to [`AdminRequest::Kick`].
    Kicked {
        /// Sessions told to go.
        count: u64,
        /// Workers that did not answer in time (their sessions were not counted).
        silent_workers: u32,
    },
}

/// Errors of the admin protocol.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Not an admin message of this version, or malformed.
    #[error("bad admin message")]
    Malformed,
    /// The socket could not be reached or failed.
    #[error("master control socket: {0}")]
    Io(#[from] std::io::Error),
    /// Sending or receiving failed.
    #[error("master control socket: {0}")]
    Channel(#[from] channel::ChannelError),
}

/// Encodes an admin message: version byte, then postcard.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![ADMIN_VERSION];
    // Plain owned data always serializes.
    out.extend_from_slice(&postcard::to_stdvec(msg).unwrap_or_default());
    out
}

/// Decodes what [`encode`] produced.
///
/// # Errors
/// [`AdminError::Malformed`] for another version, bad or trailing data.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AdminError> {
    match bytes.split_first() {
        Some((&ADMIN_VERSION, body)) => match postcard::take_from_bytes(body) {
            Ok((msg, [])) => Ok(msg),
            _ => Err(AdminError::Malformed),
        },
        _ => Err(AdminError::Malformed),
    }
}

/// Asks the master listening at `socket` (blocking; for the CLI).
///
/// # Errors
/// [`AdminError`].
pub fn query(socket: &Path, request: &AdminRequest) -> Result<AdminReply, AdminError> {
    let fd = channel::connect(socket)?;
    let timeout = Some(std::time::Duration::from_secs(10));
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, timeout).map_err(std::io::Error::from)?;
    channel::send(fd.as_fd(), &encode(request), None)?;
    let mut buf = vec![0u8; channel::MAX_MESSAGE];
    let m = channel::recv(fd.as_fd(), &mut buf)?;
    decode(&buf[..m.len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: SessionState) -> AdminSession {
        AdminSession {
            session_id: u64::MAX,
            user: Some("u".repeat(super::super::worker_report::MAX_LISTED_NAME)),
            peer: "[2001:db8::1]:65535".parse().unwrap(),
            tls: true,
            state,
            mailbox: Some("m".repeat(super::super::worker_report::MAX_LISTED_NAME)),
            since_ms: u64::MAX,
            pid: u32::MAX,
        }
    }

    #[test]
    fn messages_round_trip() {
        let filter = SessionFilter { user: Some("bob".into()), peer: Some("10.1.2.3".parse().unwrap()) };
        for request in [AdminRequest::Who(SessionFilter::default()), AdminRequest::Kick(filter)] {
            assert_eq!(decode::<AdminRequest>(&encode(&request)).unwrap(), request);
        }
        for reply in [
            AdminReply::Sessions { sessions: vec![row(SessionState::PreLogin), row(SessionState::Idle)], more: 3, silent_workers: 1 },
            AdminReply::Kicked { count: 2, silent_workers: 0 },
        ] {
            assert_eq!(decode::<AdminReply>(&encode(&reply)).unwrap(), reply);
        }
    }

    #[test]
    fn bad_messages_are_refused() {
        assert!(decode::<AdminRequest>(&[]).is_err());
        assert!(decode::<AdminRequest>(&[0x01, 0x00]).is_err());
        assert!(decode::<AdminRequest>(&[ADMIN_VERSION, 0x07]).is_err());
        let mut bytes = encode(&AdminRequest::Who(SessionFilter::default()));
        bytes.push(0);
        assert!(decode::<AdminRequest>(&bytes).is_err(), "trailing bytes");
    }

    #[test]
    fn the_largest_reply_fits_one_message() {
        let reply =
            AdminReply::Sessions { sessions: vec![row(SessionState::Live); MAX_ADMIN_ROWS], more: u64::MAX, silent_workers: u32::MAX };
        assert!(encode(&reply).len() <= channel::MAX_MESSAGE);
    }

    #[test]
    fn filters_match_every_given_field() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(SessionFilter::default().matches(None, ip));
        let bob = SessionFilter { user: Some("bob".into()), peer: None };
        assert!(bob.matches(Some("bob"), ip));
        assert!(!bob.matches(Some("alice"), ip));
        assert!(!bob.matches(None, ip), "pre-login sessions have no user");
        let both = SessionFilter { user: Some("bob".into()), peer: Some(ip) };
        assert!(!both.matches(Some("bob"), other));
        assert!(SessionFilter { user: None, peer: Some(ip) }.matches(None, ip));
    }
}
