//! The master's pre-login stage for one connection: greeting, CAPABILITY,
//! STARTTLS, LOGIN / AUTHENTICATE PLAIN, ID, NOOP, LOGOUT, driven by a
//! [`Session`] in hand-over mode, then the hand-over to a worker.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use storage_hooks::Hooks;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fd_passing::stream_pair;
use crate::handover::{Handover, Transport};
use crate::session::{AuthFailure, Authenticator, HandOver, LoginRequest, Session, SessionEvent};

use super::counters::MasterCounts;
use super::login_guard::LoginGuard;
use super::master::MasterShared;
use super::session_driver::count_tagged_responses;
use super::shutdown::SHUTDOWN_BYE;
use super::tls_handover::{Extraction, MasterTls};
use super::tls_proxy;
use super::MAX_PENDING_INPUT;

/// The client connection during pre-login.
enum PreloginStream {
    Plain(TcpStream),
    Tls(Box<MasterTls>),
}

impl PreloginStream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            PreloginStream::Plain(s) => s.read(buf).await,
            PreloginStream::Tls(s) => s.stream.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            PreloginStream::Plain(s) => s.write_all(bytes).await,
            PreloginStream::Tls(s) => {
                s.stream.write_all(bytes).await?;
                s.stream.flush().await
            }
        }
    }

    async fn close(mut self) {
        let _ = match &mut self {
            PreloginStream::Plain(s) => s.shutdown().await,
            PreloginStream::Tls(s) => s.stream.shutdown().await,
        };
    }
}

/// What the session asked for after a run.
enum Next {
    Wait(Instant),
    StartTls,
    HandOver(Box<HandOver>),
    Verify(LoginRequest),
    Close,
}

fn run_session(session: &mut Session, out: &mut Vec<u8>) -> Next {
    loop {
        match session.next(Instant::now()) {
            SessionEvent::Output(bytes) => out.extend_from_slice(&bytes),
            SessionEvent::NeedMoreInput { deadline } => return Next::Wait(deadline),
            SessionEvent::StartTls => return Next::StartTls,
            SessionEvent::Authenticated(h) => return Next::HandOver(h),
            SessionEvent::Close => return Next::Close,
            SessionEvent::VerifyLogin(request) => return Next::Verify(request),
            // COMPRESS needs a login, and a login hands the session over first.
            SessionEvent::StartCompression { .. } => {
                tracing::error!("pre-login session asked for COMPRESS; closing");
                return Next::Close;
            }
        }
    }
}

/// Serves one accepted connection until it is handed to a worker or closed.
pub(crate) async fn serve(shared: Arc<MasterShared>, tcp: TcpStream, peer: SocketAddr, local: SocketAddr, implicit_tls: bool) {
    let _active = shared.prelogin_sessions.enter();
    let ip = peer.ip();
    let session_id = shared.next_session_id();
    let counted_ip = shared.limits.open_connection(ip);
    shared.counters.session_opened();
    let handed = serve_inner(&shared, tcp, peer, local, implicit_tls, session_id, counted_ip.clone())
        .await;
    shared.counters.session_closed();
    if !handed && counted_ip.is_ok() {
        shared.limits.close_connection(ip);
    }
}

