//! `dormouse hibernate` (hidden): one hibernate process, started by
//! `serve`; plus `dormouse stats`, which asks every running hibernate
//! process over its control socket (`dormouse who` and `kick`: see
//! [`super::who`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hibernate::core::{HandBackReason, Settings, UnselectedStatus};
use hibernate::driver::control::{query, ControlReply, ControlRequest};
use hibernate::driver::DriverConfig;

use imap::server::hibernation::HibernationSettings;
use imap::server::lifeline::{self, Lifeline};
use tokio::sync::watch;

use crate::config::{Config, HibernateProcesses, AUTO_MAX_HIBERNATE_PROCESSES};

/// Arguments of `dormouse hibernate`.
#[derive(Debug, Args)]
pub struct HibernateArgs {
    /// Index of this hibernate process (names its socket `hibernate-<index>.sock` in the run directory).
    #[arg(long, default_value_t = 0)]
    pub index: u32,
    /// Keepalive interval for idling clients, seconds (`* OK Still here`).
    #[arg(long, default_value_t = 120)]
    pub keepalive_secs: u64,
}

/// Arguments of `dormouse stats` (none).
#[derive(Debug, Args)]
pub struct QueryArgs {}

/// The socket of hibernate process `index`.
pub fn socket_path(config: &Config, index: u32) -> PathBuf {
    config.run_dir().join(format!("hibernate-{index}.sock"))
}

/// The workers' hibernation settings (`None` when `hibernate.processes = 0`).
/// In auto mode the workers know every socket slot up to the cap; sockets of
/// processes not started yet simply do not exist and are skipped.
pub fn worker_settings(config: &Config) -> Option<HibernationSettings> {
    let h = &config.hibernate;
    let slots = h.processes.slots();
    (slots > 0).then(|| HibernationSettings {
        timeout: Duration::from_secs(h.timeout_secs),
        idle_after: Duration::from_secs(h.idle_after_secs),
        sockets: (0..slots as u32).map(|i| socket_path(config, i)).collect(),
    })
}

/// Process ids of the hibernate processes that have answered on their
/// control socket, hence installed their SIGHUP handler (SIGHUP's default
/// action would kill a process still starting, and its sessions with it);
/// plus every running process by index, for the next generation of a
/// restart, and whether they were handed off to it.
#[derive(Debug, Clone, Default)]
pub struct ReadyHibernateProcesses(Arc<HibernateTable>);

#[derive(Debug, Default)]
struct HibernateTable {
    ready: std::sync::Mutex<std::collections::HashSet<u32>>,
    running: std::sync::Mutex<std::collections::BTreeMap<u32, u32>>,
    /// Set when a restart handed the processes to the next generation: the
    /// supervisors then leave them running when they stop.
    released: AtomicBool,
}

