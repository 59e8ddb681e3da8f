//! tracing-subscriber set-up: `RUST_LOG` wins, else the config's `log.level`
//! for `serve`, else warnings only (so `deliver` stays quiet on success).
//!
//! Colour codes are written only when stderr is a terminal: a redirected log
//! (a file, a pipe to a log shipper, journald) must stay plain text. Under
//! systemd (`JOURNAL_STREAM` names our stderr) the timestamp is left out,
//! because the journal stamps every line itself.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber writing to stderr.
pub fn init(config: &Config, serve: bool) {
    let fallback = if serve { config.log.level.as_str() } else { "warn" };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(fallback))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => {
            let builder = builder.with_ansi(std::io::stderr().is_terminal());
            if stderr_is_journal() {
                builder.without_time().try_init()
            } else {
                builder.try_init()
            }
        }
    };
}

/// True when systemd connected our stderr to the journal: `JOURNAL_STREAM`
/// holds `device:inode` of that stream, and it must be our fd 2 (a child
/// that redirected stderr elsewhere inherits the variable but not the stream).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else { return false };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else { return false };
    #[allow(clippy::unnecessary_cast)] // st_dev/st_ino are not u64 on every OS
    let (our_dev, our_ino) = (stat.st_dev as u64, stat.st_ino as u64);
    dev.parse::<u64>().ok() == Some(our_dev) && ino.parse::<u64>().ok() == Some(our_ino)
}
