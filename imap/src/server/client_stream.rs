//! The worker's view of a client connection: a TCP socket (plain sessions)
//! or a UNIX socket whose other end is the master's TLS proxy.
//!
//! Reads go through readiness + `try_read` into a stack buffer, so an idle
//! session holds no read buffer of its own.

use std::io;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

/// Bytes read per `try_read`; lives on the stack only while reading.
pub const READ_CHUNK: usize = 16 * 1024;

/// A connected client socket.
#[derive(Debug)]
pub enum ClientStream {
    /// The client's TCP socket itself.
    Tcp(TcpStream),
    /// Plaintext from the master's TLS proxy.
    Unix(UnixStream),
}

impl ClientStream {
    /// Waits until the socket is readable (data, EOF or error).
    ///
    /// # Errors
    /// Reactor errors.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            ClientStream::Tcp(s) => s.readable().await,
            ClientStream::Unix(s) => s.readable().await,
        }
    }

    /// Reads what is available without waiting; `Ok(0)` is end of stream,
    /// `WouldBlock` means nothing was ready after all.
    ///
    /// # Errors
    /// Socket errors, `WouldBlock`.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Tcp(s) => s.try_read(buf),
            ClientStream::Unix(s) => s.try_read(buf),
        }
    }

    /// Writes all of `bytes`.
    ///
    /// # Errors
    /// Socket errors (client gone).
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            ClientStream::Tcp(s) => s.write_all(bytes).await,
            ClientStream::Unix(s) => s.write_all(bytes).await,
        }
    }

    /// Shuts down the write side (FIN to the client or the proxy).
    pub async fn shutdown(&mut self) {
        let _ = match self {
            ClientStream::Tcp(s) => s.shutdown().await,
            ClientStream::Unix(s) => s.shutdown().await,
        };
    }
}
