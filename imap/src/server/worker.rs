//! The IMAP worker process: receives authenticated sessions from the master
//! and serves many of them concurrently on one tokio runtime.
//!
//! The worker's channel to the master is its standard input (a
//! `SOCK_SEQPACKET` socket; see [`channel_from_stdin`]). Each message
//! carries a [`Handover`] record and the client's descriptor. When the
//! channel closes (the master stops, or is gone) or on SIGTERM the worker
//! stops: each session finishes the command in progress and gets
//! [`super::shutdown::SHUTDOWN_BYE`], bounded by the configured shutdown grace; then it logs
//! its counters and exits.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use storage_hooks::Hooks;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tracing::Instrument;

use crate::fd_passing::{FdChannel, FdPassingError, MAX_MESSAGE_LEN};
use crate::handover::{Handover, Transport};
use crate::session::{Authenticator, Session};

use super::client_stream::{ClientStream, TlsClient};
use super::config::{ImapServerConfig, ImapSettings};
use super::counters::Counters;
use super::deflate_layer::DeflateLayer;
use super::hibernation::{state_from_record, ConnectionFacts, HibernateLinks, HibernationSettings, Parking};
use super::live_sessions::LiveSessions;
use super::session_driver::{self, SessionEnd, Stopping, WorkerResources};
use super::storage_slots::StorageSlots;
use super::session_options;
use super::shutdown::ActiveCount;
use super::wakeup::{WakeupHook, WakeupRegistry};
use super::worker_report::{WorkerReport, WorkerRequest, WORKER_REQUEST_VERSION};

/// What a worker needs besides its configuration.
pub struct WorkerDeps {
    /// Login checks (sessions arrive authenticated; kept for the Session API).
    pub authenticator: Arc<dyn Authenticator>,
    /// Extra storage hooks for this worker's stores, e.g. the bus publisher.
    pub hooks: Hooks,
    /// Session registry for wake-ups; the bus subscriber dispatches into it.
    pub wakeups: Arc<WakeupRegistry>,
    /// Where to park quiet sessions (`None`: never hibernate).
    pub hibernation: Option<HibernationSettings>,
    /// New `[imap]` settings from a configuration reload (`None`: the
    /// worker keeps the ones it started with). Sessions arriving after an
    /// update get its limits and timeouts; sessions already here keep theirs.
    pub settings_updates: Option<watch::Receiver<ImapSettings>>,
}

impl std::fmt::Debug for WorkerDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerDeps").field("hooks", &self.hooks).finish_non_exhaustive()
    }
}

/// Takes the worker's channel from standard input (as set up by the master).
///
/// # Errors
/// Standard input is not open.
pub fn channel_from_stdin() -> io::Result<OwnedFd> {
    std::io::stdin().as_fd().try_clone_to_owned()
}

/// Shared state of one worker.
struct WorkerShared {
    config: ImapServerConfig,
    /// Options of sessions arriving from now on (replaced by a reload).
    options: std::sync::RwLock<crate::session::SessionOptions>,
    index: usize,
    deps: WorkerDeps,
    hooks: Hooks,
    counters: Counters,
    channel: FdChannel,
    hibernate: Option<Arc<HibernateLinks>>,
    /// Turns true when the worker stops: sessions say BYE and end.
    stopping: watch::Sender<bool>,
    /// Sessions being served here (not the parked ones).
    sessions: ActiveCount,
    /// The same sessions, for `dormouse who` and `dormouse kick`.
    live: Arc<LiveSessions>,
    /// Bounds the session steps on blocking threads (see `storage_slots`).
    slots: StorageSlots,
    /// Turns true when a restart moves the sessions away (`Detach`).
    detaching: watch::Sender<bool>,
    /// Sessions parked, and sessions closed because they could not move,
    /// since the detach began.
    detach_counts: (AtomicU64, AtomicU64),
    /// `Retired` answers from hibernate processes.
    retired: AtomicU64,
}

