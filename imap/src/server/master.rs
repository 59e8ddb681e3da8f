//! The master process: listeners, pre-login, worker supervision.
//!
//! The master binds the plain and implicit-TLS listeners, runs each new
//! connection's pre-login stage (module `prelogin`) and hands
//! authenticated sessions to worker processes it spawns and restarts. Each
//! worker is connected by a `SOCK_SEQPACKET` pair whose worker end is the
//! child's standard input; hand-overs go down that channel (record + fd),
//! [`WorkerReport`]s come back. When a worker dies the master logs how many
//! sessions were lost, releases their limit counts and starts a new worker.
//! A session parked in a hibernate process keeps its counts until that
//! process reports its end or dies (module `hibernate_watch`). The
//! control socket (module `admin_socket`, protocol [`super::admin`]) answers `dormouse who` and
//! `dormouse kick`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::process::Command;

use crate::fd_passing::{seqpacket_pair, FdChannel, FdPassingError};
use crate::session::{Authenticator, SessionOptions};

use super::config::{ImapServerConfig, ImapSettings};
use super::counters::{Counters, MasterCounts};
use super::limits::{ConnectionLimits, LoginDelay};
use super::shutdown::ActiveCount;
use super::worker_pool::{WorkerLink, WorkerPool};
use super::worker_report::WorkerReport;
use super::{prelogin, session_options};

/// How long a stopping master waits for a worker to exit by itself, on top
/// of the shutdown grace its sessions get.
const WORKER_STOP_MARGIN: Duration = Duration::from_secs(2);

/// How long a stopping master keeps TLS proxies running after its workers
/// are gone (hibernate processes stop at the same time and send their BYEs
/// to TLS sessions through these proxies).
const PROXY_STOP_MARGIN: Duration = Duration::from_secs(2);

/// Environment variable telling a worker its slot number.
pub const WORKER_INDEX_ENV: &str = "DORMOUSE_WORKER_INDEX";

/// How to start a worker process (the master adds the channel as stdin
/// and [`WORKER_INDEX_ENV`]).
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The executable (normally `std::env::current_exe()`).
    pub program: PathBuf,
    /// Its arguments, e.g. `["--config", PATH, "worker"]`.
    pub args: Vec<OsString>,
}

/// Errors starting the master.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Implicit-TLS listeners are configured but no TLS configuration was given.
    #[error("listen_tls is set but no TLS certificate is configured")]
    NoTls,
    /// No listener at all.
    #[error("no IMAP listener configured")]
    NoListener,
}

/// State shared by the master's tasks.
pub(crate) struct MasterShared {
    pub(crate) config: ImapServerConfig,
    /// Read per connection: a configuration reload replaces it.
    session_options: RwLock<SessionOptions>,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    /// Read per connection: a reload (certificate renewal) replaces it;
    /// connections already established keep the pair they negotiated.
    tls: RwLock<Option<Arc<rustls::ServerConfig>>>,
    pub(crate) limits: Arc<ConnectionLimits>,
    pub(crate) login_delay: LoginDelay,
    pub(crate) verify_pool: super::verify_pool::VerifyPool,
    pub(crate) pool: WorkerPool,
    pub(crate) counters: Counters,
    pub(crate) metrics: MasterCounts,
    session_ids: AtomicU64,
    /// Turns true when the master shuts down: supervisors stop their workers
    /// instead of restarting them, pre-login sessions say BYE.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Turns true when a restart hands off to the next generation: the
    /// listeners stop accepting (the next generation accepts on copies).
    handing_off: tokio::sync::watch::Sender<bool>,
    /// Turns true when a restart has moved what it could: the TLS proxies
    /// left (sessions relayed by this master cannot move) say BYE and close.
    pub(crate) retire_proxies: tokio::sync::watch::Sender<bool>,
    /// TLS proxies closed that way.
    pub(crate) proxies_retired: AtomicU64,
    /// Pre-login sessions in progress.
    pub(crate) prelogin_sessions: ActiveCount,
    /// TLS proxies of sessions living in workers or hibernate processes.
    pub(crate) tls_proxies: ActiveCount,
    /// Workers that reported ready, by pid: only they have their SIGHUP
    /// handler installed (the default action of SIGHUP kills).
    ready_workers: std::sync::Mutex<std::collections::HashSet<u32>>,
    /// Pre-login sessions, for `dormouse who` / `kick`.
    pub(crate) prelogin_table: super::admin_socket::PreloginTable,
    /// Workers' answers to `who` / `kick` questions.
    pub(crate) worker_replies: super::admin_socket::WorkerReplies,
}

