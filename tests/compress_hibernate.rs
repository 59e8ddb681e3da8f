//! COMPRESS=DEFLATE sessions hibernate, with real `serve` and a Python zlib
//! client: the worker parks the session with the client stream's inflate
//! window; the hibernate process inflates DONE/IDLE, writes EXISTS as
//! stored blocks, and hands the window back; the client's deflater refers
//! back across all of it (plain TCP, implicit TLS, STARTTLS).

mod imap_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imap_support::{tail, Server, ServerOptions, PYTHON};

/// Parks an IDLE session at once; others never (within a test).
fn server() -> Server {
    Server::start(ServerOptions {
        imap_extra: "login_failure_delay_ms = 50\n".into(),
        sections_extra: "[hibernate]\ntimeout_secs = 0\nidle_after_secs = 600\nprocesses = 1\nkeepalive_secs = 600\n".into(),
        ..ServerOptions::default()
    })
}

/// One LMTP connection, one transaction per message.
struct Lmtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Lmtp {
    fn open(port: u16) -> Lmtp {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut l = Lmtp { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream };
        assert!(l.reply().starts_with("220"));
        l.writer.write_all(b"LHLO compress-test\r\n").unwrap();
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
            .write_all(format!("MAIL FROM:<s@x>\r\nRCPT TO:<{user}@x>\r\nDATA\r\n{body}.\r\n").as_bytes())
            .unwrap();
        for expect in ["250", "250", "354", "250"] {
            let r = self.reply();
            assert!(r.starts_with(expect), "{subject}: expected {expect}, got {r:?}");
        }
    }
}

/// Runs tests/py/compress_idle_cycles.py in lock step: after each
/// "idling K" waits until the session is parked, delivers message K and
/// says "go". `cycles == 0` is the garbage run.
fn python_cycles(server: &Server, port: u16, mode: &str, cycles: usize) {
    let hibernations_before = server.stat("hibernations");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/compress_idle_cycles.py");
    let mut child = Command::new(PYTHON)
        .arg(&script)
        .args(["127.0.0.1", &port.to_string(), mode, "alice", "secret-a", &cycles.to_string()])
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
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("python ended waiting for {what}:\n{err}\nserver log:\n{}", tail(&server.log_text(), 40));
        }
        line
    };
    assert_eq!(next_line("ready").trim(), "ready");
    if cycles == 0 {
        assert_eq!(next_line("idling").trim(), "idling 0");
        server.wait_held(1);
        to_py.write_all(b"go\n").unwrap();
        assert_eq!(next_line("closed").trim(), "closed");
    }
    for k in 0..cycles {
        assert_eq!(next_line("idling").trim(), format!("idling {k}"));
        server.wait_held(1);
        lmtp.deliver("alice", &format!("cycle {k}"));
        to_py.write_all(b"go\n").unwrap();
    }
    if cycles > 0 {
        assert_eq!(next_line("the end").trim(), "cycles ok");
    }
    assert!(child.wait().unwrap().success());
    let parked = server.stat("hibernations") - hibernations_before;
    assert_eq!(parked, cycles.max(1) as u64, "one park per cycle");
}

#[test]
fn compressed_sessions_hibernate_over_plain_tcp() {
    let server = server();
    let started = Instant::now();
    python_cycles(&server, server.imap, "plain", 60);
    eprintln!("60 compressed hibernation cycles in {:?}", started.elapsed());
    assert!(server.stat("hand-backs command") >= 60);
    let log = server.log_text();
    assert!(!log.contains("bad compressed data"), "{}", tail(&log, 40));
}

#[test]
fn compressed_sessions_hibernate_over_tls() {
    let server = server();
    python_cycles(&server, server.imaps, "imaps", 50);
    python_cycles(&server, server.imap, "starttls", 20);
    let log = server.log_text();
    assert!(!log.contains("bad compressed data") && !log.contains("TLS record error"), "{}", tail(&log, 40));
}

#[test]
fn garbage_in_a_hibernated_compressed_stream_closes_cleanly() {
    let server = server();
    python_cycles(&server, server.imap, "plain", 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log_text().contains("bad compressed data from a hibernated client") {
        assert!(Instant::now() < deadline, "no log line:\n{}", tail(&server.log_text(), 40));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The process goes on: a new compressed session still hibernates.
    python_cycles(&server, server.imap, "plain", 3);
}
