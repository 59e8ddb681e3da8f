//! The TOML configuration file: sections, documented defaults, and loading.
//!
//! Every field has a default, so an empty file (or no file at all) is a valid
//! configuration. The commented example with all defaults is
//! [`EXAMPLE_CONFIG`] (`examples/dormouse.toml`, printed by
//! `dormouse config --example`); a test checks it parses and equals
//! [`Config::default`]. Unknown keys are errors, so a typo never silently
//! falls back to a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The commented example configuration, showing every default.
pub const EXAMPLE_CONFIG: &str = include_str!("../examples/dormouse.toml");

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "DORMOUSE_CONFIG";

/// Errors loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown/ill-typed keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said (with line and column).
        message: String,
    },
    /// A value parsed but makes no sense (e.g. a zero size limit).
    #[error("invalid config value {key}: {reason}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// State directory: passwd file, mail homes, TLS pair.
    pub data_dir: PathBuf,
    /// Runtime sockets; empty means `<data_dir>/run`.
    pub run_dir: PathBuf,
    /// The server process as a whole: shutdown.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// The passwd-file user database.
    pub users: UsersConfig,
    /// Password verification: cost caps, verification threads.
    pub auth: AuthConfig,
    /// The LMTP listener and delivery limits.
    pub lmtp: LmtpConfig,
    /// IMAP listeners.
    pub imap: ImapConfig,
    /// TLS certificate and key.
    pub tls: TlsConfig,
    /// Event bus between the processes: transport, UNIX and NATS settings
    /// (`[bus.nats]` is also the connection of `[push.nats]`).
    pub bus: bus::BusConfig,
    /// IDLE hibernation timing.
    pub hibernate: HibernateConfig,
    /// Where change events come from (store hooks, Maildir watcher).
    pub storage: StorageConfig,
    /// Events for outside consumers: NATS/JetStream, webhooks, Web Push.
    pub push: push::PushConfig,
    /// The Prometheus/OpenMetrics endpoint.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the Prometheus/OpenMetrics endpoint of `serve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// HTTP listen address for `GET /metrics`; empty disables it.
    pub listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("dormouse-data"),
            run_dir: PathBuf::new(),
            server: ServerConfig::default(),
            log: LogConfig::default(),
            users: UsersConfig::default(),
            auth: AuthConfig::default(),
            lmtp: LmtpConfig::default(),
            imap: ImapConfig::default(),
            tls: TlsConfig::default(),
            bus: bus::BusConfig::default(),
            hibernate: HibernateConfig::default(),
            storage: StorageConfig::default(),
            push: push::PushConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// `[server]`: the `serve` process as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// On SIGTERM/SIGINT, how long commands in progress may take to finish
    /// before every session gets `* BYE` and the processes exit.
    pub shutdown_grace_secs: u64,
    /// Started as root, `serve` becomes this system user (keeping only
    /// `CAP_NET_BIND_SERVICE` for ports below 1024) before it touches the
    /// data directory; empty: stay as started (an INFO line says so when that is root).
    /// Linux only.
    pub user: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { shutdown_grace_secs: 5, user: String::new() }
    }
}

impl ServerConfig {
    /// [`ServerConfig::shutdown_grace_secs`] as a duration.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing-subscriber filter used when `RUST_LOG` is unset.
    pub level: String,
    /// Line format on stderr.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

/// `log.format`: how each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text; ANSI colours only when stderr is a terminal.
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log shippers.
    Json,
}

/// `[users]`: the passwd-file user database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsersConfig {
    /// Dovecot-format passwd file; empty means `<data_dir>/passwd`.
    pub passwd_file: PathBuf,
    /// Maildir location template (`%h`, `%u`, `%n`, `%d`, `~/`).
    pub mail_location: String,
    /// Scheme for `user add` / `user hash` (ARGON2ID, SHA512-CRYPT, BLF-CRYPT, PLAIN).
    pub default_scheme: String,
}

impl Default for UsersConfig {
    fn default() -> Self {
        UsersConfig {
            passwd_file: PathBuf::new(),
            mail_location: "%h/Maildir".into(),
            default_scheme: "ARGON2ID".into(),
        }
    }
}