/// Returns true if the session was handed to a worker (which then owns the
/// connection and its counts).
async fn serve_inner(
    shared: &Arc<MasterShared>,
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    implicit_tls: bool,
    session_id: u64,
    ip_allowed: Result<(), super::limits::LimitExceeded>,
) -> bool {
    let _ = tcp.set_nodelay(true);
    let mut stopping = shared.stopping.subscribe();
    let (row, mut kicked) = shared.prelogin_table.register(session_id, peer, implicit_tls);
    let mut stream = if implicit_tls {
        let Some(tls_config) = shared.tls_config() else { return false };
        let timeout = shared.session_options().limits.preauth_timeout;
        let handshake = tokio::select! {
            done = tokio::time::timeout(timeout, MasterTls::accept(tcp, &tls_config)) => done,
            // Not greeted yet: nothing to say BYE to.
            () = super::shutdown::stopped(&mut stopping) => return false,
        };
        match handshake {
            Ok(Ok(tls)) => PreloginStream::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::info!(session = session_id, %peer, error = %e, "TLS handshake failed");
                return false;
            }
            Err(_) => {
                tracing::info!(session = session_id, %peer, "TLS handshake timed out");
                return false;
            }
        }
    } else {
        PreloginStream::Plain(tcp)
    };
    if let Err(limit) = ip_allowed {
        tracing::warn!(session = session_id, %peer, %limit, "connection refused");
        let _ = stream.write_all(format!("* BYE [UNAVAILABLE] {limit}.\r\n").as_bytes()).await;
        stream.close().await;
        return false;
    }

    let guard = LoginGuard::new(shared.authenticator.clone(), shared.limits.clone());
    let mut options = shared.session_options();
    let preauth_timeout = options.limits.preauth_timeout;
    options.tls_active = implicit_tls;
    options.starttls_available = shared.tls_enabled() && !implicit_tls;
    options.hand_over_on_auth = true;
    options.defer_auth = true;
    let mut session = Session::new(options, guard.clone(), Hooks::new(), Instant::now());
    if stream.write_all(&session.greeting()).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    let mut tls_via_starttls = false;
    // Set once the stop is seen: when the BYE goes out at the latest.
    let mut bye_at: Option<Instant> = None;
    loop {
        let mut out = Vec::new();
        // No blocking work here: password checks are deferred to the
        // bounded verification pool (`Next::Verify`), so a pre-login
        // session is a task, never a parked thread.
        let next = run_session(&mut session, &mut out);
        shared.counters.add_commands(count_tagged_responses(&out));
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                release_counted_user(shared, &guard);
                return false;
            }
            shared.counters.add_bytes_out(out.len() as u64);
        }
        match next {
            Next::Wait(deadline) => {
                if *kicked.borrow() {
                    tracing::info!(session = session_id, %peer, "pre-login session kicked");
                    let _ = stream.write_all(super::session_driver::KICK_BYE).await;
                    stream.close().await;
                    release_counted_user(shared, &guard);
                    return false;
                }
                if *stopping.borrow() {
                    // A command being received may still arrive and be answered.
                    let at = super::shutdown::bye_deadline(&mut bye_at, shared.config.shutdown_grace);
                    if !session.command_in_progress() || Instant::now() >= at {
                        let _ = stream.write_all(SHUTDOWN_BYE).await;
                        stream.close().await;
                        release_counted_user(shared, &guard);
                        return false;
                    }
                }
                let bye_deadline = bye_at.unwrap_or(deadline);
                tokio::select! {
                    biased;
                    // Both only wake the loop; the check above decides.
                    () = super::shutdown::stopped(&mut stopping), if bye_at.is_none() => {}
                    () = super::shutdown::stopped(&mut kicked) => {}
                    () = tokio::time::sleep_until(bye_deadline.into()), if bye_at.is_some() => {}
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => {
                            release_counted_user(shared, &guard);
                            return false;
                        }
                        Ok(n) => {
                            shared.counters.add_bytes_in(n as u64);
                            session.enqueue_input(&buf[..n]);
                        }
                    },
                    () = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            Next::StartTls => {
                let (PreloginStream::Plain(tcp), Some(tls_config)) = (stream, shared.tls_config()) else {
                    tracing::error!(session = session_id, "STARTTLS on a connection that cannot do it");
                    return false;
                };
                match tokio::time::timeout(preauth_timeout, MasterTls::accept(tcp, &tls_config)).await {
                    Ok(Ok(tls)) => {
                        stream = PreloginStream::Tls(Box::new(tls));
                        session.tls_started();
                        row.set_tls();
                        tls_via_starttls = true;
                    }
                    _ => {
                        tracing::info!(session = session_id, %peer, "STARTTLS handshake failed");
                        return false;
                    }
                }
            }
            Next::Verify(request) => {
                let result = verify(shared, &guard, request, peer, session_id).await;
                session.login_verified(result);
            }
            Next::Close => {
                stream.close().await;
                release_counted_user(shared, &guard);
                return false;
            }
            Next::HandOver(_) if *stopping.borrow() => {
                // The login was answered OK; the workers are stopping.
                let _ = stream.write_all(SHUTDOWN_BYE).await;
                stream.close().await;
                release_counted_user(shared, &guard);
                return false;
            }
            Next::HandOver(h) => {
                // The guard counted this user's session; from here the
                // worker pool's session table owns that count.
                let counted = guard.take_counted_user();
                let transport = match &stream {
                    PreloginStream::Plain(_) => Transport::PlainTcp,
                    PreloginStream::Tls(_) => Transport::TlsProxied { implicit: !tls_via_starttls },
                };
                let record = Handover {
                    session_id,
                    peer,
                    local,
                    transport,
                    authenticated_at_ms: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    // Filled in by `hand_over` when the TLS state moves.
                    tls: None,
                    session: *h,
                };
                let handed = hand_over(shared, record, stream, peer).await;
                if !handed {
                    if let Some(user) = counted {
                        shared.limits.close_session(&user);
                    }
                }
                return handed;
            }
        }
    }
}

