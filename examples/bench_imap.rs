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
//! target/release/examples/bench_imap [--clients 8] [--seconds 10] [--sessions 1000] [--messages 200] [--workers 2] [--dovecot]
//! ```
//!
//! With `--dovecot` the same workload and session count also run against a
//! throwaway Dovecot 2.3 (`shared/baseline/dovecot-hibernate.sh`, installs
//! `dovecot-imapd` if missing) and ratios are printed: absolute numbers
//! drift on a shared machine, ratios from one run are what to compare.
//!
//! ```text
//! ```

mod bench_support;

use bench_support::{dormouse_bin, free_port, process_tree, rss_pss, sum_rss_pss, Client};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    clients: usize,
    seconds: u64,
    sessions: usize,
    messages: usize,
    workers: usize,
    dovecot: bool,
}

fn parse_args() -> Args {
    let mut args = Args { clients: 8, seconds: 10, sessions: 1000, messages: 200, workers: 2, dovecot: false };
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(pos) = argv.iter().position(|a| a == "--dovecot") {
        args.dovecot = true;
        argv.remove(pos);
    }
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

/// Login credentials and port of a server under test.
#[derive(Clone)]
struct Target {
    name: &'static str,
    port: u16,
    login: String,
}

/// Per-kind latencies of the mixed workload, wall time, commands done.
struct Workload {
    latencies: Vec<Vec<Duration>>,
    elapsed: Duration,
    total: usize,
}

const KINDS: [&str; 5] = ["FETCH flags", "FETCH header", "FETCH body", "STORE", "SEARCH"];

fn fill_mailbox(target: &Target, messages: usize) {
    let mut setup = Client::connect(target.port).unwrap();
    assert!(setup.cmd(&target.login).unwrap(), "{}: LOGIN failed", target.name);
    for i in 0..messages {
        assert!(setup.append(&message(i)).unwrap(), "{}: APPEND failed", target.name);
    }
    setup.cmd("LOGOUT").ok();
}

fn run_workload(target: &Target, clients: usize, seconds: u64, n: usize) -> Workload {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let target = target.clone();
            std::thread::spawn(move || {
                let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
                let mut client = Client::connect(target.port).unwrap();
                assert!(client.cmd(&target.login).unwrap());
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
                    assert!(client.cmd(&command).unwrap(), "{}: {command} failed", target.name);
                    lat[kind].push(t.elapsed());
                }
                client.cmd("LOGOUT").ok();
                lat
            })
        })
        .collect();
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
    for h in handles {
        for (k, v) in h.join().unwrap().into_iter().enumerate() {
            latencies[k].extend(v);
        }
    }
    let total = latencies.iter().map(Vec::len).sum();
    Workload { latencies, elapsed: started.elapsed(), total }
}

fn print_workload(name: &str, w: &Workload) {
    for (k, kind) in KINDS.iter().enumerate() {
        let mut v = w.latencies[k].clone();
        v.sort_unstable();
        println!(
            "{:<52} {:>9} {:>10.3} {:>10.3} ms",
            format!("{name}: latency {kind}"),
            v.len(),
            percentile(&v, 0.5).as_secs_f64() * 1e3,
            percentile(&v, 0.99).as_secs_f64() * 1e3
        );
    }
    println!(
        "{:<52} {:>9} {:>10.0} {:>10} commands/s",
        format!("{name}: throughput mixed FETCH/STORE/SEARCH"),
        w.total,
        w.total as f64 / w.elapsed.as_secs_f64(),
        "-"
    );
}

/// Opens `sessions` connections that LOGIN and SELECT INBOX; returns them and
/// the time taken.
fn open_sessions(target: &Target, sessions: usize) -> (Vec<Client>, Duration) {
    let started = Instant::now();
    let mut open = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let mut c = Client::connect(target.port).unwrap();
        assert!(c.cmd(&target.login).unwrap());
        assert!(c.cmd("SELECT INBOX").unwrap());
        open.push(c);
    }
    (open, started.elapsed())
}

/// A throwaway Dovecot from shared/baseline/dovecot-hibernate.sh.
struct Dovecot {
    dir: tempfile::TempDir,
    master: u32,
    port: u16,
}

