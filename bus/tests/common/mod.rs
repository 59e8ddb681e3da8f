//! Helpers shared by the bus integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use storage_hooks::{EventKind, Flags, MailboxEvent, MailboxStatus, UidSet};

/// An event of `user` in INBOX moving HIGHESTMODSEQ from `before` to `before + 1`.
pub fn event(user: &str, before: u64) -> MailboxEvent {
    MailboxEvent {
        kind: EventKind::FlagsSet,
        user: user.into(),
        mailbox: "INBOX".into(),
        old_mailbox: None,
        uidvalidity: 1,
        uids: UidSet::from_range(1, 1),
        flags: Flags::default(),
        status: MailboxStatus { messages: 1, highestmodseq: before + 1, ..Default::default() },
        modseq_before: before,
        modseq_after: before + 1,
        summary: None,
        timestamp_ms: 0,
    }
}

/// The `bus_subscriber` example next to this test binary (cargo test builds examples).
pub fn subscriber_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples/bus_subscriber");
    assert!(path.exists(), "{} missing: run through `cargo test`, which builds the examples", path.display());
    path
}

/// A running `bus_subscriber` child with its stdout lines on a channel.
pub struct ChildSub {
    pub child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl ChildSub {
    pub fn spawn(args: &[String]) -> Self {
        let mut child = Command::new(subscriber_exe())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, stdin, lines }
    }

    /// Waits for a line starting with `prefix`.
    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(l) if l.starts_with("ERROR") => panic!("child failed: {l}"),
                Ok(_) => {}
                Err(e) => panic!("no {prefix} line from child within {timeout:?}: {e}"),
            }
        }
    }

    pub fn stop(&mut self) {
        let _ = writeln!(self.stdin, "STOP");
        let _ = self.stdin.flush();
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for ChildSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `DONE k=v k=v ...` into a map.
pub fn parse_kv(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A nats-server of our own, with JetStream, on a free port.
pub struct NatsServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Starts with extra command-line arguments (e.g. `-c CONFIG`).
    pub fn start_with(dir: &Path, extra: &[String]) -> Self {
        let mut s = Self { port: free_port(), dir: dir.to_owned(), extra: extra.to_vec(), child: None };
        s.launch();
        s
    }

    fn launch(&mut self) {
        let child = Command::new("/usr/sbin/nats-server")
            .args(&self.extra)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/sbin/nats-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nats-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
