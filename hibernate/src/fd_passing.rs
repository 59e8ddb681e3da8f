//! Passing file descriptors between processes (`SCM_RIGHTS`).
//!
//! The master and its workers, and workers and hibernate processes, talk
//! over UNIX `SOCK_SEQPACKET` sockets:
//! every `send` is one datagram-like message with message boundaries kept,
//! optionally carrying one file descriptor as `SCM_RIGHTS` ancillary data.
//! Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`) and come back
//! as [`OwnedFd`]s, so nothing leaks into later `exec`s and nothing is
//! closed twice. Everything here goes through rustix's safe wrappers: this
//! module has no `unsafe` code.
//!
//! Message size is bounded by [`MAX_MESSAGE_LEN`]; a larger payload is
//! refused before anything is sent, and a truncated receive is an error,
//! never a silently shortened record.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use tokio::io::Interest;

/// Largest payload one message may carry (bytes). Kept well under the
/// default socket send buffer so a `SOCK_SEQPACKET` send never fails for size.
pub const MAX_MESSAGE_LEN: usize = 128 * 1024;

/// Errors sending or receiving a message with a descriptor.
#[derive(Debug, thiserror::Error)]
pub enum FdPassingError {
    /// The underlying socket call failed.
    #[error("fd-passing socket I/O: {0}")]
    Io(#[from] io::Error),
    /// The payload is larger than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The received message or its ancillary data did not fit the buffers.
    #[error("received message was truncated")]
    Truncated,
    /// More than one descriptor arrived with one message.
    #[error("received {0} descriptors where at most one was expected")]
    TooManyFds(usize),
    /// The peer closed its end of the channel.
    #[error("channel closed by peer")]
    Closed,
}

/// A received message: its payload length in the caller's buffer, and the
/// descriptor that came with it, if any.
#[derive(Debug)]
pub struct Received {
    /// Number of payload bytes written to the receive buffer.
    pub len: usize,
    /// The descriptor passed along with the message (close-on-exec).
    pub fd: Option<OwnedFd>,
}

/// Creates a connected, close-on-exec, non-blocking `SOCK_SEQPACKET` pair.
///
/// # Errors
/// The `socketpair` system call failed (e.g. out of descriptors).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// Creates a connected, close-on-exec `SOCK_STREAM` pair (blocking mode; the
/// caller switches to non-blocking when it registers the ends with tokio).
///
/// # Errors
/// The `socketpair` system call failed.
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?)
}

/// Sends `payload` as one message on the seqpacket socket `socket`,
/// passing `fd` along if given. Non-blocking sockets return `WouldBlock`
/// as an [`FdPassingError::Io`].
///
/// # Errors
/// [`FdPassingError::TooLarge`] before sending, or the `sendmsg` error.
pub fn send_message(socket: BorrowedFd<'_>, payload: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<(), FdPassingError> {
    if payload.len() > MAX_MESSAGE_LEN {
        return Err(FdPassingError::TooLarge { len: payload.len(), max: MAX_MESSAGE_LEN });
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            // The buffer is sized for exactly one descriptor; failing here is a bug.
            return Err(FdPassingError::Io(io::Error::other("ancillary buffer too small for one descriptor")));
        }
    }
    let iov = [IoSlice::new(payload)];
    let sent = rustix::net::sendmsg(socket, &iov, &mut control, SendFlags::NOSIGNAL).map_err(io::Error::from)?;
    if sent != payload.len() {
        // SOCK_SEQPACKET sends are atomic; a short send means a stream socket was passed in.
        return Err(FdPassingError::Io(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short send of {sent} of {} bytes", payload.len()),
        )));
    }
    Ok(())
}

/// Receives one message from the seqpacket socket `socket` into `buf`.
/// Returns [`FdPassingError::Closed`] at end of stream.
///
/// # Errors
/// The `recvmsg` error (including `WouldBlock`), truncation, or more than
/// one descriptor in the message (all received descriptors are closed then).
pub fn recv_message(socket: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Received, FdPassingError> {
    // Room for a few descriptors so that a misbehaving peer sending several
    // is detected (and the extras closed) instead of being truncated silently.
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC).map_err(io::Error::from)?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::TRUNC) || msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(FdPassingError::Truncated);
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Err(FdPassingError::Closed);
    }
    if fds.len() > 1 {
        return Err(FdPassingError::TooManyFds(fds.len()));
    }
    Ok(Received { len: msg.bytes, fd: fds.pop() })
}

/// An async wrapper around one end of a seqpacket channel, registered with
/// the current tokio runtime. Sends and receives are whole messages.
///
/// The socket is registered with tokio's reactor through a
/// `tokio::net::UnixStream` wrapper, used only for readiness
/// (`async_io`); every read and write goes through [`send_message`] /
/// [`recv_message`], so the stream type never touches the message
/// boundaries. (tokio has no seqpacket type, and `AsyncFd::register` is
/// `unsafe` in current tokio; this keeps the module free of `unsafe`.)
#[derive(Debug)]
pub struct FdChannel {
    inner: tokio::net::UnixStream,
}

