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

/// A socket address in 16 bytes instead of 32: IPv4 inline, IPv6 boxed.
#[derive(Debug, Clone)]
pub(crate) enum CompactAddr {
    V4([u8; 4], u16),
    V6(Box<SocketAddr>),
}

impl From<SocketAddr> for CompactAddr {
    fn from(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(v4) => CompactAddr::V4(v4.ip().octets(), v4.port()),
            v6 @ SocketAddr::V6(_) => CompactAddr::V6(Box::new(v6)),
        }
    }
}

impl CompactAddr {
    pub(crate) fn get(&self) -> SocketAddr {
        match self {
            CompactAddr::V4(ip, port) => SocketAddr::from((*ip, *port)),
            CompactAddr::V6(a) => **a,
        }
    }
}

/// An IMAP tag; short ones (almost all) inline, so idling costs no heap block.
#[derive(Debug, Clone)]
pub(crate) enum Tag {
    Inline { len: u8, bytes: [u8; 22] },
    Heap(Box<str>),
}

impl From<String> for Tag {
    fn from(s: String) -> Self {
        if s.len() <= 22 {
            let mut bytes = [0u8; 22];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Tag::Inline { len: s.len() as u8, bytes }
        } else {
            Tag::Heap(s.into_boxed_str())
        }
    }
}

impl Tag {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Built from a `String` prefix of whole characters: valid UTF-8.
            Tag::Inline { len, bytes } => std::str::from_utf8(&bytes[..*len as usize]).unwrap_or(""),
            Tag::Heap(s) => s,
        }
    }
}

/// Rarely read facts about the connection, boxed to keep the slab small.
#[derive(Debug)]
pub(crate) struct SessionMeta {
    pub session_id: u64,
    pub peer: CompactAddr,
    pub local: CompactAddr,
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
    /// The NOTIFY state, when NOTIFY SET is in effect (kept here because
    /// it is rare: the buffers then stay allocated).
    pub notify: Option<crate::notify::NotifySpec>,
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
    pub idle_tag: Option<Tag>,
    /// Core clock second of the last command (or of the IDLE start).
    pub since_s: u32,
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
        if self.buffers.as_ref().is_some_and(|b| b.input.is_empty() && b.output.is_empty() && b.hand_back.is_none() && b.notify.is_none()) {
            self.buffers = None;
        }
    }

    /// The NOTIFY state, if any.
    pub(crate) fn notify(&self) -> Option<&crate::notify::NotifySpec> {
        self.buffers.as_ref()?.notify.as_ref()
    }

    pub(crate) fn has_output(&self) -> bool {
        self.buffers.as_ref().is_some_and(|b| !b.output.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_forms_round_trip() {
        for a in ["127.0.0.2:40000", "[2001:db8::1]:993"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(CompactAddr::from(addr).get(), addr);
        }
        for t in ["A1", "a-22-characters-tag-xx", "a-tag-longer-than-22-characters", "ü-tag"] {
            assert_eq!(Tag::from(t.to_string()).as_str(), t);
        }
        assert_eq!(std::mem::size_of::<CompactAddr>(), 16);
        assert_eq!(std::mem::size_of::<Option<Tag>>(), 24);
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn slab_entry_and_meta_stay_small() {
        // Slab entry with a 4-byte descriptor handle plus its boxed meta: the
        // bulk of a hibernated session's user-space bytes.
        let entry = std::mem::size_of::<Option<HibernatedSession<std::os::fd::OwnedFd>>>();
        let meta = std::mem::size_of::<SessionMeta>();
        assert!(entry <= 80, "slab entry is {entry} bytes");
        assert!(meta <= 64, "meta is {meta} bytes");
    }
}
