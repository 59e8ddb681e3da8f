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

/// Prints the end of the server's log when the test fails.
struct DumpLogOnPanic<'a>(&'a Server);

impl Drop for DumpLogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.0.log_text();
            let interesting: Vec<&str> =
                log.lines().filter(|l| !l.contains("DEBUG imap::session") && !l.contains("storage")).collect();
            eprintln!("server log (end):\n{}", interesting[interesting.len().saturating_sub(200)..].join("\n"));
        }
    }
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

/// `GET /metrics`.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn restart(server: &Server) -> Output {
    Command::new(dormouse()).args(["--config", server.config.to_str().unwrap(), "restart"]).output().unwrap()
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\nhello\r\n").into_bytes()
}

fn server(workers: usize, metrics: u16) -> (Server, StopServing) {
    let server = Server::start(ServerOptions {
        workers,
        sections_extra: format!(
            "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 2\nprocesses = 1\nkeepalive_secs = 600\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
        ),
        log_level: "info,imap=debug,hibernate=debug".into(),
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
    let metrics = imap_support::free_port();
    let (server, _stop) = server(2, metrics);
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
        let mut lines = Vec::new();
        loop {
            let l = c.line();
            assert!(!l.is_empty(), "client {i}: closed before a4; got {lines:?}\n{}", tail(&server.log_text(), 150));
            let done = l.starts_with("a4 ");
            lines.push(l);
            if done {
                break;
            }
        }
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
    // The metrics listener moved too, and counts every restart's sessions.
    let text = scrape(metrics);
    assert!(text.contains(&format!("dormouse_restart_sessions_total{{outcome=\"moved\"}} {}\n", 3 * n)), "{text}");
    assert!(text.contains("dormouse_restart_sessions_total{outcome=\"lost\"} 0\n"), "{text}");
}

/// A TLS 1.3 (rustls) client on a blocking socket, accepting any certificate.
struct TlsConn {
    tls: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    buf: Vec<u8>,
}

fn tls_config(tls12: bool) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    #[derive(Debug)]
    struct AcceptAny(std::sync::Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls12 { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

impl TlsConn {
    fn open(port: u16, tls12: bool) -> TlsConn {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let conn = rustls::ClientConnection::new(tls_config(tls12), "localhost".try_into().unwrap()).unwrap();
        TlsConn { tls: rustls::StreamOwned::new(conn, tcp), buf: Vec::new() }
    }
}

/// A plain or TLS client.
enum Client {
    Plain(Conn),
    Tls(Box<TlsConn>),
}

impl Client {
    fn tls(port: u16) -> Client {
        let mut c = Client::Tls(Box::new(TlsConn::open(port, false)));
        let greeting = c.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        match self {
            Client::Plain(c) => c.send(bytes),
            Client::Tls(t) => {
                t.tls.write_all(bytes).unwrap();
                t.tls.flush().unwrap();
            }
        }
    }

    /// One line without CRLF; empty when the server closed.
    fn line(&mut self) -> String {
        use std::io::Read;
        match self {
            Client::Plain(c) => c.line().trim_end().to_string(),
            Client::Tls(t) => loop {
                if let Some(end) = t.buf.windows(2).position(|w| w == b"\r\n") {
                    let line: Vec<u8> = t.buf.drain(..end + 2).collect();
                    return String::from_utf8_lossy(&line[..end]).into_owned();
                }
                let mut chunk = [0u8; 16384];
                match t.tls.read(&mut chunk) {
                    Ok(n) if n > 0 => t.buf.extend_from_slice(&chunk[..n]),
                    _ => return String::new(),
                }
            },
        }
    }

    /// Exactly `n` bytes (a literal).
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        use std::io::Read;
        match self {
            Client::Plain(c) => {
                let mut out = Vec::with_capacity(n);
                while out.len() < n {
                    let mut l = c.line().into_bytes();
                    assert!(!l.is_empty(), "closed inside a literal");
                    out.append(&mut l);
                }
                out
            }
            Client::Tls(t) => {
                while t.buf.len() < n {
                    let mut chunk = [0u8; 16384];
                    let got = t.tls.read(&mut chunk).unwrap();
                    assert!(got > 0, "closed inside a literal");
                    t.buf.extend_from_slice(&chunk[..got]);
                }
                t.buf.drain(..n).collect()
            }
        }
    }

    fn until_tagged(&mut self, tag: &str, what: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "{what}: connection closed before {tag}; got {lines:?}");
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    fn cmd(&mut self, tag: &str, command: &str, what: &str) -> Vec<String> {
        self.send(format!("{tag} {command}\r\n").as_bytes());
        let lines = self.until_tagged(tag, what);
        assert!(lines.last().unwrap().starts_with(&format!("{tag} OK")), "{what}: {command}: {lines:?}");
        lines
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// In IDLE long enough to be hibernated.
    Parked,
    /// Enters IDLE again just before each restart (still live in a worker).
    LiveIdle,
    /// Polls with NOOP (live: `idle_after_secs` is long).
    Poller,
}

struct Session {
    client: Client,
    kind: Kind,
    user: usize,
    tag: u32,
    name: String,
}

impl Session {
    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("t{}", self.tag)
    }

    fn idle(&mut self) {
        let tag = self.next_tag();
        self.send_line(&format!("{tag} IDLE"));
        let l = self.client.line();
        assert!(l.starts_with("+ "), "{}: IDLE: {l:?}", self.name);
    }

    fn send_line(&mut self, text: &str) {
        self.client.send(format!("{text}\r\n").as_bytes());
    }

    /// Ends IDLE (when in it) and checks that `FETCH 1:* (UID)` lists `count` messages.
    fn check_view(&mut self, count: usize, in_idle: bool) {
        let done_tag = format!("t{}", self.tag);
        if in_idle {
            self.send_line("DONE");
            let lines = self.client.until_tagged(&done_tag, &self.name);
            assert!(lines.last().unwrap().contains("OK"), "{}: {lines:?}", self.name);
        }
        let tag = self.next_tag();
        let name = self.name.clone();
        let lines = self.client.cmd(&tag, "FETCH 1:* (UID)", &name);
        let fetched: Vec<&String> = lines.iter().filter(|l| l.contains(" FETCH (UID ")).collect();
        assert_eq!(fetched.len(), count, "{name}: {lines:?}");
        assert!(fetched.last().unwrap().starts_with(&format!("* {count} FETCH")), "{name}: {lines:?}");
    }
}

const USERS: [(&str, &str); 2] = [("alice", "secret-a"), ("bob", "secret-b")];

#[test]
fn plain_and_tls_sessions_parked_idle_and_polling_survive_three_restarts() {
    let server = Server::start(ServerOptions {
        workers: 2,
        users: vec![
            ("alice".into(), "secret-a".into()),
            ("bob".into(), "secret-b".into()),
            ("carol".into(), "secret-c".into()),
        ],
        imap_extra: "login_failure_delay_ms = 50\nmax_connections_per_ip = 5000\nmax_sessions_per_user = 5000\n".into(),
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 600\nprocesses = 2\nkeepalive_secs = 600\n".into(),
        log_level: "info,imap::server=debug,hibernate::driver=debug".into(),
        ..ServerOptions::default()
    });
    let _stop = StopServing(server.dir.path().join("data/serve.lock"));
    let _dump = DumpLogOnPanic(&server);
    let mut counts = [1usize, 1usize];
    server.deliver("alice", &message("first"));
    server.deliver("bob", &message("first"));
    // One large message for the client that is mid-FETCH during a restart.
    let big_body = "x".repeat(76) + "\r\n";
    let big = format!("Subject: big\r\n\r\n{}", big_body.repeat(120_000)).into_bytes();
    server.deliver("carol", &big);

    // 2,000 sessions, as the issue asks: a quarter over TLS 1.3.
    let plan = [(Kind::Parked, 1400), (Kind::LiveIdle, 300), (Kind::Poller, 300)];
    let mut sessions = Vec::new();
    for (kind, n) in plan {
        for i in 0..n {
            let tls = i % 4 == 0;
            let client = if tls { Client::tls(server.imaps) } else { Client::Plain(Conn::open(server.imap)) };
            let user = i % 2;
            let name = format!("{kind:?} {i} tls={tls}");
            let mut s = Session { client, kind, user, tag: 0, name };
            let (u, p) = USERS[user];
            let tag = s.next_tag();
            s.client.cmd(&tag, &format!("LOGIN {u} {p}"), &s.name.clone());
            let tag = s.next_tag();
            s.client.cmd(&tag, "SELECT INBOX", &s.name.clone());
            if kind == Kind::Parked {
                s.idle();
            }
            sessions.push(s);
        }
    }
    let total = sessions.len() as u64 + 1;
    server.wait_held(1400);
    let mut big_reader = Client::Plain(Conn::open(server.imap));
    big_reader.cmd("b1", "LOGIN carol secret-c", "big");
    big_reader.cmd("b2", "SELECT INBOX", "big");

    for round in 1..=3 {
        for s in sessions.iter_mut().filter(|s| s.kind == Kind::LiveIdle) {
            s.idle();
        }
        let started = Instant::now();
        let new_pid = if round == 1 {
            // Mid-FETCH: the client reads nothing until the restart began;
            // the command finishes, then the session moves.
            big_reader.send(b"b3 FETCH 1 BODY[]\r\n");
            let restarter = {
                let config = server.config.clone();
                std::thread::spawn(move || {
                    Command::new(dormouse()).args(["--config", config.to_str().unwrap(), "restart"]).output().unwrap()
                })
            };
            std::thread::sleep(Duration::from_millis(300));
            let head = big_reader.line();
            let size: usize = head.rsplit('{').next().unwrap().trim_end_matches('}').parse().unwrap_or_else(|_| panic!("{head}"));
            assert_eq!(size, big.len(), "{head}");
            assert_eq!(big_reader.bytes(size), big);
            let rest = big_reader.until_tagged("b3", "big");
            assert!(rest.last().unwrap().starts_with("b3 OK"), "{rest:?}");
            let out = restarter.join().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{stdout}{}\n{}", String::from_utf8_lossy(&out.stderr), tail(&server.log_text(), 80));
            assert!(stdout.contains(&format!("{total} sessions moved, 0 could not")), "{stdout}\n{}", tail(&server.log_text(), 80));
            serving_pid(&server)
        } else {
            restart_ok(&server, total, 0)
        };
        eprintln!("round {round}: restart took {:?} (pid {new_pid})", started.elapsed());
        // Every IDLE client (parked or live before the restart) hears of a delivery.
        for (u, (user, _)) in USERS.iter().enumerate() {
            server.deliver(user, &message(&format!("round {round}")));
            counts[u] += 1;
        }
        for s in sessions.iter_mut().filter(|s| s.kind != Kind::Poller) {
            let want = counts[s.user];
            let l = s.client.line();
            assert_eq!(l, format!("* {want} EXISTS"), "{} round {round}", s.name);
        }
        // Pollers see it on their next NOOP.
        for s in sessions.iter_mut().filter(|s| s.kind == Kind::Poller) {
            let tag = s.next_tag();
            let name = s.name.clone();
            let lines = s.client.cmd(&tag, "NOOP", &name);
            assert!(lines.contains(&format!("* {} EXISTS", counts[s.user])), "{name} round {round}: {lines:?}");
        }
        // The live idlers' next command is answered with the right numbers.
        for s in sessions.iter_mut().filter(|s| s.kind == Kind::LiveIdle) {
            s.check_view(counts[s.user], true);
        }
        let tag = format!("b{}", 10 + round);
        big_reader.cmd(&tag, "NOOP", "big");
    }
    // Every session's next command, served by the third generation.
    for s in sessions.iter_mut() {
        let in_idle = s.kind == Kind::Parked;
        s.check_view(counts[s.user], in_idle);
    }
    let log = server.log_text();
    assert_eq!(log.matches(&format!("restart: {total} sessions moved, 0 could not")).count(), 2 * 3, "{}", tail(&log, 60));
    assert!(!log.contains("no worker to hand the session back to"), "{}", tail(&log, 60));
}

/// Spawns `cmd`, retrying while the kernel says the file is busy (a
/// just-written binary may still be open for writing in a child another
/// test thread forked meanwhile).
fn spawn_retrying(cmd: &mut Command) -> std::process::Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other.unwrap(),
        }
    }
}

