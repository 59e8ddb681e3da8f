//! Runs a relay: registrations loaded and reloaded on change, counters
//! logged, one event source until shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use super::{Relay, RelayError};
use crate::registration_store::RegistrationStore;

/// Timing of [`run_relay`].
#[derive(Debug, Clone, Copy)]
pub struct RunTiming {
    /// How often the registration file is checked for changes.
    pub reload_interval: Duration,
    /// How often the counters are logged.
    pub counters_interval: Duration,
}

impl Default for RunTiming {
    fn default() -> Self {
        RunTiming { reload_interval: Duration::from_secs(1), counters_interval: Duration::from_secs(60) }
    }
}

/// Loads the registrations into `relay`, keeps them current while `source`
/// runs (the file is polled; a file that fails to load keeps the previous
/// set and is logged), logs the counters periodically and once at the end,
/// and stops the endpoint workers when `source` returns.
///
/// # Errors
/// An unreadable registration file at start, or the source's error.
pub async fn run_relay<F>(relay: &Relay, store: &RegistrationStore, timing: RunTiming, source: F) -> Result<(), RelayError>
where
    F: Future<Output = Result<(), RelayError>>,
{
    let stamp = store.stamp();
    let regs = store.load()?;
    relay.set_registrations(&regs);
    tracing::info!(registrations = regs.len(), file = %store.path().display(), "push-relay: registrations loaded");
    let (stop_tx, stop_rx) = watch::channel(false);
    let reload = tokio::spawn(reload_loop(relay.clone(), store.clone(), stamp, timing.reload_interval, stop_rx.clone()));
    let counters = tokio::spawn(counters_loop(relay.clone(), timing.counters_interval, stop_rx));
    let result = source.await;
    let _ = stop_tx.send(true);
    let _ = reload.await;
    let _ = counters.await;
    relay.abort();
    relay.counters().log("shutdown");
    result
}

async fn reload_loop(
    relay: Relay,
    store: RegistrationStore,
    mut stamp: Option<crate::registration_store::FileStamp>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = wait_stop(&mut stop) => return,
        }
        let now = store.stamp();
        if now == stamp {
            continue;
        }
        match store.load() {
            Ok(regs) => {
                stamp = now;
                relay.set_registrations(&regs);
                tracing::info!(registrations = regs.len(), "push-relay: registrations reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "push-relay: cannot reload registrations; keeping the previous ones"),
        }
    }
}

/// Waits until `stop` turns true (or its sender is gone). Returns `()`, so
/// no borrow of the channel lives on in a `select!` (the future stays `Send`).
pub async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn counters_loop(relay: Relay, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => relay.counters().log("periodic"),
            () = wait_stop(&mut stop) => return,
        }
    }
}