/// `[auth]`: password verification in the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Largest Argon2 memory cost (`m=`, KiB) a stored hash may ask for.
    pub argon2_max_memory_kib: u32,
    /// Largest Argon2 time cost (`t=`).
    pub argon2_max_time_cost: u32,
    /// Largest Argon2 parallelism (`p=`).
    pub argon2_max_parallelism: u32,
    /// Largest bcrypt cost.
    pub bcrypt_max_cost: u32,
    /// Largest SHA-crypt `rounds=`.
    pub sha_crypt_max_rounds: u32,
    /// Threads verifying passwords; 0 = one per CPU core.
    pub verify_threads: usize,
    /// Seconds a successful login is remembered (as a keyed hash, never the
    /// password) so the same user and password log in again without a full
    /// hash verification, e.g. in a reconnect storm; 0 = off.
    pub verified_cache_secs: u64,
    /// Most users remembered by that cache.
    pub verified_cache_users: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let caps = imap::auth::CostLimits::default();
        AuthConfig {
            argon2_max_memory_kib: caps.argon2_max_memory_kib,
            argon2_max_time_cost: caps.argon2_max_time_cost,
            argon2_max_parallelism: caps.argon2_max_parallelism,
            bcrypt_max_cost: caps.bcrypt_max_cost,
            sha_crypt_max_rounds: caps.sha_crypt_max_rounds,
            verify_threads: 0,
            verified_cache_secs: 300,
            verified_cache_users: 200_000,
        }
    }
}

impl AuthConfig {
    /// The cost caps as the user database takes them.
    pub fn cost_limits(&self) -> imap::auth::CostLimits {
        imap::auth::CostLimits {
            argon2_max_memory_kib: self.argon2_max_memory_kib,
            argon2_max_time_cost: self.argon2_max_time_cost,
            argon2_max_parallelism: self.argon2_max_parallelism,
            bcrypt_max_cost: self.bcrypt_max_cost,
            sha_crypt_max_rounds: self.sha_crypt_max_rounds,
        }
    }
}

/// `[lmtp]`: the LMTP listener and delivery limits (also used by `deliver`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmtpConfig {
    /// TCP listen address; empty disables TCP.
    pub listen: String,
    /// UNIX socket path; empty means none.
    pub unix_socket: PathBuf,
    /// Largest accepted message, in bytes.
    pub max_message_size: u64,
    /// Most recipients per transaction.
    pub max_recipients: usize,
    /// Idle timeout per client, in seconds.
    pub timeout_secs: u64,
    /// Accepted recipient domains; empty accepts any.
    pub domains: Vec<String>,
    /// Host name for the greeting and Received header; empty: system host name.
    pub hostname: String,
    /// A bare LF or CR in message data: `store` it or `reject` the message.
    pub bare_line_endings: imap::lmtp::BareLineEndings,
}

impl Default for LmtpConfig {
    fn default() -> Self {
        LmtpConfig {
            listen: "127.0.0.1:24".into(),
            unix_socket: PathBuf::new(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            timeout_secs: 300,
            domains: Vec::new(),
            hostname: String::new(),
            bare_line_endings: imap::lmtp::BareLineEndings::Store,
        }
    }
}

/// `[imap]`: IMAP listeners, workers and limits (defined by the IMAP server).
pub type ImapConfig = imap::server::ImapSettings;

/// `[tls]`: certificate and key paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; empty means `<data_dir>/tls/cert.pem`.
    pub cert: PathBuf,
    /// PEM private key; empty means `<data_dir>/tls/key.pem`.
    pub key: PathBuf,
    /// Kernel TLS: "auto" (use it where the kernel offers it), "off", or
    /// "on" (startup and `config check` fail without it).
    pub kernel_tls: imap::server::ktls::KernelTlsMode,
}

/// `[hibernate]`: IDLE hibernation timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HibernateConfig {
    /// Seconds in IDLE before hand-over to the hibernate process.
    pub timeout_secs: u64,
    /// Seconds without commands after which a session counts as idle.
    pub idle_after_secs: u64,
    /// How many hibernate processes: `"auto"` (start one, add another
    /// whenever every running one is full, up to
    /// [`AUTO_MAX_HIBERNATE_PROCESSES`]), a fixed number, or 0 = none
    /// (sessions never hibernate).
    pub processes: HibernateProcesses,
    /// Most sessions one hibernate process holds; 0 = its descriptor limit
    /// (soft `RLIMIT_NOFILE`) minus a reserve of 256.
    pub max_sessions_per_process: usize,
    /// Seconds between `* OK Still here` lines to hibernated IDLE clients.
    pub keepalive_secs: u64,
}

