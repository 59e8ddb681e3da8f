//! `dormouse worker` (hidden): an IMAP worker process. Started by the
//! `serve` master with its channel on standard input; not for humans.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bus::{BusMessage, BusSubscriber};
use clap::Args;
use imap::auth::{MailLocation, UserDb};
use imap::server::user_db_auth::UserDbAuthenticator;
use imap::server::wakeup::{UserSubscriptionListener, WakeupRegistry};
use imap::server::worker::channel_from_stdin;
use imap::server::{WorkerDeps, WORKER_INDEX_ENV};
use imap::server::ImapSettings;
use tokio::sync::{mpsc, watch};

use super::serve::store_hooks;
use super::serve_imap::imap_server_config;
use crate::config::Config;

/// Arguments of `dormouse worker` (none: the master passes the channel on
/// stdin, the slot in `DORMOUSE_WORKER_INDEX`, the config with `--config`).
#[derive(Debug, Args)]
pub struct WorkerArgs {}

/// Runs the worker until the master goes away or SIGTERM.
///
/// # Errors
/// A missing channel, an unreadable passwd file, runtime start-up failures.
pub fn run(config: Config, path: Option<PathBuf>, _args: WorkerArgs) -> anyhow::Result<()> {
    let index: usize = std::env::var(WORKER_INDEX_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let channel = channel_from_stdin().context("the worker channel (stdin) is not open; `worker` is started by `serve`")?;
    // Session steps run on blocking threads only through the worker's
    // storage slots; the margin is for tokio's own blocking work. Threads
    // beyond that are memory the worker would keep after a burst.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(imap::server::storage_slots::per_core_slots() + 16)
        .build()
        .context("cannot start tokio")?;
    runtime.block_on(async move {
        // Before the worker reports ready: the master sends SIGHUP only to
        // ready workers, and SIGHUP's default action would kill us.
        let settings_updates = follow_reloads(path, config.clone())?;
        let location = MailLocation::parse(&config.users.mail_location)?;
        let users = Arc::new(UserDb::open(config.passwd_file(), location)?);
        let wakeups = WakeupRegistry::new();
        let bus_listener = start_bus_subscriber(&config, wakeups.clone()).await;
        let hooks = store_hooks(&config).await;
        // Outside changes to the Maildirs of users with sessions here.
        let watcher = super::outside_changes::start_watcher(&config);
        match &watcher {
            Some(w) => wakeups.set_listener(Arc::new(super::outside_changes::WatchingListener::new(
                w.clone(),
                users.clone(),
                hooks.clone(),
                bus_listener,
            ))),
            None => {
                if let Some(l) = bus_listener {
                    wakeups.set_listener(l);
                }
            }
        }
        let deps = WorkerDeps {
            authenticator: UserDbAuthenticator::new(users),
            hooks,
            wakeups,
            hibernation: super::hibernate::worker_settings(&config),
            settings_updates: Some(settings_updates),
        };
        let server_config = imap_server_config(&config)?;
        imap::server::worker::run(server_config, index, channel, deps, terminate_signal()).await?;
        Ok(())
    })
}

/// On SIGHUP (forwarded by the master after it rewrote our config file)
/// re-reads the file: applies `log.level` here and hands the `[imap]`
/// settings to the worker through the returned channel. A file that does not
/// load is logged and changes nothing.
fn follow_reloads(path: Option<PathBuf>, config: Config) -> anyhow::Result<watch::Receiver<ImapSettings>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let (tx, rx) = watch::channel(config.imap.clone());
    tokio::spawn(async move {
        let mut level = config.log.level;
        while hup.recv().await.is_some() {
            let Some(path) = &path else { continue };
            let new = match Config::load(path) {
                Ok(new) => new,
                Err(e) => {
                    tracing::error!(error = %e, "IMAP worker: configuration reload refused");
                    continue;
                }
            };
            if new.log.level != level {
                match super::logging::set_level(&new.log.level) {
                    Ok(()) => level = new.log.level.clone(),
                    Err(e) => tracing::warn!(error = %e, "IMAP worker: log.level not applied"),
                }
            }
            tx.send_replace(new.imap);
        }
    });
    Ok(rx)
}

/// Waits for SIGTERM. SIGINT (a terminal's Ctrl-C reaching the whole process
/// group) is ignored: the master shuts its workers down itself. So is
/// SIGUSR2 (the restart signal of `serve`, which `systemctl kill -s USR2`
/// sends to every process of the unit unless told `--kill-whom=main`).
async fn terminate_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut usr2 = signal(SignalKind::user_defined2()).ok();
    let Ok(mut term) = signal(SignalKind::terminate()) else { return std::future::pending().await };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            Some(()) = async { match int.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {}
            Some(()) = async { match usr2.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {}
        }
    }
}

/// Asks the subscriber task to (un)subscribe users as sessions come and go.
struct SubscriptionRequests(mpsc::UnboundedSender<(String, bool)>);

impl UserSubscriptionListener for SubscriptionRequests {
    fn user_added(&self, user: &str) {
        let _ = self.0.send((user.to_owned(), true));
    }
    fn user_removed(&self, user: &str) {
        let _ = self.0.send((user.to_owned(), false));
    }
}

/// Connects the bus subscriber to the wake-up registry: events of users with
/// sessions here wake those sessions. Without a bus, sessions still see this
/// worker's own changes at once and other changes with their next command.
/// Returns the listener to install in the registry (sessions coming and going).
async fn start_bus_subscriber(
    config: &Config,
    wakeups: Arc<WakeupRegistry>,
) -> Option<Arc<dyn UserSubscriptionListener>> {
    let mut subscriber = match BusSubscriber::from_config(&config.bus_resolved()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no event bus: IDLE sessions will not be woken by other processes' changes");
            return None;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, bool)>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                request = rx.recv() => match request {
                    Some((user, true)) => subscriber.subscribe(&user),
                    Some((user, false)) => subscriber.unsubscribe(&user),
                    None => return,
                },
                message = subscriber.recv() => match message {
                    Some(BusMessage::Event(event)) => { wakeups.dispatch(&event); }
                    Some(BusMessage::Resync { user, reason, .. }) => {
                        tracing::debug!(?user, reason = reason.as_str(), "bus resync");
                        wakeups.poke(user.as_deref());
                    }
                    None => {
                        tracing::warn!("event bus subscriber stopped");
                        return;
                    }
                },
            }
        }
    });
    Some(Arc::new(SubscriptionRequests(tx)))
}
