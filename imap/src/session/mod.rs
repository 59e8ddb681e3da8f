//! The sans-I/O IMAP session: bytes in, bytes and driver actions out.
//!
//! A [`Session`] owns no socket and no clock. The driver feeds client bytes
//! with [`Session::enqueue_input`] and calls [`Session::next`] with the
//! current time until it returns [`SessionEvent::NeedMoreInput`]. Storage
//! calls (Maildir reads and writes through `storage_hooks`) and password
//! checks happen inline in `next`, i.e. they block: an async driver runs
//! `next` in `spawn_blocking` (or on a worker thread per busy session).

mod authenticator;
mod event;
mod framer;
mod handover;
mod hibernation;
pub(crate) mod machine;
pub(crate) mod mutf7;
mod options;
pub(crate) mod response;
pub(crate) mod selected;
pub(crate) mod shared_mailbox;

pub use authenticator::{AuthFailure, AuthenticatedUser, Authenticator};
pub use event::{LoginRequest, SessionEvent};
pub use handover::{EnabledExtensions, HandOver, HandOverDecodeError, HANDOVER_VERSION};
pub use hibernation::{HibernatedView, HibernationState, NotHibernatable};
pub use machine::{Session, SessionError};
pub use options::{Limits, SessionOptions};
