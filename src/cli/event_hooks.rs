//! The change hooks of every store this process opens: the event-bus
//! publisher, so deliveries (LMTP, `deliver`) and IMAP changes reach IDLE
//! sessions in other processes, hibernate and push relays; and, with
//! `[push.nats] enabled`, the publisher of external events to JetStream.
//!
//! An unusable bus or NATS server never blocks mail: the store works without
//! the hook and a warning is logged; bus receivers notice the gap by modseq
//! and resync.

use std::sync::Arc;
use std::time::Duration;

use bus::BusPublisher;
use push::PushNatsPublisher;
use storage_hooks::Hooks;

use crate::config::{ChangeSource, Config};

/// Longest wait in [`EventHooks::flush`] for JetStream to acknowledge the
/// external events (a server outage must not hold up `deliver`).
const PUSH_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

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
        let bus_cfg = super::worker::bus_config(config);
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
