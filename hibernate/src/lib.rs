//! Hibernation of idle IMAP sessions.
//!
//! A worker hands an idle session (the client socket plus a typed
//! [`record::HibernationRecord`]) to a hibernate process. The process holds
//! many such sessions in a compact slab ([`core`]), answers DONE, IDLE, NOOP,
//! CHECK, STATUS and LOGOUT itself, writes `EXISTS` / `EXPUNGE` (`VANISHED`)
//! / `FETCH FLAGS` updates from bus events to idling clients, resyncs a
//! mailbox from storage when it detects a gap, and hands the session back to
//! a worker, with every unprocessed input byte, on any other command. The
//! I/O driver ([`driver`]: one epoll over raw descriptors, seqpacket
//! channels to workers with `SCM_RIGHTS`, the bus subscriber on a side
//! thread, control messages for `dormouse who` / `stats`) runs one such
//! process. Out of scope: commands that need an opened mailbox (they go back
//! to a worker) and the worker side of parking (`imap::server::hibernation`).

pub mod core;
pub mod deflate;
pub mod driver;
pub mod fd_passing;
pub mod notify;
pub mod record;
