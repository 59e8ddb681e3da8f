//! Seqpacket messages with an optional descriptor (`SCM_RIGHTS`) between
//! workers and a hibernate process, through rustix's safe wrappers.
//!
//! The descriptor passing itself is [`crate::fd_passing`]; this module adds
//! the listener/connect side and the error shape the epoll driver wants.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::fd_passing::{self, FdPassingError};

/// Largest message (record or control reply) on a channel.
pub const MAX_MESSAGE: usize = fd_passing::MAX_MESSAGE_LEN;

/// One received message.
#[derive(Debug)]
pub struct Message {
    /// Payload length in the caller's buffer.
    pub len: usize,
    /// Descriptor passed with it.
    pub fd: Option<OwnedFd>,
}

/// Errors on a channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Socket call failed (including `WouldBlock`).
    #[error("channel I/O: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the channel.
    #[error("channel closed")]
    Closed,
    /// Truncated message or more than one descriptor.
    #[error("malformed message on channel")]
    Malformed,
    /// Payload larger than [`MAX_MESSAGE`].
    #[error("message too large")]
    TooLarge,
}

/// Sends one message, with `fd` attached if given.
///
/// # Errors
/// [`ChannelError`] (a full non-blocking socket gives `Io(WouldBlock)`).
pub fn send(socket: BorrowedFd<'_>, payload: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<(), ChannelError> {
    fd_passing::send_message(socket, payload, fd).map_err(ChannelError::from)
}

/// Receives one message into `buf`.
///
/// # Errors
/// [`ChannelError::Closed`] at end of stream, `Io(WouldBlock)` when empty.
pub fn recv(socket: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Message, ChannelError> {
    let received = fd_passing::recv_message(socket, buf)?;
    Ok(Message { len: received.len, fd: received.fd })
}

impl From<FdPassingError> for ChannelError {
    fn from(e: FdPassingError) -> Self {
        match e {
            FdPassingError::Io(e) => ChannelError::Io(e),
            FdPassingError::Closed => ChannelError::Closed,
            FdPassingError::TooLarge { .. } => ChannelError::TooLarge,
            FdPassingError::Truncated | FdPassingError::TooManyFds(_) => ChannelError::Malformed,
        }
    }
}

/// Binds a non-blocking, close-on-exec seqpacket listener at `path`
/// (replacing a stale socket file), readable and writable by our user only:
/// whoever can send a record here can claim any user's session.
///
/// # Errors
/// Socket, bind or listen failures.
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o600))?;
    rustix::net::listen(&fd, 1024)?;
    Ok(fd)
}

/// Accepts one connection (non-blocking, close-on-exec) from a process of
/// our own user; connections from other users are closed.
///
/// # Errors
/// `WouldBlock` when none is pending; `PermissionDenied` for another user.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)?;
    let peer = rustix::net::sockopt::socket_peercred(&fd)?;
    if peer.uid != rustix::process::getuid() {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "hibernate socket: peer of another user"));
    }
    Ok(fd)
}

/// Connects a blocking, close-on-exec seqpacket socket to `path` (the
/// worker's end, or a control client's).
///
/// # Errors
/// The socket does not exist or refuses the connection.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    Ok(fd)
}

/// Sets or clears `O_NONBLOCK`.
///
/// # Errors
/// fcntl failure.
pub fn set_nonblocking(fd: impl AsFd, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    let flags = if on { flags | rustix::fs::OFlags::NONBLOCK } else { flags & !rustix::fs::OFlags::NONBLOCK };
    rustix::fs::fcntl_setfl(&fd, flags)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_a_descriptor_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let listener = listen(&path).unwrap();
        let client = connect(&path).unwrap();
        let server = accept(listener.as_fd()).unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        send(client.as_fd(), b"hello", Some(a.as_fd())).unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        let m = recv(server.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..m.len], b"hello");
        assert!(m.fd.is_some());
        drop(client);
        assert!(matches!(recv(server.as_fd(), &mut buf), Err(ChannelError::Closed)));
        assert!(matches!(recv(listener.as_fd(), &mut buf), Err(ChannelError::Io(_))));
    }
}
