//! Moving a TLS session out of the master after login.
//!
//! The master does the handshake with rustls (through tokio-rustls) on a
//! per-connection configuration that lets rustls give up its secrets
//! ([`tls_record::handover_server_config`]). After login it extracts a
//! [`TlsState`] and passes the TCP socket itself to the worker, which runs
//! the [`tls_record::RecordLayer`]; the master then holds nothing for the
//! session. TLS 1.2 sessions stay proxied ([`super::tls_proxy`]).
//!
//! rustls drops ciphertext it has buffered but not decrypted when it gives
//! up its secrets, so the socket is wrapped in a [`RecordTracker`] that
//! remembers the bytes of the record rustls has only partly received: they
//! become [`TlsState::incoming`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tls_record::{SecretCapture, TlsState};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// TLS record header length.
const HEADER_LEN: usize = 5;

/// A transport that remembers the bytes of the last TLS record it passed on
/// only in part (everything before is whole records rustls has processed).
#[derive(Debug)]
pub(crate) struct RecordTracker<T> {
    inner: T,
    partial: Vec<u8>,
}

impl<T> RecordTracker<T> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: T) -> Self {
        RecordTracker {
            inner,
            partial: Vec::new(),
        }
    }

    fn track(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while self.partial.len() - start >= HEADER_LEN {
            let len = usize::from(u16::from_be_bytes([
                self.partial[start + 3],
                self.partial[start + 4],
            ]));
            if self.partial.len() - start < HEADER_LEN + len {
                break;
            }
            start += HEADER_LEN + len;
        }
        self.partial.drain(..start);
    }

    /// The transport and the bytes of the record passed on in part.
    pub(crate) fn into_parts(self) -> (T, Vec<u8>) {
        (self.inner, self.partial)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for RecordTracker<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.track(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for RecordTracker<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TLS connection in the master: tokio-rustls over a [`RecordTracker`],
/// plus the secrets its handshake logged.
pub(crate) struct MasterTls {
    /// The TLS stream.
    pub(crate) stream: TlsStream<RecordTracker<TcpStream>>,
    /// The connection's traffic secrets (TLS 1.3 only).
    pub(crate) capture: Arc<SecretCapture>,
}

/// What a TLS 1.3 session leaves behind in the master when it moves.
pub(crate) struct Extracted {
    /// The client's socket.
    pub(crate) tcp: TcpStream,
    /// The session state for the receiver.
    pub(crate) state: TlsState,
    /// Plaintext rustls had decrypted and nobody read yet (goes after the
    /// session's own pending input).
    pub(crate) plaintext: Vec<u8>,
}

impl MasterTls {
    /// Runs the handshake on `tcp` with a per-connection copy of `base`.
    ///
    /// # Errors
    /// Handshake failures.
    pub(crate) async fn accept(tcp: TcpStream, base: &rustls::ServerConfig) -> io::Result<Self> {
        let (config, capture) = tls_record::handover_server_config(base);
        let stream = tokio_rustls::TlsAcceptor::from(config)
            .accept(RecordTracker::new(tcp))
            .await?;
        Ok(MasterTls { stream, capture })
    }

    /// Takes the session out of rustls if it can run elsewhere (TLS 1.3,
    /// secrets captured, nothing left to send); otherwise gives the
    /// connection back untouched, to be proxied.
    pub(crate) fn extract(self) -> Extraction {
        let (_, conn) = self.stream.get_ref();
        if !self.capture.transferable(conn) || conn.wants_write() {
            return Extraction::Kept(Box::new(self));
        }
        let (tracker, mut conn) = self.stream.into_inner();
        let mut plaintext = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match io::Read::read(&mut conn.reader(), &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => plaintext.extend_from_slice(&chunk[..n]),
            }
        }
        let (tcp, incoming) = tracker.into_parts();
        // Neither step fails after the checks above; if one did, the rustls
        // connection is consumed and the session is lost (the socket closes).
        let state = match conn.dangerous_extract_secrets() {
            Ok(secrets) => tls_record::state_from_rustls(secrets, &self.capture, incoming)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match state {
            Ok(state) => Extraction::Moved(Extracted {
                tcp,
                state,
                plaintext,
            }),
            Err(reason) => Extraction::Lost(reason),
        }
    }
}

/// The outcome of [`MasterTls::extract`].
pub(crate) enum Extraction {
    /// The state is out; the master no longer has a TLS connection.
    Moved(Extracted),
    /// Not movable (TLS 1.2): still a working rustls connection.
    Kept(Box<MasterTls>),
    /// Extraction failed half way: the connection is unusable.
    Lost(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_keeps_only_the_partial_record() {
        let mut t = RecordTracker::new(());
        t.track(&[23, 3, 3, 0, 2, 1, 2, 23, 3]);
        assert_eq!(t.partial, vec![23, 3]);
        t.track(&[3, 0, 3, 9]);
        assert_eq!(t.partial, vec![23, 3, 3, 0, 3, 9]);
        t.track(&[9, 9]);
        assert!(t.partial.is_empty());
        t.track(&[22, 3, 1, 0, 0, 21]);
        assert_eq!(t.into_parts().1, vec![21], "an empty record is whole");
    }
}