/// Runs the worker until the master closes the channel or `shutdown` completes.
///
/// # Errors
/// The channel could not be set up.
pub async fn run(
    config: ImapServerConfig,
    index: usize,
    channel: OwnedFd,
    deps: WorkerDeps,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut hooks = deps.hooks.clone();
    hooks.push(WakeupHook::new(deps.wakeups.clone()));
    let mut deps = deps;
    let settings_updates = deps.settings_updates.take();
    let shared = Arc::new(WorkerShared {
        options: std::sync::RwLock::new(session_options(&config)),
        config,
        index,
        hooks,
        counters: Counters::new(),
        channel: FdChannel::new(channel)?,
        hibernate: deps.hibernation.clone().map(HibernateLinks::new),
        deps,
        stopping: watch::channel(false).0,
        sessions: ActiveCount::default(),
        live: Arc::default(),
        slots: StorageSlots::per_core(),
        detaching: watch::channel(false).0,
        detach_counts: (AtomicU64::new(0), AtomicU64::new(0)),
        retired: AtomicU64::new(0),
    });
    // Before Ready: hibernate processes hand sessions back only to workers
    // connected to them, and in a restart the previous generation's
    // workers leave once this generation's are ready.
    if let Some(links) = shared.hibernate.as_ref() {
        let on_new = {
            let shared = shared.clone();
            move |link: Arc<FdChannel>| {
                tokio::spawn(hand_back_loop(shared.clone(), link));
            }
        };
        let connected = links.connect_existing(&on_new);
        tracing::debug!(worker = index, connected, "connected to the hibernate processes");
    }
    let ready = WorkerReport::Ready { pid: std::process::id() };
    if let Ok(bytes) = ready.encode() {
        let _ = shared.channel.send(&bytes, None).await;
    }
    tracing::info!(worker = index, pid = std::process::id(), "IMAP worker ready");
    let counters_task = tokio::spawn(counters_loop(shared.clone()));
    let updates_task = settings_updates.map(|updates| tokio::spawn(follow_settings(shared.clone(), updates)));
    tokio::select! {
        () = receive_loop(shared.clone()) => {}
        () = shutdown => {}
    }
    let open = shared.sessions.get();
    shared.stopping.send_replace(true);
    // A command in progress gets the grace to finish; idle sessions say BYE at once.
    let left = shared.sessions.wait_zero(shared.config.shutdown_grace).await;
    tracing::info!(worker = index, sessions = open, unfinished = left, "IMAP worker stopping");
    counters_task.abort();
    if let Some(task) = updates_task {
        task.abort();
    }
    shared.counters.log(&format!("worker {index}"), "shutdown");
    log_hibernation(&shared, "shutdown");
    Ok(())
}

async fn receive_loop(shared: Arc<WorkerShared>) {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        match shared.channel.recv(&mut buf).await {
            Ok(received) if received.fd.is_none() && buf.first() == Some(&WORKER_REQUEST_VERSION) => {
                answer_request(&shared, &buf[..received.len]).await;
            }
            Ok(received) => accept_handover(&shared, &buf[..received.len], received.fd).await,
            Err(FdPassingError::Closed) => {
                tracing::info!(worker = shared.index, "master closed the channel; exiting");
                return;
            }
            Err(e @ (FdPassingError::Truncated | FdPassingError::TooManyFds(_))) => {
                tracing::error!(worker = shared.index, error = %e, "bad message from master");
                report(&shared, &WorkerReport::HandoverRejected { session_id: None, reason: e.to_string() }).await;
            }
            Err(e) => {
                tracing::error!(worker = shared.index, error = %e, "channel to master failed; exiting");
                return;
            }
        }
    }
}