impl MasterShared {
    pub(crate) fn next_session_id(&self) -> u64 {
        self.session_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The session options new connections start with.
    pub(crate) fn session_options(&self) -> SessionOptions {
        self.session_options.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The TLS configuration for a new handshake (`None`: TLS is off).
    pub(crate) fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True if STARTTLS / implicit TLS is possible.
    pub(crate) fn tls_enabled(&self) -> bool {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

/// Changes a running master's settings (configuration reload): cloneable,
/// obtained from [`Master::reload_handle`] before [`Master::run`].
#[derive(Clone)]
pub struct MasterReload {
    shared: Arc<MasterShared>,
}

impl std::fmt::Debug for MasterReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterReload").finish_non_exhaustive()
    }
}

impl MasterReload {
    /// Applies what the master can change while running: connection and
    /// session limits, the failed-login delay, and the session options of
    /// new connections (timeouts, line and literal limits, plaintext auth,
    /// auto-created mailboxes). Listeners, worker count and the TLS file
    /// paths are not touched (they need a restart).
    pub fn apply_settings(&self, settings: &ImapSettings) {
        let shared = &self.shared;
        shared.limits.set_maxima(settings.max_connections_per_ip, settings.max_sessions_per_user);
        shared.login_delay.set_bounds(
            Duration::from_millis(settings.login_failure_delay_ms),
            Duration::from_millis(settings.login_failure_delay_max_ms),
        );
        let config = ImapServerConfig { settings: settings.clone(), ..shared.config.clone() };
        *shared.session_options.write().unwrap_or_else(|e| e.into_inner()) = session_options(&config);
    }

    /// Replaces the TLS configuration new handshakes use (e.g. a renewed
    /// certificate). Sessions already encrypted keep theirs. Does nothing
    /// when the master runs without TLS (enabling TLS needs a restart).
    /// Returns whether it was replaced.
    pub fn replace_tls(&self, tls: Arc<rustls::ServerConfig>) -> bool {
        let mut current = self.shared.tls.write().unwrap_or_else(|e| e.into_inner());
        if current.is_none() {
            return false;
        }
        *current = Some(tls);
        true
    }

    /// Sessions that would not survive this master now: pre-login ones and
    /// ones live in workers.
    pub fn live_sessions(&self) -> u64 {
        (self.shared.prelogin_sessions.get() + self.shared.pool.session_counts().0) as u64
    }

    /// A restart hands off: stops accepting, then has every worker park its
    /// sessions in the hibernate processes (a command in progress finishes
    /// first, within the shutdown grace), then closes the TLS proxies left
    /// (hibernated TLS 1.2 sessions, which cannot outlive this master) with
    /// a BYE. Returns the sessions parked, the ones that could not move
    /// (closed with `* BYE`), and how many of the latter were hibernated.
    pub async fn hand_off(&self) -> (u64, u64, u64) {
        let shared = &self.shared;
        shared.handing_off.send_replace(true);
        let wait = shared.config.shutdown_grace + WORKER_STOP_MARGIN * 2;
        let (answers, silent) = super::admin_socket::ask_workers_within(
            shared,
            |request| super::worker_report::WorkerRequest::Detach { request },
            wait,
        )
        .await;
        let (mut parked, mut lost) = (0, 0);
        for (pid, report) in answers {
            if let WorkerReport::Detached { parked: p, lost: l, .. } = report {
                tracing::info!(pid, parked = p, lost = l, "restart: worker detached");
                parked += p;
                lost += l;
            }
        }
        if silent > 0 {
            tracing::warn!(silent, "restart: workers did not detach in time; their sessions are closed");
        }
        // Live TLS 1.2 sessions had their BYE from their worker; what is
        // still relayed is hibernated.
        shared.retire_proxies.send_replace(true);
        let _ = shared.tls_proxies.wait_zero(PROXY_STOP_MARGIN).await;
        let proxied = shared.proxies_retired.load(Ordering::Relaxed);
        if proxied > 0 {
            tracing::info!(sessions = proxied, "restart: hibernated TLS 1.2 sessions relayed by this master closed with BYE");
        }
        (parked, lost + proxied, proxied)
    }

    /// Worker slots, and how many of them run a worker that reported ready.
    pub fn workers_ready(&self) -> (usize, usize) {
        let ready = self.shared.ready_workers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let running = self.shared.pool.pids().into_iter().filter(|pid| ready.contains(pid)).count();
        (self.shared.pool.len(), running)
    }

    /// Sends SIGHUP to the live workers that reported ready, which re-read
    /// their configuration file. Returns how many were signalled.
    pub fn signal_workers(&self) -> usize {
        let ready = self.shared.ready_workers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut sent = 0;
        for pid in self.shared.pool.pids().into_iter().filter(|pid| ready.contains(pid)) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                if rustix::process::kill_process(pid, rustix::process::Signal::HUP).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    }
}

/// A bound, not yet running master.
pub struct Master {
    shared: Arc<MasterShared>,
    plain: Vec<TcpListener>,
    implicit_tls: Vec<TcpListener>,
    worker_command: WorkerCommand,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master").field("addrs", &self.local_addrs()).finish_non_exhaustive()
    }
}

impl Master {
    /// Binds the configured listeners. `tls` is required when implicit-TLS
    /// listeners are configured; it also enables STARTTLS on plain ones.
    ///
    /// # Errors
    /// [`MasterError`].
    pub async fn bind(
        config: ImapServerConfig,
        authenticator: Arc<dyn Authenticator>,
        tls: Option<Arc<rustls::ServerConfig>>,
        worker_command: WorkerCommand,
    ) -> Result<Self, MasterError> {
        Self::bind_with(config, authenticator, tls, worker_command, &mut Vec::new()).await
    }

