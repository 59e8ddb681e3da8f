//! The worker's view of a client connection: a TCP socket (plain
//! sessions), a TCP socket with the TLS record layer on it (TLS 1.3
//! sessions whose state moved here), or a UNIX socket whose other end is the
//! master's TLS proxy (TLS 1.2).
//!
//! Reads go through readiness + `try_read` into a stack buffer, so an idle
//! session holds no read buffer of its own.

use std::io;

use tls_record::{Event, RecordLayer, TlsState};
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
    /// The client's TCP socket, with this process running its TLS session.
    Tls(Box<TlsClient>),
}

/// A TLS 1.3 session this process owns: the socket, the record layer, and
/// plaintext decrypted but not read yet.
#[derive(Debug)]
pub struct TlsClient {
    tcp: TcpStream,
    layer: RecordLayer,
    plain: Vec<u8>,
    /// The client sent close_notify: end of stream once `plain` is read.
    peer_closed: bool,
}

impl TlsClient {
    /// Runs `state` on `tcp`.
    ///
    /// # Errors
    /// A state that cannot be run.
    pub fn new(tcp: TcpStream, state: TlsState) -> io::Result<Self> {
        let layer = RecordLayer::from_state(state)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(TlsClient {
            tcp,
            layer,
            plain: Vec::new(),
            peer_closed: false,
        })
    }

    /// The TCP socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// A copy of the session state to send along with the socket, or `None`
    /// while decrypted input is waiting to be read (the session is not
    /// quiescent then). The caller must not use this stream again once the
    /// receiver has accepted the copy: (key, sequence number) pairs are used
    /// once.
    pub fn state_for_handover(&self) -> Option<TlsState> {
        if !self.plain.is_empty() || self.peer_closed {
            return None;
        }
        Some(self.layer.clone_state())
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.plain.is_empty() && !self.peer_closed {
            let mut raw = [0u8; READ_CHUNK];
            let n = self.tcp.try_read(&mut raw)?;
            if n == 0 {
                return Ok(0);
            }
            self.layer.enqueue_input(&raw[..n]);
            loop {
                match self.layer.next() {
                    Ok(Some(Event::ApplicationData(data))) => self.plain.extend_from_slice(&data),
                    Ok(Some(Event::CloseNotify)) => {
                        self.peer_closed = true;
                        break;
                    }
                    // Our answer (if one is owed) goes out ahead of the next
                    // sealed record, as RFC 8446 §4.6.3 asks.
                    Ok(Some(Event::KeyUpdate { .. })) => {}
                    Ok(None) => break,
                    Err(e) => {
                        // Best effort: the alert, then the caller closes.
                        let _ = self.tcp.try_write(&self.layer.take_transmit());
                        tracing::info!(error = %e, "TLS record error; closing");
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
            }
        }
        if self.plain.is_empty() {
            if self.peer_closed {
                return Ok(0);
            }
            // Only part of a record so far.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.plain.len());
        buf[..n].copy_from_slice(&self.plain[..n]);
        self.plain.drain(..n);
        Ok(n)
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let sealed = self
            .layer
            .seal(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))?;
        self.tcp.write_all(&sealed).await
    }

    async fn shutdown(&mut self) {
        if let Ok(bytes) = self.layer.close_notify() {
            let _ = self.tcp.write_all(&bytes).await;
        }
        let _ = self.tcp.shutdown().await;
    }
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
            ClientStream::Tls(t) if !t.plain.is_empty() || t.peer_closed => Ok(()),
            ClientStream::Tls(t) => t.tcp.readable().await,
        }
    }

    /// Reads what is available without waiting; `Ok(0)` is end of stream,
    /// `WouldBlock` means nothing was ready after all.
    ///
    /// # Errors
    /// Socket errors, `WouldBlock`.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Tcp(s) => s.try_read(buf),
            ClientStream::Unix(s) => s.try_read(buf),
            ClientStream::Tls(t) => t.try_read(buf),
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
            ClientStream::Tls(t) => t.write_all(bytes).await,
        }
    }

    /// Shuts down the write side (FIN to the client or the proxy).
    pub async fn shutdown(&mut self) {
        let _ = match self {
            ClientStream::Tcp(s) => s.shutdown().await,
            ClientStream::Unix(s) => s.shutdown().await,
            ClientStream::Tls(t) => {
                t.shutdown().await;
                Ok(())
            }
        };
    }
}
