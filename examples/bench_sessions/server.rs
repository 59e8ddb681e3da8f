//! The server under load: dormouse `serve` or Dovecot 2.3 with
//! imap-hibernate, started in a temp directory, and what is measured of it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench_support::{dormouse_bin, free_port, process_tree, rss_pss};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Dormouse,
    Dovecot,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Dormouse => "dormouse",
            ServerKind::Dovecot => "dovecot 2.3",
        }
    }
}

/// A running server and its ports.
pub struct ServerUnderTest {
    kind: ServerKind,
    _dir: tempfile::TempDir,
    child: Option<Child>,
    /// The master's pid: root of the measured process tree.
    pub master: u32,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub lmtp_port: u16,
    metrics_port: u16,
    /// Seconds of IDLE before a session is hibernated.
    pub hibernate_after_secs: f64,
}

/// Summed memory of the server's processes.
pub struct Memory {
    pub pss_kib: u64,
    pub processes: usize,
    /// PSS by process kind, sorted by name.
    pub by_kind: Vec<(String, u64)>,
}

impl ServerUnderTest {
    /// Starts `kind` with users u1..u`users`, password `pass`.
    pub fn start(kind: ServerKind, users: usize, login: &LoginSetup, hibernate_after_secs: u64) -> Self {
        let mut dir = tempfile::Builder::new().prefix("bench-sessions-").tempdir_in(bench_tmp()).unwrap();
        // BENCH_KEEP=1 keeps the directory (logs, Maildirs) for a look after.
        dir.disable_cleanup(std::env::var_os("BENCH_KEEP").is_some());
        match kind {
            ServerKind::Dormouse => start_dormouse(dir, users, login, hibernate_after_secs),
            ServerKind::Dovecot => start_dovecot(dir, users),
        }
    }

    /// PSS of every process of the server, by kind.
    pub fn memory(&self) -> Memory {
        let mut by_kind: std::collections::BTreeMap<String, u64> = Default::default();
        let tree = self.tree();
        for &pid in &tree {
            let kind = self.kind_of(pid);
            *by_kind.entry(kind).or_default() += rss_pss(pid).1;
        }
        Memory { pss_kib: by_kind.values().sum(), processes: tree.len(), by_kind: by_kind.into_iter().collect() }
    }

    fn tree(&self) -> Vec<u32> {
        process_tree(self.master)
    }

    fn kind_of(&self, pid: u32) -> String {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        match self.kind {
            ServerKind::Dormouse => {
                if pid == self.master {
                    "master".into()
                } else if args.iter().any(|a| a.contains("hibernate")) {
                    "hibernate".into()
                } else if args.iter().any(|a| a.contains("worker")) {
                    "worker".into()
                } else {
                    "other".into()
                }
            }
            ServerKind::Dovecot => {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                comm.trim().to_string()
            }
        }
    }

    /// Descriptors open in the master process.
    pub fn master_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.master)).map_or(0, |d| d.count())
    }

    /// User + system CPU ticks of the whole tree.
    pub fn cpu_ticks(&self) -> u64 {
        self.tree()
            .iter()
            .map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                // After the state field: utime is field 14, stime 15 (1-based,
                // counting pid and comm); here 0-based from state: 11, 12.
                f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
            })
            .sum()
    }

    /// Waits until `want` sessions are hibernated (dormouse: its metrics
    /// endpoint; Dovecot: a fixed settling time, it has no such count).
    /// Returns the count seen (Dovecot: "n/a").
    pub fn wait_parked(&self, want: u64, bound: Duration) -> String {
        match self.kind {
            ServerKind::Dovecot => {
                std::thread::sleep(Duration::from_secs_f64(self.hibernate_after_secs + 5.0));
                "n/a (Dovecot exports no count; waited 6 s)".into()
            }
            ServerKind::Dormouse => {
                let end = Instant::now() + bound;
                let mut held = 0;
                while Instant::now() < end {
                    held = self.metric("dormouse_sessions{state=\"hibernated\"}").unwrap_or(0);
                    if held >= want {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                format!("{held} of {want}")
            }
        }
    }

    fn metric(&self, name: &str) -> Option<u64> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }
}

impl ServerUnderTest {
    /// dormouse: the configuration file (for `dormouse restart`).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("dormouse.toml")
    }

    /// dormouse: the pid in `serve.lock` (the generation serving now).
    pub fn serving_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self._dir.path().join("data/serve.lock")).ok()?.trim().parse().ok()
    }
}