    /// Like [`Master::bind`], but a configured address found in `inherited`
    /// (address, implicit TLS, listening socket: passed on by the previous
    /// generation in a restart) is taken from there instead of bound; the
    /// ones used are removed from `inherited`.
    ///
    /// # Errors
    /// [`MasterError`].
    pub async fn bind_with(
        config: ImapServerConfig,
        authenticator: Arc<dyn Authenticator>,
        tls: Option<Arc<rustls::ServerConfig>>,
        worker_command: WorkerCommand,
        inherited: &mut Vec<InheritedListener>,
    ) -> Result<Self, MasterError> {
        if !config.listen_tls.is_empty() && tls.is_none() {
            return Err(MasterError::NoTls);
        }
        if config.listen.is_empty() && config.listen_tls.is_empty() {
            return Err(MasterError::NoListener);
        }
        let mut plain = Vec::new();
        for addr in &config.listen {
            plain.push(listener(*addr, false, inherited).await?);
        }
        let mut implicit_tls = Vec::new();
        for addr in &config.listen_tls {
            implicit_tls.push(listener(*addr, true, inherited).await?);
        }
        let shared = Arc::new(MasterShared {
            session_options: RwLock::new(session_options(&config)),
            authenticator,
            tls: RwLock::new(tls),
            limits: Arc::new(ConnectionLimits::new(config.settings.max_connections_per_ip, config.settings.max_sessions_per_user)),
            login_delay: LoginDelay::new(
                Duration::from_millis(config.settings.login_failure_delay_ms),
                Duration::from_millis(config.settings.login_failure_delay_max_ms),
            ),
            verify_pool: super::verify_pool::VerifyPool::new(config.verify_threads),
            pool: WorkerPool::new(config.settings.workers),
            counters: Counters::new(),
            metrics: MasterCounts::default(),
            session_ids: AtomicU64::new(1),
            stopping: tokio::sync::watch::channel(false).0,
            handing_off: tokio::sync::watch::channel(false).0,
            retire_proxies: tokio::sync::watch::channel(false).0,
            proxies_retired: AtomicU64::new(0),
            prelogin_sessions: ActiveCount::default(),
            tls_proxies: ActiveCount::default(),
            ready_workers: std::sync::Mutex::default(),
            prelogin_table: Default::default(),
            worker_replies: Default::default(),
            config,
        });
        Ok(Self { shared, plain, implicit_tls, worker_command })
    }

