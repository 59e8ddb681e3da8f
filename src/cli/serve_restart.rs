//! Restarting `serve` without closing a connection (`SIGUSR2`, `dormouse
//! restart`): the running generation starts the binary on disk as a new
//! generation and passes it, over a `SOCK_SEQPACKET` pair that is the new
//! one's standard input, everything that outlives a generation: the
//! listening sockets, the data-directory lock, the lifeline pipe and the
//! hibernate processes (which the new one adopts). Protocol:
//! [`imap::server::generation`].
//!
//! The old generation keeps serving until the new one says
//! [`GenerationMessage::Ready`]; without it within
//! [`RESTART_TIMEOUT_ENV`] seconds (default 60) the new process is killed
//! and nothing changed (rollback). After `Ready` the old generation stops
//! accepting, and its sessions move: hibernated ones stay in their
//! hibernate processes (which hand them back to the new workers), live ones
//! are parked there first. The outcome goes to the new generation (which
//! logs it and counts it in `dormouse_restart_sessions_total`) and to
//! `<run_dir>/restart.status` (read by `dormouse restart`).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hibernate::driver::control::{query, ControlReply, ControlRequest};
use imap::fd_passing::{recv_message, seqpacket_pair, send_message, FdChannel, MAX_MESSAGE_LEN};
use imap::server::generation::{GenerationMessage, HibernateProcess, Inherited, RestartOutcome, HANDOFF_ENV};
use imap::server::lifeline::Lifeline;
use imap::server::master::InheritedListener;
use imap::server::MasterReload;

use super::hibernate::ReadyHibernateProcesses;
use super::serve_lock::DataDirLock;

/// Seconds the old generation waits for the new one to be ready
/// (environment of `serve`; default [`DEFAULT_RESTART_TIMEOUT`]).
pub const RESTART_TIMEOUT_ENV: &str = "DORMOUSE_RESTART_TIMEOUT_SECS";

/// Default of [`RESTART_TIMEOUT_ENV`].
pub const DEFAULT_RESTART_TIMEOUT: Duration = Duration::from_secs(60);

/// File in the run directory with the outcome of the last restart.
pub const STATUS_FILE: &str = "restart.status";

/// Sessions moved to this generation by restarts (metrics).
pub static RESTART_MOVED: AtomicU64 = AtomicU64::new(0);
/// Sessions that could not move in restarts (metrics).
pub static RESTART_LOST: AtomicU64 = AtomicU64::new(0);

/// What a new generation received from the old one.
#[derive(Debug)]
pub struct Inheritance {
    /// Our generation number.
    pub generation: u32,
    /// The old generation's pid.
    pub old_pid: u32,
    /// Hibernate processes to adopt, as (index, pid).
    pub hibernate: Vec<(u32, u32)>,
    /// The open lock file (taken by the caller).
    pub lock: Option<File>,
    /// The lifeline pipe (taken by the caller).
    pub lifeline: Option<Lifeline>,
    /// IMAP listeners.
    pub imap: Vec<InheritedListener>,
    /// LMTP TCP listener, by address.
    pub lmtp_tcp: Vec<(std::net::SocketAddr, OwnedFd)>,
    /// LMTP UNIX listener, by path.
    pub lmtp_unix: Vec<(PathBuf, OwnedFd)>,
    /// Metrics listener, by address.
    pub metrics: Vec<(std::net::SocketAddr, OwnedFd)>,
    /// The channel to the old generation.
    pub channel: OwnedFd,
}

/// If we were started as a new generation ([`HANDOFF_ENV`]), receives what
/// the old one passes (blocking; before any runtime exists).
///
/// # Errors
/// The channel broke or a message was malformed or missing.
pub fn receive_inheritance() -> anyhow::Result<Option<Inheritance>> {
    if std::env::var_os(HANDOFF_ENV).is_none() {
        return Ok(None);
    }
    // Our children must not think they are a new generation.
    std::env::remove_var(HANDOFF_ENV);
    let channel = std::io::stdin().as_fd().try_clone_to_owned().context("no hand-off channel on standard input")?;
    // (Standard input stays open; every child `serve` starts gets its own.)
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let next = |buf: &mut [u8]| -> anyhow::Result<(GenerationMessage, Option<OwnedFd>)> {
        let received = recv_message(channel.as_fd(), buf).context("hand-off channel")?;
        Ok((GenerationMessage::decode(&buf[..received.len])?, received.fd))
    };
    let (GenerationMessage::Hello { generation, old_pid, hibernate }, _) = next(&mut buf)? else {
        anyhow::bail!("hand-off: the first message is not Hello");
    };
    let (mut lock, mut read, mut write) = (None, None, None);
    let (mut imap, mut lmtp_tcp, mut lmtp_unix, mut metrics) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    loop {
        match next(&mut buf)? {
            (GenerationMessage::DescriptorsDone, _) => break,
            (GenerationMessage::Descriptor(what), Some(fd)) => match what {
                Inherited::DataDirLock => lock = Some(File::from(fd)),
                Inherited::LifelineRead => read = Some(fd),
                Inherited::LifelineWrite => write = Some(fd),
                Inherited::ImapListener { addr, implicit_tls } => imap.push(InheritedListener { addr, implicit_tls, fd }),
                Inherited::LmtpTcp { addr } => lmtp_tcp.push((addr, fd)),
                Inherited::LmtpUnix { path } => lmtp_unix.push((path, fd)),
                Inherited::Metrics { addr } => metrics.push((addr, fd)),
            },
            (other, _) => anyhow::bail!("hand-off: unexpected message {other:?}"),
        }
    }
    let (Some(lock), Some(read), Some(write)) = (lock, read, write) else {
        anyhow::bail!("hand-off: the lock or the lifeline was not passed");
    };
    Ok(Some(Inheritance {
        generation,
        old_pid,
        hibernate: hibernate.into_iter().map(|h| (h.index, h.pid)).collect(),
        lock: Some(lock),
        lifeline: Some(Lifeline::from_fds(read, write)),
        imap,
        lmtp_tcp,
        lmtp_unix,
        metrics,
        channel,
    }))
}