/// Checks a deferred login on the verification pool, then applies the
/// failed-login delays (per IP and per target account) before the answer.
async fn verify(
    shared: &Arc<MasterShared>,
    guard: &Arc<LoginGuard>,
    request: LoginRequest,
    peer: SocketAddr,
    session_id: u64,
) -> Result<crate::session::AuthenticatedUser, AuthFailure> {
    let user = request.user.clone();
    let checker = Arc::clone(guard);
    let result = shared
        .verify_pool
        .run(move || checker.verify(&request.user, &request.password))
        .await
        .unwrap_or_else(|e| Err(AuthFailure::Temporary(e.to_string())));
    let _ = guard.take_failure();
    match &result {
        // Before the OK reaches the client, so its next attempt already
        // sees the reset delay.
        Ok(authenticated) => {
            MasterCounts::bump(&shared.metrics.logins_ok);
            shared.login_delay.record_success(peer.ip(), &authenticated.name);
        }
        Err(AuthFailure::InvalidCredentials) => {
            MasterCounts::bump(&shared.metrics.logins_failed);
            let delay = shared.login_delay.record_failure(peer.ip(), &user, Instant::now());
            tracing::info!(session = session_id, %peer, delay_ms = delay.as_millis() as u64, "login failed");
            tokio::time::sleep(delay).await;
        }
        Err(_) => {}
    }
    result
}

fn release_counted_user(shared: &MasterShared, guard: &LoginGuard) {
    if let Some(user) = guard.take_counted_user() {
        shared.limits.close_session(&user);
    }
}

/// Passes the connection to a worker; on failure tells the client and closes.
///
/// A TLS 1.3 session moves with its state ([`Transport::Tls`]): the master
/// keeps no descriptor and no TLS state for it. TLS 1.2 stays proxied.
async fn hand_over(
    shared: &Arc<MasterShared>,
    mut record: Handover,
    stream: PreloginStream,
    peer: SocketAddr,
) -> bool {
    let session_id = record.session_id;
    let user = record.session.user.clone();
    if record.session.pending_input.len() > MAX_PENDING_INPUT {
        tracing::warn!(session = session_id, %user, bytes = record.session.pending_input.len(), "too much pipelined input at login");
        let mut stream = stream;
        let _ = stream
            .write_all(b"* BYE [LIMIT] Too much input pipelined after login.\r\n")
            .await;
        stream.close().await;
        return false;
    }
    let (result, counter) = match stream {
        PreloginStream::Plain(tcp) => match tcp.into_std() {
            Ok(std_tcp) => (
                send_tcp(shared, &record, std_tcp, peer, None).await,
                &shared.metrics.handed_over_plain,
            ),
            Err(e) => {
                tracing::error!(session = session_id, error = %e, "cannot detach client socket");
                return false;
            }
        },
        PreloginStream::Tls(tls) => match tls.extract() {
            Extraction::Moved(moved) => {
                let implicit = matches!(record.transport, Transport::TlsProxied { implicit: true });
                record.transport = Transport::Tls { implicit };
                // rustls had decrypted these after what the session kept.
                record
                    .session
                    .pending_input
                    .extend_from_slice(&moved.plaintext);
                let std_tcp = match moved.tcp.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(session = session_id, error = %e, "cannot detach client socket");
                        return false;
                    }
                };
                record.tls = Some(moved.state);
                if record.session.pending_input.len() > MAX_PENDING_INPUT {
                    tracing::warn!(session = session_id, %user, "too much pipelined input at login");
                    refuse_tls(
                        std_tcp,
                        record.tls.take(),
                        b"* BYE [LIMIT] Too much input pipelined after login.\r\n",
                    );
                    return false;
                }
                (
                    send_tcp(shared, &record, std_tcp, peer, record.tls.clone()).await,
                    &shared.metrics.handed_over_tls,
                )
            }
            Extraction::Kept(tls) => (
                proxy_tls(shared, &record, *tls, peer).await,
                &shared.metrics.handed_over_tls_proxied,
            ),
            Extraction::Lost(reason) => {
                MasterCounts::bump(&shared.metrics.handover_failures);
                tracing::error!(session = session_id, %user, %reason, "TLS state extraction failed; session lost");
                return false;
            }
        },
    };
    match result {
        Ok(worker) => {
            MasterCounts::bump(counter);
            // Dovecot's "Login: user=<..>, rip=.., TLS, session=<..>".
            tracing::info!(session = session_id, %user, peer = %peer.ip(), tls = record.transport.is_tls(), worker, "login");
            true
        }
        Err(e) => {
            MasterCounts::bump(&shared.metrics.handover_failures);
            tracing::error!(session = session_id, %user, error = %e, "hand-over failed");
            false
        }
    }
}

