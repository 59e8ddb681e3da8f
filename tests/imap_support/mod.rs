//! Test harness: a `dormouse serve` child with a temporary data directory,
//! free ports and its log in a file; raw IMAP connections; Python clients.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's python3 (has imaplib2); the one on PATH may not.
pub const PYTHON: &str = "/usr/bin/python3";

/// The dormouse binary under test (`DORMOUSE_TEST_BIN` overrides it, to
/// measure another build with the same test).
pub fn dormouse() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("DORMOUSE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dormouse").to_string()))
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes `dir/dormouse.toml` for one worker on free ports, with `sections`
/// (e.g. a `[log]` table) at the top, for tests that run `serve` themselves
/// instead of through [`Server`]. Returns the config path and the IMAP port.
pub fn write_one_worker_config(dir: &Path, sections: &str) -> (PathBuf, u16) {
    let (imap, imaps, lmtp) = (free_port(), free_port(), free_port());
    let config = dir.join("dormouse.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n{sections}\n[lmtp]\nlisten = \"127.0.0.1:{lmtp}\"\n[imap]\nlisten = \"127.0.0.1:{imap}\"\n\
             listen_tls = \"127.0.0.1:{imaps}\"\nworkers = 1\n",
            dir.join("data")
        ),
    )
    .unwrap();
    (config, imap)
}

/// A running `dormouse serve`.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub imap: u16,
    pub imaps: u16,
    pub lmtp: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

/// Extra settings for a test server.
pub struct ServerOptions {
    /// Number of IMAP workers.
    pub workers: usize,
    /// More `key = value` lines for the `[imap]` section.
    pub imap_extra: String,
    /// Users to create (name, password) with the PLAIN scheme.
    pub users: Vec<(String, String)>,
    /// More config sections appended at the end (e.g. `[users]` settings).
    pub sections_extra: String,
    /// More `key = value` lines for the `[lmtp]` section.
    pub lmtp_extra: String,
    /// `log.level` of the server.
    pub log_level: String,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            imap_extra: "login_failure_delay_ms = 50\nlogin_failure_delay_max_ms = 400\n".into(),
            users: vec![("alice".into(), "secret-a".into()), ("bob".into(), "secret-b".into())],
            sections_extra: String::new(),
            lmtp_extra: String::new(),
            log_level: "info,imap=debug".into(),
        }
    }
}

impl Server {
    /// Writes the config, creates the users, starts `serve` and waits until
    /// the IMAP port greets.
    pub fn start(options: ServerOptions) -> Server {
        // `free_port` releases the port before serve binds it; another test's
        // client may take it in between. Try again on fresh ports then.
        for _ in 0..3 {
            match Self::try_start(&options) {
                Ok(server) => return server,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("server did not start; log:\n{log}"),
            }
        }
        panic!("server did not start: its ports were taken three times");
    }