/// The new generation's side after start: waits until every worker is
/// ready, tells the old generation, then logs the outcome it reports.
pub async fn announce_ready(channel: OwnedFd, master: Option<MasterReload>) -> anyhow::Result<()> {
    let channel = FdChannel::new(channel).context("hand-off channel")?;
    if let Some(master) = master {
        loop {
            let (slots, ready) = master.workers_ready();
            if ready >= slots {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    channel.send(&GenerationMessage::Ready { pid: std::process::id() }.encode(), None).await?;
    tracing::info!("restart: this generation is ready; the previous one hands off");
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        match channel.recv(&mut buf).await.map(|r| GenerationMessage::decode(&buf[..r.len])) {
            Ok(Ok(GenerationMessage::Finished { moved, lost, duration_ms, total_moved, total_lost })) => {
                RESTART_MOVED.store(total_moved, Ordering::Relaxed);
                RESTART_LOST.store(total_lost, Ordering::Relaxed);
                tracing::info!(moved, lost, duration_ms, "restart: {moved} sessions moved, {lost} could not");
            }
            other => tracing::warn!(?other, "restart: the previous generation ended without reporting"),
        }
    });
    Ok(())
}

/// What the old generation passes on, gathered at start.
pub struct Restarter {
    /// The executable to start (resolved at start: a replaced binary at
    /// the same path is what starts).
    pub program: PathBuf,
    /// The configuration file `serve` was started with.
    pub config_path: Option<PathBuf>,
    /// Our generation number.
    pub generation: u32,
    /// The run directory (status file, hibernate sockets).
    pub run_dir: PathBuf,
    /// Copies of every listening socket.
    pub listeners: Vec<(Inherited, OwnedFd)>,
    /// The lifeline.
    pub lifeline: Arc<Lifeline>,
    /// The hibernate processes.
    pub hibernate: ReadyHibernateProcesses,
}

/// A new generation that said it is ready.
#[derive(Debug)]
pub struct HandOff {
    channel: FdChannel,
    new_pid: u32,
    started: Instant,
    started_ms: u64,
    /// Sessions held by hibernate processes when the new generation was ready.
    hibernated: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The restart timeout from [`RESTART_TIMEOUT_ENV`].
pub fn restart_timeout() -> Duration {
    std::env::var(RESTART_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_RESTART_TIMEOUT, Duration::from_secs)
}

impl Restarter {
    /// Starts the new generation and waits for it to be ready. On failure
    /// the new process is killed, nothing changed here, and the failure is
    /// logged and written to the status file.
    ///
    /// # Errors
    /// The new generation did not start, failed, or was not ready in time.
    pub async fn attempt(&self, lock: &DataDirLock) -> anyhow::Result<HandOff> {
        let started = Instant::now();
        let started_ms = now_ms();
        match self.try_attempt(lock, started, started_ms).await {
            Ok(h) => Ok(h),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "restart failed; this generation keeps serving");
                // The new process may have written its pid before it failed.
                if let Err(e) = lock.rewrite_pid() {
                    tracing::warn!(error = %e, "cannot write our pid into the lock file again");
                }
                self.write_status(&RestartOutcome {
                    old_pid: std::process::id(),
                    new_pid: None,
                    started_ms,
                    moved: 0,
                    lost: 0,
                    duration_ms: started.elapsed().as_millis() as u64,
                    error: Some(format!("{e:#}")),
                });
                Err(e)
            }
        }
    }

    async fn try_attempt(&self, lock: &DataDirLock, started: Instant, started_ms: u64) -> anyhow::Result<HandOff> {
        let (ours, theirs) = seqpacket_pair().context("cannot create the hand-off channel")?;
        let mut command = tokio::process::Command::new(&self.program);
        if let Some(path) = &self.config_path {
            command.arg("--config").arg(path);
        }
        // Killed if this attempt is abandoned (SIGTERM meanwhile); kept once ready.
        command.arg("serve").env(HANDOFF_ENV, "1").stdin(std::process::Stdio::from(theirs)).kill_on_drop(true);
        // A binary written a moment ago may still be open for writing
        // somewhere (ETXTBSY): try again briefly.
        let mut tries = 0;
        let mut child = loop {
            match command.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other.with_context(|| format!("cannot start {}", self.program.display()))?,
            }
        };
        let new_pid = child.id().unwrap_or(0);
        tracing::info!(pid = new_pid, program = %self.program.display(), "restart: new generation started");
        let result = async {
            self.send_inheritance(ours.as_fd(), lock)?;
            let channel = FdChannel::new(ours).context("hand-off channel")?;
            let mut buf = vec![0u8; MAX_MESSAGE_LEN];
            let timeout = restart_timeout();
            tokio::select! {
                status = child.wait() => anyhow::bail!("the new generation exited before it was ready ({status:?})"),
                () = tokio::time::sleep(timeout) => anyhow::bail!("the new generation was not ready within {} s", timeout.as_secs()),
                received = channel.recv(&mut buf) => {
                    let received = received.context("the new generation closed the hand-off channel")?;
                    match GenerationMessage::decode(&buf[..received.len])? {
                        GenerationMessage::Ready { .. } => Ok(channel),
                        GenerationMessage::Failed { reason } => anyhow::bail!("the new generation failed: {reason}"),
                        other => anyhow::bail!("unexpected message from the new generation: {other:?}"),
                    }
                }
            }
        }
        .await;
        match result {
            Ok(channel) => {
                // It serves from now on: dropping the handle must not kill it.
                std::mem::forget(child);
                let hibernated = self.hibernated_now().await;
                Ok(HandOff { channel, new_pid, started, started_ms, hibernated })
            }
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(e)
            }
        }
    }

    fn send_inheritance(&self, channel: std::os::fd::BorrowedFd<'_>, lock: &DataDirLock) -> anyhow::Result<()> {
        let hibernate =
            self.hibernate.processes().into_iter().map(|(index, pid)| HibernateProcess { index, pid }).collect();
        let hello = GenerationMessage::Hello { generation: self.generation + 1, old_pid: std::process::id(), hibernate };
        send_message(channel, &hello.encode(), None)?;
        let (read, write) = self.lifeline.fds();
        let fixed = [(Inherited::DataDirLock, lock.file().as_fd()), (Inherited::LifelineRead, read), (Inherited::LifelineWrite, write)];
        for (what, fd) in fixed.into_iter().chain(self.listeners.iter().map(|(w, fd)| (w.clone(), fd.as_fd()))) {
            send_message(channel, &GenerationMessage::Descriptor(what).encode(), Some(fd))?;
        }
        send_message(channel, &GenerationMessage::DescriptorsDone.encode(), None)?;
        Ok(())
    }

    /// Sessions held by the hibernate processes now.
    async fn hibernated_now(&self) -> u64 {
        let sockets = super::hibernate::sockets(&self.run_dir);
        tokio::task::spawn_blocking(move || {
            sockets
                .iter()
                .filter_map(|p| match query(p, ControlRequest::Stats) {
                    Ok(ControlReply::Stats { counters, .. }) => Some(counters.held),
                    _ => None,
                })
                .sum()
        })
        .await
        .unwrap_or(0)
    }

    /// Writes the outcome for `dormouse restart` (best effort).
    fn write_status(&self, outcome: &RestartOutcome) {
        let path = self.run_dir.join(STATUS_FILE);
        let tmp = self.run_dir.join(format!("{STATUS_FILE}.tmp"));
        if let Err(e) = std::fs::write(&tmp, outcome.encode()).and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the restart status");
        }
    }

    /// After this generation stopped: reports the outcome to the new
    /// generation, the status file and the log. `lost` are the sessions
    /// that could not move; `hibernated_lost` of them were hibernated when
    /// the new generation was ready (TLS 1.2 relayed by this master).
    pub async fn finish(&self, handoff: HandOff, moved_live: u64, lost: u64, hibernated_lost: u64) {
        let moved = (handoff.hibernated + moved_live).saturating_sub(hibernated_lost);
        let duration_ms = handoff.started.elapsed().as_millis() as u64;
        tracing::info!(moved, lost, duration_ms, new_pid = handoff.new_pid, "restart: {moved} sessions moved, {lost} could not");
        let finished = GenerationMessage::Finished {
            moved,
            lost,
            duration_ms,
            total_moved: RESTART_MOVED.load(Ordering::Relaxed) + moved,
            total_lost: RESTART_LOST.load(Ordering::Relaxed) + lost,
        };
        if let Err(e) = handoff.channel.send(&finished.encode(), None).await {
            tracing::warn!(error = %e, "restart: cannot report to the new generation");
        }
        self.write_status(&RestartOutcome {
            old_pid: std::process::id(),
            new_pid: Some(handoff.new_pid),
            started_ms: handoff.started_ms,
            moved,
            lost,
            duration_ms,
            error: None,
        });
        // systemd follows the new process from here on.
        super::systemd_notify::notify(&format!("MAINPID={}", handoff.new_pid));
    }
}
