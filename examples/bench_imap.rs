//! IMAP benchmark: command throughput with several clients, and the memory
//! one selected session costs in a worker.
//!
//! Starts its own `dormouse serve` (release build next to this example, or
//! `$DORMOUSE_BIN`) on free ports in a temporary directory, so nothing else
//! is touched. Traffic goes to 127.0.0.1 only; every loop is bounded in
//! count and time.
//!
//! ```text
//! cargo build --release --bin dormouse --example bench_imap
//! target/release/examples/bench_imap [--clients 8] [--seconds 10] [--sessions 1000] [--messages 200]
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    clients: usize,
    seconds: u64,
    sessions: usize,
    messages: usize,
    workers: usize,
}

fn parse_args() -> Args {
    let mut args = Args { clients: 8, seconds: 10, sessions: 1000, messages: 200, workers: 2 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let value: usize = argv[i + 1].parse().unwrap_or_else(|_| panic!("bad value for {}", argv[i]));
        match argv[i].as_str() {
            "--clients" => args.clients = value,
            "--seconds" => args.seconds = value as u64,
            "--sessions" => args.sessions = value,
            "--messages" => args.messages = value,
            "--workers" => args.workers = value,
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    args
}

fn dormouse_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DORMOUSE_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join("dormouse")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A blocking IMAP client connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u64,
    line: Vec<u8>,
}

impl Client {
    fn connect(port: u16) -> std::io::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_nodelay(true)?;
        let mut c = Client { reader: BufReader::new(stream.try_clone()?), writer: stream, tag: 0, line: Vec::new() };
        c.read_line()?;
        Ok(c)
    }

    fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed"));
        }
        Ok(())
    }

    /// Sends a command (may contain a literal marker `{n}\r\n` handled by the
    /// caller) and reads up to its tagged answer, skipping literal data.
    fn cmd(&mut self, command: &str) -> std::io::Result<bool> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        self.writer.write_all(format!("{tag} {command}\r\n").as_bytes())?;
        self.finish(&tag)
    }

    fn finish(&mut self, tag: &str) -> std::io::Result<bool> {
        loop {
            self.read_line()?;
            if let Some(n) = literal_len(&self.line) {
                let mut skip = vec![0u8; n];
                std::io::Read::read_exact(&mut self.reader, &mut skip)?;
                continue;
            }
            if self.line.starts_with(tag.as_bytes()) && self.line.get(tag.len()) == Some(&b' ') {
                return Ok(self.line[tag.len() + 1..].starts_with(b"OK"));
            }
        }
    }

    fn append(&mut self, message: &[u8]) -> std::io::Result<bool> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        self.writer.write_all(format!("{tag} APPEND INBOX {{{}}}\r\n", message.len()).as_bytes())?;
        self.read_line()?;
        if !self.line.starts_with(b"+") {
            return Ok(false);
        }
        self.writer.write_all(message)?;
        self.writer.write_all(b"\r\n")?;
        self.finish(&tag)
    }
}

fn literal_len(line: &[u8]) -> Option<usize> {
    let trimmed = line.strip_suffix(b"\r\n")?;
    let body = trimmed.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&body[open + 1..]).ok()?.parse().ok()
}

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(workers: usize) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("dormouse.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[log]\nlevel = \"warn\"\n[lmtp]\nlisten = \"\"\n[imap]\nlisten = \"127.0.0.1:{port}\"\n\
             listen_tls = \"\"\nworkers = {workers}\nmax_connections_per_ip = 0\nmax_sessions_per_user = 0\n\
             counters_interval_secs = 0\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let bin = dormouse_bin();
    let status = Command::new(&bin)
        .args(["--config", config.to_str().unwrap(), "user", "add", "bench", "--password", "bench", "--scheme", "PLAIN"])
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(status.success());
    let child = Command::new(&bin)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Client::connect(port).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, _dir: dir, port }
}

fn worker_pids(serve: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{serve}/task")).into_iter().flatten().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for p in children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            if cmd.split(|&b| b == 0).any(|a| a == b"worker") {
                pids.push(p);
            }
        }
    }
    pids
}

/// (RSS, PSS) in KiB from smaps_rollup.
fn rss_pss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: Sender {i} <s{i}@example.org>\r\nTo: bench@example.org\r\nSubject: message number {i} {}\r\n\
         Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{i}@bench>\r\n\r\n{}\r\n",
        if i % 7 == 0 { "invoice" } else { "hello" },
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n".repeat(1 + i % 20)
    )
    .into_bytes()
}

