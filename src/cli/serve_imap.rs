//! The IMAP part of `dormouse serve`: builds the master from the
//! configuration, writes the configuration the workers start with, and runs
//! the master until shutdown.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use imap::auth::UserDb;
use imap::server::lifeline::Lifeline;
use imap::server::tls::load_server_config;
use imap::server::metrics::MasterMetrics;
use imap::server::user_db_auth::UserDbAuthenticator;
use imap::server::master::InheritedListener;
use imap::server::{ImapServerConfig, Master, MasterReload, WorkerCommand};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;

/// File in the run directory holding the configuration workers start with
/// (the master's effective configuration, so both always agree).
pub const WORKER_CONFIG_FILE: &str = "imap-worker.toml";

/// The IMAP server settings of `config`.
///
/// # Errors
/// Unparsable listen addresses or other bad `[imap]` values.
pub fn imap_server_config(config: &Config) -> anyhow::Result<ImapServerConfig> {
    let mut server = ImapServerConfig::new(config.imap.clone(), Some((config.tls_cert(), config.tls_key())))?;
    server.verify_threads = config.auth.verify_threads;
    server.shutdown_grace = config.server.shutdown_grace();
    server.admin_socket = Some(config.run_dir().join(imap::server::admin::ADMIN_SOCKET));
    server.hibernate_sockets = super::hibernate::worker_settings(config).map(|h| h.sockets).unwrap_or_default();
    Ok(server)
}

/// The running IMAP part, as [`start`] returns it.
pub struct StartedImap {
    /// Ends after shutdown, when the master, workers and hibernate processes have stopped.
    pub task: JoinHandle<()>,
    /// The master's counts; `None` when IMAP is disabled.
    pub metrics: Option<MasterMetrics>,
    /// Changes the master's settings on reload; `None` when IMAP is disabled.
    pub reload: Option<MasterReload>,
    /// The configuration file the workers read; `None` when IMAP is disabled.
    pub worker_config: Option<PathBuf>,
    /// The hibernate processes a reload signals.
    pub hibernate: super::hibernate::ReadyHibernateProcesses,
    /// Copies of the IMAP listeners, for the next generation of a restart.
    pub listeners: Vec<InheritedListener>,
}

/// What a restarted generation takes over instead of creating.
#[derive(Debug, Default)]
pub struct Adopted {
    /// IMAP listeners of the previous generation.
    pub listeners: Vec<InheritedListener>,
    /// Hibernate processes, as (index, pid).
    pub hibernate: Vec<(u32, u32)>,
    /// This generation's number (0 for a fresh start).
    pub generation: u32,
}

/// Binds the IMAP listeners and starts the master (which spawns the
/// workers) and the hibernate processes. The returned task ends after
/// `shutdown` turns true and all of them have stopped.
///
/// # Errors
/// Bad listen addresses, unreadable TLS files, a port already in use.
pub async fn start(
    config: &Config,
    users: Arc<UserDb>,
    lifeline: Arc<Lifeline>,
    program: PathBuf,
    mut adopted: Adopted,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<StartedImap> {
    let server_config = imap_server_config(config)?;
    if server_config.listen.is_empty() && server_config.listen_tls.is_empty() {
        tracing::info!("IMAP disabled (imap.listen and imap.listen_tls are empty)");
        return Ok(StartedImap {
            task: tokio::spawn(async {}),
            metrics: None,
            reload: None,
            worker_config: None,
            hibernate: Default::default(),
            listeners: Vec::new(),
        });
    }
    // Logged once per start; "on" without kernel TLS stops here.
    imap::server::ktls::check_mode(config.tls.kernel_tls)?;
    let (cert, key) = (config.tls_cert(), config.tls_key());
    let tls = load_server_config(&cert, &key)
        .with_context(|| format!("cannot load the TLS pair {} / {}", cert.display(), key.display()))?;

    let worker_config = config.run_dir().join(WORKER_CONFIG_FILE);
    // It holds the NATS password/token and webhook secrets: 0600 from the
    // first byte (temp file + rename), whatever the umask.
    super::reload::write_worker_config(&worker_config, config)?;
    let (hibernate, hibernate_ready) =
        super::hibernate::spawn_processes(config, &worker_config, lifeline.clone(), shutdown.clone(), &adopted.hibernate);
    let command =
        WorkerCommand { program, args: vec!["--config".into(), worker_config.clone().into_os_string(), "worker".into()] };

    let authenticator = UserDbAuthenticator::new(users);
    let master = Master::bind_with(server_config, authenticator, Some(tls), command, &mut adopted.listeners).await?;
    master.set_first_session_id(imap::server::generation::session_id_base(adopted.generation));
    for addr in master.local_addrs() {
        tracing::info!(%addr, "IMAP listening");
    }
    let listeners = master.listener_fds().context("cannot keep copies of the IMAP listeners")?;
    let metrics = master.metrics();
    let reload = master.reload_handle();
    let master = tokio::spawn(master.run(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    }));
    // Both stop at the same time: the master's TLS proxies carry the
    // hibernate processes' BYEs to hibernated TLS sessions.
    let task = tokio::spawn(async move {
        let _ = master.await;
        let _ = hibernate.await;
    });
    Ok(StartedImap {
        task,
        metrics: Some(metrics),
        reload: Some(reload),
        worker_config: Some(worker_config),
        hibernate: hibernate_ready,
        listeners,
    })
}
