//! The `[imap]` section of the configuration ([`ImapSettings`], what the
//! config file says) and the resolved settings the master and workers run
//! with ([`ImapServerConfig`]: parsed listen addresses plus the TLS pair).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A value of the `[imap]` section that makes no sense.
#[derive(Debug, thiserror::Error)]
#[error("invalid config value {key}: {reason}")]
pub struct ImapSettingsError {
    /// The dotted key, e.g. `imap.workers`.
    pub key: &'static str,
    /// Why it is refused.
    pub reason: String,
}

/// `[imap]`: listeners, workers and limits, as written in the config file.
/// Every field has a default suitable for a non-root first run on localhost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapSettings {
    /// Plain-text (STARTTLS) listener address; empty disables it.
    pub listen: String,
    /// Implicit-TLS listener address; empty disables it.
    pub listen_tls: String,
    /// Number of IMAP worker processes serving logged-in sessions.
    pub workers: usize,
    /// Longest command line accepted, in bytes (literals not counted).
    pub max_line_length: usize,
    /// Largest literal (e.g. an APPENDed message) accepted, in bytes.
    pub max_literal_size: u64,
    /// Seconds a client may stay unauthenticated before `* BYE`.
    pub prelogin_timeout_secs: u64,
    /// Seconds a client may stay in IDLE before `* BYE` (RFC 2177: at most 1800).
    pub idle_timeout_secs: u64,
    /// Seconds an authenticated session may stay silent outside IDLE before `* BYE`.
    pub autologout_secs: u64,
    /// Most simultaneous connections from one IP address (0 = unlimited).
    pub max_connections_per_ip: usize,
    /// Most simultaneous sessions of one user (0 = unlimited).
    pub max_sessions_per_user: usize,
    /// Delay of the answer to the first failed login from an IP, in ms; doubles per further failure.
    pub login_failure_delay_ms: u64,
    /// Upper bound of the failed-login delay, in ms.
    pub login_failure_delay_max_ms: u64,
    /// Allow LOGIN / AUTHENTICATE PLAIN on unencrypted connections.
    pub allow_plaintext_auth: bool,
    /// Seconds between counter log lines (0 = only on SIGUSR1 and at shutdown).
    pub counters_interval_secs: u64,
    /// Mailboxes created and subscribed at login when missing (SPECIAL-USE
    /// attributes follow from the names); empty creates none.
    pub auto_mailboxes: Vec<String>,
}

impl Default for ImapSettings {
    fn default() -> Self {
        ImapSettings {
            listen: "127.0.0.1:1143".into(),
            listen_tls: "127.0.0.1:1993".into(),
            workers: 2,
            max_line_length: 64 * 1024,
            max_literal_size: 64 * 1024 * 1024,
            prelogin_timeout_secs: 60,
            idle_timeout_secs: 30 * 60,
            autologout_secs: 30 * 60,
            max_connections_per_ip: 100,
            max_sessions_per_user: 50,
            login_failure_delay_ms: 500,
            login_failure_delay_max_ms: 15_000,
            allow_plaintext_auth: true,
            counters_interval_secs: 300,
            auto_mailboxes: ["Drafts", "Sent", "Trash", "Junk"].map(String::from).to_vec(),
        }
    }
}

impl ImapSettings {
    /// Checks values serde cannot.
    ///
    /// # Errors
    /// [`ImapSettingsError`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ImapSettingsError> {
        let invalid = |key, reason: &str| Err(ImapSettingsError { key, reason: reason.to_string() });
        for (key, value) in [("imap.listen", &self.listen), ("imap.listen_tls", &self.listen_tls)] {
            parse_listen(key, value)?;
        }
        if self.workers == 0 || self.workers > 256 {
            return invalid("imap.workers", "must be between 1 and 256");
        }
        if self.max_line_length < 1024 {
            return invalid("imap.max_line_length", "must be at least 1024");
        }
        if self.max_literal_size == 0 || self.max_literal_size > u64::from(u32::MAX) {
            return invalid("imap.max_literal_size", "must be between 1 and 4294967295");
        }
        for name in &self.auto_mailboxes {
            match storage_hooks::mailbox_name::MailboxName::parse(name) {
                Ok(parsed) if !parsed.is_inbox() => {}
                _ => return invalid("imap.auto_mailboxes", &format!("{name:?} is not a mailbox name other than INBOX")),
            }
        }
        if self.prelogin_timeout_secs == 0 || self.idle_timeout_secs == 0 || self.autologout_secs == 0 {
            return invalid("imap timeouts", "prelogin_timeout_secs, idle_timeout_secs and autologout_secs must be > 0");
        }
        Ok(())
    }

    /// The pre-login timeout as a [`Duration`].
    pub fn prelogin_timeout(&self) -> Duration {
        Duration::from_secs(self.prelogin_timeout_secs)
    }

    /// The IDLE timeout as a [`Duration`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The inactivity timeout for authenticated sessions as a [`Duration`].
    pub fn autologout(&self) -> Duration {
        Duration::from_secs(self.autologout_secs)
    }
}

