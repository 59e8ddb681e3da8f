//! TLS sessions hand over and hibernate like plain ones, with real `serve`:
//! after login the master passes the TCP socket and the TLS 1.3 state to a
//! worker and keeps nothing; the hibernate process reads and writes through
//! the record layer and hands the state back on wake.

mod imap_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imap_support::{tail, Server, ServerOptions, PYTHON};

/// Parks an IDLE session at once; others never (within a test).
fn server(extra: &str) -> Server {
    Server::start(ServerOptions {
        imap_extra: "login_failure_delay_ms = 50\n".into(),
        sections_extra: format!("[hibernate]\ntimeout_secs = 0\nidle_after_secs = 600\nprocesses = 1\nkeepalive_secs = 600\n{extra}"),
        ..ServerOptions::default()
    })
}

/// Descriptors the serve (master) process holds.
fn master_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count()
}

/// One LMTP connection, one transaction per message.
struct Lmtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Lmtp {
    fn open(port: u16) -> Lmtp {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut l = Lmtp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        assert!(l.reply().starts_with("220"));
        l.writer.write_all(b"LHLO tls-test\r\n").unwrap();
        assert!(l.reply().starts_with("250"));
        l
    }

    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "LMTP connection closed");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    }

    fn deliver(&mut self, user: &str, subject: &str) {
        let body = format!("Subject: {subject}\r\n\r\nbody\r\n");
        self.writer
            .write_all(
                format!("MAIL FROM:<s@x>\r\nRCPT TO:<{user}@x>\r\nDATA\r\n{body}.\r\n").as_bytes(),
            )
            .unwrap();
        for expect in ["250", "250", "354", "250"] {
            let r = self.reply();
            assert!(
                r.starts_with(expect),
                "{subject}: expected {expect}, got {r:?}"
            );
        }
    }
}

/// Runs tests/py/tls_idle_cycles.py in lock step: after each "idling K"
/// waits until the session is parked, delivers message K and says "go".
fn python_cycles(server: &Server, port: u16, mode: &str, cycles: usize) {
    // Before the client starts: its first IDLE parks at once.
    let hibernations_before = server.stat("hibernations");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/tls_idle_cycles.py");
    let mut child = Command::new(PYTHON)
        .arg(&script)
        .args([
            "127.0.0.1",
            &port.to_string(),
            mode,
            "alice",
            "secret-a",
            &cycles.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_py = child.stdin.take().unwrap();
    let mut from_py = BufReader::new(child.stdout.take().unwrap());
    let mut lmtp = Lmtp::open(server.lmtp);
    let mut next_line = |what: &str| {
        let mut line = String::new();
        from_py.read_line(&mut line).unwrap();
        if line.is_empty() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!(
                "python ended waiting for {what}:\n{err}\nserver log:\n{}",
                tail(&server.log_text(), 40)
            );
        }
        line
    };
    assert_eq!(next_line("ready").trim(), "ready");
    for k in 0..cycles {
        assert_eq!(next_line("idling").trim(), format!("idling {k}"));
        server.wait_held(1);
        lmtp.deliver("alice", &format!("cycle {k}"));
        to_py.write_all(b"go\n").unwrap();
    }
    assert_eq!(next_line("the end").trim(), "cycles ok");
    assert!(child.wait().unwrap().success());
    assert_eq!(
        server.stat("hibernations") - hibernations_before,
        cycles as u64,
        "one park per cycle"
    );
}

#[test]
fn python_ssl_client_idles_through_many_hibernations_over_imaps() {
    let server = server("");
    // Warm: the first TLS session may allocate lazily initialised state.
    python_cycles(&server, server.imaps, "imaps", 2);
    let fds_before = master_fds(&server);
    let cycles = std::env::var("TLS_HIBERNATE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let started = Instant::now();
    python_cycles(&server, server.imaps, "imaps", cycles);
    eprintln!("{cycles} TLS hibernation cycles in {:?}", started.elapsed());
    assert!(server.stat("hand-backs command") >= cycles as u64);
    assert!(
        master_fds(&server) <= fds_before + 2,
        "the master holds nothing per TLS session"
    );
    assert!(
        !server.log_text().contains("TLS record error"),
        "{}",
        tail(&server.log_text(), 40)
    );
}

#[test]
fn starttls_sessions_hibernate_the_same_way() {
    let server = server("");
    python_cycles(&server, server.imap, "starttls", 100);
}

/// A rustls client on a blocking socket.
struct TlsConn {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

fn client_config(tls12: bool) -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

impl TlsConn {
    fn open(port: u16, tls12: bool) -> TlsConn {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn =
            rustls::ClientConnection::new(client_config(tls12), "localhost".try_into().unwrap())
                .unwrap();
        let mut c = TlsConn {
            tls: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        };
        assert!(c.line().starts_with("* OK"));
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).unwrap();
        self.tls.flush().unwrap();
    }

    fn read_more(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.tls.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8_lossy(&line[..end]).into_owned();
            }
            assert!(self.read_more().unwrap() > 0, "connection closed");
        }
    }

    fn cmd(&mut self, tag: &str, text: &str) -> Vec<String> {
        self.send(format!("{tag} {text}\r\n").as_bytes());
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                assert!(
                    lines.last().unwrap().starts_with(&format!("{tag} OK")),
                    "{lines:?}"
                );
                return lines;
            }
        }
    }

    fn login_select_idle(&mut self) {
        self.cmd("a1", "LOGIN alice secret-a");
        self.cmd("a2", "SELECT INBOX");
        self.send(b"a3 IDLE\r\n");
        assert!(self.line().starts_with("+ "));
    }
}