fn main() {
    let args = parse_args();
    let server = start_server(args.workers);
    let serve_pid = server.child.id();

    // Fill the mailbox.
    let mut setup = Client::connect(server.port).unwrap();
    assert!(setup.cmd("LOGIN bench bench").unwrap());
    for i in 0..args.messages {
        assert!(setup.append(&message(i)).unwrap(), "APPEND failed");
    }
    setup.cmd("LOGOUT").ok();

    // Throughput: mixed FETCH/STORE/SEARCH from several clients.
    let kinds = ["FETCH flags", "FETCH header", "FETCH body", "STORE", "SEARCH"];
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..args.clients)
        .map(|c| {
            let port = server.port;
            let n = args.messages;
            std::thread::spawn(move || {
                let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); 5];
                let mut client = Client::connect(port).unwrap();
                assert!(client.cmd("LOGIN bench bench").unwrap());
                assert!(client.cmd("SELECT INBOX").unwrap());
                let mut i = c * 7919;
                // Bounded: time limit, and at most 5 million commands.
                for _ in 0..5_000_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    i += 1;
                    let seq = 1 + i % n;
                    let (kind, command) = match i % 10 {
                        0..=3 => (0, format!("FETCH {seq}:{} (UID FLAGS RFC822.SIZE INTERNALDATE)", (seq + 9).min(n))),
                        4 | 5 => (1, format!("FETCH {seq} (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM DATE)] ENVELOPE)")),
                        6 => (2, format!("FETCH {seq} (BODY.PEEK[])")),
                        7 | 8 => (3, format!("STORE {seq} {}FLAGS.SILENT (\\Flagged)", if i % 20 < 10 { "+" } else { "-" })),
                        _ => (4, if i % 20 < 10 { "SEARCH FLAGGED".to_string() } else { "SEARCH SUBJECT invoice".to_string() }),
                    };
                    let t = Instant::now();
                    assert!(client.cmd(&command).unwrap(), "{command} failed");
                    lat[kind].push(t.elapsed());
                }
                client.cmd("LOGOUT").ok();
                lat
            })
        })
        .collect();
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); 5];
    for h in handles {
        for (k, v) in h.join().unwrap().into_iter().enumerate() {
            lat[k].extend(v);
        }
    }
    let elapsed = started.elapsed();
    let total: usize = lat.iter().map(Vec::len).sum();

    println!("\nIMAP benchmark: {} clients, {} workers, {} messages in INBOX\n", args.clients, args.workers, args.messages);
    println!("{:<48} {:>9} {:>10} {:>10} unit", "what", "N", "median", "p99");
    for (k, name) in kinds.iter().enumerate() {
        let mut v = lat[k].clone();
        v.sort_unstable();
        println!(
            "{:<48} {:>9} {:>10.3} {:>10.3} ms",
            format!("latency {name}"),
            v.len(),
            percentile(&v, 0.5).as_secs_f64() * 1e3,
            percentile(&v, 0.99).as_secs_f64() * 1e3
        );
    }
    println!(
        "{:<48} {:>9} {:>10.0} {:>10} commands/s",
        "throughput mixed FETCH/STORE/SEARCH",
        total,
        total as f64 / elapsed.as_secs_f64(),
        "-"
    );

    // Memory: RSS growth of the workers over `sessions` selected sessions.
    let workers = worker_pids(serve_pid);
    assert!(!workers.is_empty(), "no worker processes found");
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<(u64, u64)> = workers.iter().map(|&p| rss_pss(p)).collect();
    let master_before = rss_pss(serve_pid);
    let mut sessions = Vec::with_capacity(args.sessions);
    let open_started = Instant::now();
    for _ in 0..args.sessions {
        let mut c = Client::connect(server.port).unwrap();
        assert!(c.cmd("LOGIN bench bench").unwrap());
        assert!(c.cmd("SELECT INBOX").unwrap());
        sessions.push(c);
    }
    let open_time = open_started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<(u64, u64)> = workers.iter().map(|&p| rss_pss(p)).collect();
    let master_after = rss_pss(serve_pid);
    let rss_growth: u64 = after.iter().zip(&before).map(|(a, b)| a.0.saturating_sub(b.0)).sum();
    let pss_growth: u64 = after.iter().zip(&before).map(|(a, b)| a.1.saturating_sub(b.1)).sum();
    let n = args.sessions as f64;
    println!(
        "{:<48} {:>9} {:>10.2} {:>10} KiB/session",
        format!("worker RSS growth per selected session ({} msgs)", args.messages),
        args.sessions,
        rss_growth as f64 / n,
        "-"
    );
    println!("{:<48} {:>9} {:>10.2} {:>10} KiB/session", "worker PSS growth per selected session", args.sessions, pss_growth as f64 / n, "-");
    println!(
        "{:<48} {:>9} {:>10.2} {:>10} KiB/session",
        "master RSS growth per handed-over session",
        args.sessions,
        master_after.0.saturating_sub(master_before.0) as f64 / n,
        "-"
    );
    println!(
        "{:<48} {:>9} {:>10.3} {:>10} ms/session",
        "connect+LOGIN+SELECT (sequential)",
        args.sessions,
        open_time.as_secs_f64() * 1e3 / n,
        "-"
    );
    drop(sessions);
}
