//! Restarting `dormouse serve` (`dormouse restart`, SIGUSR2) without closing
//! a client connection: a new generation takes the listeners, the data
//! directory lock, the lifeline and the hibernate processes; sessions keep
//! their connections and their view of the mailbox.

mod imap_support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use imap_support::{dormouse, tail, Conn, Server, ServerOptions};

/// The pid in the data directory's lock file (the serving generation).
fn serving_pid(server: &Server) -> u32 {
    std::fs::read_to_string(server.dir.path().join("data/serve.lock")).unwrap().trim().parse().unwrap()
}

/// Stops whichever generation serves when the test ends (the harness only
/// knows the first one).
struct StopServing(std::path::PathBuf);

impl Drop for StopServing {
    fn drop(&mut self) {
        let Some(pid) = std::fs::read_to_string(&self.0).ok().and_then(|p| p.trim().parse::<i32>().ok()) else { return };
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn restart(server: &Server) -> Output {
    Command::new(dormouse()).args(["--config", server.config.to_str().unwrap(), "restart"]).output().unwrap()
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\nhello\r\n").into_bytes()
}

fn server(workers: usize) -> (Server, StopServing) {
    let server = Server::start(ServerOptions {
        workers,
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 2\nprocesses = 1\nkeepalive_secs = 600\n".into(),
        ..ServerOptions::default()
    });
    let stop = StopServing(server.dir.path().join("data/serve.lock"));
    (server, stop)
}

fn hibernate_pids(server: &Server) -> Vec<u32> {
    let dir = server.dir.path().to_str().unwrap().to_string();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0).any(|a| a == b"hibernate") && String::from_utf8_lossy(&c).contains(&dir)
            })
        })
        .collect();
    pids.sort();
    pids
}

/// Runs `dormouse restart`, checks what it printed, and waits until the
/// previous generation has exited. Returns the new pid.
fn restart_ok(server: &Server, moved: u64, lost: u64) -> u32 {
    let old = serving_pid(server);
    let out = restart(server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "restart failed: {stdout}{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&server.log_text(), 80)
    );
    assert!(stdout.contains(&format!("{moved} sessions moved, {lost} could not")), "{stdout}");
    let new = serving_pid(server);
    assert_ne!(new, old, "{stdout}");
    assert!(stdout.contains(&format!("serving as pid {new}")), "{stdout}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{old}/cmdline")).exists()
        && !std::fs::read_to_string(format!("/proc/{old}/stat")).unwrap_or_default().contains(") Z")
    {
        assert!(Instant::now() < deadline, "the old generation {old} did not exit\n{}", tail(&server.log_text(), 60));
        std::thread::sleep(Duration::from_millis(50));
    }
    new
}

#[test]
fn hibernated_sessions_survive_three_restarts_and_keep_their_view() {
    let (server, _stop) = server(2);
    server.deliver("alice", &message("zero"));
    let n = 12;
    let mut clients: Vec<Conn> = (0..n)
        .map(|i| {
            let mut c = Conn::open(server.imap);
            c.cmd("a1", if i % 2 == 0 { "LOGIN alice secret-a" } else { "LOGIN bob secret-b" });
            c.cmd("a2", "SELECT INBOX");
            c.send(b"a3 IDLE\r\n");
            assert!(c.line().starts_with("+ "));
            c
        })
        .collect();
    server.wait_held(n as u64);
    let hibernate = hibernate_pids(&server);
    assert_eq!(hibernate.len(), 1);
    let mut alice_count = 1;
    let mut bob_count = 0;
    for round in 1..=3 {
        restart_ok(&server, n as u64, 0);
        // The same hibernate process holds the same sessions.
        assert_eq!(hibernate_pids(&server), hibernate, "round {round}");
        assert_eq!(server.stat("sessions held"), n as u64);
        // A delivery reaches every idler, with the right sequence number.
        server.deliver("alice", &message(&format!("a{round}")));
        server.deliver("bob", &message(&format!("b{round}")));
        alice_count += 1;
        bob_count += 1;
        for (i, c) in clients.iter_mut().enumerate() {
            let want = if i % 2 == 0 { alice_count } else { bob_count };
            assert_eq!(c.line().trim_end(), format!("* {want} EXISTS"), "client {i}, round {round}");
        }
    }
    // Every session's next command is served by the new generation's
    // workers, with the right data.
    for (i, c) in clients.iter_mut().enumerate() {
        let want = if i % 2 == 0 { alice_count } else { bob_count };
        c.send(b"DONE\r\na4 FETCH 1:* (UID)\r\n");
        let lines = c.until_tagged("a4");
        assert!(lines[0].starts_with("a3 OK"), "{lines:?}");
        let fetched = lines.iter().filter(|l| l.contains(" FETCH (UID ")).count();
        assert_eq!(fetched, want, "client {i}: {lines:?}");
        assert!(lines.last().unwrap().starts_with("a4 OK"), "{lines:?}");
    }
    // New connections are served too.
    let mut fresh = Conn::open(server.imap);
    let lines = fresh.cmd("f1", "LOGIN alice secret-a");
    assert!(lines.last().unwrap().starts_with("f1 OK"), "{lines:?}");
    let log = server.log_text();
    assert!(log.contains(&format!("restart: {n} sessions moved, 0 could not")), "{}", tail(&log, 40));
}
