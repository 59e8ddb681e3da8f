//! `dormouse who` and `dormouse kick` against a real `dormouse serve`, and
//! the per-user limit counting hibernated sessions (issue #17).

mod imap_support;

use std::process::Command;
use std::time::{Duration, Instant};

use imap_support::{dormouse, tail, Conn, Server, ServerOptions};

const KICK_BYE: &str = "* BYE [UNAVAILABLE] Disconnected by the administrator";

/// IDLE sessions park after 1 s; others stay live (no idle_after parking).
fn server(imap_extra: &str) -> Server {
    Server::start(ServerOptions {
        imap_extra: format!("login_failure_delay_ms = 50\n{imap_extra}"),
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 600\nprocesses = 1\nkeepalive_secs = 600\n".into(),
        ..ServerOptions::default()
    })
}

/// Runs `dormouse ARGS` against the server; returns stdout (asserting success).
fn run(server: &Server, args: &[&str]) -> String {
    let out = Command::new(dormouse()).args(["--config", server.config.to_str().unwrap()]).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dormouse {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&server.log_text(), 40)
    );
    stdout
}

/// The `who` line of the connection from local port `port`.
fn who_line(listing: &str, port: u16) -> Option<String> {
    let peer = format!("127.0.0.1:{port} ");
    listing.lines().find(|l| l.contains(&peer)).map(str::to_string)
}

fn login(server: &Server, user: &str, password: &str) -> Conn {
    let mut c = Conn::open(server.imap);
    let r = c.cmd("l", &format!("LOGIN {user} {password}"));
    assert!(r.last().unwrap().starts_with("l OK"), "{r:?}");
    c
}

/// Logged in, INBOX selected, then IDLE (parked after 1 s).
fn idler(server: &Server, user: &str, password: &str) -> Conn {
    let mut c = login(server, user, password);
    c.cmd("s", "SELECT INBOX");
    c.send(b"i IDLE\r\n");
    assert!(c.line().starts_with("+ "));
    c
}

fn live(server: &Server, user: &str, password: &str) -> Conn {
    let mut c = login(server, user, password);
    c.cmd("s", "SELECT INBOX");
    c
}

#[test]
fn who_lists_prelogin_live_and_hibernated_sessions_with_filters() {
    let server = server("");
    let pre = Conn::open(server.imap);
    let alice = live(&server, "alice", "secret-a");
    let bob = idler(&server, "bob", "secret-b");
    server.wait_held(1);

    let all = run(&server, &["who"]);
    let pre_line = who_line(&all, pre.local_port()).unwrap_or_else(|| panic!("no pre-login line:\n{all}"));
    let words: Vec<&str> = pre_line.split_whitespace().collect();
    assert_eq!((words[0], words[2], words[3]), ("-", "no", "pre-login"), "{all}");
    assert!(pre_line.ends_with("master"), "{all}");
    let alice_line = who_line(&all, alice.local_port()).unwrap_or_else(|| panic!("no line for alice:\n{all}"));
    let words: Vec<&str> = alice_line.split_whitespace().collect();
    assert_eq!((words[0], words[3], words[4]), ("alice", "live", "INBOX"), "{all}");
    assert!(alice_line.contains("worker (pid "), "{all}");
    let bob_line = who_line(&all, bob.local_port()).unwrap_or_else(|| panic!("no line for bob:\n{all}"));
    let words: Vec<&str> = bob_line.split_whitespace().collect();
    assert_eq!((words[0], words[3], words[4]), ("bob", "hibernated", "INBOX"), "{all}");
    assert!(bob_line.contains("hibernate 0 (pid "), "{all}");
    assert_eq!(all.lines().count(), 4, "header and three sessions:\n{all}");

    let bobs = run(&server, &["who", "--user", "bob"]);
    assert!(who_line(&bobs, bob.local_port()).is_some() && bobs.lines().count() == 2, "{bobs}");
    let alices = run(&server, &["who", "--user", "alice"]);
    assert!(who_line(&alices, alice.local_port()).is_some() && alices.lines().count() == 2, "{alices}");
    let local = run(&server, &["who", "--peer", "127.0.0.1"]);
    assert_eq!(local.lines().count(), 4, "{local}");
    let elsewhere = run(&server, &["who", "--peer", "192.0.2.1"]);
    assert_eq!(elsewhere.lines().count(), 1, "only the header:\n{elsewhere}");
}