impl ReadyHibernateProcesses {
    fn pids(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u32>> {
        self.0.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u32, u32>> {
        self.0.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends SIGHUP (re-read `log.level`) to each; returns how many got it.
    pub fn signal_reload(&self) -> usize {
        let pids: Vec<u32> = self.pids().iter().copied().collect();
        pids.into_iter()
            .filter_map(|pid| rustix::process::Pid::from_raw(pid as i32))
            .filter(|pid| rustix::process::kill_process(*pid, rustix::process::Signal::HUP).is_ok())
            .count()
    }

    /// The running processes as (index, pid).
    pub fn processes(&self) -> Vec<(u32, u32)> {
        self.running().iter().map(|(i, p)| (*i, *p)).collect()
    }

    /// From now on, stopping leaves the processes running (they belong to
    /// the next generation of a restart).
    pub fn release(&self) {
        self.0.released.store(true, Ordering::SeqCst);
    }

    fn released(&self) -> bool {
        self.0.released.load(Ordering::SeqCst)
    }
}

/// Starts the hibernate processes and keeps them running: one that dies is
/// restarted, and the loss is logged with the number of sessions it held
/// (the workers keep serving meanwhile; parking fails over to the other
/// processes). A fixed `hibernate.processes = n` starts n; `"auto"` starts
/// one and [`scale`] adds more as they fill up. The returned task ends once
/// `shutdown` is true and every process has stopped (they BYE their
/// sessions first; dropping a supervisor would SIGKILL its process). The
/// set of ready processes is what a configuration reload signals.
///
/// `adopted` (index, pid) are processes a previous generation started (a
/// restart): they are watched instead of started, and restarted like the
/// others when they die.
pub fn spawn_processes(
    config: &Config,
    config_file: &Path,
    lifeline: Arc<Lifeline>,
    shutdown: watch::Receiver<bool>,
    adopted: &[(u32, u32)],
) -> (tokio::task::JoinHandle<()>, ReadyHibernateProcesses) {
    let ready = ReadyHibernateProcesses::default();
    let Ok(program) = std::env::current_exe() else {
        tracing::error!("cannot find the dormouse executable; hibernation disabled");
        return (tokio::spawn(async {}), ready);
    };
    let supervisors = Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
    let starter = ProcessStarter {
        program,
        config: config.clone(),
        config_file: config_file.to_path_buf(),
        lifeline,
        shutdown: shutdown.clone(),
        supervisors: supervisors.clone(),
        ready: ready.clone(),
    };
    let adopted_pid = |index: u32| adopted.iter().find(|(i, _)| *i == index).map(|(_, pid)| *pid);
    let scaler = match config.hibernate.processes {
        HibernateProcesses::Fixed(n) => {
            (0..n as u32).for_each(|index| starter.start(index, adopted_pid(index)));
            // Adopted processes beyond the configured number keep their
            // sessions until they end (a smaller `processes` takes a stop).
            adopted.iter().filter(|(i, _)| *i >= n as u32).for_each(|(i, pid)| starter.start(*i, Some(*pid)));
            None
        }
        HibernateProcesses::Auto => {
            let running = adopted.iter().map(|(i, _)| i + 1).max().unwrap_or(1);
            (0..running).for_each(|index| starter.start(index, adopted_pid(index)));
            Some(tokio::spawn(scale(starter, running, AUTO_MAX_HIBERNATE_PROCESSES as u32)))
        }
    };
    let mut shutdown = shutdown;
    let task = tokio::spawn(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
        if let Some(scaler) = scaler {
            let _ = scaler.await;
        }
        // No process is started after the scaler has ended.
        let mut running = std::mem::take(&mut *supervisors.lock().unwrap_or_else(|e| e.into_inner()));
        while running.join_next().await.is_some() {}
    });
    (task, ready)
}

/// Starts supervised hibernate processes by index.
struct ProcessStarter {
    program: PathBuf,
    config: Config,
    config_file: PathBuf,
    lifeline: Arc<Lifeline>,
    shutdown: watch::Receiver<bool>,
    supervisors: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    ready: ReadyHibernateProcesses,
}

impl ProcessStarter {
    fn start(&self, index: u32, adopted: Option<u32>) {
        let args: Vec<std::ffi::OsString> = vec![
            "--config".into(),
            self.config_file.as_os_str().to_owned(),
            "hibernate".into(),
            "--index".into(),
            index.to_string().into(),
            "--keepalive-secs".into(),
            self.config.hibernate.keepalive_secs.to_string().into(),
        ];
        let socket = socket_path(&self.config, index);
        let command = ChildCommand { program: self.program.clone(), args, lifeline: self.lifeline.clone() };
        let supervisor = supervise(command, index, socket, self.shutdown.clone(), self.ready.clone(), adopted);
        self.supervisors.lock().unwrap_or_else(|e| e.into_inner()).spawn(supervisor);
    }
}

/// Auto mode: every 250 ms asks the running processes for their load and
/// starts the next one when each of them is full (holds its capacity), up
/// to `cap` processes. A process that does not answer (starting, or being
/// restarted) counts as not full, so at most one is added per fill-up.
async fn scale(starter: ProcessStarter, running: u32, cap: u32) {
    let mut running = running;
    let mut shutdown = starter.shutdown.clone();
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    while running < cap {
        tokio::select! {
            _ = poll.tick() => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
        let sockets: Vec<PathBuf> = (0..running).map(|i| socket_path(&starter.config, i)).collect();
        let all_full = tokio::task::spawn_blocking(move || {
            sockets.iter().all(|path| {
                matches!(query(path, ControlRequest::Stats),
                    Ok(ControlReply::Stats { counters, capacity, .. }) if counters.held >= capacity)
            })
        })
        .await
        .unwrap_or(false);
        if all_full {
            tracing::info!(index = running, "every hibernate process is full; starting another");
            starter.start(running, None);
            running += 1;
        }
    }
    tracing::warn!(cap, "hibernate processes at their cap; further idle sessions stay in the workers");
}

/// How to start one hibernate process.
struct ChildCommand {
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    lifeline: Arc<Lifeline>,
}

impl ChildCommand {
    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args).stdin(self.lifeline.child_stdin()?).kill_on_drop(true);
        command.spawn()
    }
}

/// A supervised hibernate process: our child, or one adopted from the
/// previous generation of a restart (not our child: watched by pid).
enum Supervised {
    Child(tokio::process::Child),
    Adopted(u32),
}

impl Supervised {
    fn pid(&self) -> u32 {
        match self {
            Supervised::Child(c) => c.id().unwrap_or(0),
            Supervised::Adopted(pid) => *pid,
        }
    }

