//! Configuration reload of `dormouse serve` on SIGHUP (`systemctl reload`).
//!
//! The config file is read again and compared with the configuration in
//! force, key by key. Keys in [`LIVE_KEYS`] are applied at once: the log
//! filter, the IMAP limits, delays and timeouts (in the master, and in the
//! workers, which get SIGHUP and re-read their config file), and the TLS
//! pair, which is loaded again on every reload so renewed files (certbot)
//! take effect for new connections; the hibernate processes get SIGHUP
//! for a new `log.level`. Every other changed key needs a
//! restart: it is named in a WARN and its running value stays in force, also
//! in the file the workers read, so a restarted worker cannot pick up half a
//! change. A file that does not parse or validate, a log filter that does
//! not parse or a TLS pair that does not load refuse the whole reload with
//! an ERROR, before anything is applied.
//!
//! The passwd file needs no reload: [`imap::auth::UserDb`] re-reads it
//! whenever its modification time or size changes.

use std::path::{Path, PathBuf};

use imap::server::tls::load_server_config;
use imap::server::MasterReload;

use crate::config::Config;

/// Dotted keys (or key prefixes ending in `.`) applied without a restart.
pub const LIVE_KEYS: &[&str] = &[
    "log.level",
    "imap.max_connections_per_ip",
    "imap.max_sessions_per_user",
    "imap.login_failure_delay_ms",
    "imap.login_failure_delay_max_ms",
    "imap.prelogin_timeout_secs",
    "imap.idle_timeout_secs",
    "imap.autologout_secs",
    "imap.max_line_length",
    "imap.max_literal_size",
    "imap.allow_plaintext_auth",
    "imap.auto_mailboxes",
    "tls.cert",
    "tls.key",
];

/// Why a reload was refused (the running configuration stays in force).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not parse or validate.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The configuration cannot be compared or rebuilt (a serializer failure).
    #[error("cannot compare the configurations: {0}")]
    Compare(String),
    /// `log.level` is not a valid filter.
    #[error("invalid log.level {level:?}: {reason}")]
    LogLevel {
        /// The refused value.
        level: String,
        /// What the filter parser said.
        reason: String,
    },
    /// The TLS pair does not load.
    #[error("cannot load the TLS pair {cert} / {key}: {source}")]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What went wrong.
        #[source]
        source: imap::server::tls::TlsSetupError,
    },
    /// The workers' config file cannot be written.
    #[error("cannot write the IMAP workers' config file: {0}")]
    WorkerConfig(String),
}

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Changed keys now in force.
    pub applied: Vec<String>,
    /// Changed keys that keep their running value until a restart.
    pub restart_needed: Vec<String>,
    /// Whether the certificate file's content differs from the last load.
    pub certificate_changed: bool,
    /// Workers told to re-read their config file.
    pub workers_signalled: usize,
    /// Hibernate processes told to re-read `log.level`.
    pub hibernate_signalled: usize,
}

/// The state a reload compares with and acts on.
pub struct Reloader {
    /// The file `serve` was started with; `None` means the built-in defaults.
    path: Option<PathBuf>,
    /// The configuration in force.
    running: Config,
    /// The IMAP master (`None` when IMAP is disabled).
    master: Option<MasterReload>,
    /// The file the IMAP workers read (rewritten on reload).
    worker_config: Option<PathBuf>,
    /// The certificate file's bytes at the last (re)load.
    certificate: Vec<u8>,
    /// The hibernate processes (they read the workers' file too).
    hibernate: super::hibernate::ReadyHibernateProcesses,
}

impl Reloader {
    /// A reloader for a server started from `path` with `running`.
    pub fn new(
        path: Option<PathBuf>,
        running: Config,
        master: Option<MasterReload>,
        worker_config: Option<PathBuf>,
        hibernate: super::hibernate::ReadyHibernateProcesses,
    ) -> Self {
        let certificate = std::fs::read(running.tls_cert()).unwrap_or_default();
        Self { path, running, master, worker_config, certificate, hibernate }
    }

    /// Reloads and logs the outcome: one INFO line with what was applied,
    /// a WARN naming the keys that need a restart, or an ERROR if refused.
    pub fn reload_and_log(&mut self) {
        super::systemd_notify::notify_reloading();
        match self.reload() {
            Ok(outcome) => {
                if !outcome.restart_needed.is_empty() {
                    tracing::warn!(
                        keys = %outcome.restart_needed.join(","),
                        "configuration reload: changed keys need a restart and keep their running values"
                    );
                }
                let applied = if outcome.applied.is_empty() { "none".to_string() } else { outcome.applied.join(",") };
                tracing::info!(
                    applied = %applied,
                    tls_certificate = %if outcome.certificate_changed { "renewed" } else { "unchanged" },
                    workers_signalled = outcome.workers_signalled,
                    hibernate_signalled = outcome.hibernate_signalled,
                    "configuration reloaded"
                );
            }
            Err(e) => tracing::error!(
                // One log line (journald splits on newlines): the TOML
                // parser's message spans several.
                error = %e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "),
                "configuration reload refused; the running configuration stays in force"
            ),
        }
        super::systemd_notify::notify("READY=1");
    }

