//! The tokio driver around [`LmtpSession`]: listeners (TCP and UNIX),
//! per-connection loop with an idle timeout, deliveries on blocking threads,
//! and graceful shutdown.
//!
//! Message data is spooled as it arrives into the INBOX `tmp/` of the first
//! recipient whose Maildir can be written (behind that recipient's trace
//! headers), so a connection holds at most one read buffer and one write
//! buffer of it in memory. After the final dot every other recipient gets a
//! copy with its own trace headers (read back from the spool file), then
//! the spool file itself is committed for its recipient.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use storage_hooks::{IncomingMessage, StoreError};
use tracing::Instrument;

use super::session::{
    AcceptedRecipient, DataSink, DeliveryStatus, LmtpLimits, LmtpSession, RcptVerdict, RecipientResolver, Transaction,
};
use crate::auth::UserRecord;
use crate::delivery::{Delivered, Deliverer, DeliveryError, ReceivedFrom, TraceHeaders, INBOX};

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
    counts: LmtpCounts,
    /// Seconds from the end of DATA until every recipient's copy is stored.
    delivery_seconds: Histogram,
}

/// 0.5 ms to ~8 s: a small mailbox stores in about a millisecond, a large
/// one on a loaded disk in hundreds.
fn delivery_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 15)
}

/// What the LMTP service did since start, per recipient (one transaction
/// with three recipients counts three).
#[derive(Debug, Default)]
struct LmtpCounts {
    connections: AtomicU64,
    unknown_recipients: AtomicU64,
    stored: AtomicU64,
    too_large: AtomicU64,
    rejected: AtomicU64,
    temp_failed: AtomicU64,
    no_space: AtomicU64,
}

/// [`LmtpServer::counts`]: what the service did since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LmtpCountsSnapshot {
    /// Connections accepted.
    pub connections: u64,
    /// RCPT TO refused with 550 (no such user).
    pub unknown_recipients: u64,
    /// Messages stored (250), per recipient.
    pub stored: u64,
    /// Messages refused as too large (552), per recipient.
    pub too_large: u64,
    /// Messages refused for good (5xx), per recipient.
    pub rejected: u64,
    /// Messages refused for now (451), per recipient.
    pub temp_failed: u64,
    /// Messages refused because storage is full (452), per recipient.
    pub no_space: u64,
}

struct UserResolver<'a> {
    deliverer: &'a Deliverer,
    domains: &'a [String],
    unknown: &'a AtomicU64,
}

impl RecipientResolver for UserResolver<'_> {
    type Target = UserRecord;
    fn resolve(&self, address: &str) -> RcptVerdict<UserRecord> {
        match self.deliverer.resolve_recipient(address, self.domains) {
            Some(user) => RcptVerdict::Accept(user),
            None => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                RcptVerdict::Unknown
            }
        }
    }
}

/// The trace headers of `rcpt`'s copy of `tx`.
fn trace_headers(tx: &Transaction<UserRecord>, rcpt: &AcceptedRecipient<UserRecord>, peer: &str, by: &str) -> TraceHeaders {
    TraceHeaders {
        return_path: Some(tx.sender.clone()),
        delivered_to: Some(rcpt.address.clone()),
        received: Some(ReceivedFrom {
            helo: tx.helo.clone(),
            peer: peer.to_string(),
            protocol: "LMTP",
            by: by.to_string(),
            id: tx.id.clone(),
        }),
    }
}

/// Starts `rcpt`'s copy of `tx`: a file in their INBOX `tmp/` holding the
/// trace headers, ready for the body.
fn start_copy(
    deliverer: &Deliverer,
    tx: &Transaction<UserRecord>,
    rcpt: &AcceptedRecipient<UserRecord>,
    peer: &str,
    by: &str,
) -> Result<IncomingMessage, StoreError> {
    let store = deliverer.open_store(&rcpt.target)?;
    let mut message = IncomingMessage::create(&store, INBOX)?;
    message.write(trace_headers(tx, rcpt, peer, by).render().as_bytes())?;
    message.mark_body_start();
    Ok(message)
}

/// Writes the message data of the transaction being received to disk.
struct Spool<'a> {
    deliverer: &'a Deliverer,
    peer: &'a str,
    by: &'a str,
    /// The spool file and the index of the recipient it is for, or why it
    /// could not be written. `None` when no body is being received (or it
    /// was refused).
    body: Option<Result<(usize, IncomingMessage), StoreError>>,
}

impl DataSink<UserRecord> for Spool<'_> {
    fn begin(&mut self, tx: &Transaction<UserRecord>) {
        let mut result = Err(StoreError::NotAllowed("no recipients".into()));
        for (i, rcpt) in tx.recipients.iter().enumerate() {
            // A recipient whose Maildir is broken must not fail the others.
            result = start_copy(self.deliverer, tx, rcpt, self.peer, self.by).map(|m| (i, m));
            if result.is_ok() {
                break;
            }
        }
        self.body = Some(result);
    }
    fn write(&mut self, bytes: &[u8]) {
        if let Some(Ok((_, message))) = &mut self.body {
            if let Err(e) = message.write(bytes) {
                // Dropping the message removes its file; the delivery then
                // reports the error for every recipient.
                self.body = Some(Err(e));
            }
        }
    }
    fn abort(&mut self) {
        self.body = None;
    }
}