    /// Waits for the exit; a description of how it ended.
    async fn wait(&mut self) -> String {
        match self {
            Supervised::Child(c) => format!("{:?}", c.wait().await),
            Supervised::Adopted(pid) => {
                while alive(*pid) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                "exited (adopted process)".into()
            }
        }
    }

    /// SIGTERM, then up to 5 s for the exit.
    async fn stop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.wait()).await;
    }
}

/// True while process `pid` exists and has not exited (a zombie whose new
/// parent does not reap it has exited; Linux shows that in /proc).
fn alive(pid: u32) -> bool {
    let exists = rustix::process::Pid::from_raw(pid as i32).is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

async fn supervise(
    command: ChildCommand,
    index: u32,
    socket: PathBuf,
    mut shutdown: watch::Receiver<bool>,
    ready: ReadyHibernateProcesses,
    mut adopted: Option<u32>,
) {
    loop {
        let mut child = match adopted.take() {
            Some(pid) => {
                tracing::info!(index, pid, "hibernate process adopted from the previous generation");
                Supervised::Adopted(pid)
            }
            None => match command.spawn() {
                Ok(c) => Supervised::Child(c),
                Err(e) => {
                    tracing::error!(index, error = %e, "cannot start a hibernate process");
                    return;
                }
            },
        };
        let pid = child.pid();
        if matches!(child, Supervised::Child(_)) {
            tracing::info!(index, pid, "hibernate process started");
        }
        ready.running().insert(index, pid);
        let mut held = 0u64;
        // The count is as of the last poll (at most 250 ms old).
        let mut poll = tokio::time::interval(Duration::from_millis(250));
        let status = loop {
            tokio::select! {
                status = child.wait() => { ready.pids().remove(&pid); break status }
                _ = poll.tick() => {
                    let path = socket.clone();
                    if let Ok(Ok(ControlReply::Stats { counters, .. })) =
                        tokio::task::spawn_blocking(move || query(&path, ControlRequest::Stats)).await
                    {
                        held = counters.held;
                        ready.pids().insert(pid);
                    }
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        if ready.released() {
                            // The next generation watches it now; dropping
                            // the child would kill it.
                            if let Supervised::Child(c) = child {
                                std::mem::forget(c);
                            }
                        } else {
                            child.stop().await;
                        }
                        ready.pids().remove(&pid);
                        return;
                    }
                }
            }
        };
        ready.running().remove(&index);
        tracing::error!(index, pid, %status, sessions_dropped = held, "hibernate process died; restarting it");
        super::metrics::HIBERNATE_RESTARTS.fetch_add(1, Ordering::Relaxed);
        super::metrics::HIBERNATE_SESSIONS_LOST.fetch_add(held, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs one hibernate process until SIGTERM or SIGINT; on SIGHUP (sent by
/// `serve` on a reload) re-reads `log.level` from `path`.
///
/// # Errors
/// Socket, epoll or bus set-up failures.
pub fn run(config: Config, path: Option<PathBuf>, args: HibernateArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_watcher(stop.clone(), path, config.log.level.clone())?;
    stop_with_the_master(stop.clone())?;
    // Outside changes to the Maildirs of users with hibernated sessions.
    let watch = super::outside_changes::hibernate_watch_hook(&config);
    let cfg = DriverConfig {
        index: args.index,
        socket_path: socket_path(&config, args.index),
        bus: config.bus_resolved(),
        settings: Settings {
            keepalive_interval: Duration::from_secs(args.keepalive_secs.max(1)),
            idle_timeout: Duration::from_secs(config.imap.idle_timeout_secs),
            autologout: Duration::from_secs(config.imap.autologout_secs),
            // The watcher follows only selected mailboxes (outside_changes.rs).
            unselected_status: if watch.is_some() { UnselectedStatus::ReadEachTime } else { UnselectedStatus::Cached },
            ..Settings::default()
        },
        max_sessions: config.hibernate.max_sessions_per_process,
        store_hooks: watch.as_ref().map(|w| w.store_hooks.clone()).unwrap_or_default(),
    };
    hibernate::driver::run_with_hook(cfg, stop, watch.map(|w| w.hook)).context("hibernate process failed")?;
    Ok(())
}

/// Sets `stop` when the master is gone (its lifeline pipe reaches EOF): a
/// master killed with SIGKILL cannot stop its hibernate processes, which
/// would otherwise live on as orphans holding sessions nobody serves.
///
/// # Errors
/// No lifeline was inherited (not started by `serve`), or no thread.
fn stop_with_the_master(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let fd = lifeline::take_from_stdin().context("cannot watch the master")?;
    lifeline::on_parent_exit(fd, move || {
        tracing::warn!("the master process is gone; stopping");
        stop.store(true, Ordering::Relaxed);
    })
    .context("cannot watch the master")?;
    Ok(())
}

/// Sets `stop` on SIGTERM or SIGINT, applies `log.level` from `path` on
/// SIGHUP (a small thread with its own runtime). The handlers are installed
/// before this returns, so before the control socket answers.
fn spawn_signal_watcher(stop: Arc<AtomicBool>, path: Option<PathBuf>, mut level: String) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut term, mut int, mut hup, mut usr2) = rt.block_on(async {
        anyhow::Ok((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
            // The restart signal of `serve`: ignored here (see the worker).
            signal(SignalKind::user_defined2())?,
        ))
    })?;
    std::thread::Builder::new().name("hibernate-signals".into()).spawn(move || {
        rt.block_on(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = usr2.recv() => {}
                    _ = hup.recv() => {
                        let Some(path) = &path else { continue };
                        match Config::load(path) {
                            Ok(new) if new.log.level != level => match super::logging::set_level(&new.log.level) {
                                Ok(()) => level = new.log.level,
                                Err(e) => tracing::warn!(error = %e, "hibernate process: log.level not applied"),
                            },
                            Ok(_) => {}
                            Err(e) => tracing::error!(error = %e, "hibernate process: configuration reload refused"),
                        }
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    })?;
    Ok(())
}

/// Sockets of the hibernate processes in the run directory.
pub(crate) fn sockets(run_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("hibernate-") && n.ends_with(".sock"))
        })
        .collect();
    out.sort();
    out
}

/// `dormouse stats`: counters of every hibernate process.
///
/// # Errors
/// No hibernate process answered.
pub fn stats(config: &Config) -> anyhow::Result<()> {
    let mut answered = 0;
    for path in sockets(&config.run_dir()) {
        let Ok(ControlReply::Stats { pid, index, workers, counters: c, capacity }) = query(&path, ControlRequest::Stats) else {
            continue;
        };
        answered += 1;
        println!("hibernate {index} (pid {pid}, {workers} worker connections)");
        println!("  sessions held          {}", c.held);
        println!("  capacity               {capacity}");
        println!("  hibernations           {}", c.hibernations);
        for r in HandBackReason::ALL {
            println!("  hand-backs {:<12} {}", r.as_str(), c.hand_backs_for(r));
        }
        println!("  sessions ended here    {}", c.ended);
        println!("  events in              {}", c.events_in);
        println!("  notifications written  {}", c.notifications);
        println!("  resyncs                {}", c.resyncs);
        println!("  answered from cache    {}", c.answered);
        println!("  STATUS from cache      {}", c.status_from_cache);
        println!("  keepalives             {}", c.keepalives);
        println!("  inactivity timeouts    {}", c.timeouts);
        println!("  refused (full)         {}", c.refused_full);
    }
    anyhow::ensure!(answered > 0, "no hibernate process is running (no socket in {})", config.run_dir().display());
    Ok(())
}
