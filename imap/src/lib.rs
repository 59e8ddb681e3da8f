//! The IMAP worker: IMAP4rev1 sessions (sans-I/O core + tokio driver), LMTP and
//! local delivery, passwd-file users.

pub mod auth;
pub mod delivery;
pub mod lmtp;
pub mod fd_passing;
pub mod handover;
pub mod server;

pub mod session;
mod op;
mod fetch_render;