impl Dovecot {
    fn start() -> Option<Dovecot> {
        let shared = std::env::var_os("DORMOUSE_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
        let script = shared.join("baseline/dovecot-hibernate.sh");
        if !script.exists() {
            eprintln!("(no {}; skipping Dovecot)", script.display());
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Dovecot daemonizes and keeps inherited descriptors: give the script
        // files, not pipes, or waiting for its output never ends.
        let log = std::fs::File::create(dir.path().join("start.log")).unwrap();
        let status = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .arg(port.to_string())
            .arg("1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap();
        if !status.success() {
            let text = std::fs::read_to_string(dir.path().join("start.log")).unwrap_or_default();
            eprintln!("(Dovecot did not start: {text}; skipping)");
            return None;
        }
        let master = std::fs::read_to_string(dir.path().join("run/master.pid")).ok()?.trim().parse().ok()?;
        Some(Dovecot { dir, master, port })
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.master.to_string()).status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.dir.path();
    }
}

fn main() {
    let args = parse_args();
    let server = start_server(args.workers);
    let serve_pid = server.child.id();
    let ours = Target { name: "dormouse", port: server.port, login: "LOGIN bench bench".into() };
    let dovecot = if args.dovecot { Dovecot::start() } else { None };
    let theirs = dovecot.as_ref().map(|d| Target { name: "dovecot", port: d.port, login: "LOGIN u1 pass".into() });

    fill_mailbox(&ours, args.messages);
    if let Some(t) = &theirs {
        fill_mailbox(t, args.messages);
    }

    println!(
        "\nIMAP benchmark: {} clients, {} dormouse workers, {} messages in INBOX, {} s per workload\n",
        args.clients, args.workers, args.messages, args.seconds
    );
    println!("{:<52} {:>9} {:>10} {:>10} unit", "what", "N", "median", "p99");
    let w = run_workload(&ours, args.clients, args.seconds, args.messages);
    print_workload("dormouse", &w);
    let ours_rate = w.total as f64 / w.elapsed.as_secs_f64();
    if let Some(t) = &theirs {
        let w = run_workload(t, args.clients, args.seconds, args.messages);
        print_workload("dovecot", &w);
        let theirs_rate = w.total as f64 / w.elapsed.as_secs_f64();
        println!("{:<52} {:>9} {:>10.2} {:>10} ratio", "throughput dormouse / dovecot", "-", ours_rate / theirs_rate, "-");
    }

    // Memory: RSS growth of the workers over `sessions` selected sessions.
    let workers = worker_pids(serve_pid);
    assert!(!workers.is_empty(), "no worker processes found");
    std::thread::sleep(Duration::from_millis(500));
    let before = sum_rss_pss(&workers);
    let master_before = rss_pss(serve_pid);
    let (sessions, open_time) = open_sessions(&ours, args.sessions);
    std::thread::sleep(Duration::from_secs(1));
    let after = sum_rss_pss(&workers);
    let master_after = rss_pss(serve_pid);
    let n = args.sessions as f64;
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / n;
    println!(
        "{:<52} {:>9} {:>10.2} {:>10} KiB/session",
        format!("dormouse: worker RSS growth per selected session"),
        args.sessions,
        per(after.0, before.0),
        "-"
    );
    println!("{:<52} {:>9} {:>10.2} {:>10} KiB/session", "dormouse: worker PSS growth per selected session", args.sessions, per(after.1, before.1), "-");
    println!(
        "{:<52} {:>9} {:>10.2} {:>10} KiB/session",
        "dormouse: master RSS growth per handed-over session",
        args.sessions,
        per(master_after.0, master_before.0),
        "-"
    );
    println!(
        "{:<52} {:>9} {:>10.3} {:>10} ms/session",
        "dormouse: connect+LOGIN+SELECT (sequential)",
        args.sessions,
        open_time.as_secs_f64() * 1e3 / n,
        "-"
    );
    let ours_pss = per(after.1, before.1);
    drop(sessions);

    if let (Some(d), Some(t)) = (&dovecot, &theirs) {
        let before = sum_rss_pss(&process_tree(d.master));
        let (sessions, open_time) = open_sessions(t, args.sessions);
        std::thread::sleep(Duration::from_secs(1));
        let after = sum_rss_pss(&process_tree(d.master));
        println!(
            "{:<52} {:>9} {:>10.2} {:>10} KiB/session",
            "dovecot: all-process PSS growth per selected session",
            args.sessions,
            per(after.1, before.1),
            "-"
        );
        println!(
            "{:<52} {:>9} {:>10.3} {:>10} ms/session",
            "dovecot: connect+LOGIN+SELECT (sequential)",
            args.sessions,
            open_time.as_secs_f64() * 1e3 / n,
            "-"
        );
        println!(
            "{:<52} {:>9} {:>10.3} {:>10} ratio",
            "PSS per selected session dormouse / dovecot",
            "-",
            ours_pss / per(after.1, before.1).max(0.001),
            "-"
        );
        drop(sessions);
    }
}
