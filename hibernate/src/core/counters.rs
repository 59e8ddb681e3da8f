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

    /// All hand-backs.
    pub fn hand_backs_total(&self) -> u64 {
        self.hand_backs.iter().sum()
    }
}