    /// Copies of the listening sockets (address, implicit TLS, descriptor),
    /// for the next generation in a restart.
    ///
    /// # Errors
    /// A descriptor cannot be duplicated.
    pub fn listener_fds(&self) -> io::Result<Vec<InheritedListener>> {
        let mut out = Vec::new();
        for (l, tls) in self.plain.iter().map(|l| (l, false)).chain(self.implicit_tls.iter().map(|l| (l, true))) {
            out.push(InheritedListener { addr: l.local_addr()?, implicit_tls: tls, fd: l.as_fd().try_clone_to_owned()? });
        }
        Ok(out)
    }

    /// Session ids of this master start at `first` (a restarted generation
    /// must not reuse the ids of sessions that moved to it).
    pub fn set_first_session_id(&self, first: u64) {
        self.shared.session_ids.store(first.max(1), Ordering::Relaxed);
    }

    /// A reader of the master's counts (for a metrics endpoint).
    pub fn metrics(&self) -> super::metrics::MasterMetrics {
        super::metrics::MasterMetrics::new(self.shared.clone())
    }

    /// A handle changing this master's settings while it runs.
    pub fn reload_handle(&self) -> MasterReload {
        MasterReload { shared: self.shared.clone() }
    }

    /// The bound addresses: plain listeners first, then implicit-TLS ones.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.plain.iter().chain(&self.implicit_tls).filter_map(|l| l.local_addr().ok()).collect()
    }

    /// Runs until `shutdown` completes; then stops accepting, and every
    /// session (pre-login here, live in the workers) finishes its command
    /// and gets `* BYE`, within the shutdown grace (see
    /// [`super::shutdown`]). Logs counters on SIGUSR1 (and forwards the
    /// signal to the workers), periodically, and at shutdown.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let shared = self.shared;
        let mut supervisors = tokio::task::JoinSet::new();
        for index in 0..shared.pool.len() {
            supervisors.spawn(supervise_worker(shared.clone(), index, self.worker_command.clone()));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for listener in self.plain {
            tasks.spawn(accept_loop(shared.clone(), listener, false));
        }
        for listener in self.implicit_tls {
            tasks.spawn(accept_loop(shared.clone(), listener, true));
        }
        tasks.spawn(counters_loop(shared.clone()));
        if let Some(path) = shared.config.admin_socket.clone() {
            tasks.spawn(super::admin_socket::serve(shared.clone(), path));
        }
        // Until the workers are gone: hibernated sessions end meanwhile.
        let mut watchers = tokio::task::JoinSet::new();
        for (index, path) in shared.config.hibernate_sockets.iter().enumerate() {
            watchers.spawn(super::hibernate_watch::watch(shared.clone(), index as u32, path.clone()));
        }
        tracing::info!(workers = shared.pool.len(), "IMAP master running");
        shutdown.await;
        // The listeners close: new connections are refused from here on.
        tasks.shutdown().await;
        shared.counters.log("master", "shutdown");
        let (in_workers, hibernated) = shared.pool.session_counts();
        tracing::info!(
            sessions_in_workers = in_workers,
            hibernated,
            prelogin = shared.prelogin_sessions.get(),
            "IMAP master stopping"
        );
        // Pre-login sessions say BYE; supervisors close the workers'
        // channels (workers BYE their sessions, log their counters and
        // exit), wait, then kill what is left.
        shared.stopping.send_replace(true);
        let grace = shared.config.shutdown_grace;
        let prelogin_left = shared.prelogin_sessions.wait_zero(grace).await;
        while supervisors.join_next().await.is_some() {}
        // The workers are gone; proxied TLS sessions have had their BYE
        // (hibernated ones get it from the hibernate processes, stopping now).
        let proxies_left = shared.tls_proxies.wait_zero(PROXY_STOP_MARGIN).await;
        watchers.shutdown().await;
        tracing::info!(prelogin_left, proxies_left, "IMAP master stopped");
    }
}

