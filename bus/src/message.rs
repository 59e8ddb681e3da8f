//! What a subscriber hands to the application.

use storage_hooks::MailboxEvent;

/// One item from a subscriber's queue.
// Events are nearly every message; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// A change of a subscribed user's mail store.
    Event(MailboxEvent),
    /// Something may have been missed: re-read state from storage instead of
    /// trusting cached state.
    Resync {
        /// The user to resync; `None` means every subscribed user.
        user: Option<String>,
        /// The mailbox to resync; `None` means every mailbox of `user`.
        mailbox: Option<String>,
        /// Why the resync is needed.
        reason: ResyncReason,
    },
}

/// Why a [`BusMessage::Resync`] was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResyncReason {
    /// A publisher's frame sequence jumped: a frame for us was dropped.
    SequenceGap,
    /// An event's `modseq_before` is ahead of the last `modseq_after` seen.
    ModseqGap,
    /// The change was too large for one frame; read it from storage.
    Oversized,
    /// The connection to the NATS server was re-established (core NATS does not replay).
    Reconnected,
    /// The NATS client dropped messages of a slow subscription.
    SlowConsumer,
    /// The application did not drain the subscriber queue fast enough.
    QueueOverflow,
}

impl ResyncReason {
    /// A short name for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::SequenceGap => "sequence-gap",
            ResyncReason::ModseqGap => "modseq-gap",
            ResyncReason::Oversized => "oversized",
            ResyncReason::Reconnected => "reconnected",
            ResyncReason::SlowConsumer => "slow-consumer",
            ResyncReason::QueueOverflow => "queue-overflow",
        }
    }
}