async fn report(shared: &WorkerShared, report: &WorkerReport) {
    match report.encode() {
        Ok(bytes) => {
            if let Err(e) = shared.channel.send(&bytes, None).await {
                tracing::warn!(worker = shared.index, error = %e, "cannot report to master");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode worker report"),
    }
}

/// Answers the master's [`WorkerRequest`] (`dormouse who`, `dormouse kick`).
async fn answer_request(shared: &Arc<WorkerShared>, bytes: &[u8]) {
    let reply = match WorkerRequest::decode(bytes) {
        Ok(WorkerRequest::List { request, user, peer }) => {
            let (sessions, total) = shared.live.list(user.as_deref(), peer);
            WorkerReport::Sessions { request, sessions, total }
        }
        Ok(WorkerRequest::Kick { request, user, peer }) => {
            let count = shared.live.kick(user.as_deref(), peer);
            tracing::info!(worker = shared.index, ?user, ?peer, count, "kicking sessions");
            WorkerReport::Kicked { request, count }
        }
        Ok(WorkerRequest::Detach { request }) => {
            tokio::spawn(detach(shared.clone(), request));
            return;
        }
        Err(e) => {
            tracing::error!(worker = shared.index, error = %e, "undecodable request from master");
            return;
        }
    };
    report(shared, &reply).await;
}

/// How long a detaching worker waits for the hibernate processes to
/// confirm that they hand nothing back to it any more.
const RETIRE_WAIT: Duration = Duration::from_secs(2);

/// A restart moves this worker's sessions: each parks at its next command
/// boundary; the hibernate processes stop handing sessions back here (those
/// already on their way are served and parked again); what is left after
/// the shutdown grace is closed with `* BYE`.
async fn detach(shared: Arc<WorkerShared>, request: u64) {
    let open = shared.sessions.get();
    tracing::info!(worker = shared.index, sessions = open, "restart: parking every session for the next generation");
    shared.detaching.send_replace(true);
    if let Some(links) = shared.hibernate.as_ref() {
        let connected = links.connected();
        let retire = hibernate::driver::control::encode(&hibernate::driver::control::ControlRequest::Retire);
        let mut asked = 0u64;
        for link in &connected {
            if link.send(&retire, None).await.is_ok() {
                asked += 1;
            }
        }
        let until = Instant::now() + RETIRE_WAIT;
        while shared.retired.load(Ordering::Relaxed) < asked && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let left = shared.sessions.wait_zero(shared.config.shutdown_grace).await;
    if left > 0 {
        // Not parkable in time: they get the shutdown BYE now.
        shared.stopping.send_replace(true);
        let _ = shared.sessions.wait_zero(Duration::from_secs(1)).await;
    }
    let parked = shared.detach_counts.0.load(Ordering::Relaxed);
    let lost = shared.detach_counts.1.load(Ordering::Relaxed) + left as u64;
    tracing::info!(worker = shared.index, parked, lost, "restart: worker detached");
    report(&shared, &WorkerReport::Detached { request, parked, lost }).await;
}

async fn accept_handover(shared: &Arc<WorkerShared>, bytes: &[u8], fd: Option<OwnedFd>) {
    let record = match Handover::decode(bytes) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(worker = shared.index, error = %e, "undecodable hand-over record");
            report(shared, &WorkerReport::HandoverRejected { session_id: None, reason: e.to_string() }).await;
            return;
        }
    };
    let Some(fd) = fd else {
        tracing::error!(worker = shared.index, session = record.session_id, "hand-over without a descriptor");
        let reason = "no descriptor".to_string();
        report(shared, &WorkerReport::HandoverRejected { session_id: Some(record.session_id), reason }).await;
        return;
    };
    let mut record = record;
    let stream = match client_stream(record.transport, fd, record.tls.take()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(worker = shared.index, session = record.session_id, error = %e, "cannot register client socket");
            let reason = e.to_string();
            report(shared, &WorkerReport::HandoverRejected { session_id: Some(record.session_id), reason }).await;
            return;
        }
    };
    tokio::spawn(serve_session(shared.clone(), record, stream));
}

fn client_stream(transport: Transport, fd: OwnedFd, tls: Option<tls_record::TlsState>) -> io::Result<ClientStream> {
    Ok(match transport {
        Transport::PlainTcp => {
            let std_tcp = std::net::TcpStream::from(fd);
            std_tcp.set_nonblocking(true)?;
            ClientStream::Tcp(TcpStream::from_std(std_tcp)?)
        }
        Transport::Tls { .. } => {
            let state = tls.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "TLS transport without TLS state"))?;
            let std_tcp = std::net::TcpStream::from(fd);
            std_tcp.set_nonblocking(true)?;
            ClientStream::Tls(Box::new(TlsClient::new(TcpStream::from_std(std_tcp)?, state)?))
        }
        Transport::TlsProxied { .. } => {
            let std_unix = std::os::unix::net::UnixStream::from(fd);
            std_unix.set_nonblocking(true)?;
            ClientStream::Unix(UnixStream::from_std(std_unix)?)
        }
    })
}

