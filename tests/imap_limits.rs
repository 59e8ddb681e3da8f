//! Limits and robustness of the IMAP master and workers: timeouts, line and
//! literal limits, per-IP and per-user limits, failed-login delay, garbage
//! input, counters on SIGUSR1.

mod imap_support;

use std::time::{Duration, Instant};

use imap_support::{Conn, Server, ServerOptions};

fn server_with(extra: &str) -> Server {
    Server::start(ServerOptions { imap_extra: extra.into(), ..ServerOptions::default() })
}

#[test]
fn prelogin_timeout_says_bye() {
    let server = server_with("prelogin_timeout_secs = 2\n");
    let mut c = Conn::open(server.imap);
    let start = Instant::now();
    let rest = c.read_to_close();
    assert!(rest.starts_with("* BYE"), "{rest:?}");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(20), "{waited:?}");
}

#[test]
fn idle_timeout_says_bye() {
    let server = server_with("idle_timeout_secs = 2\n");
    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN alice secret-a");
    c.cmd("a2", "SELECT INBOX");
    c.send(b"a3 IDLE\r\n");
    assert!(c.line().starts_with("+ "));
    let start = Instant::now();
    let rest = c.read_to_close();
    assert!(rest.starts_with("* BYE"), "{rest:?}");
    assert!(start.elapsed() >= Duration::from_millis(1500), "{:?}", start.elapsed());
}

#[test]
fn long_lines_are_refused_and_the_session_goes_on() {
    let server = server_with("max_line_length = 1024\n");
    let mut c = Conn::open(server.imap);
    // In the master (pre-login).
    let long = format!("x1 NOOP {}\r\n", "a".repeat(5000));
    c.send(long.as_bytes());
    let answer = c.until_tagged("x1");
    assert!(answer.last().unwrap().starts_with("x1 BAD"), "{answer:?}");
    assert!(c.cmd("x2", "NOOP").last().unwrap().starts_with("x2 OK"));
    // In the worker.
    assert!(c.cmd("a1", "LOGIN alice secret-a").last().unwrap().starts_with("a1 OK"));
    let long = format!("a2 SEARCH SUBJECT \"{}\"\r\n", "b".repeat(5000));
    c.send(long.as_bytes());
    let answer = c.until_tagged("a2");
    assert!(answer.last().unwrap().starts_with("a2 BAD"), "{answer:?}");
    assert!(c.cmd("a3", "SELECT INBOX").last().unwrap().starts_with("a3 OK"));
}

#[test]
fn oversized_literal_is_refused_without_continuation() {
    let server = server_with("max_literal_size = 1000\n");
    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN alice secret-a");
    c.send(b"a2 APPEND INBOX {5000}\r\n");
    let line = c.line();
    assert!(line.starts_with("a2 NO") || line.starts_with("a2 BAD"), "{line:?}");
    assert!(line.contains("TOOBIG") || line.to_ascii_lowercase().contains("too"), "{line:?}");
    // A literal within the limit works.
    c.send(b"a3 APPEND INBOX {20}\r\n");
    assert!(c.line().starts_with("+"));
    c.send(b"Subject: ok\r\n\r\nhi!!\r\n");
    let done = c.until_tagged("a3");
    assert!(done.last().unwrap().starts_with("a3 OK"), "{done:?}");
}