const NO_WORKER_BYE: &[u8] = b"* BYE [UNAVAILABLE] No IMAP worker available, try again later.\r\n";

/// Sends the client's TCP socket (plain, or TLS with its state in the
/// record) to a worker; on failure tells the client, through `tls` (the
/// state this process still owns, since no worker took it) if set.
async fn send_tcp(
    shared: &Arc<MasterShared>,
    record: &Handover,
    std_tcp: std::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tls_record::TlsState>,
) -> Result<usize, super::worker_pool::HandOverFailed> {
    let fd = OwnedFd::from(std_tcp);
    let sent = shared.pool.hand_over(record, fd.as_fd(), peer.ip()).await;
    if sent.is_err() {
        refuse_tls(std::net::TcpStream::from(fd), tls, NO_WORKER_BYE);
    }
    sent
}

/// Writes `bye` to a client whose hand-over failed (sealed with its TLS
/// state if it has one) and closes.
fn refuse_tls(mut tcp: std::net::TcpStream, tls: Option<tls_record::TlsState>, bye: &[u8]) {
    let bytes = match tls {
        None => bye.to_vec(),
        Some(state) => match tls_record::RecordLayer::from_state(state) {
            Ok(mut layer) => {
                let mut out = layer.seal(bye).unwrap_or_default();
                out.extend(layer.close_notify().unwrap_or_default());
                out
            }
            Err(_) => Vec::new(),
        },
    };
    let _ = tcp.set_nonblocking(false);
    let _ = tcp.set_write_timeout(Some(std::time::Duration::from_secs(1)));
    let _ = std::io::Write::write_all(&mut tcp, &bytes);
}

/// TLS the master keeps terminating (1.2): a socket pair to the worker and
/// a proxy task in the master.
async fn proxy_tls(
    shared: &Arc<MasterShared>,
    record: &Handover,
    mut tls: MasterTls,
    peer: SocketAddr,
) -> Result<usize, super::worker_pool::HandOverFailed> {
    let session_id = record.session_id;
    let pair = stream_pair().and_then(|(mine, theirs)| {
        let std_mine = std::os::unix::net::UnixStream::from(mine);
        std_mine.set_nonblocking(true)?;
        Ok((tokio::net::UnixStream::from_std(std_mine)?, theirs))
    });
    let (mine, theirs) = match pair {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(session = session_id, error = %e, "cannot create proxy socket pair");
            let _ = tls
                .stream
                .write_all(b"* BYE [UNAVAILABLE] Server error, try again later.\r\n")
                .await;
            let _ = tls.stream.shutdown().await;
            return Err(super::worker_pool::HandOverFailed::Send(
                crate::fd_passing::FdPassingError::Io(e),
            ));
        }
    };
    let sent = shared
        .pool
        .hand_over(record, theirs.as_fd(), peer.ip())
        .await;
    drop(theirs);
    match sent {
        Ok(worker) => {
            let proxy_shared = Arc::clone(shared);
            let active = shared.tls_proxies.enter();
            let stopping = shared.stopping.subscribe();
            let retire = shared.retire_proxies.subscribe();
            tokio::spawn(async move {
                let _active = active;
                let totals = tls_proxy::run(tls.stream, mine, stopping, retire).await;
                if totals.retired {
                    proxy_shared.proxies_retired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                proxy_shared.counters.add_bytes_in(totals.to_worker);
                proxy_shared.counters.add_bytes_out(totals.to_client);
                tracing::debug!(
                    session = session_id,
                    to_worker = totals.to_worker,
                    to_client = totals.to_client,
                    "TLS proxy closed"
                );
            });
            Ok(worker)
        }
        Err(e) => {
            let _ = tls.stream.write_all(NO_WORKER_BYE).await;
            let _ = tls.stream.shutdown().await;
            Err(e)
        }
    }
}
