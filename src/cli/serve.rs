//! `dormouse serve`: prepare the data directory, start the listeners, run
//! until SIGINT/SIGTERM (reloading the configuration on SIGHUP, see
//! [`super::reload`]), then shut down gracefully.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use imap::auth::{MailLocation, UserDb};
use imap::delivery::Deliverer;
use imap::server::lifeline::Lifeline;
use imap::lmtp::{LmtpLimits, LmtpServer, LmtpSettings};
use storage_hooks::Hooks;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::event_hooks::EventHooks;
use super::first_run;
use super::serve_lock::DataDirLock;
use crate::config::Config;

/// Arguments of `dormouse serve` (everything else comes from the config).
#[derive(Debug, Args)]
pub struct ServeArgs {}

/// The hooks every store opened by this process calls (the bus publisher;
/// see [`EventHooks`]).
pub async fn store_hooks(config: &Config) -> Hooks {
    EventHooks::open_for_server(config).await.hooks
}

/// The host name for LMTP greetings and Received headers.
fn hostname(config: &Config) -> String {
    if !config.lmtp.hostname.is_empty() {
        return config.lmtp.hostname.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Runs the server until a termination signal.
///
/// # Errors
/// Preparation failures, unusable listen addresses, runtime errors.
pub fn run(config: Config, path: Option<PathBuf>, _args: ServeArgs) -> anyhow::Result<()> {
    // Whatever we create without an explicit mode (sockets, directories
    // made by libraries) is private too; children inherit the mask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Before the data directory is touched and before any thread, port or
    // child exists (the ids then hold for all of them).
    #[cfg(target_os = "linux")]
    super::privileges::drop_if_root(&config.server.user, &config.data_dir, &config.run_dir())?;
    #[cfg(not(target_os = "linux"))]
    if !config.server.user.is_empty() {
        anyhow::bail!("server.user is supported on Linux only; start serve as that user instead");
    }
    first_run::create_private_dir(&config.data_dir)?;
    first_run::check_not_shared(&config.data_dir, "data directory")?;
    // Before anything in the data directory is touched, and held until we
    // return: a second server on the same directory refuses to start.
    let lock = DataDirLock::acquire(&config.data_dir)?;
    tracing::debug!(lock = %lock.path().display(), "data directory locked");
    first_run::prepare(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    // `lock` is dropped after `runtime` (reverse declaration order), so it
    // outlives every task and blocking thread.
    runtime.block_on(serve(config, path))
}

async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let location = MailLocation::parse(&config.users.mail_location)?;
    let users = Arc::new(UserDb::open(config.passwd_file(), location)?
            .with_cost_limits(config.auth.cost_limits())
            .with_verified_cache(Duration::from_secs(config.auth.verified_cache_secs), config.auth.verified_cache_users));
    let events = super::event_hooks::EventHooks::open_for_server(&config).await;
    let deliverer = Deliverer::new(users.clone(), events.hooks.clone(), config.lmtp.max_message_size);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();

    let settings = LmtpSettings {
        hostname: hostname(&config),
        limits: LmtpLimits {
            max_message_size: config.lmtp.max_message_size,
            max_recipients: config.lmtp.max_recipients,
            bare_line_endings: config.lmtp.bare_line_endings,
            ..LmtpLimits::default()
        },
        idle_timeout: Duration::from_secs(config.lmtp.timeout_secs),
        domains: config.lmtp.domains.clone(),
        shutdown_grace: Duration::from_secs(10),
    };
    let lmtp = LmtpServer::new(deliverer.clone(), settings);
    if !config.lmtp.listen.is_empty() {
        match TcpListener::bind(&config.lmtp.listen).await {
            Ok(listener) => {
                tracing::info!(address = %config.lmtp.listen, "LMTP listening");
                tasks.push(tokio::spawn(lmtp.clone().serve_tcp(listener, shutdown_rx.clone())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => tracing::warn!(
                address = %config.lmtp.listen,
                "cannot listen for LMTP (permission denied: ports below 1024 need root); \
                 set lmtp.listen to e.g. 127.0.0.1:2424 or use lmtp.unix_socket"
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot listen for LMTP on {}", config.lmtp.listen)),
        }
    }
    let unix_socket = config.lmtp_unix_socket().map(|p| p.to_path_buf());
    if let Some(path) = &unix_socket {
        if std::fs::symlink_metadata(path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())) {
            std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("cannot listen for LMTP on {}", path.display()))?;
        // Like Dovecot's lmtp listener: the MTA (e.g. Postfix as user postfix)
        // must be able to connect; TCP on loopback is no less open.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
        tracing::info!(path = %path.display(), "LMTP listening");
        tasks.push(tokio::spawn(lmtp.clone().serve_unix(listener, shutdown_rx.clone())));
    }

    // IMAP: the master (pre-login, TLS) and its worker processes.
    // Every child process watches this pipe and stops when we are gone.
    let lifeline = Arc::new(Lifeline::new().context("cannot create the pipe children watch for our exit")?);
    let imap = super::serve_imap::start(&config, users.clone(), lifeline, shutdown_rx.clone()).await?;
    tasks.push(imap.task);
    let master_metrics = imap.metrics;
    if !config.metrics.listen.is_empty() {
        let listener = TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| format!("cannot listen for metrics on {}", config.metrics.listen))?;
        tracing::info!(address = %config.metrics.listen, "metrics listening (GET /metrics)");
        let sources = Arc::new(super::metrics::MetricsSources {
            master: master_metrics,
            lmtp: lmtp.clone(),
            bus: events.publisher.clone(),
            run_dir: config.run_dir(),
        });
        tasks.push(tokio::spawn(super::metrics::serve(listener, sources, shutdown_rx.clone())));
    }

    let mut reloader =
        super::reload::Reloader::new(path, config.clone(), imap.reload, imap.worker_config, imap.hibernate);
    // Handlers first: a SIGHUP (systemctl reload) right after READY=1 must
    // not meet SIGHUP's default action, which ends the process.
    let signals = Signals::install()?;
    super::systemd_notify::notify("READY=1");
    signals.wait(&mut reloader).await;
    super::systemd_notify::notify("STOPPING=1");
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "listener task failed");
        }
    }
    if let Some(path) = &unix_socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    Ok(())
}

/// The signals `serve` handles once it is running.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
        })
    }

    /// Waits for SIGTERM or SIGINT, reloading the configuration on every SIGHUP.
    async fn wait(mut self, reloader: &mut super::reload::Reloader) {
        loop {
            tokio::select! {
                _ = self.term.recv() => { tracing::info!("SIGTERM received"); return }
                _ = self.int.recv() => { tracing::info!("SIGINT received"); return }
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    // Reading files and loading the TLS pair block briefly.
                    tokio::task::block_in_place(|| reloader.reload_and_log());
                }
            }
        }
    }
}
