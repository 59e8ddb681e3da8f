//! The change hooks of every store this process opens: the event-bus
//! publisher, so deliveries (LMTP, `deliver`) and IMAP changes reach IDLE
//! sessions in other processes, hibernate and push relays.
//!
//! An unusable bus never blocks mail: the store works without the hook and
//! a warning is logged; receivers notice the gap by modseq and resync.

use bus::BusPublisher;
use storage_hooks::Hooks;

use crate::config::{ChangeSource, Config};

/// The hooks plus the publisher behind them (to flush before exit).
#[derive(Debug, Clone)]
pub struct EventHooks {
    /// Hooks to pass to `UserStore::open` / `Deliverer::new`.
    pub hooks: Hooks,
    /// The bus publisher, if the bus could be opened.
    pub publisher: Option<BusPublisher>,
}

impl EventHooks {
    /// Opens the publisher of the configured bus. Needs a tokio runtime
    /// (NATS publishes from a background task).
    pub async fn open(config: &Config) -> EventHooks {
        // With a file watcher running, every committing load of a mailbox
        // publishes the outside changes it finds (whoever commits first
        // publishes); with hooks only, outside changes stay silent.
        let report_outside = config.storage.change_source != ChangeSource::Hooks;
        match BusPublisher::from_config(&super::worker::bus_config(config)).await {
            Ok(publisher) => {
                let hooks = Hooks::new()
                    .with(std::sync::Arc::new(publisher.clone()))
                    .with_outside_change_reporting(report_outside);
                EventHooks { hooks, publisher: Some(publisher) }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no event bus: changes are stored but not announced");
                EventHooks { hooks: Hooks::new().with_outside_change_reporting(report_outside), publisher: None }
            }
        }
    }

    /// Pushes out queued events (before a short-lived process exits).
    pub async fn flush(&self) {
        if let Some(p) = &self.publisher {
            if let Err(e) = p.flush().await {
                tracing::warn!(error = %e, "event bus flush failed");
            }
        }
    }
}