impl Default for HibernateConfig {
    fn default() -> Self {
        HibernateConfig {
            timeout_secs: 10,
            idle_after_secs: 60,
            processes: HibernateProcesses::Auto,
            max_sessions_per_process: 0,
            keepalive_secs: 120,
        }
    }
}

/// Most hibernate processes `processes = "auto"` starts.
pub const AUTO_MAX_HIBERNATE_PROCESSES: usize = 64;

/// `hibernate.processes`: `"auto"` or a fixed count (0 = off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ProcessesValue", into = "ProcessesValue")]
pub enum HibernateProcesses {
    /// One process at start, one more whenever all running ones are full.
    Auto,
    /// Exactly this many (0 = hibernation off).
    Fixed(usize),
}

impl HibernateProcesses {
    /// Socket slots the workers know (`hibernate-0.sock` ..): the fixed
    /// count, or [`AUTO_MAX_HIBERNATE_PROCESSES`] in auto mode.
    pub fn slots(self) -> usize {
        match self {
            HibernateProcesses::Auto => AUTO_MAX_HIBERNATE_PROCESSES,
            HibernateProcesses::Fixed(n) => n,
        }
    }
}

/// The TOML form of [`HibernateProcesses`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum ProcessesValue {
    Count(usize),
    Word(String),
}

impl TryFrom<ProcessesValue> for HibernateProcesses {
    type Error = String;
    fn try_from(v: ProcessesValue) -> Result<Self, String> {
        match v {
            ProcessesValue::Count(n) => Ok(HibernateProcesses::Fixed(n)),
            ProcessesValue::Word(w) if w == "auto" => Ok(HibernateProcesses::Auto),
            ProcessesValue::Word(w) => Err(format!("hibernate.processes: expected \"auto\" or a number, got {w:?}")),
        }
    }
}

impl From<HibernateProcesses> for ProcessesValue {
    fn from(p: HibernateProcesses) -> Self {
        match p {
            HibernateProcesses::Auto => ProcessesValue::Word("auto".into()),
            HibernateProcesses::Fixed(n) => ProcessesValue::Count(n),
        }
    }
}

/// What [`Config::redacted`] shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// True if one dotted NATS subject prefix equals the other or starts with
/// it token-wise (`a.b` and `a.b.c` overlap, `a.b` and `a.bc` do not).
fn subjects_overlap(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    long == short || long.strip_prefix(short).is_some_and(|rest| rest.starts_with('.'))
}

fn or_default(value: &Path, default: impl FnOnce() -> PathBuf) -> PathBuf {
    if value.as_os_str().is_empty() {
        default()
    } else {
        value.to_path_buf()
    }
}