/// Replaces `path` atomically (rename), as a package upgrade does: the
/// running binary keeps its inode.
fn replace_file(path: &std::path::Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_new_binary_that_fails_or_hangs_is_rolled_back_and_a_good_one_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let (config, imap) = imap_support::write_one_worker_config(
        dir.path(),
        "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 600\nprocesses = 1\n",
    );
    let out = Command::new(dormouse())
        .args(["--config", config.to_str().unwrap(), "user", "add", "alice", "--password", "secret-a", "--scheme", "PLAIN"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // serve runs from a copy we can replace, as a package upgrade would.
    let bin = dir.path().join("bin/dormouse");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(dormouse(), &bin).unwrap();
    let log = dir.path().join("serve.log");
    let mut first = spawn_retrying(
        Command::new(&bin)
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("NO_COLOR", "1")
            .env("DORMOUSE_RESTART_TIMEOUT_SECS", "2")
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let lock = dir.path().join("data/serve.lock");
    let _stop = StopServing(lock.clone());
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log_text().contains("IMAP worker ready") {
        assert!(Instant::now() < deadline, "serve did not start:\n{}", log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = first.id();
    let mut c = Conn::open(imap);
    c.cmd("a1", "LOGIN alice secret-a");
    c.cmd("a2", "SELECT INBOX");
    c.send(b"a3 IDLE\r\n");
    assert!(c.line().starts_with("+ "));
    let restart = || Command::new(dormouse()).args(["--config", config.to_str().unwrap(), "restart"]).output().unwrap();
    let deliver = |subject: &str| {
        let mut child = Command::new(dormouse())
            .args(["--config", config.to_str().unwrap(), "deliver", "-d", "alice"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &message(subject)).unwrap();
        assert!(child.wait().unwrap().success());
    };

    for (broken, why) in [
        (&b"#!/bin/sh\nexit 1\n"[..], "exited before it was ready"),
        (&b"#!/bin/sh\nexec sleep 30\n"[..], "was not ready within 2 s"),
    ] {
        replace_file(&bin, broken);
        let out = restart();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a broken binary restarted: {}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr.contains("restart failed") && stderr.contains(why), "{stderr}");
        assert!(stderr.contains(&format!("pid {pid} keeps serving")), "{stderr}");
        assert!(log_text().contains("restart failed; this generation keeps serving"), "{}", tail(&log_text(), 30));
        // Nothing changed: same server, same session, same lock.
        assert_eq!(std::fs::read_to_string(&lock).unwrap().trim(), pid.to_string());
        assert!(first.try_wait().unwrap().is_none(), "serve exited:\n{}", tail(&log_text(), 30));
        deliver(why);
        let mut l = c.line();
        while l.ends_with(" RECENT\r\n") {
            l = c.line();
        }
        assert!(l.trim_end().ends_with(" EXISTS"), "{why}: {l:?}\n{}", tail(&log_text(), 40));
        let mut fresh = Conn::open(imap);
        let lines = fresh.cmd("f1", "LOGIN alice secret-a");
        assert!(lines.last().unwrap().starts_with("f1 OK"), "{lines:?}");
    }

    // The good binary is back: the restart goes through onto it.
    replace_file(&bin, &std::fs::read(dormouse()).unwrap());
    let out = restart();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}\n{}", String::from_utf8_lossy(&out.stderr), tail(&log_text(), 40));
    assert!(stdout.contains("1 sessions moved, 0 could not"), "{stdout}");
    assert!(imap_support::wait_exit(&mut first, Duration::from_secs(20)).is_some(), "old generation still running");
    assert_ne!(std::fs::read_to_string(&lock).unwrap().trim(), pid.to_string());
    deliver("after");
    let mut l = c.line();
    while l.ends_with(" RECENT\r\n") {
        l = c.line();
    }
    assert_eq!(l.trim_end(), "* 3 EXISTS");
    c.send(b"DONE\r\n");
    assert!(c.line().starts_with("a3 OK"));
}

#[test]
fn tls12_and_prelogin_sessions_of_the_old_master_get_a_bye_and_are_counted_lost() {
    let server = Server::start(ServerOptions {
        workers: 1,
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 600\nprocesses = 1\nkeepalive_secs = 600\n".into(),
        ..ServerOptions::default()
    });
    let _stop = StopServing(server.dir.path().join("data/serve.lock"));
    let open12 = || {
        let mut c = Client::Tls(Box::new(TlsConn::open(server.imaps, true)));
        assert!(c.line().starts_with("* OK"));
        c.cmd("a1", "LOGIN alice secret-a", "tls12");
        c.cmd("a2", "SELECT INBOX", "tls12");
        c
    };
    // Hibernated (IDLE), and live in the worker (no IDLE: idle_after is long).
    let mut parked12 = open12();
    parked12.send(b"a3 IDLE\r\n");
    assert!(parked12.line().starts_with("+ "));
    let mut live12 = open12();
    // A plain session moves as usual.
    let mut plain = Client::Plain(Conn::open(server.imap));
    plain.cmd("p1", "LOGIN bob secret-b", "plain");
    plain.cmd("p2", "SELECT INBOX", "plain");
    plain.send(b"p3 IDLE\r\n");
    assert!(plain.line().starts_with("+ "));
    // Not logged in yet: the old master's own; it gets the BYE too.
    let mut prelogin = Conn::open(server.imap);
    server.wait_held(2);
    restart_ok(&server, 1, 3);
    assert_eq!(prelogin.line().trim_end(), "* BYE [UNAVAILABLE] Server shutting down");
    for (name, c) in [("hibernated", &mut parked12), ("live", &mut live12)] {
        assert_eq!(c.line(), "* BYE [UNAVAILABLE] Server restarting, please reconnect", "{name}");
        assert_eq!(c.line(), "", "{name}: closed after the BYE");
    }
    server.deliver("bob", &message("after"));
    assert_eq!(plain.line(), "* 1 EXISTS");
}

#[test]
fn an_adopted_hibernate_process_that_dies_is_restarted_by_the_new_generation() {
    let (server, _stop) = server(1, imap_support::free_port());
    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN alice secret-a");
    c.cmd("a2", "SELECT INBOX");
    c.send(b"a3 IDLE\r\n");
    assert!(c.line().starts_with("+ "));
    server.wait_held(1);
    let adopted = hibernate_pids(&server);
    restart_ok(&server, 1, 0);
    assert_eq!(hibernate_pids(&server), adopted);
    // Not our child any more, yet its death is noticed and it is replaced.
    let _ = Command::new("kill").args(["-KILL", &adopted[0].to_string()]).status();
    let log = server.wait_for_log("hibernate process died; restarting it", Duration::from_secs(20));
    assert!(log.contains("sessions_dropped=1"), "{}", tail(&log, 30));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = hibernate_pids(&server);
        if now.len() == 1 && now != adopted {
            break;
        }
        assert!(Instant::now() < deadline, "no new hibernate process: {now:?}\n{}", tail(&server.log_text(), 30));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The client of the dead process lost its connection; new ones park again.
    assert_eq!(c.read_to_close(), "");
    let mut d = Conn::open(server.imap);
    d.cmd("b1", "LOGIN bob secret-b");
    d.cmd("b2", "SELECT INBOX");
    d.send(b"b3 IDLE\r\n");
    assert!(d.line().starts_with("+ "));
    server.wait_held(1);
}

#[test]
fn sigterm_during_a_restart_abandons_it_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _imap) = imap_support::write_one_worker_config(dir.path(), "");
    let bin = dir.path().join("bin/dormouse");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(dormouse(), &bin).unwrap();
    let log = dir.path().join("serve.log");
    let mut serve = spawn_retrying(
        Command::new(&bin)
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let _stop = StopServing(dir.path().join("data/serve.lock"));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_log = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !log_text().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in:\n{}", log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_log("IMAP worker ready");
    replace_file(&bin, b"#!/bin/sh\nexec sleep 60\n");
    let _ = Command::new("kill").args(["-USR2", &serve.id().to_string()]).status();
    wait_log("restart: new generation started");
    let text = log_text();
    let line = text.lines().find(|l| l.contains("restart: new generation started")).unwrap();
    let new_pid: u32 = line.split("pid=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let _ = Command::new("kill").args(["-TERM", &serve.id().to_string()]).status();
    let status = imap_support::wait_exit(&mut serve, Duration::from_secs(15));
    assert!(status.is_some(), "serve did not stop during a restart:\n{}", tail(&log_text(), 20));
    assert!(log_text().contains("SIGTERM received during a restart"), "{}", tail(&log_text(), 20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{new_pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        assert!(Instant::now() < deadline, "the abandoned new generation {new_pid} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}
