//! The tokio driver around [`LmtpSession`]: listeners (TCP and UNIX),
//! per-connection loop with an idle timeout, deliveries on blocking threads,
//! and graceful shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::session::{DataSink, DeliveryStatus, LmtpLimits, LmtpSession, RcptVerdict, RecipientResolver, Transaction};
use crate::auth::UserRecord;
use crate::delivery::{Deliverer, DeliveryError, ReceivedFrom, TraceHeaders, INBOX};

/// Settings of the LMTP service.
#[derive(Debug, Clone)]
pub struct LmtpSettings {
    /// Host name for the greeting and the Received header.
    pub hostname: String,
    /// Protocol limits.
    pub limits: LmtpLimits,
    /// How long a client may stay silent.
    pub idle_timeout: Duration,
    /// Accepted recipient domains (empty: any).
    pub domains: Vec<String>,
    /// How long shutdown waits for connections to finish.
    pub shutdown_grace: Duration,
}

impl Default for LmtpSettings {
    fn default() -> Self {
        LmtpSettings {
            hostname: "localhost".into(),
            limits: LmtpLimits::default(),
            idle_timeout: Duration::from_secs(300),
            domains: Vec::new(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The LMTP service: accepts connections and delivers through a [`Deliverer`].
#[derive(Debug)]
pub struct LmtpServer {
    deliverer: Deliverer,
    settings: LmtpSettings,
    next_session: AtomicU64,
    id_prefix: String,
}

struct UserResolver<'a> {
    deliverer: &'a Deliverer,
    domains: &'a [String],
}

impl RecipientResolver for UserResolver<'_> {
    type Target = UserRecord;
    fn resolve(&self, address: &str) -> RcptVerdict<UserRecord> {
        match self.deliverer.resolve_recipient(address, self.domains) {
            Some(user) => RcptVerdict::Accept(user),
            None => RcptVerdict::Unknown,
        }
    }
}

/// Holds the message data of the transaction being received.
#[derive(Debug, Default)]
struct MessageBuffer {
    data: Vec<u8>,
}

impl DataSink for MessageBuffer {
    fn begin(&mut self) {
        self.data.clear();
    }
    fn write(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }
    fn abort(&mut self) {
        self.data = Vec::new();
    }
}

/// A listening socket the server accepts LMTP clients on.
trait Listener: Send + 'static {
    /// The accepted connection type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Accepts one client, naming its peer for logs and the Received header.
    fn accept_client(&self) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, String)>> + Send;
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_client(&self) -> std::io::Result<(Self::Stream, String)> {
        let (stream, peer) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer.ip().to_string()))
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_client(&self) -> std::io::Result<(Self::Stream, String)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, "unix".to_string()))
    }
}

/// Resolves once `rx` is true (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The borrow guard `wait_for` returns is dropped right here, so the
    // future stays `Send`.
    let _ = rx.wait_for(|s| *s).await;
}

