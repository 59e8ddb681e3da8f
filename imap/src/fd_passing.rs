//! Passing file descriptors between processes (`SCM_RIGHTS`): the master
//! hands logged-in sessions to workers this way, and workers hand idle ones
//! to hibernate processes. One implementation serves both; it lives in the
//! `hibernate` crate because `imap` depends on that crate, not the reverse.

pub use hibernate::fd_passing::*;
