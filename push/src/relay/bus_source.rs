//! Events from the internal bus (UNIX datagram on one machine, or core
//! NATS): best effort. The bus does not replay, so events published while
//! the relay is down or while its queue overflows are not delivered; every
//! [`bus::BusMessage::Resync`] (the bus's "something may have been
//! missed") is counted and logged. Use the JetStream source for
//! at-least-once delivery.

use std::time::Duration;

use bus::{BusMessage, BusSubscriber};
use tokio::sync::watch;

use super::{Relay, RelayError};
use crate::{ExternalEvent, HeaderPolicy};

/// Feeds `relay` from `subscriber` (every user's events) until `shutdown`
/// turns true, then waits up to `drain` for open deliveries.
///
/// # Errors
/// [`RelayError::Source`] if the subscription cannot be confirmed or the
/// subscriber stops on its own.
pub async fn run_bus_source(
    relay: &Relay,
    mut subscriber: BusSubscriber,
    policy: HeaderPolicy,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> Result<(), RelayError> {
    subscriber.subscribe_all();
    subscriber.sync().await.map_err(|e| RelayError::Source(format!("bus subscription: {e}")))?;
    tracing::info!("push-relay: receiving every user's events from the bus");
    let result = loop {
        tokio::select! {
            msg = subscriber.recv() => match msg {
                Some(BusMessage::Event(ev)) => {
                    for external in ExternalEvent::from_mailbox_event(&ev, &policy) {
                        relay.dispatch(&external, None);
                    }
                }
                Some(BusMessage::Resync { user, mailbox, reason }) => {
                    relay.count_resync();
                    tracing::warn!(
                        user = user.as_deref().unwrap_or("*"),
                        mailbox = mailbox.as_deref().unwrap_or("*"),
                        reason = reason.as_str(),
                        "push-relay: the bus may have lost events (best effort mode); they are not delivered"
                    );
                }
                None => break Err(RelayError::Source("the bus subscriber stopped".into())),
            },
            () = super::runner::wait_stop(&mut shutdown) => break Ok(()),
        }
    };
    drop(subscriber);
    let left = relay.drain(drain).await;
    if left > 0 {
        tracing::warn!(abandoned = left, "push-relay: deliveries still open at shutdown are dropped (bus mode)");
    }
    result
}
