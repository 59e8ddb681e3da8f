//! `dormouse serve` reloads its configuration on SIGHUP: renewed TLS pair
//! for new connections, new IMAP limits, a new log filter, refused broken
//! files, and a WARN for keys that need a restart.

mod imap_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imap_support::{dormouse, write_one_worker_config, Conn, Server, ServerOptions, PYTHON};

const RELOADED: &str = "configuration reloaded";
const REFUSED: &str = "configuration reload refused";

/// Rewrites the config file with `edit` applied to its text.
fn edit_config(server: &Server, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&server.config).unwrap();
    let new = edit(text.clone());
    assert_ne!(new, text, "the edit changed nothing");
    std::fs::write(&server.config, new).unwrap();
}

/// Sends SIGHUP and waits until the log has one more `outcome` line than before.
fn sighup(server: &Server, outcome: &str) -> String {
    let before = server.log_text().matches(outcome).count();
    let status = Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = server.log_text();
        if text.matches(outcome).count() > before {
            return text;
        }
        assert!(Instant::now() < deadline, "no new {outcome:?} after SIGHUP; log:\n{}", imap_support::tail(&text, 40));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A connection that got its `* OK` greeting (the start-up probe's may
/// still be counted against the IP for a moment, so retry briefly).
fn open_greeted(port: u16) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Conn::connect(port).unwrap();
        let greeting = c.line();
        if greeting.starts_with("* OK") {
            return c;
        }
        assert!(Instant::now() < deadline, "{greeting}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The log from the start of the last line containing `marker`.
fn lines_after<'a>(text: &'a str, marker: &str) -> &'a str {
    text.rfind(marker).map_or("", |i| &text[text[..i].rfind('\n').map_or(0, |n| n + 1)..])
}

fn new_self_signed_pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}"), "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// Replaces `target` like certbot does: a new file renamed over the old one.
fn replace_file(source: &std::path::Path, target: &std::path::Path) {
    let tmp = target.with_extension("new");
    std::fs::copy(source, &tmp).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

#[test]
fn renewed_tls_pair_is_used_by_new_connections_and_old_sessions_keep_working() {
    let server = Server::start(ServerOptions { workers: 1, ..ServerOptions::default() });
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/tls_reload.py");
    let mut held = Command::new(PYTHON)
        .arg(script)
        .args(["127.0.0.1", &server.imap.to_string(), &server.imaps.to_string(), "alice", "secret-a"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = held.stdin.take().unwrap();
    let mut out = BufReader::new(held.stdout.take().unwrap());
    let mut read = |label: &str| {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let fp = line.trim().strip_prefix(label).unwrap_or_else(|| panic!("want {label}, got {line:?}")).trim().to_string();
        fp
    };
    let old = read("old");

    let tls_dir = server.dir.path().join("data/tls");
    let (cert, key) = new_self_signed_pair(server.dir.path(), "renewed");
    replace_file(&key, &tls_dir.join("key.pem"));
    replace_file(&cert, &tls_dir.join("cert.pem"));
    let log = sighup(&server, RELOADED);
    assert!(lines_after(&log, RELOADED).contains("tls_certificate=renewed"), "{log}");

    writeln!(stdin, "{}", tls_dir.join("cert.pem").display()).unwrap();
    let file = read("file");
    let new = read("new");
    let starttls = read("starttls");
    let still = read("held ok");
    assert_ne!(old, file, "openssl made a different certificate");
    assert_eq!(new, file, "a new IMAPS connection gets the renewed certificate");
    assert_eq!(starttls, file, "a new STARTTLS connection gets the renewed certificate");
    assert_eq!(still, old, "the session opened before keeps its certificate and works");

    // A broken pair is refused; new connections keep the last good one.
    std::fs::write(tls_dir.join("cert.pem"), "not a certificate\n").unwrap();
    let log = sighup(&server, REFUSED);
    assert!(lines_after(&log, REFUSED).contains("no certificate found"), "{log}");
    replace_file(&cert, &tls_dir.join("cert.pem"));
    writeln!(stdin, "{}", tls_dir.join("cert.pem").display()).unwrap();
    read("file");
    assert_eq!(read("new"), file);
    read("starttls");
    read("held ok");
    drop(stdin);
    assert!(held.wait().unwrap().success());
}

#[test]
fn lowered_connection_limit_applies_after_sighup() {
    let server = Server::start(ServerOptions {
        workers: 1,
        imap_extra: "max_connections_per_ip = 5\nlogin_failure_delay_ms = 50\n".into(),
        ..ServerOptions::default()
    });
    let mut open: Vec<Conn> = (0..3).map(|_| open_greeted(server.imap)).collect();
    assert!(open[0].cmd("a1", "LOGIN alice secret-a").last().unwrap().starts_with("a1 OK"));

    edit_config(&server, |t| t.replace("max_connections_per_ip = 5", "max_connections_per_ip = 3"));
    let log = sighup(&server, RELOADED);
    assert!(lines_after(&log, RELOADED).contains("imap.max_connections_per_ip"), "{log}");
    let mut refused = Conn::connect(server.imap).unwrap();
    let text = refused.read_to_close();
    assert!(text.starts_with("* BYE [UNAVAILABLE]") && text.contains("limit 3"), "{text:?}");
    // The connections opened before stay.
    assert!(open[0].cmd("a2", "NOOP").last().unwrap().starts_with("a2 OK"));
    assert!(open[1].cmd("b1", "NOOP").last().unwrap().starts_with("b1 OK"));
    drop(open.pop());
    drop(open);
}

#[test]
fn workers_use_reloaded_limits_for_new_sessions() {
    let server = Server::start(ServerOptions { workers: 1, ..ServerOptions::default() });
    edit_config(&server, |t| t.replace("[imap]\n", "[imap]\nmax_line_length = 2048\n"));
    let log = sighup(&server, RELOADED);
    assert!(lines_after(&log, RELOADED).contains("workers_signalled=1"), "{log}");
    server.wait_for_log("IMAP worker settings reloaded", Duration::from_secs(10));
    let mut c = open_greeted(server.imap);
    assert!(c.cmd("a1", "LOGIN alice secret-a").last().unwrap().starts_with("a1 OK"));
    let long = format!("a2 SELECT {}\r\n", "x".repeat(3000));
    c.send(long.as_bytes());
    let answer = c.line();
    assert!(answer.contains("too long") && answer.contains("2048"), "{answer:?}");
}

#[test]
fn log_level_change_applies_in_master_workers_and_hibernate_processes() {
    let server = Server::start(ServerOptions {
        workers: 1,
        log_level: "info".into(),
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 2\nprocesses = 1\n".into(),
        ..ServerOptions::default()
    });
    // Log in (the master checks the password), IDLE until hibernated, DONE,
    // a command that makes the hibernate process hand the session back, LOGOUT.
    let session = |tag: &str| {
        let mut c = open_greeted(server.imap);
        assert!(c.cmd(&format!("{tag}1"), "LOGIN alice secret-a").last().unwrap().contains("OK"));
        assert!(c.cmd(&format!("{tag}2"), "SELECT INBOX").last().unwrap().contains("OK"));
        c.send(format!("{tag}3 IDLE\r\n").as_bytes());
        assert!(c.line().starts_with("+ "));
        server.wait_held(1);
        c.send(b"DONE\r\n");
        assert!(c.until_tagged(&format!("{tag}3")).last().unwrap().contains("OK"));
        // Not answerable from the hibernated state: handed back to a worker.
        assert!(c.cmd(&format!("{tag}4"), &format!("CREATE box-{tag}")).last().unwrap().contains("OK"));
        server.wait_held(0);
        assert!(c.cmd(&format!("{tag}5"), "LOGOUT").iter().any(|l| l.starts_with("* BYE")));
    };
    session("a");
    server.wait_for_log("logout", Duration::from_secs(10));
    let log = server.log_text();
    for debug_line in ["credentials accepted", "session started in worker", "handed back"] {
        assert!(!log.contains(debug_line), "{debug_line:?} at level info:\n{log}");
    }

    edit_config(&server, |t| t.replace("level = \"info\"", "level = \"debug\""));
    let log = sighup(&server, RELOADED);
    let line = lines_after(&log, RELOADED).lines().next().unwrap().to_string();
    assert!(line.contains("log.level") && line.contains("hibernate_signalled=1"), "{line}");
    server.wait_for_log("IMAP worker settings reloaded", Duration::from_secs(10));
    session("b");
    // DEBUG lines of the master (password check), the worker and the
    // hibernate process.
    for debug_line in ["credentials accepted", "session started in worker", "handed back"] {
        server.wait_for_log(debug_line, Duration::from_secs(10));
    }
}

#[test]
fn broken_config_is_refused_and_the_old_values_stay() {
    let mut server = Server::start(ServerOptions {
        workers: 1,
        imap_extra: "max_connections_per_ip = 2\nlogin_failure_delay_ms = 50\n".into(),
        ..ServerOptions::default()
    });
    let good = std::fs::read_to_string(&server.config).unwrap();
    // Not TOML at all, then TOML with a value that does not validate (and a
    // limit change that must not be half-applied).
    for broken in [
        format!("{good}\n[imap\nthis is not toml"),
        good.replace("max_connections_per_ip = 2", "max_connections_per_ip = 9\nmax_line_length = 10"),
    ] {
        std::fs::write(&server.config, broken).unwrap();
        let log = sighup(&server, REFUSED);
        let line = lines_after(&log, REFUSED).lines().next().unwrap().to_string();
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("invalid config"), "{line}");
    }
    assert!(server.log_text().contains("imap.max_line_length"), "the validation error names the key");
    // Still serving, still with the old limit of 2.
    let mut a = open_greeted(server.imap);
    let _b = open_greeted(server.imap);
    assert!(a.cmd("a1", "LOGIN alice secret-a").last().unwrap().starts_with("a1 OK"));
    let text = Conn::connect(server.imap).unwrap().read_to_close();
    assert!(text.contains("limit 2"), "{text:?}");
    // A good file afterwards reloads normally.
    std::fs::write(&server.config, good).unwrap();
    let log = sighup(&server, RELOADED);
    assert!(lines_after(&log, RELOADED).contains("applied=none"), "{log}");
    // The passwd file needs no reload: a user added now can log in at once.
    let out = Command::new(imap_support::dormouse())
        .args(["--config", server.config.to_str().unwrap(), "user", "add", "carol", "--password", "pw-c", "--scheme", "PLAIN"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(a);
    let mut c = open_greeted(server.imap);
    assert!(c.cmd("c1", "LOGIN carol pw-c").last().unwrap().starts_with("c1 OK"));
    let (status, _) = server.terminate_timed();
    assert!(status.is_some_and(|s| s.success()), "serve exits cleanly after the reloads");
}

#[test]
fn listen_change_needs_a_restart_and_the_old_port_keeps_serving() {
    let server = Server::start(ServerOptions {
        workers: 1,
        imap_extra: "max_connections_per_ip = 50\nlogin_failure_delay_ms = 50\n".into(),
        ..ServerOptions::default()
    });
    let other = imap_support::free_port();
    edit_config(&server, |t| {
        t.replace(&format!("listen = \"127.0.0.1:{}\"", server.imap), &format!("listen = \"127.0.0.1:{other}\""))
            .replace("max_connections_per_ip = 50", "max_connections_per_ip = 40")
    });
    let log = sighup(&server, RELOADED);
    let tail = lines_after(&log, "SIGHUP received");
    let warn = tail.lines().find(|l| l.contains("need a restart")).unwrap_or_else(|| panic!("{tail}"));
    assert!(warn.contains("WARN") && warn.contains("imap.listen"), "{warn}");
    assert!(!warn.contains("max_connections_per_ip"), "{warn}");
    assert!(lines_after(&log, RELOADED).contains("applied=imap.max_connections_per_ip"), "{log}");
    // The old port serves (pre-login and in a worker); the new one is not bound.
    let mut c = open_greeted(server.imap);
    assert!(c.cmd("a1", "LOGIN alice secret-a").last().unwrap().starts_with("a1 OK"));
    assert!(std::net::TcpStream::connect(("127.0.0.1", other)).is_err());
    // The workers' file keeps the running listen address, so a restarted
    // worker cannot pick up half a change.
    let worker_file = std::fs::read_to_string(server.dir.path().join("data/run/imap-worker.toml")).unwrap();
    assert!(worker_file.contains(&format!("127.0.0.1:{}", server.imap)), "{worker_file}");
    assert!(worker_file.contains("max_connections_per_ip = 40"), "{worker_file}");
}

/// `RUST_LOG` wins over `log.level`, also on reload: said in a WARN, and
/// the INFO line does not claim the level was applied.
#[test]
fn rust_log_keeps_precedence_over_a_reloaded_level() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_one_worker_config(dir.path(), "[log]\nlevel = \"info\"\n");
    let log = dir.path().join("serve.log");
    let mut child = Command::new(dormouse())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("IMAP worker ready");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("level = \"info\"", "level = \"debug\"")).unwrap();
    let _ = Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    let text = wait_for(RELOADED);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(text.contains("RUST_LOG is set and takes precedence over log.level"), "{text}");
    assert!(lines_after(&text, RELOADED).contains("applied=none"), "{text}");
    assert!(!text.contains("DEBUG"), "{text}");
    assert!(status.success());
}