/// A listening socket passed on by the previous generation.
#[derive(Debug)]
pub struct InheritedListener {
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// True for an implicit-TLS listener.
    pub implicit_tls: bool,
    /// The socket.
    pub fd: OwnedFd,
}

/// The listener for `addr`: the inherited one if there is one, else a new one.
async fn listener(addr: SocketAddr, implicit_tls: bool, inherited: &mut Vec<InheritedListener>) -> Result<TcpListener, MasterError> {
    if let Some(i) = inherited.iter().position(|l| l.addr == addr && l.implicit_tls == implicit_tls) {
        let l = inherited.swap_remove(i);
        let std = std::net::TcpListener::from(l.fd);
        return std
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(std))
            .map_err(|source| MasterError::Bind { addr, source });
    }
    TcpListener::bind(addr).await.map_err(|source| MasterError::Bind { addr, source })
}

async fn accept_loop(shared: Arc<MasterShared>, listener: TcpListener, implicit_tls: bool) {
    let local = listener.local_addr().ok();
    match local {
        Some(addr) => tracing::info!(%addr, tls = implicit_tls, "IMAP listener ready"),
        None => tracing::info!(tls = implicit_tls, "IMAP listener ready"),
    }
    let mut handing_off = shared.handing_off.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = super::shutdown::stopped(&mut handing_off) => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let local = tcp.local_addr().unwrap_or_else(|_| local.unwrap_or(peer));
                tokio::spawn(prelogin::serve(shared.clone(), tcp, peer, local, implicit_tls));
            }
            Err(e) => {
                // EMFILE and friends: log and back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn counters_loop(shared: Arc<MasterShared>) {
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    let interval_secs = shared.config.settings.counters_interval_secs;
    let mut tick =
        tokio::time::interval(Duration::from_secs(if interval_secs == 0 { 365 * 24 * 3600 } else { interval_secs }));
    tick.tick().await;
    loop {
        let why = tokio::select! {
            _ = tick.tick(), if interval_secs > 0 => "periodic",
            Some(()) = async { match usr1.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                for pid in shared.pool.pids() {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::USR1);
                    }
                }
                "SIGUSR1"
            }
        };
        shared.counters.log("master", why);
        let (in_workers, hibernated) = shared.pool.session_counts();
        tracing::info!(sessions_in_workers = in_workers, hibernated, "master sessions");
    }
}

