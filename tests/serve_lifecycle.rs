//! `dormouse serve` as a whole process: one server per data directory, and
//! an orderly stop on SIGTERM.

mod imap_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imap_support::{dormouse, free_port, wait_exit, Conn, Server, ServerOptions};

#[test]
fn a_second_serve_on_the_same_data_dir_refuses_and_names_the_owner() {
    let server = Server::start(ServerOptions::default());
    // Same data_dir, every port different.
    let mut text = std::fs::read_to_string(&server.config).unwrap();
    for port in [server.imap, server.imaps, server.lmtp] {
        text = text.replace(&format!("127.0.0.1:{port}\""), &format!("127.0.0.1:{}\"", free_port()));
    }
    let second_config = server.dir.path().join("second.toml");
    std::fs::write(&second_config, text).unwrap();
    let mut second = Command::new(dormouse())
        .args(["--config", second_config.to_str().unwrap(), "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut second, Duration::from_secs(20));
    if status.is_none() {
        let _ = second.kill();
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = status.unwrap_or_else(|| panic!("second serve kept running; stderr:\n{stderr}"));
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains(&format!("pid {}", server.pid())), "{stderr}");
    assert!(stderr.contains(server.dir.path().join("data").to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The first server still owns its sockets: a login parks normally.
    let mut c = Conn::open(server.imap);
    assert!(c.cmd("a", "LOGIN alice secret-a").last().unwrap().starts_with("a OK"));
    let lock = std::fs::read_to_string(server.dir.path().join("data/serve.lock")).unwrap();
    assert_eq!(lock.trim(), server.pid().to_string());
}

#[test]
fn a_lock_file_left_by_a_dead_server_does_not_block_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (config, imap) = imap_support::write_one_worker_config(dir.path(), "");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::set_permissions(dir.path().join("data"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // Written by a server that died (nobody holds the flock).
    std::fs::write(dir.path().join("data/serve.lock"), "4000000\n").unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(dormouse())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Conn::connect(imap).is_err() {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(child.try_wait().unwrap().is_none(), "serve exited:\n{text}");
        assert!(Instant::now() < deadline, "serve did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lock = std::fs::read_to_string(dir.path().join("data/serve.lock")).unwrap();
    assert_eq!(lock.trim(), child.id().to_string());
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(wait_exit(&mut child, Duration::from_secs(20)).is_some());
}

/// Reads lines until the server closes; the last one must be the BYE.
fn assert_bye_then_close(label: &str, c: &mut Conn) {
    let rest = c.read_to_close();
    assert!(rest.ends_with("* BYE [UNAVAILABLE] Server shutting down\r\n"), "{label}: got {rest:?}");
}

#[test]
fn sigterm_says_bye_to_every_session_after_the_command_in_progress() {
    let grace = 5; // [server] shutdown_grace_secs, default
    let mut server = Server::start(ServerOptions {
        // IDLE sessions park after 1 s; others stay live in the workers.
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 3600\nprocesses = 1\nkeepalive_secs = 600\n".into(),
        ..ServerOptions::default()
    });
    let mut prelogin = Conn::open(server.imap);
    let mut live = Conn::open(server.imap);
    live.cmd("l1", "LOGIN alice secret-a");
    live.cmd("l2", "SELECT INBOX");
    let mut idle = Conn::open(server.imap);
    idle.cmd("i1", "LOGIN alice secret-a");
    idle.cmd("i2", "SELECT INBOX");
    idle.send(b"i3 IDLE\r\n");
    assert!(idle.line().starts_with("+ "));
    let mut appending = Conn::open(server.imap);
    appending.cmd("a1", "LOGIN bob secret-b");
    appending.send(b"a2 APPEND INBOX {22}\r\n");
    assert!(appending.line().starts_with("+ "));
    appending.send(b"Subject: half\r\n");
    // A pre-login command half sent.
    let mut logging_in = Conn::open(server.imap);
    logging_in.send(b"h1 LOGIN alice");

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/imap_shutdown_bye.py");
    let mut tls = Command::new(imap_support::PYTHON)
        .arg(&script)
        .args(["127.0.0.1", &server.imaps.to_string(), "alice", "secret-a"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tls_out = std::io::BufReader::new(tls.stdout.take().unwrap());
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut tls_out, &mut ready).unwrap();
    assert_eq!(ready.trim(), "ready", "TLS script: {:?}", tls.wait_with_output());
    // The plain and the TLS IDLE session are parked.
    server.wait_held(2);

    let stopper = std::thread::spawn(move || {
        let (status, took) = server.terminate_timed();
        (server, status, took)
    });
    // The APPEND literal completes after the stop began: it is stored and
    // answered before the BYE.
    std::thread::sleep(Duration::from_millis(500));
    appending.send(b"\r\nhello\r\n");
    let answer = appending.line();
    assert!(answer.starts_with("a2 OK"), "APPEND answer: {answer:?}");
    assert_bye_then_close("appending", &mut appending);
    logging_in.send(b" secret-a\r\n");
    let answer = logging_in.line();
    assert!(answer.starts_with("h1 OK"), "LOGIN answer: {answer:?}");
    assert_bye_then_close("login in progress", &mut logging_in);
    assert_bye_then_close("plain pre-login", &mut prelogin);
    assert_bye_then_close("plain live", &mut live);
    assert_bye_then_close("plain hibernated IDLE", &mut idle);

    let (server, status, took) = stopper.join().unwrap();
    let log = server.log_text();
    let mut tls_report = String::new();
    std::io::Read::read_to_string(&mut tls_out, &mut tls_report).unwrap();
    let tls_done = tls.wait_with_output().unwrap();
    let lines: Vec<&str> = tls_report.lines().collect();
    assert_eq!(lines.len(), 3, "{tls_report}\n{}", String::from_utf8_lossy(&tls_done.stderr));
    for line in &lines {
        assert!(line.split(' ').nth(1) == Some("OK"), "{line}\nlog:\n{}", imap_support::tail(&log, 40));
    }
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "exit status; log:\n{}", imap_support::tail(&log, 40));
    assert!(took < Duration::from_secs(grace + 2), "stop took {took:?}");
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("stop took {took:?}");
    // The APPEND finished during the stop is stored.
    assert_eq!(messages_of(&server, "bob"), 1);
}

/// Message files in `user`'s INBOX.
fn messages_of(server: &Server, user: &str) -> usize {
    let maildir = server.dir.path().join("data/home").join(user).join("Maildir");
    ["new", "cur"].iter().map(|d| std::fs::read_dir(maildir.join(d)).map_or(0, |r| r.count())).sum()
}

#[test]
fn a_command_that_does_not_finish_gets_the_bye_when_the_grace_ends() {
    let mut server = Server::start(ServerOptions {
        sections_extra: "[server]\nshutdown_grace_secs = 2\n".into(),
        ..ServerOptions::default()
    });
    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN bob secret-b");
    c.send(b"a2 APPEND INBOX {100}\r\n");
    assert!(c.line().starts_with("+ "));
    c.send(b"Subject: never finished\r\n");
    let stopper = std::thread::spawn(move || {
        let (status, took) = server.terminate_timed();
        (server, status, took)
    });
    let started = Instant::now();
    assert_bye_then_close("unfinished APPEND", &mut c);
    let bye_after = started.elapsed();
    let (server, status, took) = stopper.join().unwrap();
    let log = server.log_text();
    assert!(bye_after >= Duration::from_millis(1500) && bye_after < Duration::from_secs(3), "BYE after {bye_after:?}");
    assert!(took < Duration::from_secs(4), "stop took {took:?}");
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "log:\n{}", imap_support::tail(&log, 40));
    assert!(!log.contains("panicked"), "{log}");
    // The half-sent message is not stored (nor a partial file left behind).
    assert_eq!(messages_of(&server, "bob"), 0);
    eprintln!("BYE after {bye_after:?}, stop took {took:?}");
}
