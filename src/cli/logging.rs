//! tracing-subscriber set-up: `RUST_LOG` wins, else the config's `log.level`
//! for `serve`, else warnings only (so `deliver` stays quiet on success).

use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Installs the global subscriber writing to stderr.
pub fn init(config: &Config, serve: bool) {
    let fallback = if serve { config.log.level.as_str() } else { "warn" };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(fallback))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