#[test]
fn per_ip_connection_limit() {
    let server = server_with("max_connections_per_ip = 3\n");
    // The start-up probe's connection may still be counted for a moment.
    let open_when_allowed = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = Conn::connect(server.imap).unwrap();
            let greeting = c.line();
            if greeting.starts_with("* OK") {
                return c;
            }
            assert!(Instant::now() < deadline, "{greeting}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut open: Vec<Conn> = (0..3).map(|_| open_when_allowed()).collect();
    // Logged-in sessions (in workers) still count against the IP.
    assert!(open[0].cmd("a1", "LOGIN alice secret-a").last().unwrap().starts_with("a1 OK"));
    let mut refused = Conn::connect(server.imap).unwrap();
    let text = refused.read_to_close();
    assert!(text.starts_with("* BYE [UNAVAILABLE]") && text.contains("limit 3"), "{text:?}");
    // Closing one (a pre-login one) frees a slot.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Conn::connect(server.imap).unwrap();
        if c.line().starts_with("* OK") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn per_user_session_limit_and_release_after_logout() {
    let server = server_with("max_sessions_per_user = 2\n");
    let mut a = Conn::open(server.imap);
    let mut b = Conn::open(server.imap);
    assert!(a.cmd("a1", "LOGIN alice secret-a").last().unwrap().starts_with("a1 OK"));
    assert!(b.cmd("b1", "LOGIN alice secret-a").last().unwrap().starts_with("b1 OK"));
    let mut c = Conn::open(server.imap);
    let refused = c.cmd("c1", "LOGIN alice secret-a");
    assert!(refused.last().unwrap().starts_with("c1 NO [LIMIT] Too many simultaneous sessions"), "{refused:?}");
    // Another user is not affected.
    assert!(c.cmd("c2", "LOGIN bob secret-b").last().unwrap().starts_with("c2 OK"));
    // After a LOGOUT in the worker the master releases the count.
    a.cmd("a2", "LOGOUT");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut d = Conn::open(server.imap);
        if d.cmd("d1", "LOGIN alice secret-a").last().unwrap().starts_with("d1 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "per-user count never released");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn failed_login_delay_grows_per_ip() {
    let server = server_with("login_failure_delay_ms = 200\nlogin_failure_delay_max_ms = 800\n");
    let mut delays = Vec::new();
    for i in 0..4 {
        let mut c = Conn::open(server.imap);
        let start = Instant::now();
        let answer = c.cmd(&format!("f{i}"), "LOGIN alice wrong-password");
        delays.push(start.elapsed());
        assert!(answer.last().unwrap().contains("NO [AUTHENTICATIONFAILED]"), "{answer:?}");
    }
    let expected = [200u64, 400, 800, 800];
    for (got, want) in delays.iter().zip(expected) {
        assert!(*got >= Duration::from_millis(want * 9 / 10), "delays {delays:?}, expected about {expected:?}");
    }
    // A correct login still works (and resets the delay).
    let mut c = Conn::open(server.imap);
    assert!(c.cmd("ok", "LOGIN alice secret-a").last().unwrap().starts_with("ok OK"));
    let mut c = Conn::open(server.imap);
    let start = Instant::now();
    c.cmd("f9", "LOGIN alice wrong-password");
    assert!(start.elapsed() < Duration::from_millis(700), "delay was not reset: {:?}", start.elapsed());
}

#[test]
fn garbage_input_never_kills_a_worker() {
    let server = Server::start(ServerOptions { workers: 1, ..ServerOptions::default() });
    let mut witness = Conn::open(server.imap);
    assert!(witness.cmd("w1", "LOGIN bob secret-b").last().unwrap().starts_with("w1 OK"));
    let pids = server.worker_pids();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..20 {
        let mut c = Conn::open(server.imap);
        c.cmd("g1", "LOGIN alice secret-a");
        let mut junk = Vec::new();
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push((seed & 0xff) as u8);
        }
        if round % 2 == 0 {
            // Line-shaped junk with IMAP syntax fragments.
            junk = format!("g2 FETCH 1:* (BODY[{round}.{{}}] {{99999999999}}\r\n* ) ( \"\r\n\0\0\r\n").into_bytes();
        }
        c.send(&junk);
        c.send(b"\r\ng3 NOOP\r\n");
        c.set_timeout(Duration::from_millis(300));
        let _ = c.read_to_close();
    }
    assert!(witness.cmd("w2", "SELECT INBOX").last().unwrap().starts_with("w2 OK"));
    assert_eq!(server.worker_pids(), pids, "the worker must not have been restarted");
    let log = server.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn counters_are_logged_on_sigusr1() {
    let server = Server::start(ServerOptions::default());
    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN alice secret-a");
    c.cmd("a2", "SELECT INBOX");
    c.cmd("a3", "NOOP");
    let status = std::process::Command::new("kill").args(["-USR1", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = server.log_text();
        let seen = |role: &str| log.lines().any(|l| l.contains("why=\"SIGUSR1\"") && l.contains(role));
        if seen("role=\"master\"") && seen("role=\"worker 0\"") && seen("role=\"worker 1\"") {
            break log;
        }
        assert!(Instant::now() < deadline, "SIGUSR1 counters missing:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let busy = log
        .lines()
        .filter(|l| l.contains("counters") && l.contains("SIGUSR1") && l.contains("role=\"worker"))
        .find(|l| l.contains("sessions_open=1"))
        .unwrap_or_else(|| panic!("no worker with the open session: {log}"));
    assert!(busy.contains("commands=3") || busy.contains("commands=2"), "{busy}");
}