impl Config {
    /// Parses TOML text; `origin` names the source in error messages.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML or unknown keys,
    /// [`ConfigError::Invalid`] for values that make no sense.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_path_buf(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] plus the errors of [`Config::parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Loads `explicit` if given, else the file named by `DORMOUSE_CONFIG`,
    /// else returns the defaults. Returns the path used, if any.
    ///
    /// # Errors
    /// Those of [`Config::load`].
    pub fn load_or_default(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from));
        match path {
            Some(path) => Ok((Self::load(&path)?, Some(path))),
            None => Ok((Config::default(), None)),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.to_string() });
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.lmtp.max_message_size == 0 {
            return invalid("lmtp.max_message_size", "must be greater than 0");
        }
        if self.lmtp.max_recipients == 0 {
            return invalid("lmtp.max_recipients", "must be greater than 0");
        }
        if self.lmtp.timeout_secs == 0 {
            return invalid("lmtp.timeout_secs", "must be greater than 0");
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid("metrics.listen", "must be an IP:port address such as 127.0.0.1:9143");
        }
        if !self.lmtp.listen.is_empty() && self.lmtp.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid("lmtp.listen", "must be an IP:port address such as 127.0.0.1:24");
        }
        if let Err(e) = self.imap.validate() {
            return Err(ConfigError::Invalid { key: e.key, reason: e.reason });
        }
        if self.storage.change_source == ChangeSource::Inotify {
            return invalid(
                "storage.change_source",
                "\"inotify\" alone would hide our own writes (the watcher reports only changes the store did not make); use \"both\"",
            );
        }
        if let Err(e) = self.push.validate() {
            return Err(ConfigError::Invalid { key: "push", reason: e.to_string() });
        }
        if let Err(e) = self.bus_resolved().validate() {
            return Err(ConfigError::Invalid { key: "bus", reason: e.to_string() });
        }
        if self.push.nats.enabled && subjects_overlap(&self.bus.nats.subject_prefix, &self.push.nats.subject_prefix) {
            return invalid(
                "push.nats.subject_prefix",
                "must not equal, contain or lie under bus.nats.subject_prefix (bus subscribers and streams would receive both)",
            );
        }
        if self.storage.poll_interval_secs == 0 {
            return invalid("storage.poll_interval_secs", "must be greater than 0");
        }
        if self.storage.load_cache_mailboxes == 0 {
            return invalid("storage.load_cache_mailboxes", "must be greater than 0");
        }
        if self.storage.load_cache_idle_secs == 0 {
            return invalid("storage.load_cache_idle_secs", "must be greater than 0");
        }
        let a = &self.auth;
        for (key, value) in [
            ("auth.argon2_max_memory_kib", a.argon2_max_memory_kib),
            ("auth.argon2_max_time_cost", a.argon2_max_time_cost),
            ("auth.argon2_max_parallelism", a.argon2_max_parallelism),
            ("auth.bcrypt_max_cost", a.bcrypt_max_cost),
            ("auth.sha_crypt_max_rounds", a.sha_crypt_max_rounds),
        ] {
            if value == 0 {
                return invalid(key, "must be greater than 0 (0 would refuse every hash of that scheme)");
            }
        }
        if imap::auth::PasswordScheme::parse(&self.users.default_scheme).is_none() {
            return invalid("users.default_scheme", "must be ARGON2ID, SHA512-CRYPT, BLF-CRYPT or PLAIN");
        }
        if let Err(e) = imap::auth::MailLocation::parse(&self.users.mail_location) {
            return Err(ConfigError::Invalid { key: "users.mail_location", reason: e.to_string() });
        }
        Ok(())
    }

    /// The `[bus]` settings with an empty `bus.unix.dir` filled in as
    /// `<run_dir>/bus`.
    pub fn bus_resolved(&self) -> bus::BusConfig {
        let mut cfg = self.bus.clone();
        if cfg.unix.dir.as_os_str().is_empty() {
            cfg.unix.dir = self.run_dir().join("bus");
        }
        cfg
    }

    /// A copy for display (`dormouse config show`): passwords, tokens, key
    /// seeds, credentials in the NATS URL and webhook secrets replaced by
    /// `"<redacted>"`.
    pub fn redacted(&self) -> Config {
        let mut cfg = self.clone();
        let nats = &mut cfg.bus.nats;
        nats.url = bus::nats::redacted_url(&nats.url);
        for secret in [&mut nats.password, &mut nats.token, &mut nats.nkey_seed] {
            if secret.is_some() {
                *secret = Some(REDACTED.into());
            }
        }
        for endpoint in &mut cfg.push.relay.endpoints {
            endpoint.secret = REDACTED.into();
        }
        cfg
    }

    /// The run directory (`run_dir`, or `<data_dir>/run`).
    pub fn run_dir(&self) -> PathBuf {
        or_default(&self.run_dir, || self.data_dir.join("run"))
    }

    /// The push relay's state folder (`push.relay.state_dir`, or
    /// `<data_dir>/push`): registrations, dead letters, the VAPID key.
    pub fn push_state_dir(&self) -> PathBuf {
        or_default(&self.push.relay.state_dir, || self.data_dir.join("push"))
    }

    /// The passwd file (`users.passwd_file`, or `<data_dir>/passwd`).
    pub fn passwd_file(&self) -> PathBuf {
        or_default(&self.users.passwd_file, || self.data_dir.join("passwd"))
    }

    /// Directory under which `user add` creates home directories.
    pub fn homes_dir(&self) -> PathBuf {
        self.data_dir.join("home")
    }

    /// The TLS certificate path.
    pub fn tls_cert(&self) -> PathBuf {
        or_default(&self.tls.cert, || self.data_dir.join("tls").join("cert.pem"))
    }

    /// The TLS private key path.
    pub fn tls_key(&self) -> PathBuf {
        or_default(&self.tls.key, || self.data_dir.join("tls").join("key.pem"))
    }

    /// The LMTP UNIX socket, if configured.
    pub fn lmtp_unix_socket(&self) -> Option<&Path> {
        (!self.lmtp.unix_socket.as_os_str().is_empty()).then_some(self.lmtp.unix_socket.as_path())
    }
}

