//! Hibernation of idle IMAP sessions.
//!
//! A worker hands an idle session (the client socket plus a typed
//! [`record::HibernationRecord`]) to a hibernate process. The process holds
//! many such sessions in a compact slab ([`core`]), answers DONE, IDLE, NOOP,
//! CHECK, STATUS and LOGOUT itself, writes `EXISTS` / `EXPUNGE` / `FETCH
//! FLAGS` updates from bus events to idling clients, and hands the session
//! back to a worker, with every unprocessed input byte, on any other command.
//! The I/O driver (one epoll over raw descriptors, seqpacket channels to
//! workers, bus subscription) lives in [`driver`]. Out of scope: IMAP
//! commands that need a mailbox opened (they go back to a worker).

pub mod core;
pub mod driver;
pub mod record;
