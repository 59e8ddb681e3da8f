//! One interface over both transports, chosen by [`BusConfig::transport`].

use storage_hooks::{ChangeHook, HookError, MailboxEvent};

use crate::{
    BusConfig, BusError, BusMessage, CountersSnapshot, NatsPublisher, NatsSubscriber, Transport, UnixPublisher,
    UnixSubscriber,
};

/// The publishing side; register it as a storage [`ChangeHook`]. Cheap to clone.
#[derive(Debug, Clone)]
pub enum BusPublisher {
    /// UNIX-datagram transport.
    Unix(UnixPublisher),
    /// NATS transport.
    Nats(NatsPublisher),
}

impl BusPublisher {
    /// Opens the publisher the configuration asks for. NATS needs a running
    /// tokio runtime (a background task publishes).
    ///
    /// # Errors
    /// [`BusError`] for a bad configuration, an unusable bus folder or an
    /// unreachable NATS server.
    pub async fn from_config(cfg: &BusConfig) -> Result<Self, BusError> {
        cfg.validate()?;
        Ok(match cfg.transport {
            Transport::Unix => BusPublisher::Unix(UnixPublisher::open(&cfg.unix)?),
            Transport::Nats => BusPublisher::Nats(NatsPublisher::connect(&cfg.nats, cfg.queue_capacity).await?),
        })
    }

    /// Publishes one event without blocking.
    ///
    /// # Errors
    /// NATS only: [`BusError::QueueFull`] or [`BusError::Closed`]; the event
    /// is dropped and receivers detect the gap by modseq.
    pub fn publish(&self, event: &MailboxEvent) -> Result<(), BusError> {
        match self {
            BusPublisher::Unix(p) => {
                p.publish(event);
                Ok(())
            }
            BusPublisher::Nats(p) => p.publish(event),
        }
    }

    /// Pushes out what is queued: NATS waits until the server has it; UNIX
    /// retries pending batches once.
    ///
    /// # Errors
    /// NATS flush failures.
    pub async fn flush(&self) -> Result<(), BusError> {
        match self {
            BusPublisher::Unix(p) => {
                p.flush_pending();
                Ok(())
            }
            BusPublisher::Nats(p) => p.flush().await,
        }
    }

    /// Current counters.
    pub fn counters(&self) -> CountersSnapshot {
        match self {
            BusPublisher::Unix(p) => p.counters(),
            BusPublisher::Nats(p) => p.counters(),
        }
    }
}

impl ChangeHook for BusPublisher {
    fn on_change(&self, event: &MailboxEvent) -> Result<(), HookError> {
        match self {
            BusPublisher::Unix(p) => p.on_change(event),
            BusPublisher::Nats(p) => p.on_change(event),
        }
    }
}

/// The receiving side: per-user subscribe/unsubscribe at run time, and a
/// queue of [`BusMessage`]s for the subscribed users only.
#[derive(Debug)]
pub enum BusSubscriber {
    /// UNIX-datagram transport.
    Unix(UnixSubscriber),
    /// NATS transport.
    Nats(NatsSubscriber),
}

impl BusSubscriber {
    /// Opens the subscriber the configuration asks for (inside a tokio runtime).
    ///
    /// # Errors
    /// [`BusError`] for a bad configuration, an unusable bus folder or an
    /// unreachable NATS server.
    pub async fn from_config(cfg: &BusConfig) -> Result<Self, BusError> {
        cfg.validate()?;
        Ok(match cfg.transport {
            Transport::Unix => BusSubscriber::Unix(UnixSubscriber::bind(&cfg.unix, cfg.queue_capacity)?),
            Transport::Nats => BusSubscriber::Nats(NatsSubscriber::connect(&cfg.nats, cfg.queue_capacity).await?),
        })
    }

    /// Adds a session of `user` (call once per session that arrives); its
    /// events are delivered from the first session until the last leaves.
    pub fn subscribe(&self, user: &str) {
        match self {
            BusSubscriber::Unix(s) => s.subscribe(user),
            BusSubscriber::Nats(s) => s.subscribe(user),
        }
    }

    /// Receives every user's events from now on, for good (a consumer of
    /// all events such as the push relay); per-user calls become no-ops.
    /// Call [`BusSubscriber::sync`] to wait until it is in effect.
    pub fn subscribe_all(&self) {
        match self {
            BusSubscriber::Unix(s) => s.subscribe_all(),
            BusSubscriber::Nats(s) => s.subscribe_all(),
        }
    }

    /// Removes a session of `user` (call once per session that leaves);
    /// after the last one its events stop (NATS: the subscription is dropped).
    pub fn unsubscribe(&self, user: &str) {
        match self {
            BusSubscriber::Unix(s) => s.unsubscribe(user),
            BusSubscriber::Nats(s) => s.unsubscribe(user),
        }
    }

    /// Waits until the subscriptions requested so far are in effect; read
    /// the user's state from storage after this to close the start-up race.
    ///
    /// # Errors
    /// NATS: the server did not confirm.
    pub async fn sync(&self) -> Result<(), BusError> {
        match self {
            BusSubscriber::Unix(_) => Ok(()),
            BusSubscriber::Nats(s) => s.sync().await,
        }
    }

    /// Waits for the next message; `None` once the endpoint has stopped.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        match self {
            BusSubscriber::Unix(s) => s.recv().await,
            BusSubscriber::Nats(s) => s.recv().await,
        }
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<BusMessage> {
        match self {
            BusSubscriber::Unix(s) => s.try_recv(),
            BusSubscriber::Nats(s) => s.try_recv(),
        }
    }

    /// Number of subscribed users.
    pub fn subscribed_count(&self) -> usize {
        match self {
            BusSubscriber::Unix(s) => s.subscribed_count(),
            BusSubscriber::Nats(s) => s.subscribed_count(),
        }
    }

    /// Current counters.
    pub fn counters(&self) -> CountersSnapshot {
        match self {
            BusSubscriber::Unix(s) => s.counters(),
            BusSubscriber::Nats(s) => s.counters(),
        }
    }
}
