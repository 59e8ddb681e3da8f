//! The IMAP server processes: a master that accepts connections and runs
//! the pre-login stage, and worker processes that serve authenticated
//! sessions. Everything here is a thin tokio driver around the sans-I/O
//! [`crate::session::Session`].
//!
//! # Process model
//!
//! - **master** (`dormouse serve`): binds the plain (STARTTLS) and
//!   implicit-TLS listeners, and for every connection runs a `Session` in
//!   hand-over mode: greeting, CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE
//!   PLAIN (with SASL-IR), ID, NOOP, LOGOUT. Per-IP connection limits,
//!   per-user session limits and the growing failed-login delay live here.
//! - **workers** (`dormouse worker`, hidden; `workers` of them, default 2):
//!   spawned and restarted by the master. Each serves many sessions on one
//!   multi-threaded tokio runtime (one task per session).
//! - **hand-over**: after a successful login the master sends the worker a
//!   [`crate::handover::Handover`] record (postcard, versioned) with the
//!   client's descriptor attached (`SCM_RIGHTS`, [`crate::fd_passing`]) over
//!   a `SOCK_SEQPACKET` socket pair (the worker's standard input). The
//!   record includes the bytes the client pipelined after its login command,
//!   which the worker processes first.
//! - **TLS** stays in the master (rustls cannot move a live TLS session to
//!   another process, and workers hold no keys): for STARTTLS and port-993
//!   sessions the master keeps the TLS connection and passes the worker one
//!   end of a UNIX stream socket pair; [`tls_proxy`] copies plaintext between
//!   the two. This is what Dovecot's `imap-login` does when it proxies.
//! - **wake-ups**: [`wakeup`] — the worker's own writes reach its other
//!   sessions through a storage hook, other processes' writes through the
//!   event bus subscriber; an idle session is a parked task, nothing polls.
//! - **counters**: [`counters`] per process, logged periodically, on
//!   SIGUSR1 (the master forwards it to its workers) and at shutdown.
//!
//! Workers must run on a multi-threaded tokio runtime: `Session::next` does
//! Maildir I/O there and is called under `tokio::task::block_in_place`,
//! which panics on a current-thread runtime. The master's pre-login sessions
//! run on the async threads directly: they defer password checks
//! ([`crate::session::SessionOptions::defer_auth`]) to a bounded
//! [`verify_pool::VerifyPool`], so 1,000 connections cost no thread each.
//!
//! Limits and where they are enforced: line length, literal size, pre-login
//! timeout, IDLE timeout and autologout by the `Session` (the drivers pass
//! the configured values and wake it at its deadline); per-IP connections,
//! per-user sessions (`NO [LIMIT]`) and the per-IP failed-login delay
//! (doubling, capped) in the master, which learns of ended sessions from the
//! workers' [`worker_report::WorkerReport`]s and, for hibernated sessions
//! (which keep counting), from the hibernate processes (`hibernate_watch`).
//! `dormouse who` / `kick` ask the master over its control socket
//! ([`admin`]), which asks the workers ([`live_sessions`]).
//!
//! Reload: [`master::MasterReload`] changes a running master's limits,
//! delays, session options and TLS configuration (read per connection, so
//! established sessions keep theirs) and sends SIGHUP to its ready workers;
//! a worker takes new `[imap]` settings through
//! [`worker::WorkerDeps::settings_updates`] for the sessions that arrive next.

pub mod admin;
mod admin_socket;
pub mod client_stream;
pub mod config;
pub mod counters;
pub mod deflate_layer;
pub mod generation;
mod hibernate_watch;
pub mod hibernation;
pub mod ktls;
pub mod lifeline;
pub mod limits;
pub mod live_sessions;
pub mod login_guard;
pub mod master;
pub mod metrics;
mod prelogin;
pub mod session_driver;
pub mod shutdown;
pub mod storage_slots;
pub mod tls;
pub mod tls_proxy;
mod tls_handover;
pub mod user_db_auth;
pub mod verify_pool;
pub mod wakeup;
pub mod worker;
pub mod worker_pool;
pub mod worker_report;

pub use config::{ImapServerConfig, ImapSettings, ImapSettingsError};
pub use master::{Master, MasterError, MasterReload, WorkerCommand, WORKER_INDEX_ENV};
pub use worker::WorkerDeps;

use crate::session::{Limits, SessionOptions};

/// Most bytes of pipelined input carried in a hand-over record (the rest of
/// the record fits well within [`crate::fd_passing::MAX_MESSAGE_LEN`]).
pub const MAX_PENDING_INPUT: usize = 64 * 1024;

/// Session options for this configuration (TLS flags set per connection).
pub fn session_options(config: &ImapServerConfig) -> SessionOptions {
    SessionOptions {
        tls_active: false,
        starttls_available: false,
        allow_plaintext_auth: config.settings.allow_plaintext_auth,
        hand_over_on_auth: false,
        defer_auth: false,
        server_name: "dormouse".to_string(),
        auto_mailboxes: config.settings.auto_mailboxes.clone(),
        // See the field's docs: a worker cannot move a session to another user.
        allow_unauthenticate: false,
        limits: Limits {
            max_line: config.settings.max_line_length,
            max_append_literal: u32::try_from(config.settings.max_literal_size).unwrap_or(u32::MAX),
            idle_timeout: config.settings.idle_timeout(),
            autologout: config.settings.autologout(),
            preauth_timeout: config.settings.prelogin_timeout(),
            ..Limits::default()
        },
    }
}
