//! LMTP delivery benchmark: messages per second and per-message latency
//! through the real LMTP server (in-process, loopback TCP), with fsync on
//! (every 250 reply follows the store's fsync of file, directory and uidlist).
//!
//! ```text
//! cargo run --release --example bench_lmtp -- [--messages N] [--size BYTES] [--dir PATH]
//!     [--external HOST:PORT --user-prefix u]
//! ```
//!
//! Each client connection sends its share of N messages of BYTES bytes, one
//! transaction per message (MAIL, RCPT and DATA pipelined, then the body).
//! Latency is from the MAIL command to the final 250. Rows: 1, 4 and 16
//! connections, each either to distinct users (one per connection) or all to
//! one user (contention on one mailbox). `--external` measures another LMTP
//! server instead (e.g. Dovecot from `shared/baseline/dovecot-hibernate.sh`,
//! users `u1..uN`), for side-by-side numbers. `--dir` puts the mail store on
//! a chosen file system (default: a temp dir; use a real disk, not tmpfs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use imap::auth::{MailLocation, UserDb};
use imap::delivery::Deliverer;
use imap::lmtp::{LmtpLimits, LmtpServer, LmtpSettings};
use storage_hooks::Hooks;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

struct Options {
    messages: usize,
    size: usize,
    dir: Option<std::path::PathBuf>,
    external: Option<String>,
    user_prefix: String,
}

fn options() -> Options {
    let mut o = Options { messages: 400, size: 10 * 1024, dir: None, external: None, user_prefix: "u".into() };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--messages" => o.messages = value().parse().expect("--messages N"),
            "--size" => o.size = value().parse().expect("--size BYTES"),
            "--dir" => o.dir = Some(value().into()),
            "--external" => o.external = Some(value()),
            "--user-prefix" => o.user_prefix = value(),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// A message of about `size` bytes: headers plus 76-column body lines.
fn message(size: usize, n: usize) -> Vec<u8> {
    let mut m = format!("From: bench@example.org\r\nTo: user@example.org\r\nSubject: bench {n}\r\n\r\n").into_bytes();
    let line = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b".\r\n");
    m
}

async fn read_reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.expect("read") == 0 {
            panic!("server closed the connection");
        }
        let last = line.as_bytes().get(3) == Some(&b' ');
        all.push_str(&line);
        if last {
            return all;
        }
    }
}

/// One client: `count` transactions to `rcpt`; returns per-message latencies.
async fn client(addr: String, rcpt: String, count: usize, size: usize, time_limit: Instant) -> Vec<Duration> {
    let stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    read_reply(&mut r).await;
    w.write_all(b"LHLO bench\r\n").await.expect("write");
    // Announce the size only to servers that offer SIZE (Dovecot's LMTP does not).
    let offers_size = read_reply(&mut r).await.lines().any(|l| l.get(4..).is_some_and(|x| x.starts_with("SIZE")));
    let mut latencies = Vec::with_capacity(count);
    for n in 0..count {
        if Instant::now() > time_limit {
            break;
        }
        let body = message(size, n);
        let started = Instant::now();
        let size_param = if offers_size { format!(" SIZE={}", body.len()) } else { String::new() };
        w.write_all(format!("MAIL FROM:<bench@example.org>{size_param}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes())
            .await
            .expect("write");
        for expect in ["250", "250", "354"] {
            let reply = read_reply(&mut r).await;
            assert!(reply.starts_with(expect), "expected {expect}, got {reply}");
        }
        w.write_all(&body).await.expect("write");
        let reply = read_reply(&mut r).await;
        assert!(reply.starts_with("250"), "delivery failed: {reply}");
        latencies.push(started.elapsed());
    }
    let _ = w.write_all(b"QUIT\r\n").await;
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let o = options();
    // Kept alive for the whole run: dropping the sender stops the server.
    let (_shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let base = match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("create --dir");
            tempfile::tempdir_in(d).expect("temp dir")
        }
        None => tempfile::tempdir().expect("temp dir"),
    };
    let addr = match &o.external {
        Some(a) => a.clone(),
        None => {
            let passwd = base.path().join("passwd");
            let mut text = String::new();
            for i in 1..=16 {
                text.push_str(&format!("{}{i}:{{PLAIN}}x::::{}/home/u{i}::\n", o.user_prefix, base.path().display()));
            }
            std::fs::write(&passwd, text).expect("passwd");
            let users = Arc::new(UserDb::open(&passwd, MailLocation::parse("%h/Maildir").expect("template")).expect("db"));
            let deliverer = Deliverer::new(users, Hooks::new(), 50 * 1024 * 1024);
            let settings = LmtpSettings {
                hostname: "bench".into(),
                limits: LmtpLimits::default(),
                ..LmtpSettings::default()
            };
            let server = LmtpServer::new(deliverer, settings);
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let a = listener.local_addr().expect("addr").to_string();
            tokio::spawn(server.serve_tcp(listener, shutdown_rx));
            a
        }
    };
    let target = if o.external.is_some() { "external" } else { "dormouse" };
    println!("LMTP delivery benchmark ({target} at {addr}), {} byte messages, fsync on, store in {}", message(o.size, 0).len() - 3, base.path().display());
    println!("{:<44} {:>6} {:>10} {:>10} {:>5} {:>10}", "what", "N", "median", "p99", "unit", "msgs/s");
    for connections in [1usize, 4, 16] {
        for distinct in [true, false] {
            let per = o.messages.div_ceil(connections);
            let time_limit = Instant::now() + Duration::from_secs(120);
            let started = Instant::now();
            let mut handles = Vec::new();
            for c in 0..connections {
                let user = if distinct { c + 1 } else { 1 };
                handles.push(tokio::spawn(client(addr.clone(), format!("{}{user}", o.user_prefix), per, o.size, time_limit)));
            }
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.await.expect("client task"));
            }
            let elapsed = started.elapsed();
            all.sort();
            let what = format!("deliver, {connections} conn, {}", if distinct { "distinct users" } else { "one user" });
            println!(
                "{:<44} {:>6} {:>10.2} {:>10.2} {:>5} {:>10.0}",
                what,
                all.len(),
                percentile(&all, 0.5).as_secs_f64() * 1e3,
                percentile(&all, 0.99).as_secs_f64() * 1e3,
                "ms",
                all.len() as f64 / elapsed.as_secs_f64()
            );
        }
    }
}
