//! placeholder crate imap; see README.
pub mod fd_passing;
pub mod handover;
