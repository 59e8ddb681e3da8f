//! The change hooks of every store this process opens: the event-bus
//! publisher, so deliveries (LMTP, `deliver`) and IMAP changes reach IDLE
//! sessions in other processes, hibernate and push relays; and, with
//! `[push.nats] enabled`, the publisher of external events to JetStream.
//!
//! An unusable bus or NATS server never blocks mail: the store works without
//! the hook and a warning is logged; bus receivers notice the gap by modseq
//! and resync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bus::BusPublisher;
use push::PushNatsPublisher;
use storage_hooks::{ChangeHook, HookError, Hooks, MailboxEvent};

use crate::config::{ChangeSource, Config};

/// Longest wait in [`EventHooks::flush`] for JetStream to acknowledge the
/// external events (a server outage must not hold up `deliver`).
const PUSH_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// First and longest wait between attempts of a long-lived process to reach
/// NATS for the push publisher after it could not at start (doubling).
const PUSH_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between those attempts.
const PUSH_RETRY_MAX: Duration = Duration::from_secs(60);

/// The push hook of a long-lived process whose NATS server was unreachable
/// at start: until a background task connects, external events are counted
/// and dropped (the mail itself is stored and announced on the bus as
/// always); from then on they are published.
#[derive(Debug, Default)]
struct LatePushHook {
    publisher: OnceLock<PushNatsPublisher>,
    dropped: AtomicU64,
}

impl ChangeHook for LatePushHook {
    fn on_change(&self, event: &MailboxEvent) -> Result<(), HookError> {
        match self.publisher.get() {
            Some(p) => p.on_change(event),
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

/// The hooks plus the publishers behind them (to flush before exit).
#[derive(Debug, Clone)]
pub struct EventHooks {
    /// Hooks to pass to `UserStore::open` / `Deliverer::new`.
    pub hooks: Hooks,
    /// The bus publisher, if the bus could be opened.
    pub publisher: Option<BusPublisher>,
    /// The external-event publisher, if `[push.nats]` is enabled and NATS
    /// was reachable.
    pub push: Option<PushNatsPublisher>,
}

impl EventHooks {
    /// Opens the publisher of the configured bus and, if enabled, the NATS
    /// push publisher (at the same time, so an unreachable server costs one
    /// connect timeout, not two). Needs a tokio runtime (NATS publishes from
    /// background tasks).
    pub async fn open(config: &Config) -> EventHooks {
        // With a file watcher running, every committing load of a mailbox
        // publishes the outside changes it finds (whoever commits first
        // publishes); with hooks only, outside changes stay silent.
        let report_outside = config.storage.change_source != ChangeSource::Hooks;
        let bus_cfg = config.bus_resolved();
        let open_push = async {
            if !config.push.nats.enabled {
                return None;
            }
            match PushNatsPublisher::connect(&bus_cfg.nats, &config.push, bus_cfg.queue_capacity).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "no NATS push publisher: changes are stored but no external events published");
                    None
                }
            }
        };
        let (bus_publisher, push) = tokio::join!(BusPublisher::from_config(&bus_cfg), open_push);
        let mut hooks = Hooks::new();
        let publisher = match bus_publisher {
            Ok(publisher) => {
                hooks = hooks.with(Arc::new(publisher.clone()));
                Some(publisher)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no event bus: changes are stored but not announced");
                None
            }
        };
        if let Some(p) = &push {
            hooks = hooks.with(Arc::new(p.clone()));
        }
        EventHooks { hooks: hooks.with_outside_change_reporting(report_outside), publisher, push }
    }

    /// [`EventHooks::open`] for a long-lived process (serve, workers,
    /// hibernate): if `[push.nats]` is enabled but NATS is unreachable at
    /// start, keeps trying in the background (1 s doubling to 60 s) and
    /// starts publishing external events once it connects, instead of
    /// staying silent until a restart.
    pub async fn open_for_server(config: &Config) -> EventHooks {
        let mut events = Self::open(config).await;
        if config.push.nats.enabled && events.push.is_none() {
            let late = Arc::new(LatePushHook::default());
            events.hooks.push(late.clone());
            let nats = config.bus_resolved().nats;
            let (push_cfg, capacity) = (config.push.clone(), config.bus.queue_capacity);
            tokio::spawn(async move {
                let mut wait = PUSH_RETRY_FIRST;
                loop {
                    tokio::time::sleep(wait).await;
                    match PushNatsPublisher::connect(&nats, &push_cfg, capacity).await {
                        Ok(p) => {
                            let dropped = late.dropped.load(Ordering::Relaxed);
                            tracing::info!(dropped, "push: NATS reachable; publishing external events from now on");
                            let _ = late.publisher.set(p);
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, retry_in_secs = wait.as_secs(), "push: NATS still unreachable");
                            wait = (wait * 2).min(PUSH_RETRY_MAX);
                        }
                    }
                }
            });
        }
        events
    }

    /// Pushes out queued events (before a short-lived process exits): the
    /// bus's written to the server, the external ones acknowledged by
    /// JetStream (waiting at most [`PUSH_FLUSH_TIMEOUT`]).
    pub async fn flush(&self) {
        if let Some(p) = &self.publisher {
            if let Err(e) = p.flush().await {
                tracing::warn!(error = %e, "event bus flush failed");
            }
        }
        if let Some(p) = &self.push {
            match tokio::time::timeout(PUSH_FLUSH_TIMEOUT, p.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "push: NATS flush failed"),
                Err(_) => {
                    let c = p.counters();
                    tracing::warn!(
                        published = c.published,
                        acked = c.acked,
                        "push: JetStream did not acknowledge every external event within {} s; unacknowledged ones are lost",
                        PUSH_FLUSH_TIMEOUT.as_secs()
                    );
                }
            }
        }
    }
}