async fn serve_session(shared: Arc<WorkerShared>, record: Handover, mut stream: ClientStream) {
    let facts = ConnectionFacts {
        session_id: record.session_id,
        peer: record.peer,
        local: record.local,
        transport: record.transport,
        authenticated_at_ms: record.authenticated_at_ms,
    };
    let user = record.session.user.clone();
    let _active = shared.sessions.enter();
    shared.counters.session_opened();
    shared.counters.add_bytes_in(record.session.pending_input.len() as u64);
    let options = shared.session_options();
    let resumed = shared
        .slots
        .run(|| Session::resume(options, record.session, shared.deps.authenticator.clone(), shared.hooks.clone(), Instant::now()))
        .await;
    let end = match resumed {
        Ok(session) => {
            tracing::debug!(session = facts.session_id, %user, peer = %facts.peer, "session started in worker");
            let span = session_span(&facts, &user);
            drive_session(&shared, session, stream, &user, facts, None).instrument(span).await
        }
        Err(e) => {
            tracing::error!(session = facts.session_id, %user, error = %e, "cannot resume session");
            let _ = stream.write_all(b"* BYE [UNAVAILABLE] Mail store unavailable, try again later.\r\n").await;
            stream.shutdown().await;
            SessionEnd::IoError
        }
    };
    session_done(&shared, &facts, &user, end).await;
}

/// Drives a session with wake-ups and, if configured, parking.
async fn drive_session(
    shared: &Arc<WorkerShared>,
    session: Session,
    stream: ClientStream,
    user: &str,
    facts: ConnectionFacts,
    deflate: Option<Box<DeflateLayer>>,
) -> SessionEnd {
    let registration = shared.deps.wakeups.register(user);
    let on_new = {
        let shared = shared.clone();
        move |link: Arc<FdChannel>| {
            tokio::spawn(hand_back_loop(shared.clone(), link));
        }
    };
    let mut live = shared.live.register(facts.session_id, user, facts.peer, facts.transport.is_tls());
    let parking = shared.hibernate.as_deref().map(|links| Parking { links, facts, on_new: &on_new });
    let stopping = Stopping {
        signal: shared.stopping.subscribe(),
        grace: shared.config.shutdown_grace,
        detach: shared.detaching.subscribe(),
    };
    let worker = WorkerResources { counters: &shared.counters, slots: &shared.slots };
    session_driver::drive(session, stream, registration, worker, parking, stopping, &mut live, deflate).await
}

/// The span every log line of a session's commands carries, so a line such
/// as "mailbox does not exist" names who asked and from where.
fn session_span(facts: &ConnectionFacts, user: &str) -> tracing::Span {
    tracing::info_span!("session", id = facts.session_id, %user, peer = %facts.peer.ip())
}

