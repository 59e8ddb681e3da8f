//! The deterministic, sans-I/O heart of a hibernate process: a compact slab
//! of hibernated sessions, shared mailbox views, event application, command
//! answers, hand-back decisions and the keepalive wheel. Time and storage
//! come in through arguments and the [`source::StateSource`] trait; bytes
//! to write and descriptors to pass on come out as output buffers and
//! [`Action`]s.

pub mod command;
pub mod counters;
mod hibernator;
mod mailbox_state;
pub mod render;
mod session;
pub mod source;
pub mod wheel;

pub use counters::{Counters, HandBackReason, LatencyBuckets, LATENCY_BOUNDS_MS};
pub use hibernator::{Action, Hibernator, SessionInfo, Settings, UnselectedStatus, WatchChange};

/// Identifies a hibernated session: slab index plus a generation, so a
/// stale key (from the epoll token of a closed session) never reaches a
/// newer session in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// Slab index.
    pub index: u32,
    /// Generation of the slot.
    pub generation: u32,
}

impl SessionKey {
    /// Packs into a `u64` (epoll user data).
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// Unpacks from [`SessionKey::to_u64`].
    pub fn from_u64(v: u64) -> Self {
        SessionKey { index: v as u32, generation: (v >> 32) as u32 }
    }
}

#[cfg(test)]
mod tests;
