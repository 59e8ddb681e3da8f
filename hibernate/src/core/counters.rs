//! Counters of a hibernate process (printed by `dormouse stats`).

use serde::{Deserialize, Serialize};

/// Why a session went back to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HandBackReason {
    /// A command the hibernate process does not answer (FETCH, SELECT, ...).
    Command,
    /// Input other than DONE during IDLE.
    IdleInput,
    /// A line longer than we look at, or a literal.
    LongLine,
    /// The selected mailbox was deleted or renamed.
    MailboxChanged,
    /// The selected mailbox's UIDVALIDITY changed.
    UidValidity,
    /// Storage could not be read for a resync.
    StorageError,
}

impl HandBackReason {
    /// Every reason, in counter order.
    pub const ALL: [HandBackReason; 6] = [
        HandBackReason::Command,
        HandBackReason::IdleInput,
        HandBackReason::LongLine,
        HandBackReason::MailboxChanged,
        HandBackReason::UidValidity,
        HandBackReason::StorageError,
    ];

    /// Short name for logs and `dormouse stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            HandBackReason::Command => "command",
            HandBackReason::IdleInput => "idle-input",
            HandBackReason::LongLine => "long-line",
            HandBackReason::MailboxChanged => "mailbox-changed",
            HandBackReason::UidValidity => "uidvalidity",
            HandBackReason::StorageError => "storage-error",
        }
    }

    fn index(self) -> usize {
        HandBackReason::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

/// Counters of one hibernate process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Sessions held right now.
    pub held: u64,
    /// Sessions received from workers.
    pub hibernations: u64,
    /// Sessions handed back, per [`HandBackReason::ALL`] position.
    pub hand_backs: [u64; 6],
    /// Sessions that ended here (LOGOUT or the client went away).
    pub ended: u64,
    /// Bus events applied.
    pub events_in: u64,
    /// Unsolicited updates (EXISTS/EXPUNGE/FETCH) written to idling clients.
    pub notifications: u64,
    /// Mailbox resyncs from storage (gaps, bus resync requests).
    pub resyncs: u64,
    /// Commands answered without a worker (DONE, IDLE, NOOP, CHECK, STATUS, LOGOUT).
    pub answered: u64,
    /// STATUS answers served from the cached status.
    pub status_from_cache: u64,
    /// Keepalive lines written.
    pub keepalives: u64,
    /// Sessions ended by the IDLE timeout or autologout.
    pub timeouts: u64,
    /// Sessions refused (sent straight back) because the process was near
    /// its descriptor limit.
    pub refused_full: u64,
    /// Milliseconds from a change (the event's timestamp) until its
    /// notification was written to the idling clients (boxed: it would
    /// triple the size of every control reply enum).
    pub notify_latency_ms: Box<LatencyBuckets>,
}

/// Upper bounds (ms, inclusive) of [`LatencyBuckets`]; one more bucket
/// holds everything slower.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// A fixed-bucket latency histogram small enough to ship in every stats
/// reply (the metrics endpoint sums the processes' buckets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyBuckets {
    /// Observations per bucket of [`LATENCY_BOUNDS_MS`], then the overflow.
    pub counts: [u64; 13],
    /// Sum of all observations, ms.
    pub sum_ms: u64,
}

impl LatencyBuckets {
    /// Counts one observation.
    pub fn observe(&mut self, ms: u64) {
        let i = LATENCY_BOUNDS_MS.iter().position(|&b| ms <= b).unwrap_or(LATENCY_BOUNDS_MS.len());
        self.counts[i] += 1;
        self.sum_ms += ms;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s observations.
    pub fn merge(&mut self, other: &LatencyBuckets) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_ms += other.sum_ms;
    }
}

impl Counters {
    /// Counts one hand-back.
    pub fn hand_back(&mut self, reason: HandBackReason) {
        self.hand_backs[reason.index()] += 1;
    }

    /// Hand-backs for `reason`.
    pub fn hand_backs_for(&self, reason: HandBackReason) -> u64 {
        self.hand_backs[reason.index()]
    }

    /// A change's notifications were written `ms` after the change.
    pub fn notified_after(&mut self, ms: u64) {
        self.notify_latency_ms.observe(ms);
    }

    /// All hand-backs.
    pub fn hand_backs_total(&self) -> u64 {
        self.hand_backs.iter().sum()
    }
}