impl LmtpServer {
    /// A server delivering with `deliverer`.
    pub fn new(deliverer: Deliverer, settings: LmtpSettings) -> Arc<Self> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Arc::new(LmtpServer {
            deliverer,
            settings,
            next_session: AtomicU64::new(1),
            id_prefix: format!("{:x}{:x}", now.as_secs(), std::process::id()),
        })
    }

    /// Accepts TCP connections until `shutdown` turns true, then waits (up to
    /// the grace period) for open connections to finish. A failed accept is
    /// logged and retried.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        self.serve(listener, shutdown).await;
    }

    /// Like [`LmtpServer::serve_tcp`] for a UNIX socket.
    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener, shutdown: watch::Receiver<bool>) {
        self.serve(listener, shutdown).await;
    }

    async fn serve<L: Listener>(self: Arc<Self>, listener: L, shutdown: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                () = stopped(&mut stop) => break,
                accepted = listener.accept_client() => match accepted {
                    Ok((stream, peer)) => {
                        let me = self.clone();
                        let shutdown = shutdown.clone();
                        tasks.spawn(async move { me.handle(stream, peer, shutdown).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LMTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        self.drain(tasks).await;
    }

    async fn drain(&self, mut tasks: JoinSet<()>) {
        let waited = tokio::time::timeout(self.settings.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if waited.is_err() {
            tracing::warn!(open = tasks.len(), "LMTP connections still open after the grace period; aborting them");
            tasks.abort_all();
        }
    }

    /// Runs one connection to completion. `peer` names the client in logs and
    /// the Received header.
    pub async fn handle<S>(&self, mut stream: S, peer: String, mut shutdown: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        let session_id = format!("{}.{n}", self.id_prefix);
        let span = tracing::info_span!("lmtp", session = %session_id, peer = %peer);
        self.run_connection(&mut stream, &session_id, &peer, &mut shutdown).instrument(span).await;
        let _ = stream.shutdown().await;
    }

    async fn run_connection<S>(&self, stream: &mut S, session_id: &str, peer: &str, shutdown: &mut watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let resolver = UserResolver { deliverer: &self.deliverer, domains: &self.settings.domains };
        let mut session = LmtpSession::new(&self.settings.hostname, session_id, self.settings.limits);
        let mut buf = vec![0u8; 64 * 1024];
        let mut body = MessageBuffer::default();
        tracing::debug!("connected");
        loop {
            let out = session.take_output();
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                break;
            }
            if let Some(tx) = session.take_transaction() {
                let data = std::mem::take(&mut body.data);
                let statuses = self.deliver(tx, data, peer).await;
                session.delivery_done(statuses, &resolver, &mut body);
                continue;
            }
            if session.is_closed() {
                break;
            }
            let read = tokio::select! {
                r = tokio::time::timeout(self.settings.idle_timeout, stream.read(&mut buf)) => r,
                () = stopped(shutdown) => {
                    session.shutting_down();
                    continue;
                }
            };
            match read {
                Err(_elapsed) => {
                    tracing::info!("client timed out");
                    session.timed_out();
                }
                Ok(Ok(0)) => {
                    tracing::debug!("client closed the connection");
                    break;
                }
                Ok(Ok(n)) => session.receive(&buf[..n], &resolver, &mut body),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    break;
                }
            }
        }
    }

    async fn deliver(&self, tx: Transaction<UserRecord>, data: Vec<u8>, peer: &str) -> Vec<DeliveryStatus> {
        let deliverer = self.deliverer.clone();
        let by = self.settings.hostname.clone();
        let peer = peer.to_string();
        let count = tx.recipients.len();
        let result = tokio::task::spawn_blocking(move || {
            tx.recipients
                .iter()
                .map(|rcpt| {
                    let trace = TraceHeaders {
                        return_path: Some(tx.sender.clone()),
                        delivered_to: Some(rcpt.address.clone()),
                        received: Some(ReceivedFrom {
                            helo: tx.helo.clone(),
                            peer: peer.clone(),
                            protocol: "LMTP",
                            by: by.clone(),
                            id: tx.id.clone(),
                        }),
                    };
                    match deliverer.deliver(&rcpt.target, INBOX, &data, &trace) {
                        Ok(d) => {
                            tracing::info!(tx = %tx.id, user = %rcpt.target.name, uid = d.uid, size = data.len(), "delivered");
                            DeliveryStatus::Stored { uid: d.uid }
                        }
                        Err(DeliveryError::TooLarge { .. }) => DeliveryStatus::TooLarge,
                        Err(DeliveryError::Storage(e)) if e.is_storage_full() => {
                            tracing::warn!(tx = %tx.id, user = %rcpt.target.name, error = %e, "delivery refused: storage full");
                            DeliveryStatus::NoSpace
                        }
                        Err(e) if e.is_temporary() => {
                            tracing::warn!(tx = %tx.id, user = %rcpt.target.name, error = %e, "delivery failed temporarily");
                            DeliveryStatus::TempFail("storage error".into())
                        }
                        Err(e) => {
                            tracing::info!(tx = %tx.id, user = %rcpt.target.name, error = %e, "delivery refused");
                            DeliveryStatus::Rejected(e.to_string())
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
        result.unwrap_or_else(|e| {
            tracing::error!(error = %e, "delivery task failed");
            vec![DeliveryStatus::TempFail("internal error".into()); count]
        })
    }
}
