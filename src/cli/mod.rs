//! Subcommand implementations of the `dormouse` binary.

pub mod config_cmd;
pub mod deliver;
pub mod event_hooks;
pub mod first_run;
pub mod hibernate;
pub mod logging;
pub mod metrics;
pub mod outside_changes;
#[cfg(target_os = "linux")]
pub mod privileges;
pub mod push_relay;
pub mod push_webpush;
pub mod reload;
pub mod restart;
pub mod serve;
pub mod serve_imap;
pub mod serve_lock;
pub mod serve_restart;
pub mod systemd_notify;
pub mod user;
pub mod who;
pub mod worker;

use std::process::ExitCode;

/// Exit codes from `sysexits.h`, as `dovecot-lda` uses them.
pub mod exit {
    /// Command line usage error.
    pub const USAGE: u8 = 64;
    /// Input data was incorrect (empty or oversized message).
    pub const DATAERR: u8 = 65;
    /// Addressee unknown.
    pub const NOUSER: u8 = 67;
    /// Internal software error.
    pub const SOFTWARE: u8 = 70;
    /// Temporary failure: the sender should retry.
    pub const TEMPFAIL: u8 = 75;
    /// Configuration error.
    pub const CONFIG: u8 = 78;
}

/// Prints an error chain and maps it to exit status 1.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dormouse: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
