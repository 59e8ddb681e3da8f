//! Helpers shared by the bus integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
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