/// The reply status for one recipient's delivery result, logged.
fn status_of(tx_id: &str, user: &str, result: Result<Delivered, DeliveryError>, size: u64) -> DeliveryStatus {
    match result {
        Ok(d) => {
            tracing::info!(tx = %tx_id, user = %user, uid = d.uid, size, "delivered");
            DeliveryStatus::Stored { uid: d.uid }
        }
        Err(DeliveryError::TooLarge { .. }) => DeliveryStatus::TooLarge,
        Err(DeliveryError::Storage(e)) if e.is_storage_full() => {
            tracing::warn!(tx = %tx_id, user = %user, error = %e, "delivery refused: storage full");
            DeliveryStatus::NoSpace
        }
        Err(e) if e.is_temporary() => {
            tracing::warn!(tx = %tx_id, user = %user, error = %e, "delivery failed temporarily");
            DeliveryStatus::TempFail("storage error".into())
        }
        Err(e) => {
            tracing::info!(tx = %tx_id, user = %user, error = %e, "delivery refused");
            DeliveryStatus::Rejected(e.to_string())
        }
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
            counts: LmtpCounts::default(),
            delivery_seconds: Histogram::new(delivery_buckets()),
        })
    }

    /// What the service did since start (for a metrics endpoint).
    pub fn counts(&self) -> LmtpCountsSnapshot {
        let c = &self.counts;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LmtpCountsSnapshot {
            connections: load(&c.connections),
            unknown_recipients: load(&c.unknown_recipients),
            stored: load(&c.stored),
            too_large: load(&c.too_large),
            rejected: load(&c.rejected),
            temp_failed: load(&c.temp_failed),
            no_space: load(&c.no_space),
        }
    }

    /// The delivery latency histogram (shares its state with the server's).
    pub fn delivery_seconds(&self) -> Histogram {
        self.delivery_seconds.clone()
    }

    fn count_outcomes(&self, statuses: &[DeliveryStatus]) {
        for status in statuses {
            let counter = match status {
                DeliveryStatus::Stored { .. } => &self.counts.stored,
                DeliveryStatus::TooLarge => &self.counts.too_large,
                DeliveryStatus::Rejected(_) => &self.counts.rejected,
                DeliveryStatus::TempFail(_) => &self.counts.temp_failed,
                DeliveryStatus::NoSpace => &self.counts.no_space,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
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
        self.counts.connections.fetch_add(1, Ordering::Relaxed);
        let session_id = format!("{}.{n}", self.id_prefix);
        let span = tracing::info_span!("lmtp", session = %session_id, peer = %peer);
        self.run_connection(&mut stream, &session_id, &peer, &mut shutdown).instrument(span).await;
        let _ = stream.shutdown().await;
    }

    async fn run_connection<S>(&self, stream: &mut S, session_id: &str, peer: &str, shutdown: &mut watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let resolver = UserResolver { deliverer: &self.deliverer, domains: &self.settings.domains, unknown: &self.counts.unknown_recipients };
        let mut session = LmtpSession::new(&self.settings.hostname, session_id, self.settings.limits);
        let mut buf = vec![0u8; 64 * 1024];
        let by = self.settings.hostname.as_str();
        let mut body = Spool { deliverer: &self.deliverer, peer, by, body: None };
        tracing::debug!("connected");
        loop {
            let out = session.take_output();
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                break;
            }
            if let Some(tx) = session.take_transaction() {
                let spooled = body.body.take();
                let started = std::time::Instant::now();
                let statuses = self.deliver(tx, spooled, peer).await;
                self.delivery_seconds.observe(started.elapsed().as_secs_f64());
                self.count_outcomes(&statuses);
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

    async fn deliver(
        &self,
        tx: Transaction<UserRecord>,
        spooled: Option<Result<(usize, IncomingMessage), StoreError>>,
        peer: &str,
    ) -> Vec<DeliveryStatus> {
        let deliverer = self.deliverer.clone();
        let by = self.settings.hostname.clone();
        let peer = peer.to_string();
        let count = tx.recipients.len();
        let result = tokio::task::spawn_blocking(move || {
            let (host, mut spool) = match spooled {
                Some(Ok(spool)) => spool,
                Some(Err(e)) => {
                    let user = tx.recipients.first().map_or("", |r| r.target.name.as_str());
                    let status = status_of(&tx.id, user, Err(DeliveryError::Storage(e)), tx.size);
                    return vec![status; count];
                }
                None => return vec![DeliveryStatus::TempFail("message data was not kept".into()); count],
            };
            let mut statuses = vec![DeliveryStatus::TempFail("no result".into()); count];
            // Copies first: they are read back from the spool file, which
            // committing moves into new/.
            for (i, rcpt) in tx.recipients.iter().enumerate().filter(|(i, _)| *i != host) {
                let result = start_copy(&deliverer, &tx, rcpt, &peer, &by)
                    .and_then(|mut copy| spool.copy_body_to(&mut copy).map(|()| copy))
                    .map_err(DeliveryError::Storage)
                    .and_then(|mut copy| deliverer.deliver_incoming(&rcpt.target, INBOX, &mut copy));
                statuses[i] = status_of(&tx.id, &rcpt.target.name, result, tx.size);
            }
            let rcpt = &tx.recipients[host];
            let result = deliverer.deliver_incoming(&rcpt.target, INBOX, &mut spool);
            statuses[host] = status_of(&tx.id, &rcpt.target.name, result, tx.size);
            statuses
        })
        .await;
        result.unwrap_or_else(|e| {
            tracing::error!(error = %e, "delivery task failed");
            vec![DeliveryStatus::TempFail("internal error".into()); count]
        })
    }
}