#[test]
fn kick_disconnects_all_of_bobs_sessions_and_leaves_alices() {
    let server = server("");
    let mut bob_live = live(&server, "bob", "secret-b");
    let mut bob_idle = idler(&server, "bob", "secret-b");
    let mut alice_live = live(&server, "alice", "secret-a");
    let mut alice_idle = idler(&server, "alice", "secret-a");
    server.wait_held(2);

    let out = run(&server, &["kick", "bob"]);
    assert!(out.contains("kicked 2 session(s) (bob)"), "{out}");
    for (name, c) in [("live", &mut bob_live), ("hibernated", &mut bob_idle)] {
        let rest = c.read_to_close();
        assert!(rest.contains(KICK_BYE), "bob's {name} session got {rest:?}");
    }
    let r = alice_live.cmd("n", "NOOP");
    assert!(r.last().unwrap().starts_with("n OK"), "{r:?}");
    alice_idle.send(b"DONE\r\n");
    let r = alice_idle.until_tagged("i");
    assert!(r.last().unwrap().starts_with("i OK"), "{r:?}");
    let left = run(&server, &["who"]);
    assert!(!left.contains("bob"), "{left}");
    assert_eq!(left.lines().count(), 3, "{left}");

    // A pre-login connection goes by its address (with alice's sessions).
    let mut pre = Conn::open(server.imap);
    let out = run(&server, &["kick", "--peer", "127.0.0.1"]);
    assert!(out.contains("kicked 3 session(s) (from 127.0.0.1)"), "{out}");
    for c in [&mut pre, &mut alice_live, &mut alice_idle] {
        let rest = c.read_to_close();
        assert!(rest.contains(KICK_BYE), "{rest:?}");
    }
    let out = run(&server, &["kick", "nobody"]);
    assert!(out.contains("kicked 0 session(s)"), "{out}");
}

/// Tries LOGIN until it succeeds (counts are released asynchronously).
fn login_eventually(server: &Server) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Conn::open(server.imap);
        let r = c.cmd("l", "LOGIN alice secret-a");
        if r.last().unwrap().starts_with("l OK") {
            return c;
        }
        assert!(r.last().unwrap().contains("[LIMIT]"), "{r:?}");
        assert!(Instant::now() < deadline, "login still refused: {r:?}\n{}", tail(&server.log_text(), 40));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_limited(server: &Server) {
    let mut c = Conn::open(server.imap);
    let r = c.cmd("l", "LOGIN alice secret-a");
    assert!(r.last().unwrap().starts_with("l NO [LIMIT]"), "a third session was let in: {r:?}");
}

#[test]
fn hibernated_sessions_count_toward_max_sessions_per_user() {
    let server = server("max_sessions_per_user = 2\n");
    let mut first = idler(&server, "alice", "secret-a");
    let _second = idler(&server, "alice", "secret-a");
    server.wait_held(2);
    assert_limited(&server);

    // One logs out (answered by the hibernate process): room for one more.
    first.send(b"DONE\r\n");
    first.until_tagged("i");
    let r = first.cmd("o", "LOGOUT");
    assert!(r.last().unwrap().starts_with("o OK"), "{r:?}");
    let mut third = login_eventually(&server);
    third.cmd("s", "SELECT INBOX");
    third.send(b"i IDLE\r\n");
    assert!(third.line().starts_with("+ "));
    server.wait_held(2);
    assert_limited(&server);

    // The hibernate process dies: what it held no longer counts.
    let stats = run(&server, &["stats"]);
    let pid: i32 = stats.split("(pid ").nth(1).and_then(|s| s.split(',').next()).unwrap().parse().unwrap();
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    server.wait_for_log("its sessions no longer count", Duration::from_secs(20));
    let _a = login_eventually(&server);
    let _b = login_eventually(&server);
    assert_limited(&server);
}