#[test]
fn key_update_close_notify_and_garbage_while_hibernated() {
    let server = server("");
    let mut lmtp = Lmtp::open(server.lmtp);

    // A client KeyUpdate (update_requested) reaches the hibernate process,
    // which answers with its own: the EXISTS after it decrypts under the
    // server's next key, and the worker continues with both new keys.
    let mut c = TlsConn::open(server.imaps, false);
    c.login_select_idle();
    server.wait_held(1);
    c.tls.conn.refresh_traffic_keys().unwrap();
    c.tls.flush().unwrap();
    lmtp.deliver("alice", "after key update");
    assert_eq!(c.line(), "* 1 EXISTS");
    c.send(b"DONE\r\n");
    assert!(c.line().starts_with("a3 OK"));
    let lines = c.cmd("a4", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(
        lines.iter().any(|l| l == "Subject: after key update"),
        "{lines:?}"
    );
    // Once more in the worker, then parked again with the rotated state.
    c.tls.conn.refresh_traffic_keys().unwrap();
    c.cmd("a5", "NOOP");
    c.send(b"a6 IDLE\r\n");
    assert!(c.line().starts_with("+ "));
    server.wait_held(1);
    lmtp.deliver("alice", "second");
    assert_eq!(c.line(), "* 2 EXISTS");

    // close_notify while hibernated: answered with ours, then a clean EOF.
    c.tls.conn.send_close_notify();
    c.tls.flush().unwrap();
    loop {
        match c.read_more() {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) => panic!("expected a clean close, got {e}"),
        }
    }
    server.wait_held(0);

    // A forged record while hibernated: bad_record_mac alert, then close.
    let mut g = TlsConn::open(server.imaps, false);
    g.login_select_idle();
    server.wait_held(1);
    let mut forged = vec![23u8, 3, 3, 0, 40];
    forged.extend_from_slice(&[0x5a; 40]);
    g.tls.sock.write_all(&forged).unwrap();
    let err = loop {
        match g.read_more() {
            Ok(0) => panic!("closed without an alert"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("BadRecordMac"), "{err}");
    server.wait_held(0);
    let log = server.wait_for_log(
        "TLS record error from a hibernated client",
        Duration::from_secs(10),
    );
    assert!(!log.contains("panicked"), "{}", tail(&log, 40));
}

#[test]
fn a_refused_hibernation_keeps_the_session_with_the_state_the_worker_owns() {
    // One session per hibernate process: the second is sent back as "full"
    // and its worker goes on with the TLS state it got back, no record
    // number reused (the client would fail to decrypt otherwise).
    let server = server("max_sessions_per_process = 1\n");
    let mut lmtp = Lmtp::open(server.lmtp);
    let mut first = TlsConn::open(server.imaps, false);
    first.login_select_idle();
    server.wait_held(1);
    let mut second = TlsConn::open(server.imaps, false);
    second.login_select_idle();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.stat("refused (full)") == 0 {
        assert!(
            Instant::now() < deadline,
            "never refused: {:?}",
            server.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.stat("sessions held"), 1);
    lmtp.deliver("alice", "to both");
    assert_eq!(first.line(), "* 1 EXISTS");
    assert_eq!(second.line(), "* 1 EXISTS");
    for c in [&mut first, &mut second] {
        c.send(b"DONE\r\n");
        // The worker's IDLE also reports RECENT; the hibernate process does not.
        let mut done = c.line();
        while done.starts_with("* ") {
            done = c.line();
        }
        assert!(
            done.starts_with("a3 OK"),
            "{done}\n{}",
            tail(&server.log_text(), 30)
        );
        let lines = c.cmd("a4", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
        assert!(lines.iter().any(|l| l == "Subject: to both"), "{lines:?}");
        c.cmd("a5", "LOGOUT");
    }
}

#[test]
fn the_master_keeps_no_descriptor_per_tls_session_but_proxies_tls12() {
    let metrics = imap_support::free_port();
    let server = server(&format!("[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"));
    let warm = TlsConn::open(server.imaps, false);
    drop(warm);
    std::thread::sleep(Duration::from_millis(200));
    let before = master_fds(&server);
    let mut sessions: Vec<TlsConn> = (0..30)
        .map(|_| {
            let mut c = TlsConn::open(server.imaps, false);
            c.cmd("a1", "LOGIN alice secret-a");
            c
        })
        .collect();
    let with_tls13 = master_fds(&server);
    assert!(
        with_tls13 <= before + 2,
        "30 TLS 1.3 sessions: master fds {before} -> {with_tls13}"
    );
    for c in &mut sessions {
        c.cmd("a2", "NOOP");
    }

    // TLS 1.2 cannot move: the master terminates it and relays, two
    // descriptors per session, and counts it.
    let mut old: Vec<TlsConn> = (0..5)
        .map(|_| {
            let mut c = TlsConn::open(server.imaps, true);
            c.cmd("a1", "LOGIN alice secret-a");
            c.cmd("a2", "SELECT INBOX");
            c
        })
        .collect();
    let with_tls12 = master_fds(&server);
    assert!(
        // Two per session (the TCP socket and the worker's socket pair
        // end); one less may show if another descriptor closed meanwhile.
        with_tls12 >= with_tls13 + 9,
        "TLS 1.2 is proxied: {with_tls13} -> {with_tls12}"
    );
    for c in &mut old {
        c.cmd("a3", "NOOP");
    }
    let text = scrape(metrics);
    assert!(
        text.contains("dormouse_handovers_total{transport=\"tls\"} 30\n"),
        "{text}"
    );
    assert!(
        text.contains("dormouse_handovers_total{transport=\"tls-proxied\"} 5\n"),
        "{text}"
    );
    assert!(text.contains("dormouse_tls_sessions_relayed 5\n"), "{text}");
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `openssl s_client` (OpenSSL's TLS 1.3, not rustls) on IMAPS, in its
/// interactive mode where a line "K" sends a KeyUpdate asking for ours.
struct SClient {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl SClient {
    fn open(port: u16) -> SClient {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-tls1_3",
                "-crlf",
                "-servername",
                "localhost",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim_end().to_string()).is_err() {
                    break;
                }
            }
        });
        let mut c = SClient {
            child,
            stdin,
            lines,
        };
        c.expect(|l| l.starts_with("* OK"));
        c
    }

    /// One line at a time: s_client looks for its command letters only at
    /// the start of what one read returns.
    fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Lines up to and including the first matching one.
    fn expect(&mut self, want: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let done = want(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("s_client: no matching line; saw {seen:?}"),
            }
        }
    }
}

#[test]
fn openssl_s_client_key_update_while_hibernated() {
    let server = server("");
    let mut lmtp = Lmtp::open(server.lmtp);
    let mut c = SClient::open(server.imaps);
    c.send("a1 LOGIN alice secret-a");
    c.expect(|l| l.starts_with("a1 OK"));
    c.send("a2 SELECT INBOX");
    c.expect(|l| l.starts_with("a2 OK"));
    c.send("a3 IDLE");
    c.expect(|l| l.starts_with("+ "));
    server.wait_held(1);
    c.send("K");
    lmtp.deliver("alice", "after openssl key update");
    c.expect(|l| l == "* 1 EXISTS");
    assert_eq!(
        server.stat("sessions held"),
        1,
        "the EXISTS came from the hibernate process"
    );
    c.send("DONE");
    c.expect(|l| l.starts_with("a3 OK"));
    c.send("a4 FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    let lines = c.expect(|l| l.starts_with("a4 "));
    assert!(
        lines
            .iter()
            .any(|l| l == "Subject: after openssl key update"),
        "{lines:?}"
    );
    assert!(lines.last().unwrap().starts_with("a4 OK"), "{lines:?}");
    c.send("a5 LOGOUT");
    c.expect(|l| l.starts_with("a5 OK"));
    drop(c.stdin);
    let out = c.child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KEYUPDATE"),
        "s_client did not send its KeyUpdate: {err}"
    );
    assert!(
        !server.log_text().contains("TLS record error"),
        "{}",
        tail(&server.log_text(), 30)
    );
}

#[test]
fn a_forged_record_to_a_worker_gets_an_alert_and_a_close() {
    let server = server("");
    let mut c = TlsConn::open(server.imaps, false);
    c.cmd("a1", "LOGIN alice secret-a");
    c.cmd("a2", "SELECT INBOX");
    assert_eq!(server.stat("sessions held"), 0, "still in the worker");
    let mut forged = vec![23u8, 3, 3, 0, 33];
    forged.extend_from_slice(&[0xa5; 33]);
    c.tls.sock.write_all(&forged).unwrap();
    let err = loop {
        match c.read_more() {
            Ok(0) => panic!("closed without an alert"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("BadRecordMac"), "{err}");
    server.wait_for_log("TLS record error; closing", Duration::from_secs(10));
}