async fn session_done(shared: &WorkerShared, facts: &ConnectionFacts, user: &str, end: SessionEnd) {
    let session_id = facts.session_id;
    shared.counters.session_closed();
    if *shared.detaching.borrow() {
        match end {
            SessionEnd::Hibernated { .. } => shared.detach_counts.0.fetch_add(1, Ordering::Relaxed),
            SessionEnd::CannotMove | SessionEnd::ShutDown => shared.detach_counts.1.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
    if let SessionEnd::Hibernated { process } = end {
        tracing::debug!(session = session_id, %user, process, "session parked");
        // The master keeps counting it until the hibernate process reports
        // its end (or dies).
        report(shared, &WorkerReport::SessionParked { session_id, process }).await;
        return;
    }
    // The line Dovecot writes as "Logged out": who, from where, how long.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let secs = now_ms.saturating_sub(facts.authenticated_at_ms) / 1000;
    tracing::info!(session = session_id, %user, peer = %facts.peer.ip(), tls = facts.transport.is_tls(), duration_secs = secs, ?end, "logout");
    report(shared, &WorkerReport::SessionEnded { session_id }).await;
}

/// Receives sessions handed back by one hibernate process.
async fn hand_back_loop(shared: Arc<WorkerShared>, link: Arc<FdChannel>) {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        match link.recv(&mut buf).await {
            Ok(received) => {
                let Some(fd) = received.fd else {
                    // Descriptor-less: "I am full", or "retired" (restart).
                    use hibernate::driver::control::ControlReply;
                    match hibernate::driver::control::decode::<ControlReply>(&buf[..received.len]) {
                        Ok(ControlReply::Full { index }) => {
                            if let Some(links) = shared.hibernate.as_ref() {
                                tracing::debug!(worker = shared.index, process = index, "hibernate process full; parking elsewhere for a while");
                                links.mark_full(&link);
                            }
                        }
                        Ok(ControlReply::Retired { index }) => {
                            tracing::debug!(worker = shared.index, process = index, "hibernate process hands nothing back here any more");
                            shared.retired.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    continue;
                };
                match hibernate::record::HibernationRecord::decode(&buf[..received.len]) {
                    Ok(record) => {
                        tokio::spawn(serve_handed_back(shared.clone(), record, fd));
                    }
                    Err(e) => tracing::error!(worker = shared.index, error = %e, "undecodable hand-back; closing the client"),
                }
            }
            Err(FdPassingError::Closed) => break,
            Err(FdPassingError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(worker = shared.index, error = %e, "hibernate link failed");
                break;
            }
        }
    }
    if let Some(links) = shared.hibernate.as_ref() {
        links.drop_link(&link);
    }
}

/// Continues a session the hibernate process handed back. (Boxed with an
/// explicit `Send` type: it is reached recursively from `drive_session`.)
fn serve_handed_back(
    shared: Arc<WorkerShared>,
    record: hibernate::record::HibernationRecord,
    fd: OwnedFd,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_handed_back_inner(shared, record, fd))
}

async fn serve_handed_back_inner(shared: Arc<WorkerShared>, record: hibernate::record::HibernationRecord, fd: OwnedFd) {
    let (state, facts, layers) = state_from_record(record);
    let user = state.user.clone();
    // Before anything else: from here this worker holds the session (its
    // death releases the session's counts).
    report(&shared, &WorkerReport::SessionResumed { session_id: facts.session_id }).await;
    let mut deflate = match layers.deflate.map(DeflateLayer::from_record).transpose() {
        Ok(d) => d.map(Box::new),
        Err(e) => {
            tracing::error!(session = facts.session_id, error = %e, "unusable compression state in a hand-back; closing the client");
            report(&shared, &WorkerReport::SessionEnded { session_id: facts.session_id }).await;
            return;
        }
    };
    let mut stream = match client_stream(facts.transport, fd, layers.tls) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(session = facts.session_id, error = %e, "cannot register a handed-back client");
            report(&shared, &WorkerReport::SessionEnded { session_id: facts.session_id }).await;
            return;
        }
    };
    let _active = shared.sessions.enter();
    shared.counters.session_opened();
    let options = shared.session_options();
    let resumed = shared
        .slots
        .run(|| Session::resume_hibernated(options, state, shared.deps.authenticator.clone(), shared.hooks.clone(), Instant::now()))
        .await;
    let end = match resumed {
        Ok(session) => {
            let span = session_span(&facts, &user);
            drive_session(&shared, session, stream, &user, facts, deflate).instrument(span).await
        }
        Err(e) => {
            tracing::error!(session = facts.session_id, %user, error = %e, "cannot resume a handed-back session");
            let bye = b"* BYE [UNAVAILABLE] Mail store unavailable, try again later.\r\n";
            let bytes = match deflate.as_mut() {
                Some(d) => d.compress(bye),
                None => bye.to_vec(),
            };
            let _ = stream.write_all(&bytes).await;
            stream.shutdown().await;
            SessionEnd::IoError
        }
    };
    session_done(&shared, &facts, &user, end).await;
}

impl WorkerShared {
    fn session_options(&self) -> crate::session::SessionOptions {
        self.options.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Installs every settings update as the options of sessions to come.
async fn follow_settings(shared: Arc<WorkerShared>, mut updates: watch::Receiver<ImapSettings>) {
    while updates.changed().await.is_ok() {
        let config = ImapServerConfig { settings: updates.borrow_and_update().clone(), ..shared.config.clone() };
        *shared.options.write().unwrap_or_else(|e| e.into_inner()) = session_options(&config);
        tracing::info!(worker = shared.index, "IMAP worker settings reloaded (new sessions use them)");
    }
}

/// Logs sessions parked and the ones that could not be, by reason.
fn log_hibernation(shared: &WorkerShared, why: &str) {
    if let Some(links) = shared.hibernate.as_ref() {
        let (parked, refused) = links.counts();
        let refused: Vec<String> = refused.iter().map(|(r, n)| format!("{r}={n}")).collect();
        tracing::info!(worker = shared.index, why, parked, refused = %refused.join(","), "hibernation counters");
    }
}

async fn counters_loop(shared: Arc<WorkerShared>) {
    let role = format!("worker {}", shared.index);
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    let interval_secs = shared.config.settings.counters_interval_secs;
    let mut tick = tokio::time::interval(Duration::from_secs(interval_secs.max(1)));
    tick.tick().await;
    loop {
        let why = tokio::select! {
            _ = tick.tick(), if interval_secs > 0 => "periodic",
            Some(()) = async { match usr1.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => "SIGUSR1",
        };
        shared.counters.log(&role, why);
        log_hibernation(&shared, why);
    }
}
