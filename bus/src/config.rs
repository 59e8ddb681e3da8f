//! The `[bus]` configuration section.
//!
//! ```toml
//! [bus]
//! transport = "unix"            # or "nats"
//! queue_capacity = 65536        # per-subscriber queue (and NATS publish queue)
//!
//! [bus.unix]
//! dir = "/run/dormouse/bus"     # private to the server's user (mode 0700); required
//! max_frame_bytes = 61440
//! coalesce_us = 100             # batch events closer together than this
//! interest_watch = false        # publishers track interest files with inotify
//!
//! [bus.nats]
//! url = "nats://127.0.0.1:4222"
//! user = "dormouse"             # or token = "...", nkey_seed = "SU...", credentials_file = "..."
//! password = "secret"
//! tls_ca = "/etc/dormouse/nats-ca.pem"
//! require_tls = true
//! subject_prefix = "dormouse.v1.events"
//! subscription_mode = "per-user"  # or "wildcard" (one subscription, local filter)
//!
//! [bus.nats.jetstream]
//! enabled = true
//! stream = "DORMOUSE_EVENTS"
//! max_age_secs = 86400
//! max_bytes = 1073741824
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::BusError;

/// Which transport carries the events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Local UNIX datagram sockets in a private folder (no broker).
    #[default]
    Unix,
    /// A NATS server (optionally with a JetStream stream).
    Nats,
}

/// The whole bus configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// The transport in use.
    pub transport: Transport,
    /// Capacity of each subscriber's delivery queue and of the NATS publish queue.
    pub queue_capacity: usize,
    /// UNIX-datagram settings.
    pub unix: UnixConfig,
    /// NATS settings.
    pub nats: NatsConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self { transport: Transport::Unix, queue_capacity: 65_536, unix: UnixConfig::default(), nats: NatsConfig::default() }
    }
}

impl BusConfig {
    /// A UNIX-datagram configuration with the bus folder `run_dir/bus`.
    pub fn unix_in_run_dir(run_dir: &Path) -> Self {
        Self { unix: UnixConfig::in_run_dir(run_dir), ..Self::default() }
    }

    /// Checks values that serde cannot.
    ///
    /// # Errors
    /// [`BusError::Config`] naming the bad setting.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.queue_capacity == 0 {
            return Err(BusError::Config("queue_capacity must be at least 1".into()));
        }
        if self.transport == Transport::Unix && self.unix.dir.as_os_str().is_empty() {
            return Err(BusError::Config("unix.dir must be set for the unix transport".into()));
        }
        if !(1024..=200 * 1024).contains(&self.unix.max_frame_bytes) {
            return Err(BusError::Config("unix.max_frame_bytes must be between 1024 and 204800".into()));
        }
        if self.unix.coalesce_us > 10_000 {
            return Err(BusError::Config("unix.coalesce_us must be at most 10000".into()));
        }
        let prefix = &self.nats.subject_prefix;
        if prefix.is_empty()
            || prefix.split('.').any(|t| t.is_empty() || t.contains(['*', '>']) || t.contains(char::is_whitespace))
        {
            return Err(BusError::Config(format!("nats.subject_prefix {prefix:?} is not a literal NATS subject")));
        }
        if self.nats.tls_cert.is_some() != self.nats.tls_key.is_some() {
            return Err(BusError::Config("nats.tls_cert and nats.tls_key must be given together".into()));
        }
        let js = &self.nats.jetstream;
        if js.enabled && (js.stream.is_empty() || js.stream.contains(['.', ' ', '*', '>'])) {
            return Err(BusError::Config(format!("nats.jetstream.stream {:?} is not a valid stream name", js.stream)));
        }
        Ok(())
    }
}

/// Settings of the UNIX-datagram transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnixConfig {
    /// The bus folder; created with mode 0700 if missing. No default (empty):
    /// the application chooses it, e.g. with [`UnixConfig::in_run_dir`].
    pub dir: PathBuf,
    /// Largest frame sent; bigger events travel as a reference record.
    pub max_frame_bytes: usize,
    /// An event following the previous frame to a receiver within this many
    /// microseconds waits (at most this long) and leaves with the events
    /// after it in one frame; 0 sends every event at once.
    pub coalesce_us: u64,
    /// Publishers keep a copy of every receiver's interest bitmap and learn
    /// of changes through an inotify watch on the bus folder, instead of
    /// reading one byte per event and receiver (~0.6 us each). Off by
    /// default: every publishing process (each `deliver`, worker and
    /// hibernate process) would take one inotify instance, and the per-user
    /// default of 128 instances is also what the Maildir watchers need.
    pub interest_watch: bool,
}

impl Default for UnixConfig {
    fn default() -> Self {
        Self { dir: PathBuf::new(), max_frame_bytes: 60 * 1024, coalesce_us: 100, interest_watch: false }
    }
}