/// Where change events come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeSource {
    /// Only the store hooks: changes made by other programs are not announced.
    Hooks,
    /// Only the Maildir watcher (refused by validation, see `storage.change_source`).
    Inotify,
    /// Hooks for our own writes, the watcher for outside writers.
    #[default]
    Both,
}

/// `[storage]`: change events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `hooks`, `inotify` or `both`.
    pub change_source: ChangeSource,
    /// Stat-poll interval for users without inotify watches (watch limit reached).
    pub poll_interval_secs: u64,
    /// Most mailboxes each process keeps parsed in its load cache.
    pub load_cache_mailboxes: usize,
    /// Most messages over all mailboxes of a process's load cache.
    pub load_cache_messages: usize,
    /// Seconds after which an unused load-cache entry is dropped.
    pub load_cache_idle_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let cache = storage_hooks::load_cache::Limits::default();
        StorageConfig {
            change_source: ChangeSource::Both,
            poll_interval_secs: 30,
            load_cache_mailboxes: cache.max_mailboxes,
            load_cache_messages: cache.max_messages,
            load_cache_idle_secs: cache.idle.as_secs(),
        }
    }
}

impl StorageConfig {
    /// The load cache bounds these settings ask for.
    pub fn load_cache_limits(&self) -> storage_hooks::load_cache::Limits {
        storage_hooks::load_cache::Limits {
            max_messages: self.load_cache_messages,
            max_mailboxes: self.load_cache_mailboxes,
            idle: std::time::Duration::from_secs(self.load_cache_idle_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_and_equals_defaults() {
        let parsed = Config::parse(EXAMPLE_CONFIG, Path::new("examples/dormouse.toml")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn hibernate_processes_accepts_auto_and_numbers() {
        let parse = |v: &str| Config::parse(&format!("[hibernate]\nprocesses = {v}\n"), Path::new("x"));
        assert_eq!(parse("\"auto\"").unwrap().hibernate.processes, HibernateProcesses::Auto);
        assert_eq!(parse("3").unwrap().hibernate.processes, HibernateProcesses::Fixed(3));
        assert_eq!(parse("0").unwrap().hibernate.processes.slots(), 0);
        assert!(parse("\"many\"").is_err());
        let text = toml::to_string(&Config::default()).unwrap();
        assert_eq!(Config::parse(&text, Path::new("x")).unwrap(), Config::default());
    }

    #[test]
    fn load_cache_limits_come_from_storage() {
        let c = Config::parse(
            "[storage]\nload_cache_mailboxes = 8\nload_cache_messages = 1000\nload_cache_idle_secs = 5\n",
            Path::new("x"),
        )
        .unwrap();
        let l = c.storage.load_cache_limits();
        assert_eq!((l.max_mailboxes, l.max_messages, l.idle), (8, 1000, std::time::Duration::from_secs(5)));
        assert_eq!(Config::default().storage.load_cache_limits(), storage_hooks::load_cache::Limits::default());
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("", Path::new("x")).unwrap(), Config::default());
    }

    #[test]
    fn bare_line_endings_can_be_rejected() {
        let c = Config::parse("[lmtp]\nbare_line_endings = \"reject\"\n", Path::new("x")).unwrap();
        assert_eq!(c.lmtp.bare_line_endings, imap::lmtp::BareLineEndings::Reject);
        assert_eq!(Config::default().lmtp.bare_line_endings, imap::lmtp::BareLineEndings::Store);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::parse("[lmtp]\nmax_mesage_size = 5\n", Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("max_mesage_size"), "{err}");
    }

    #[test]
    fn nonsense_values_are_errors() {
        for text in [
            "[lmtp]\nmax_message_size = 0\n",
            "[lmtp]\nlisten = \"nowhere\"\n",
            "[lmtp]\nbare_line_endings = \"fix\"\n",
            "[users]\ndefault_scheme = \"MD5\"\n",
            "[users]\nmail_location = \"%q/Maildir\"\n",
            "[bus]\ntransport = \"carrier-pigeon\"\n",
            "[bus]\nnats_url = \"nats://127.0.0.1:4222\"\n",
            "[bus]\nqueue_capacity = 0\n",
            "[bus.nats]\nsubject_prefix = \"a.*\"\n",
            "[bus.nats]\nurl = \"nats://h:1\"\nsurprise = 1\n",
            "[push.nats]\nenabled = true\nsubject_prefix = \"dormouse.v1.events.push\"\n",
            "[push.nats]\nenabled = true\nsubject_prefix = \"dormouse.v1\"\n",
            "[push.nats]\nduplicate_window_secs = 0\n",
            "[push.nats]\nmax_age_secs = 60\nduplicate_window_secs = 120\n",
            "[storage]\nchange_source = \"inotify\"\n",
            "[storage]\nchange_source = \"fanotify\"\n",
            "[storage]\npoll_interval_secs = 0\n",
            "[storage]\nload_cache_mailboxes = 0\n",
            "[storage]\nload_cache_idle_secs = 0\n",
        ] {
            assert!(Config::parse(text, Path::new("x")).is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn bus_section_carries_the_bus_crate_settings() {
        let c = Config::parse(
            "data_dir = \"/srv/dm\"\n[bus]\ntransport = \"nats\"\nqueue_capacity = 10\n[bus.unix]\ncoalesce_us = 0\n\
             [bus.nats]\nurl = \"nats://10.0.0.1:4222,nats://x:hunter3@10.0.0.2\"\nuser = \"dm\"\npassword = \"hunter2\"\n\
             subscription_mode = \"wildcard\"\n[bus.nats.jetstream]\nenabled = true\n\
             [[push.relay.endpoints]]\nurl = \"https://hooks.example.org/x\"\nsecret = \"hunter4-long-enough-secret\"\n",
            Path::new("x"),
        )
        .unwrap();
        let b = c.bus_resolved();
        assert_eq!(b.transport, bus::Transport::Nats);
        assert_eq!((b.queue_capacity, b.unix.coalesce_us), (10, 0));
        assert_eq!(b.unix.dir, PathBuf::from("/srv/dm/run/bus"));
        assert_eq!(b.nats.url, "nats://10.0.0.1:4222,nats://x:hunter3@10.0.0.2");
        assert_eq!(b.nats.subscription_mode, bus::SubscriptionMode::Wildcard);
        assert!(b.nats.jetstream.enabled);
        // Secrets stay out of `config show` and of Debug output (logs).
        let shown = toml::to_string_pretty(&c.redacted()).unwrap();
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!shown.contains(secret) && shown.contains(REDACTED), "{shown}");
        }
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("hunter3"), "{debug}");
        assert_eq!(c.bus.nats.password.as_deref(), Some("hunter2"));
        // An explicit folder wins over the run_dir default.
        let c = Config::parse("[bus.unix]\ndir = \"/var/bus\"\n", Path::new("x")).unwrap();
        assert_eq!(c.bus_resolved().unix.dir, PathBuf::from("/var/bus"));
        assert!(subjects_overlap("a.b", "a.b.c") && subjects_overlap("a.b", "a.b") && !subjects_overlap("a.b", "a.bc"));
    }

    #[test]
    fn derived_paths_follow_data_dir() {
        let c = Config::parse("data_dir = \"/srv/dm\"\n", Path::new("x")).unwrap();
        assert_eq!(c.passwd_file(), PathBuf::from("/srv/dm/passwd"));
        assert_eq!(c.run_dir(), PathBuf::from("/srv/dm/run"));
        assert_eq!(c.tls_cert(), PathBuf::from("/srv/dm/tls/cert.pem"));
        assert_eq!(c.lmtp_unix_socket(), None);
    }
}