/// An empty value disables the listener; anything else must be `IP:port`.
fn parse_listen(key: &'static str, value: &str) -> Result<Vec<SocketAddr>, ImapSettingsError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value.parse().map(|a| vec![a]).map_err(|_| ImapSettingsError {
        key,
        reason: format!("{value:?} is not an IP:port address such as 127.0.0.1:1143"),
    })
}

/// The settings the master and its workers run with: the `[imap]` section
/// with its listen addresses parsed, plus the TLS pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapServerConfig {
    /// Plain-text listeners (STARTTLS offered when TLS is configured).
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners (IMAPS).
    pub listen_tls: Vec<SocketAddr>,
    /// PEM certificate chain; `None` disables TLS (no STARTTLS, no IMAPS).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Workers, limits and timeouts.
    pub settings: ImapSettings,
    /// Threads verifying passwords in the master (0 = one per core); from
    /// `[auth] verify_threads`.
    pub verify_threads: usize,
    /// How long a stopping server lets commands in progress finish before
    /// every session gets `* BYE`; from `[server] shutdown_grace_secs`.
    pub shutdown_grace: std::time::Duration,
    /// Where the master serves `dormouse who` / `dormouse kick`
    /// ([`super::admin`]); `None`: nowhere.
    pub admin_socket: Option<PathBuf>,
    /// Sockets of the hibernate processes, which the master watches for
    /// the end of parked sessions (module `hibernate_watch`).
    pub hibernate_sockets: Vec<PathBuf>,
}

impl Default for ImapServerConfig {
    fn default() -> Self {
        Self::new(ImapSettings::default(), None).expect("the default listen addresses parse")
    }
}

impl ImapServerConfig {
    /// Resolves `settings` with an optional `(certificate, key)` pair.
    ///
    /// # Errors
    /// [`ImapSettingsError`] for a bad value (see [`ImapSettings::validate`]).
    pub fn new(settings: ImapSettings, tls: Option<(PathBuf, PathBuf)>) -> Result<Self, ImapSettingsError> {
        settings.validate()?;
        let (tls_cert, tls_key) = tls.map_or((None, None), |(c, k)| (Some(c), Some(k)));
        Ok(Self {
            listen: parse_listen("imap.listen", &settings.listen)?,
            listen_tls: parse_listen("imap.listen_tls", &settings.listen_tls)?,
            tls_cert,
            tls_key,
            settings,
            verify_threads: 0,
            shutdown_grace: std::time::Duration::from_secs(5),
            admin_socket: None,
            hibernate_sockets: Vec::new(),
        })
    }

    /// True if a certificate and key are configured.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_rfcs_and_first_run() {
        let c = ImapServerConfig::default();
        assert_eq!(c.settings.idle_timeout(), Duration::from_secs(1800));
        assert!(c.settings.autologout() >= Duration::from_secs(1800), "RFC 3501 5.4: at least 30 minutes");
        assert_eq!(c.settings.prelogin_timeout(), Duration::from_secs(60));
        assert_eq!(c.listen[0].port(), 1143);
        assert_eq!(c.listen_tls[0].port(), 1993);
        assert!(!c.tls_enabled());
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = ImapSettings { listen: "localhost".into(), ..ImapSettings::default() };
        assert_eq!(ImapServerConfig::new(bad, None).unwrap_err().key, "imap.listen");
        let bad = ImapSettings { workers: 0, ..ImapSettings::default() };
        assert_eq!(bad.validate().unwrap_err().key, "imap.workers");
        let off = ImapSettings { listen: String::new(), ..ImapSettings::default() };
        assert!(ImapServerConfig::new(off, None).unwrap().listen.is_empty());
    }
}