impl FdChannel {
    /// Registers `fd` (a `SOCK_SEQPACKET` socket) with tokio, switching it to
    /// non-blocking mode. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// Setting non-blocking mode or registering with the reactor failed.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        let std_socket = std::os::unix::net::UnixStream::from(fd);
        Ok(Self { inner: tokio::net::UnixStream::from_std(std_socket)? })
    }

    /// Sends one message, with `fd` attached if given; waits while the
    /// socket buffer is full.
    ///
    /// # Errors
    /// See [`send_message`].
    pub async fn send(&self, payload: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<(), FdPassingError> {
        let socket = &self.inner;
        self.inner
            .async_io(Interest::WRITABLE, || match send_message(socket.as_fd(), payload, fd) {
                Ok(()) => Ok(Ok(())),
                Err(FdPassingError::Io(e)) => Err(e),
                Err(other) => Ok(Err(other)),
            })
            .await?
    }

    /// Receives one message into `buf`, waiting until one arrives.
    ///
    /// # Errors
    /// See [`recv_message`]; [`FdPassingError::Closed`] once the peer is gone.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<Received, FdPassingError> {
        let socket = &self.inner;
        self.inner
            .async_io(Interest::READABLE, || match recv_message(socket.as_fd(), buf) {
                Ok(received) => Ok(Ok(received)),
                Err(FdPassingError::Io(e)) => Err(e),
                Err(other) => Ok(Err(other)),
            })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn passes_a_descriptor_and_payload() {
        let (a, b) = seqpacket_pair().unwrap();
        let (mut left, right) = UnixStream::pair().unwrap();
        send_message(a.as_fd(), b"hello", Some(right.as_fd())).unwrap();
        drop(right);
        let mut buf = [0u8; 64];
        let got = recv_message(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"hello");
        let fd = got.fd.expect("descriptor passed");
        let flags = rustix::io::fcntl_getfd(&fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC), "received fd must be close-on-exec");
        let mut passed = UnixStream::from(fd);
        passed.write_all(b"ping").unwrap();
        let mut four = [0u8; 4];
        left.read_exact(&mut four).unwrap();
        assert_eq!(&four, b"ping");
    }

    #[test]
    fn message_without_descriptor() {
        let (a, b) = seqpacket_pair().unwrap();
        send_message(a.as_fd(), b"just data", None).unwrap();
        let mut buf = [0u8; 64];
        let got = recv_message(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"just data");
        assert!(got.fd.is_none());
    }

    #[test]
    fn boundaries_are_kept() {
        let (a, b) = seqpacket_pair().unwrap();
        send_message(a.as_fd(), b"one", None).unwrap();
        send_message(a.as_fd(), b"two!", None).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(recv_message(b.as_fd(), &mut buf).unwrap().len, 3);
        assert_eq!(recv_message(b.as_fd(), &mut buf).unwrap().len, 4);
        assert_eq!(&buf[..4], b"two!");
    }

    #[test]
    fn truncation_is_an_error() {
        let (a, b) = seqpacket_pair().unwrap();
        send_message(a.as_fd(), &[7u8; 100], None).unwrap();
        let mut small = [0u8; 10];
        assert!(matches!(recv_message(b.as_fd(), &mut small), Err(FdPassingError::Truncated)));
    }

    #[test]
    fn oversized_payload_is_refused() {
        let (a, _b) = seqpacket_pair().unwrap();
        let big = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert!(matches!(send_message(a.as_fd(), &big, None), Err(FdPassingError::TooLarge { .. })));
    }

    #[test]
    fn max_sized_payload_fits() {
        let (a, b) = seqpacket_pair().unwrap();
        let big = vec![3u8; MAX_MESSAGE_LEN];
        send_message(a.as_fd(), &big, None).unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        assert_eq!(recv_message(b.as_fd(), &mut buf).unwrap().len, MAX_MESSAGE_LEN);
    }

    #[test]
    fn closed_peer_is_reported() {
        let (a, b) = seqpacket_pair().unwrap();
        drop(a);
        let mut buf = [0u8; 8];
        assert!(matches!(recv_message(b.as_fd(), &mut buf), Err(FdPassingError::Closed)));
    }

    #[tokio::test]
    async fn async_channel_round_trip() {
        let (a, b) = seqpacket_pair().unwrap();
        let a = FdChannel::new(a).unwrap();
        let b = FdChannel::new(b).unwrap();
        let (x, _y) = UnixStream::pair().unwrap();
        let receiver = tokio::spawn(async move {
            let mut buf = vec![0u8; 64];
            let got = b.recv(&mut buf).await.unwrap();
            (buf[..got.len].to_vec(), got.fd.is_some())
        });
        a.send(b"handover", Some(x.as_fd())).await.unwrap();
        let (payload, had_fd) = receiver.await.unwrap();
        assert_eq!(payload, b"handover");
        assert!(had_fd);
    }
}