impl Drop for ServerUnderTest {
    fn drop(&mut self) {
        match self.kind {
            ServerKind::Dormouse => {
                if let Some(mut c) = self.child.take() {
                    // After a restart another process serves: stop that one.
                    let serving = self.serving_pid().unwrap_or(c.id());
                    let _ = Command::new("kill").arg("-TERM").arg(serving.to_string()).status();
                    let _ = c.wait();
                    let deadline = std::time::Instant::now() + Duration::from_secs(30);
                    while std::path::Path::new(&format!("/proc/{serving}")).exists() && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            ServerKind::Dovecot => {
                let _ = Command::new("kill").arg(self.master.to_string()).status();
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

/// How dormouse's users log in: the passwd field every user gets (a hash
/// of `pass`) and how long a verified login is remembered.
pub struct LoginSetup {
    pub password_field: String,
    pub verified_cache_secs: u64,
}

impl LoginSetup {
    /// `pass` hashed with `scheme` by `dormouse user hash` (PLAIN needs no call).
    pub fn new(scheme: &str, verified_cache_secs: u64) -> Self {
        let password_field = if scheme.eq_ignore_ascii_case("PLAIN") {
            "{PLAIN}pass".to_string()
        } else {
            let out = Command::new(dormouse_bin())
                .args(["user", "hash", "--scheme", scheme, "pass"])
                .output()
                .expect("dormouse user hash");
            assert!(out.status.success(), "dormouse user hash: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        LoginSetup { password_field, verified_cache_secs }
    }
}

/// Where the servers' directories go: /tmp unless BENCH_TMP says otherwise.
fn bench_tmp() -> std::path::PathBuf {
    std::env::var_os("BENCH_TMP").map_or_else(std::env::temp_dir, Into::into)
}

fn start_dormouse(dir: tempfile::TempDir, users: usize, login: &LoginSetup, hibernate_after: u64) -> ServerUnderTest {
    let d = dir.path();
    let (imap, imaps, lmtp, metrics) = (free_port(), free_port(), free_port(), free_port());
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let home = data.join("home");
    let mut passwd = String::with_capacity(users * 64);
    for u in 1..=users {
        passwd.push_str(&format!("u{u}:{}::::{}::\n", login.password_field, home.join(format!("u{u}")).display()));
    }
    std::fs::write(data.join("passwd"), passwd).unwrap();
    // One worker per core; no per-IP or per-user caps (the load comes from
    // a handful of addresses); no auto-created folders (Dovecot beside it
    // creates none either).
    let config = format!(
        "data_dir = {data:?}\n\
         [log]\nlevel = \"warn\"\n\
         [auth]\nverified_cache_secs = {cache}\n\
         [lmtp]\nlisten = \"127.0.0.1:{lmtp}\"\n\
         [imap]\nlisten = \"127.0.0.1:{imap}\"\nlisten_tls = \"127.0.0.1:{imaps}\"\nworkers = 2\n\
         max_connections_per_ip = 0\nmax_sessions_per_user = 0\nauto_mailboxes = []\n\
         [hibernate]\ntimeout_secs = {hibernate_after}\nprocesses = \"auto\"\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
        cache = login.verified_cache_secs
    );
    let config_path = d.join("dormouse.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(d.join("serve.log")).unwrap();
    let child = Command::new(dormouse_bin())
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("dormouse serve");
    wait_listening(imap, d.join("serve.log").as_path());
    wait_listening(imaps, d.join("serve.log").as_path());
    ServerUnderTest {
        kind: ServerKind::Dormouse,
        master: child.id(),
        child: Some(child),
        _dir: dir,
        imap_port: imap,
        imaps_port: imaps,
        lmtp_port: lmtp,
        metrics_port: metrics,
        hibernate_after_secs: hibernate_after as f64,
    }
}

fn start_dovecot(dir: tempfile::TempDir, users: usize) -> ServerUnderTest {
    let d = dir.path();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/baseline/dovecot-hibernate.sh");
    // Dovecot's hibernation watches each mailbox with inotify: one instance
    // per session (the default of 128 would stop it early).
    let _ = std::fs::write("/proc/sys/fs/inotify/max_user_instances", "2000000");
    let _ = std::fs::write("/proc/sys/fs/inotify/max_user_watches", "4000000");
    let port = loop {
        let p = free_port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", p + 2)).is_ok() {
            break p;
        }
    };
    // The script chowns the homes to nobody: the directory must be reachable.
    let _ = Command::new("chmod").arg("755").arg(d).status();
    let out = Command::new("bash").arg(&script).arg(d).arg(port.to_string()).arg(users.to_string()).output().expect("dovecot script");
    assert!(out.status.success(), "dovecot start failed: {}", String::from_utf8_lossy(&out.stderr));
    let master: u32 = String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or("").parse().expect("dovecot master pid");
    wait_listening(port, d.join("dovecot.log").as_path());
    ServerUnderTest {
        kind: ServerKind::Dovecot,
        master,
        child: None,
        _dir: dir,
        imap_port: port,
        imaps_port: port + 2,
        lmtp_port: port + 1,
        metrics_port: 0,
        hibernate_after_secs: 1.0,
    }
}

fn wait_listening(port: u16, log: &Path) {
    let end = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "server did not listen on {port}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A /proc/meminfo field in KiB.
pub fn meminfo_kib(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// Clock ticks per second for /proc/<pid>/stat times (`getconf CLK_TCK`).
pub fn ticks_per_sec() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}