/// Connects once the per-IP limit lets us in (earlier connections, like
/// the harness's readiness probe, are released asynchronously).
fn open_when_allowed(server: &Server) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Conn::connect(server.imap).unwrap();
        let greeting = c.line();
        if greeting.starts_with("* OK") {
            return c;
        }
        assert!(Instant::now() < deadline, "never let in: {greeting:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hibernated_sessions_count_toward_max_connections_per_ip() {
    let server = server("max_connections_per_ip = 2\n");
    let mut idlers = Vec::new();
    for (user, password) in [("alice", "secret-a"), ("bob", "secret-b")] {
        let mut c = open_when_allowed(&server);
        assert!(c.cmd("l", &format!("LOGIN {user} {password}")).last().unwrap().starts_with("l OK"));
        c.cmd("s", "SELECT INBOX");
        c.send(b"i IDLE\r\n");
        assert!(c.line().starts_with("+ "));
        idlers.push(c);
    }
    server.wait_held(2);
    let text = Conn::connect(server.imap).unwrap().read_to_close();
    assert!(text.starts_with("* BYE [UNAVAILABLE]") && text.contains("limit 2"), "a third connection was let in: {text:?}");
    // One logs out in the hibernate process: its address slot is free again.
    let mut first = idlers.remove(0);
    first.send(b"DONE\r\n");
    first.until_tagged("i");
    first.cmd("o", "LOGOUT");
    let mut c = open_when_allowed(&server);
    assert!(c.cmd("l", "LOGIN alice secret-a").last().unwrap().starts_with("l OK"));
}

/// A listing larger than the small reports (over 4 KiB from one worker)
/// reaches the master whole: the worker is not killed for it.
#[test]
fn who_lists_many_live_sessions_without_hurting_the_worker() {
    let server = Server::start(ServerOptions {
        workers: 1,
        imap_extra: "max_sessions_per_user = 0\nmax_connections_per_ip = 0\n".into(),
        ..ServerOptions::default()
    });
    let sessions: Vec<Conn> = (0..160).map(|_| live(&server, "bob", "secret-b")).collect();
    let out = Command::new(dormouse()).args(["--config", server.config.to_str().unwrap(), "who"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("bob ") && l.contains(" live ")).count(), sessions.len(), "{stdout}");
    let log = server.log_text();
    assert!(!log.contains("worker channel failed") && !log.contains("IMAP worker exited"), "{}", tail(&log, 20));
}

/// A kicked session in a worker finishes the command in progress first:
/// an APPEND whose literal arrives after the kick is stored and answered,
/// then the BYE comes.
#[test]
fn kick_lets_the_command_in_progress_finish() {
    let server = server("");
    let mut c = login(&server, "bob", "secret-b");
    c.send(b"a APPEND INBOX {22}\r\n");
    assert!(c.line().starts_with("+ "));
    c.send(b"Subject: half\r\n");
    let out = run(&server, &["kick", "bob"]);
    assert!(out.contains("kicked 1 session(s)"), "{out}");
    c.send(b"\r\nhello\r\n");
    let answer = c.line();
    assert!(answer.starts_with("a OK"), "APPEND answer: {answer:?}");
    let rest = c.read_to_close();
    assert_eq!(rest.trim_end(), KICK_BYE);
    let mut check = login(&server, "bob", "secret-b");
    let status = check.cmd("s", "STATUS INBOX (MESSAGES)");
    assert!(status[0].contains("MESSAGES 1"), "{status:?}");
}