    fn try_start(options: &ServerOptions) -> Result<Server, String> {
        let dir = tempfile::tempdir().unwrap();
        let (imap, imaps, lmtp) = (free_port(), free_port(), free_port());
        let config = dir.path().join("dormouse.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n[log]\nlevel = {:?}\n[lmtp]\nlisten = \"127.0.0.1:{lmtp}\"\n{}\n\
                 [imap]\nlisten = \"127.0.0.1:{imap}\"\nlisten_tls = \"127.0.0.1:{imaps}\"\nworkers = {}\n{}\n{}",
                options.log_level, options.lmtp_extra, options.workers, options.imap_extra, options.sections_extra
            ),
        )
        .unwrap();
        for (name, password) in &options.users {
            let out = Command::new(dormouse())
                .args(["--config", config.to_str().unwrap(), "user", "add", name, "--password", password, "--scheme", "PLAIN"])
                .output()
                .unwrap();
            assert!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr));
        }
        let log = dir.path().join("serve.log");
        let child = Command::new(dormouse())
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("serve.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server { dir, config, imap, imaps, lmtp, log, child: Some(child) };
        server.wait_ready()?;
        Ok(server)
    }

    /// Waits for the greeting and the workers; `Err(log)` if serve exited first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = Conn::connect(self.imap) {
                let greeting = c.line();
                assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
                break;
            }
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().unwrap().is_some() {
                    self.child = None;
                    return Err(self.log_text());
                }
            }
            assert!(Instant::now() < deadline, "server did not start; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        // Both workers announce themselves; wait for them so tests start warm.
        self.wait_for_log("IMAP worker ready", Duration::from_secs(30));
        Ok(())
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "log never contained {needle:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `dormouse stats` as (counter name, value) pairs, summed over nothing:
    /// one pair per line and hibernate process.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let out = std::process::Command::new(dormouse()).args(["--config", self.config.to_str().unwrap(), "stats"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (name, value) = l.trim().rsplit_once(' ')?;
                Some((name.trim().to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// One `dormouse stats` counter, summed over the hibernate processes.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats().iter().filter(|(n, _)| n == name).map(|(_, v)| v).sum()
    }

    /// Waits (up to 60 s) until the hibernate processes hold exactly `n` sessions.
    pub fn wait_held(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let held = self.stat("sessions held");
            if held == n {
                return;
            }
            assert!(Instant::now() < deadline, "held {held}, want {n}; stats {:?}\nlog:\n{}", self.stats(), self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a Python script from tests/py with `args`; panics with its output on failure.
    pub fn python(&self, script: &str, args: &[String]) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(script);
        let out = Command::new(PYTHON).arg(&path).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{script} failed\nstdout:\n{stdout}\nstderr:\n{}\nserver log (tail):\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log_text(), 60)
        );
        stdout
    }

    /// Delivers `message` to `user` with `dormouse deliver` (another process).
    pub fn deliver(&self, user: &str, message: &[u8]) {
        let mut child = Command::new(dormouse())
            .args(["--config", self.config.to_str().unwrap(), "deliver", "-d", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "deliver: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Process ids of the IMAP workers (children of the serve process).
    pub fn worker_pids(&self) -> Vec<u32> {
        let pid = self.child.as_ref().unwrap().id();
        // Children are listed per thread (the one that forked them).
        let mut children = String::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
            children += &std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            children.push(' ');
        }
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| c.split(|&b| b == 0).any(|arg| arg == b"worker"))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// The serve process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Standard arguments for the Python scripts: host, port, user, password.
    pub fn py_args(&self, user: &str, password: &str) -> Vec<String> {
        vec!["127.0.0.1".into(), self.imap.to_string(), user.into(), password.into()]
    }
}

impl Server {
    /// Sends SIGTERM, waits for the exit and returns the log.
    pub fn stop(&mut self) -> String {
        self.terminate();
        self.log_text()
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit; returns its
    /// status (`None`: it had to be killed) and how long the stop took.
    pub fn terminate_timed(&mut self) -> (Option<std::process::ExitStatus>, Duration) {
        let mut child = self.child.take().expect("server running");
        let started = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = child.try_wait() {
                return (Some(status), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        (None, started.elapsed())
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A raw IMAP connection for protocol-level tests.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    /// Connects to 127.0.0.1:`port` with a 30 s read timeout.
    pub fn connect(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Connects and reads the greeting.
    /// Connects once `serve` (started by the test itself, logging to
    /// `log`) greets on `port`; panics with its log after 60 s.
    pub fn greeted(port: u16, log: &Path) -> Conn {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = Conn::connect(port) {
                assert!(c.line().starts_with("* OK"));
                return c;
            }
            assert!(Instant::now() < deadline, "serve did not start: {}", std::fs::read_to_string(log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn open(port: u16) -> Conn {
        let mut c = Conn::connect(port).unwrap();
        let greeting = c.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads one line (lossy UTF-8, CRLF kept); empty at EOF.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let _ = self.reader.read_until(b'\n', &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Reads lines until one starts with `tag `; returns all of them.
    pub fn until_tagged(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "connection closed before {tag}; got {lines:?}");
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Sends `tag command` and returns the lines up to the tagged answer.
    pub fn cmd(&mut self, tag: &str, command: &str) -> Vec<String> {
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.until_tagged(tag)
    }

    /// Reads everything until the server closes.
    pub fn read_to_close(&mut self) -> String {
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        String::from_utf8_lossy(&rest).into_owned()
    }

    /// The client's own port (how `dormouse who` shows this connection).
    pub fn local_port(&self) -> u16 {
        self.writer.local_addr().unwrap().port()
    }

    /// Sets the read timeout.
    pub fn set_timeout(&mut self, t: Duration) {
        self.writer.set_read_timeout(Some(t)).unwrap();
    }
}
