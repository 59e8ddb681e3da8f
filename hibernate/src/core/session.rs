//! One hibernated session, kept small: the common case (an idle client,
//! nothing buffered) is a fixed-size slab entry, a shared view pointer and
//! one small boxed record of addresses.

use std::net::SocketAddr;
use std::sync::Arc;

use storage_hooks::UidSet;

use super::counters::HandBackReason;
use crate::record::{ClientTransport, Extensions};

/// Session is in IDLE.
pub(crate) const IDLE: u8 = 1;
/// CONDSTORE active.
pub(crate) const CONDSTORE: u8 = 2;
/// QRESYNC enabled.
pub(crate) const QRESYNC: u8 = 4;
/// Mailbox opened read-only.
pub(crate) const READ_ONLY: u8 = 8;
/// Close after the output is flushed.
pub(crate) const CLOSE_PENDING: u8 = 16;

/// No mailbox selected.
pub(crate) const NO_MAILBOX: u32 = u32::MAX;

/// Rarely read facts about the connection, boxed to keep the slab small.
#[derive(Debug)]
pub(crate) struct SessionMeta {
    pub session_id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub transport: ClientTransport,
    pub authenticated_at_ms: u64,
    pub hibernated_at_ms: u64,
}

/// Buffers that exist only while there is something in them.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// Client input not processed yet.
    pub input: Vec<u8>,
    /// Output not written yet.
    pub output: Vec<u8>,
    /// Hand back once the output is written.
    pub hand_back: Option<HandBackReason>,
}

/// One hibernated session.
#[derive(Debug)]
pub(crate) struct HibernatedSession<H> {
    pub handle: H,
    pub user: u32,
    pub mailbox: u32,
    pub bits: u8,
    /// Highest MODSEQ whose flag changes the client has been told.
    pub seen: u64,
    /// The client's view of the selected mailbox (shared between sessions).
    pub view: Option<Arc<UidSet>>,
    pub idle_tag: Option<Box<str>>,
    pub meta: Box<SessionMeta>,
    pub buffers: Option<Box<Buffers>>,
}

impl<H> HibernatedSession<H> {
    pub(crate) fn ext(&self) -> Extensions {
        Extensions { condstore: self.bits & CONDSTORE != 0, qresync: self.bits & QRESYNC != 0 }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.bits & IDLE != 0
    }

    /// Waiting to be handed back or closed: no more commands are processed.
    pub(crate) fn is_leaving(&self) -> bool {
        self.bits & CLOSE_PENDING != 0 || self.buffers.as_ref().is_some_and(|b| b.hand_back.is_some())
    }

    pub(crate) fn buffers(&mut self) -> &mut Buffers {
        self.buffers.get_or_insert_with(Box::default)
    }

    /// Frees the buffers when both are empty and nothing is pending.
    pub(crate) fn shrink(&mut self) {
        if self.buffers.as_ref().is_some_and(|b| b.input.is_empty() && b.output.is_empty() && b.hand_back.is_none()) {
            self.buffers = None;
        }
    }

    pub(crate) fn has_output(&self) -> bool {
        self.buffers.as_ref().is_some_and(|b| !b.output.is_empty())
    }
}
