//! The `[imap]` section of the configuration: listeners, TLS, workers, limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of the IMAP master and its workers. Every field has a default
/// suitable for a non-root first run on localhost.
/// The root binary builds it from its `[imap]` and `[tls]` config sections.
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
    /// Number of IMAP worker processes.
    pub workers: usize,
    /// Longest command line accepted, in bytes (excluding literals).
    pub max_line_length: usize,
    /// Largest literal accepted (e.g. an APPEND), in bytes.
    pub max_literal_size: u64,
    /// Seconds a client may stay unauthenticated before `* BYE`.
    pub prelogin_timeout_secs: u64,
    /// Seconds a client may stay in IDLE before `* BYE` (RFC 2177: at most 30 minutes).
    pub idle_timeout_secs: u64,
    /// Seconds an authenticated, non-IDLE session may stay silent before `* BYE`.
    pub autologout_secs: u64,
    /// Most simultaneous connections from one IP address (0 = unlimited).
    pub max_connections_per_ip: usize,
    /// Most simultaneous sessions of one user (0 = unlimited).
    pub max_sessions_per_user: usize,
    /// Delay after the first failed login from an IP, in milliseconds; it
    /// doubles with each further failure from that IP.
    pub login_failure_delay_ms: u64,
    /// Upper bound of the failed-login delay, in milliseconds.
    pub login_failure_delay_max_ms: u64,
    /// Allow LOGIN / AUTHENTICATE PLAIN without TLS.
    pub allow_plaintext_auth: bool,
    /// Seconds between periodic counter log lines (0 = only on SIGUSR1 and shutdown).
    pub counters_interval_secs: u64,
}

impl Default for ImapServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1143))],
            listen_tls: vec![SocketAddr::from(([127, 0, 0, 1], 1993))],
            tls_cert: None,
            tls_key: None,
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
        }
    }
}

impl ImapServerConfig {
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
        assert_eq!(c.idle_timeout(), Duration::from_secs(1800));
        assert!(c.autologout() >= Duration::from_secs(1800), "RFC 3501 5.4: at least 30 minutes");
        assert_eq!(c.prelogin_timeout(), Duration::from_secs(60));
        assert_eq!(c.listen[0].port(), 1143);
        assert_eq!(c.listen_tls[0].port(), 1993);
        assert!(!c.tls_enabled());
    }
}
