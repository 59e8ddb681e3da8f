//! The relay's counters, logged every minute and at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters of one relay (cheap atomic adds).
#[derive(Debug, Default)]
pub struct RelayCounters {
    events_in: AtomicU64,
    deliveries_ok: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    queue_full: AtomicU64,
    duplicates_skipped: AtomicU64,
    resyncs: AtomicU64,
    registrations: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCountersSnapshot {
    /// External events received from the source.
    pub events_in: u64,
    /// Deliveries an endpoint accepted (2xx).
    pub deliveries_ok: u64,
    /// HTTP attempts made.
    pub attempts: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Deliveries written to the dead-letter log (queue-full ones included).
    pub dead_lettered: u64,
    /// Deliveries dead-lettered because their endpoint's queue was full.
    pub queue_full: u64,
    /// Deliveries skipped because the delivered log says they were done
    /// before a restart (JetStream redelivery).
    pub duplicates_skipped: u64,
    /// Bus resyncs (events may have been missed; UNIX bus mode only).
    pub resyncs: u64,
    /// Registrations currently active (user ones and global endpoints).
    pub registrations: u64,
}

macro_rules! adders {
    ($($name:ident => $field:ident),* $(,)?) => {
        $(
            #[doc = concat!("Adds `n` to `", stringify!($field), "`.")]
            pub fn $name(&self, n: u64) {
                self.$field.fetch_add(n, Ordering::Relaxed);
            }
        )*
    };
}

impl RelayCounters {
    adders! {
        add_events_in => events_in,
        add_deliveries_ok => deliveries_ok,
        add_attempts => attempts,
        add_retries => retries,
        add_dead_lettered => dead_lettered,
        add_queue_full => queue_full,
        add_duplicates_skipped => duplicates_skipped,
        add_resyncs => resyncs,
    }

    /// Sets the number of active registrations.
    pub fn set_registrations(&self, n: u64) {
        self.registrations.store(n, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> RelayCountersSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayCountersSnapshot {
            events_in: get(&self.events_in),
            deliveries_ok: get(&self.deliveries_ok),
            attempts: get(&self.attempts),
            retries: get(&self.retries),
            dead_lettered: get(&self.dead_lettered),
            queue_full: get(&self.queue_full),
            duplicates_skipped: get(&self.duplicates_skipped),
            resyncs: get(&self.resyncs),
            registrations: get(&self.registrations),
        }
    }
}

impl RelayCountersSnapshot {
    /// Logs the counters at info level.
    pub fn log(&self, when: &str) {
        tracing::info!(
            when,
            events_in = self.events_in,
            deliveries_ok = self.deliveries_ok,
            attempts = self.attempts,
            retries = self.retries,
            dead_lettered = self.dead_lettered,
            queue_full = self.queue_full,
            duplicates_skipped = self.duplicates_skipped,
            resyncs = self.resyncs,
            registrations = self.registrations,
            "push-relay counters"
        );
    }
}