    /// Reads the file again and applies what can change without a restart.
    ///
    /// # Errors
    /// [`ReloadError`]; nothing has been applied then.
    pub fn reload(&mut self) -> Result<ReloadOutcome, ReloadError> {
        let new = match &self.path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        // Everything that can fail comes before anything is applied.
        let old_tree = to_tree(&self.running)?;
        let new_tree = to_tree(&new)?;
        let mut changed = Vec::new();
        changed_keys("", &old_tree, &new_tree, &mut changed);
        let (applied, restart_needed): (Vec<String>, Vec<String>) = changed.into_iter().partition(|k| is_live(k));
        let mut effective_tree = new_tree;
        for key in &restart_needed {
            set_key(&mut effective_tree, key, lookup(&old_tree, key).cloned());
        }
        let effective: Config = effective_tree.try_into().map_err(|e: toml::de::Error| ReloadError::Compare(e.to_string()))?;
        let log_changed = effective.log.level != self.running.log.level;
        if log_changed {
            tracing_subscriber::EnvFilter::try_new(&effective.log.level).map_err(|e| ReloadError::LogLevel {
                level: effective.log.level.clone(),
                reason: e.to_string(),
            })?;
        }
        let settings = super::serve_imap::imap_server_config(&effective)
            .map_err(|e| ReloadError::Compare(format!("{e:#}")))?
            .settings;
        let (cert, key) = (effective.tls_cert(), effective.tls_key());
        let tls = match &self.master {
            Some(_) => Some(load_server_config(&cert, &key).map_err(|source| ReloadError::Tls {
                cert: cert.clone(),
                key: key.clone(),
                source,
            })?),
            None => None,
        };
        let certificate = std::fs::read(&cert).unwrap_or_default();
        if let Some(path) = &self.worker_config {
            write_worker_config(path, &effective)?;
        }

        // Apply (nothing below fails the reload).
        let mut applied = applied;
        if log_changed {
            if let Err(e) = super::logging::set_level(&effective.log.level) {
                tracing::warn!(error = %e, "configuration reload: log.level not applied");
                applied.retain(|key| key != "log.level");
            }
        }
        let mut workers_signalled = 0;
        if let Some(master) = &self.master {
            master.apply_settings(&settings);
            if let Some(tls) = tls {
                master.replace_tls(tls);
            }
            workers_signalled = master.signal_workers();
        }
        let hibernate_signalled = if log_changed { self.hibernate.signal_reload() } else { 0 };
        let certificate_changed = certificate != self.certificate;
        self.certificate = certificate;
        self.running = effective;
        Ok(ReloadOutcome { applied, restart_needed, certificate_changed, workers_signalled, hibernate_signalled })
    }
}

/// Writes the configuration the IMAP workers read (private, atomically).
///
/// # Errors
/// [`ReloadError::WorkerConfig`].
pub fn write_worker_config(path: &Path, config: &Config) -> Result<(), ReloadError> {
    let text = toml::to_string(config).map_err(|e| ReloadError::WorkerConfig(e.to_string()))?;
    super::first_run::write_file(path, text.as_bytes()).map_err(|e| ReloadError::WorkerConfig(format!("{e:#}")))
}

fn to_tree(config: &Config) -> Result<toml::Value, ReloadError> {
    toml::Value::try_from(config).map_err(|e| ReloadError::Compare(e.to_string()))
}

fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|live| key == *live || (live.ends_with('.') && key.starts_with(live)))
}

/// Appends the dotted keys whose values differ between `old` and `new`
/// (tables are compared key by key, anything else as a whole).
fn changed_keys(prefix: &str, old: &toml::Value, new: &toml::Value, out: &mut Vec<String>) {
    match (old, new) {
        (toml::Value::Table(old), toml::Value::Table(new)) => {
            let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
            keys.sort();
            keys.dedup();
            let missing = toml::Value::Table(toml::Table::new());
            for key in keys {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                match (old.get(key), new.get(key)) {
                    (Some(a), Some(b)) => changed_keys(&path, a, b, out),
                    (Some(a @ toml::Value::Table(_)), None) => changed_keys(&path, a, &missing, out),
                    (None, Some(b @ toml::Value::Table(_))) => changed_keys(&path, &missing, b, out),
                    _ => out.push(path),
                }
            }
        }
        (a, b) if a == b => {}
        _ => out.push(prefix.to_string()),
    }
}

fn lookup<'a>(tree: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    key.split('.').try_fold(tree, |node, part| node.get(part))
}

/// Sets (or with `None` removes) the value at dotted `key`, creating tables.
fn set_key(tree: &mut toml::Value, key: &str, value: Option<toml::Value>) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut node = tree;
    for part in parts {
        let Some(table) = node.as_table_mut() else { return };
        node = table.entry(part).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    let Some(table) = node.as_table_mut() else { return };
    match value {
        Some(v) => {
            table.insert(last.to_string(), v);
        }
        None => {
            table.remove(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_split_into_live_and_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.log.level = "debug".into();
        new.imap.max_connections_per_ip = 3;
        new.imap.listen = "127.0.0.1:9999".into();
        new.imap.workers = 7;
        let (a, b) = (to_tree(&old).unwrap(), to_tree(&new).unwrap());
        let mut changed = Vec::new();
        changed_keys("", &a, &b, &mut changed);
        assert_eq!(changed, ["imap.listen", "imap.max_connections_per_ip", "imap.workers", "log.level"]);
        let restart: Vec<&String> = changed.iter().filter(|k| !is_live(k)).collect();
        assert_eq!(restart, ["imap.listen", "imap.workers"]);
        let mut effective = b;
        for key in &restart {
            set_key(&mut effective, key, lookup(&a, key).cloned());
        }
        let effective: Config = effective.try_into().unwrap();
        assert_eq!(effective.imap.listen, old.imap.listen);
        assert_eq!(effective.imap.workers, old.imap.workers);
        assert_eq!(effective.imap.max_connections_per_ip, 3);
        assert_eq!(effective.log.level, "debug");
    }
}
