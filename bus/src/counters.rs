//! Counters of one publisher or subscriber, readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, updated with relaxed atomics by the transport.
#[derive(Debug, Default)]
pub struct BusCounters {
    events_out: AtomicU64,
    events_in: AtomicU64,
    references_out: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_unknown_version: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_send: AtomicU64,
    filtered: AtomicU64,
    gaps: AtomicU64,
    resyncs: AtomicU64,
    receivers_removed: AtomicU64,
}

/// A copy of [`BusCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Events handed to the transport (publisher) per receiver, or published (NATS).
    pub events_out: u64,
    /// Events delivered to the application (subscriber).
    pub events_in: u64,
    /// Oversized events sent as a reference record instead.
    pub references_out: u64,
    /// Frames or records dropped because they did not decode.
    pub dropped_malformed: u64,
    /// Frames or records dropped because of an unknown format version.
    pub dropped_unknown_version: u64,
    /// Events dropped because a local queue was full.
    pub dropped_queue_full: u64,
    /// Events a publisher could not hand to a receiver (the receiver resyncs).
    pub dropped_send: u64,
    /// Events received for users nobody here subscribed to.
    pub filtered: u64,
    /// Gaps detected (sequence jump, modseq mismatch) or caused (publisher side).
    pub gaps: u64,
    /// Resync messages handed to the application.
    pub resyncs: u64,
    /// Receiver sockets removed because their owner was gone.
    pub receivers_removed: u64,
}

macro_rules! bump {
    ($($(#[$doc:meta])* $name:ident => $field:ident;)*) => {
        $( $(#[$doc])* pub fn $name(&self, n: u64) { self.$field.fetch_add(n, Ordering::Relaxed); } )*
    };
}

impl BusCounters {
    bump! {
        /// Adds to `events_out`.
        add_events_out => events_out;
        /// Adds to `events_in`.
        add_events_in => events_in;
        /// Adds to `references_out`.
        add_references_out => references_out;
        /// Adds to `dropped_malformed`.
        add_dropped_malformed => dropped_malformed;
        /// Adds to `dropped_unknown_version`.
        add_dropped_unknown_version => dropped_unknown_version;
        /// Adds to `dropped_queue_full`.
        add_dropped_queue_full => dropped_queue_full;
        /// Adds to `dropped_send`.
        add_dropped_send => dropped_send;
        /// Adds to `filtered`.
        add_filtered => filtered;
        /// Adds to `gaps`.
        add_gaps => gaps;
        /// Adds to `resyncs`.
        add_resyncs => resyncs;
        /// Adds to `receivers_removed`.
        add_receivers_removed => receivers_removed;
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            events_out: r(&self.events_out),
            events_in: r(&self.events_in),
            references_out: r(&self.references_out),
            dropped_malformed: r(&self.dropped_malformed),
            dropped_unknown_version: r(&self.dropped_unknown_version),
            dropped_queue_full: r(&self.dropped_queue_full),
            dropped_send: r(&self.dropped_send),
            filtered: r(&self.filtered),
            gaps: r(&self.gaps),
            resyncs: r(&self.resyncs),
            receivers_removed: r(&self.receivers_removed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reflects_increments() {
        let c = BusCounters::default();
        c.add_events_in(3);
        c.add_gaps(1);
        c.add_dropped_malformed(2);
        let s = c.snapshot();
        assert_eq!((s.events_in, s.gaps, s.dropped_malformed, s.events_out), (3, 1, 2, 0));
    }
}