/// Keeps worker slot `index` running: spawn, serve its reports, restart on exit.
async fn supervise_worker(shared: Arc<MasterShared>, index: usize, command: WorkerCommand) {
    loop {
        if *shared.stopping.borrow() {
            return;
        }
        let started = Instant::now();
        match run_worker_once(&shared, index, &command).await {
            Ok(status) if *shared.stopping.borrow() => {
                let open = shared.pool.worker_gone(index).len();
                tracing::info!(worker = index, %status, sessions_closed = open, "IMAP worker stopped");
                return;
            }
            Ok(status) => {
                let lost = shared.pool.worker_gone(index);
                MasterCounts::bump(&shared.metrics.worker_restarts);
                MasterCounts::add(&shared.metrics.worker_sessions_lost, lost.len() as u64);
                for entry in &lost {
                    shared.limits.close_session(&entry.user);
                    shared.limits.close_connection(entry.ip);
                }
                tracing::error!(worker = index, %status, lost_sessions = lost.len(), "IMAP worker exited; restarting it");
            }
            Err(e) => tracing::error!(worker = index, error = %e, "cannot start IMAP worker"),
        }
        // Do not spin if the worker dies at once (bad binary, bad config).
        if started.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn run_worker_once(
    shared: &Arc<MasterShared>,
    index: usize,
    command: &WorkerCommand,
) -> io::Result<std::process::ExitStatus> {
    let (master_end, worker_end) = seqpacket_pair()?;
    // The channel is also the worker's lifeline: only we hold its other
    // end, so the worker sees it close when we exit, however we die.
    let mut child = Command::new(&command.program)
        .args(&command.args)
        .env(WORKER_INDEX_ENV, index.to_string())
        .stdin(Stdio::from(worker_end))
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let link = Arc::new(WorkerLink { index, pid, channel: FdChannel::new(master_end)? });
    shared.pool.set(index, Some(link.clone()));
    tracing::info!(worker = index, pid, "IMAP worker started");
    // Room for the largest report (a `who` listing), not just the small ones.
    let mut buf = vec![0u8; crate::fd_passing::MAX_MESSAGE_LEN];
    let mut stopping = shared.stopping.subscribe();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                // Closing the channel tells the worker to log and exit.
                shared.pool.set(index, None);
                drop(link);
                match tokio::time::timeout(shared.config.shutdown_grace + WORKER_STOP_MARGIN, child.wait()).await {
                    Ok(status) => break status,
                    Err(_) => {
                        tracing::warn!(worker = index, pid, "IMAP worker did not exit; killing it");
                        let _ = child.start_kill();
                        break child.wait().await;
                    }
                }
            }
            received = link.channel.recv(&mut buf) => match received {
                Ok(r) => handle_report(shared, index, &buf[..r.len]),
                Err(FdPassingError::Closed) => {
                    // The worker closed its channel: it is exiting.
                    shared.pool.set(index, None);
                    break child.wait().await;
                }
                Err(e @ (FdPassingError::Truncated | FdPassingError::TooManyFds(_))) => {
                    // One bad message; the channel and the worker's sessions are fine.
                    tracing::error!(worker = index, error = %e, "bad message from worker; ignored");
                }
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "worker channel failed; killing the worker");
                    let _ = child.start_kill();
                    shared.pool.set(index, None);
                    break child.wait().await;
                }
            },
        }
    };
    shared.pool.set(index, None);
    shared.ready_workers.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
    status
}

fn handle_report(shared: &MasterShared, index: usize, bytes: &[u8]) {
    match WorkerReport::decode(bytes) {
        Ok(WorkerReport::Ready { pid }) => {
            shared.ready_workers.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
            tracing::debug!(worker = index, pid, "worker ready");
        }
        Ok(WorkerReport::SessionEnded { session_id }) => release(shared, session_id),
        Ok(WorkerReport::SessionParked { session_id, process }) => shared.pool.session_parked(session_id, index, process),
        Ok(WorkerReport::SessionResumed { session_id }) => shared.pool.session_resumed(session_id, index),
        Ok(
            report @ (WorkerReport::Sessions { request, .. }
            | WorkerReport::Kicked { request, .. }
            | WorkerReport::Detached { request, .. }),
        ) => {
            shared.worker_replies.deliver(request, report);
        }
        Ok(WorkerReport::HandoverRejected { session_id, reason }) => {
            tracing::error!(worker = index, ?session_id, %reason, "worker rejected a hand-over");
            if let Some(id) = session_id {
                release(shared, id);
            }
        }
        Err(e) => tracing::error!(worker = index, error = %e, "bad report from worker"),
    }
}

/// Forgets a session that ended and releases its limit counts (once: a
/// second report for the same session finds nothing).
pub(crate) fn release(shared: &MasterShared, session_id: u64) {
    if let Some(entry) = shared.pool.session_ended(session_id) {
        shared.limits.close_session(&entry.user);
        shared.limits.close_connection(entry.ip);
    }
}