impl UnixConfig {
    /// Settings with the bus folder `run_dir/bus`.
    pub fn in_run_dir(run_dir: &Path) -> Self {
        Self { dir: run_dir.join("bus"), ..Self::default() }
    }
}

/// Settings of the NATS transport. Secrets are never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma separated, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// User name for user/password authentication.
    pub user: Option<String>,
    /// Password for user/password authentication.
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// NKey seed (`SU...`).
    pub nkey_seed: Option<String>,
    /// A `.creds` file (JWT + NKey).
    pub credentials_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk to the server without TLS.
    pub require_tls: bool,
    /// First subject tokens; events go to `<subject_prefix>.<user token>`.
    pub subject_prefix: String,
    /// Connection name shown by the server.
    pub client_name: String,
    /// How a subscriber asks the server for events.
    pub subscription_mode: SubscriptionMode,
    /// Optional JetStream stream.
    pub jetstream: JetStreamConfig,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            credentials_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            subject_prefix: "dormouse.v1.events".into(),
            client_name: "dormouse".into(),
            subscription_mode: SubscriptionMode::PerUser,
            jetstream: JetStreamConfig::default(),
        }
    }
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsConfig")
            .field("url", &crate::nats::redacted_url(&self.url))
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("nkey_seed", &hidden(&self.nkey_seed))
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("require_tls", &self.require_tls)
            .field("subject_prefix", &self.subject_prefix)
            .field("client_name", &self.client_name)
            .field("subscription_mode", &self.subscription_mode)
            .field("jetstream", &self.jetstream)
            .finish()
    }
}

/// How a NATS subscriber asks the server for events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionMode {
    /// One subscription per subscribed user: the server only ever sends a
    /// subscriber the users it asked for (about 5.3 KB of client memory per
    /// subscription with async-nats).
    #[default]
    PerUser,
    /// One wildcard subscription to `<subject_prefix>.>`, filtered locally
    /// like the UNIX transport: constant memory, but the process receives
    /// (and discards) every user's events, so give it only to trusted
    /// consumers.
    Wildcard,
}

/// Optional JetStream stream capturing every event subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamConfig {
    /// Create (if missing) a stream bound to `<subject_prefix>.>`.
    pub enabled: bool,
    /// Stream name.
    pub stream: String,
    /// Maximum age of stored events in seconds (0 = unlimited).
    pub max_age_secs: u64,
    /// Maximum bytes stored (-1 = unlimited).
    pub max_bytes: i64,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self { enabled: false, stream: "DORMOUSE_EVENTS".into(), max_age_secs: 86_400, max_bytes: 1 << 30 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_toml_and_redacts_secrets() {
        let cfg: BusConfig = toml::from_str(
            r#"
            transport = "nats"
            [unix]
            dir = "/tmp/x/bus"
            [nats]
            url = "nats://127.0.0.1:4333"
            subscription_mode = "wildcard"
            user = "u"
            password = "hunter2"
            [nats.jetstream]
            enabled = true
            max_age_secs = 60
            "#,
        )
        .unwrap();
        assert_eq!(cfg.transport, Transport::Nats);
        assert_eq!(cfg.unix.dir, PathBuf::from("/tmp/x/bus"));
        assert_eq!(cfg.nats.password.as_deref(), Some("hunter2"));
        assert!(cfg.nats.jetstream.enabled);
        assert_eq!(cfg.nats.subscription_mode, SubscriptionMode::Wildcard);
        assert_eq!(cfg.nats.jetstream.stream, "DORMOUSE_EVENTS");
        cfg.validate().unwrap();
        let dbg = format!("{:?}", cfg.nats);
        assert!(!dbg.contains("hunter2"), "{dbg}");
        let back: BusConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(toml::from_str::<BusConfig>("transport = \"carrier-pigeon\"").is_err());
        assert!(toml::from_str::<BusConfig>("nope = 1").is_err());
        let mut cfg = BusConfig::default();
        cfg.nats.subject_prefix = "a.*".into();
        assert!(cfg.validate().is_err());
        let cfg = BusConfig { queue_capacity: 0, ..BusConfig::unix_in_run_dir(Path::new("/run/x")) };
        assert!(cfg.validate().is_err());
        let err = BusConfig::default().validate().unwrap_err();
        assert!(err.to_string().contains("unix.dir"), "{err}");
        BusConfig { transport: Transport::Nats, ..BusConfig::default() }.validate().unwrap();
        let mut cfg = BusConfig::unix_in_run_dir(Path::new("/run/x"));
        assert_eq!(cfg.unix.dir, PathBuf::from("/run/x/bus"));
        cfg.unix.max_frame_bytes = 10;
        assert!(cfg.validate().is_err());
    }
}
