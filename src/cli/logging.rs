//! tracing-subscriber set-up: `RUST_LOG` wins, else the config's `log.level`
//! for `serve`, else warnings only (so `deliver` stays quiet on success).
//!
//! Colour codes are written only when stderr is a terminal: a redirected log
//! (a file, a pipe to a log shipper, journald) must stay plain text. Under
//! systemd (`JOURNAL_STREAM` names our stderr) the timestamp is left out,
//! because the journal stamps every line itself.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{Config, LogFormat};

/// Swaps the filter of the installed subscriber (configuration reload).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Why a new log level was not installed.
#[derive(Debug, thiserror::Error)]
pub enum SetLevelError {
    /// `RUST_LOG` is set: it wins over the config file, also on reload.
    #[error("RUST_LOG is set and takes precedence over log.level")]
    EnvOverride,
    /// The level string is not a valid filter.
    #[error("invalid log.level {level:?}: {reason}")]
    Invalid {
        /// The refused value.
        level: String,
        /// What the filter parser said.
        reason: String,
    },
    /// No reloadable subscriber is installed (another one was first).
    #[error("the log filter cannot be changed: {0}")]
    NotReloadable(String),
}

/// Installs the global subscriber writing to stderr.
pub fn init(config: &Config, serve: bool) {
    let fallback = if serve { config.log.level.as_str() } else { "warn" };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(fallback))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let format: Box<dyn Layer<_> + Send + Sync> = match config.log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).boxed(),
        LogFormat::Text => {
            let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
            if stderr_is_journal() {
                layer.without_time().boxed()
            } else {
                layer.boxed()
            }
        }
    };
    if tracing_subscriber::registry().with(filter).with(format).try_init().is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the log filter with `level` (the syntax of `log.level`),
/// unless `RUST_LOG` is set (it always wins).
///
/// # Errors
/// [`SetLevelError`]: the environment overrides it, the value does not
/// parse (the old filter stays), or no reloadable subscriber is installed.
pub fn set_level(level: &str) -> Result<(), SetLevelError> {
    if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
        return Err(SetLevelError::EnvOverride);
    }
    let filter = EnvFilter::try_new(level)
        .map_err(|e| SetLevelError::Invalid { level: level.to_string(), reason: e.to_string() })?;
    let handle = FILTER.get().ok_or_else(|| SetLevelError::NotReloadable("no subscriber".into()))?;
    handle.reload(filter).map_err(|e| SetLevelError::NotReloadable(e.to_string()))
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
