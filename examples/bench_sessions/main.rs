//! Load generator: many IDLE sessions through the real server, then
//! deliveries timed to every idler.
//!
//! `cargo run --release --example bench_sessions -- [--sessions N] [--tls-percent P]
//!  [--rate R] [--hold-secs S] [--deliveries D] [--delivery-rate DR]
//!  [--sessions-per-user K] [--per-process C] [--probe-rounds PR]
//!  [--password-scheme ARGON2ID] [--verified-cache-secs S] [--restart-at-secs T] [--dovecot] [--no-dormouse]`
//!
//! It starts `dormouse serve` (hibernation after 1 s of IDLE, auto hibernate
//! processes, a metrics endpoint) in a temp directory with users u1..uU
//! (password `pass`), then spreads the N sessions over client processes
//! of at most C sessions each (the 20,000-descriptor limit), each from its
//! own source address 127.0.0.2, 127.0.0.3, ... (~28,000 ports each), at R
//! sessions per second in total. Each session: LOGIN, SELECT INBOX, IDLE,
//! and it reports every `* n EXISTS`. Once all are parked it measures the
//! whole server (PSS of every process of the serve tree, descriptors of the
//! master, kernel Slab per session, CPU while idle for S seconds), times
//! DONE + NOOP of probe sessions while hibernated, delivers D messages over
//! LMTP at DR per second to random users and times delivery acknowledged
//! -> `* n EXISTS` at every session of that user, and finally measures the
//! server after every client has gone. With `--dovecot` the same load then
//! runs against Dovecot 2.3 with imap-hibernate
//! (`../shared/baseline/dovecot-hibernate.sh`), in the same run.
//! With `--restart-at-secs T` (dormouse only) `dormouse restart` runs T
//! seconds into the hold while a few extra sessions send NOOP after NOOP:
//! it reports the sessions moved, lost, per second, and the longest NOOP
//! wait those clients saw. (The hibernate processes are no longer children
//! of the serving process after a restart, so the PSS rows measured after
//! it, "after every client left", leave them out.)
//! Only 127.0.0.0/8 is used; every phase has a time bound.

#[path = "../bench_support/mod.rs"]
mod bench_support;
mod client;
mod server;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;

use client::{mono_ns, ClientPlan};
use server::{LoginSetup, ServerKind, ServerUnderTest};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Sessions to open.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Share of the sessions over implicit TLS (port 993 style), percent.
    #[arg(long, default_value_t = 0)]
    tls_percent: usize,
    /// New sessions per second, all client processes together.
    #[arg(long, default_value_t = 2_000.0)]
    rate: f64,
    /// Seconds to hold every session idle while measuring CPU.
    #[arg(long, default_value_t = 60)]
    hold_secs: u64,
    /// Messages delivered over LMTP after the hold.
    #[arg(long, default_value_t = 2_000)]
    deliveries: usize,
    /// Deliveries per second.
    #[arg(long, default_value_t = 1_000.0)]
    delivery_rate: f64,
    /// IDLE sessions per user (a phone, a laptop, a webmail...).
    #[arg(long, default_value_t = 2)]
    sessions_per_user: usize,
    /// Most sessions per client process.
    #[arg(long, default_value_t = 15_000)]
    per_process: usize,
    /// DONE + NOOP rounds per probe session (40 probes in all).
    #[arg(long, default_value_t = 5)]
    probe_rounds: u32,
    /// Password scheme of dormouse's users (PLAIN, ARGON2ID, BLF-CRYPT,
    /// SHA512-CRYPT); the login rate depends on it.
    #[arg(long, default_value = "PLAIN")]
    password_scheme: String,
    /// dormouse's [auth] verified_cache_secs (0 = every login verified in full).
    #[arg(long, default_value_t = 300)]
    verified_cache_secs: u64,
    /// dormouse's `hibernate.timeout_secs` (seconds in IDLE before a session
    /// is parked). A long one keeps the sessions live in the workers, e.g.
    /// to measure a restart that has to park them all.
    #[arg(long, default_value_t = 1)]
    hibernate_after_secs: u64,
    /// Restart dormouse (`dormouse restart`) this many seconds into the hold.
    #[arg(long)]
    restart_at_secs: Option<u64>,
    /// Run the same load against Dovecot 2.3 afterwards.
    #[arg(long)]
    dovecot: bool,
    /// Skip dormouse (with --dovecot: Dovecot only).
    #[arg(long)]
    no_dormouse: bool,
    /// Internal: run as a client process with this plan (see client.rs).
    #[arg(long, hide = true)]
    client: Option<String>,
}

const PROBES: usize = 40;
/// Concurrent LMTP connections for the deliveries.
const LMTP_CONNECTIONS: usize = 4;

fn main() {
    let args = Args::parse();
    if let Some(plan) = &args.client {
        client::run(decode_plan(plan));
        return;
    }
    let users = args.sessions.div_ceil(args.sessions_per_user.max(1));
    println!(
        "bench_sessions: {} sessions ({}% TLS), {} users, ramp {}/s, hold {} s, {} deliveries at {}/s",
        args.sessions, args.tls_percent, users, args.rate, args.hold_secs, args.deliveries, args.delivery_rate
    );
    let mut tables = Vec::new();
    if !args.no_dormouse {
        tables.push(run_against(ServerKind::Dormouse, &args, users));
    }
    if args.dovecot {
        tables.push(run_against(ServerKind::Dovecot, &args, users));
    }
    for t in &tables {
        println!("{t}");
    }
}

/// A client plan on the command line: comma-separated fields.
fn encode_plan(p: &ClientPlan) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{}",
        p.target, p.tls_target, p.source, p.first, p.count, p.tls_count, p.users, p.rate_per_sec, p.probes, p.probe_wait_secs
    )
}

fn decode_plan(s: &str) -> ClientPlan {
    let f: Vec<&str> = s.split(',').collect();
    ClientPlan {
        target: f[0].parse().unwrap(),
        tls_target: f[1].parse().unwrap(),
        source: f[2].parse().unwrap(),
        first: f[3].parse().unwrap(),
        count: f[4].parse().unwrap(),
        tls_count: f[5].parse().unwrap(),
        users: f[6].parse().unwrap(),
        rate_per_sec: f[7].parse().unwrap(),
        probes: f[8].parse().unwrap(),
        probe_wait_secs: f[9].parse().unwrap(),
    }
}

struct ClientProc {
    child: Child,
    stdin: ChildStdin,
}

/// A line from a client process, with the process index.
type Report = (usize, String);

fn spawn_clients(args: &Args, users: usize, srv: &ServerUnderTest, tx: &mpsc::Sender<Report>) -> Vec<ClientProc> {
    let procs = args.sessions.div_ceil(args.per_process).max(1);
    let exe = std::env::current_exe().unwrap();
    let mut out = Vec::new();
    for i in 0..procs {
        let first = i * args.sessions / procs;
        let count = (i + 1) * args.sessions / procs - first;
        let plan = ClientPlan {
            target: SocketAddr::from(([127, 0, 0, 1], srv.imap_port)),
            tls_target: SocketAddr::from(([127, 0, 0, 1], srv.imaps_port)),
            source: Ipv4Addr::new(127, 0, 0, 2 + i as u8),
            first,
            count,
            tls_count: count * args.tls_percent / 100,
            users,
            rate_per_sec: args.rate / procs as f64,
            probes: PROBES.div_ceil(procs),
            probe_wait_secs: srv.hibernate_after_secs + 1.5,
        };
        let mut child = Command::new(&exe)
            .arg("--client")
            .arg(encode_plan(&plan))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("client process");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((i, line)).is_err() {
                    break;
                }
            }
        });
        out.push(ClientProc { child, stdin });
    }
    out
}

/// What the clients reported, folded.
#[derive(Default)]
struct Collected {
    progress: HashMap<usize, (u64, u64)>,
    ready: HashMap<usize, (u64, u64)>,
    exists: Vec<(usize, u64, u64)>,
    probes: Vec<u64>,
    still_connected: HashMap<usize, u64>,
}

impl Collected {
    fn take(&mut self, (proc_index, line): Report) {
        let mut w = line.split_whitespace();
        let kind = w.next();
        let mut num = || w.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        match kind {
            Some("S") => {
                let v = (num(), num());
                self.progress.insert(proc_index, v);
            }
            Some("R") => {
                let v = (num(), num());
                self.progress.insert(proc_index, v);
                self.ready.insert(proc_index, v);
            }
            Some("E") => {
                let (u, n, t) = (num(), num(), num());
                self.exists.push((u as usize, n, t));
            }
            Some("P") => self.probes.push(num()),
            Some("X") => {
                let v = num();
                self.still_connected.insert(proc_index, v);
            }
            _ => {}
        }
    }

    fn totals(&self) -> (u64, u64) {
        self.progress.values().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    fn drain(&mut self, rx: &mpsc::Receiver<Report>, for_at_most: Duration) {
        let end = Instant::now() + for_at_most;
        while let Ok(r) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            self.take(r);
            if Instant::now() >= end {
                break;
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run_against(kind: ServerKind, args: &Args, users: usize) -> String {
    let name = kind.name();
    println!("\n== {name} ==");
    let srv = ServerUnderTest::start(
        kind,
        users,
        &LoginSetup::new(&args.password_scheme, args.verified_cache_secs),
        args.hibernate_after_secs,
    );
    std::thread::sleep(Duration::from_secs(2));
    let fresh = srv.memory();
    let slab_before = server::meminfo_kib("Slab:");
    let mut srv = srv;
    let (tx, rx) = mpsc::channel();
    let ramp_start = Instant::now();
    let mut clients = spawn_clients(args, users, &srv, &tx);
    let mut got = Collected::default();
    let ramp_bound = Duration::from_secs_f64(args.sessions as f64 / args.rate * 3.0 + 120.0);
    let mut last_print = Instant::now();
    while got.ready.len() < clients.len() && ramp_start.elapsed() < ramp_bound {
        got.drain(&rx, Duration::from_millis(500));
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let (ok, failed) = got.totals();
            let secs = ramp_start.elapsed().as_secs_f64();
            println!("  ramp {secs:6.1} s: {ok} in IDLE, {failed} failed ({:.0}/s)", ok as f64 / secs);
        }
    }
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let (ok, failed) = got.totals();
    let not_done = args.sessions as u64 - ok - failed;
    println!("  ramp done in {ramp_secs:.1} s: {ok} in IDLE, {failed} failed, {not_done} unfinished");
    // With a long hibernation timeout the sessions stay in the workers.
    let parked = if srv.hibernate_after_secs <= 5.0 {
        srv.wait_parked(ok, Duration::from_secs(60))
    } else {
        format!("not waited for (hibernation after {} s)", srv.hibernate_after_secs)
    };
    println!("  parked: {parked}");
    std::thread::sleep(Duration::from_secs(2));
    let loaded = srv.memory();
    let slab_loaded = server::meminfo_kib("Slab:");
    let master_fds = srv.master_fds();

    // Idle CPU (and a restart in the middle, if asked).
    let cpu_before = srv.cpu_ticks();
    let idle_start = Instant::now();
    let restart_report = match args.restart_at_secs.filter(|_| kind == ServerKind::Dormouse) {
        Some(at) => {
            got.drain(&rx, Duration::from_secs(at.min(args.hold_secs)));
            let report = restart_during_hold(&srv, users);
            if let Some(pid) = srv.serving_pid() {
                srv.master = pid;
            }
            got.drain(&rx, Duration::from_secs(args.hold_secs.saturating_sub(at)));
            Some(report)
        }
        None => {
            got.drain(&rx, Duration::from_secs(args.hold_secs));
            None
        }
    };
    let idle_secs = idle_start.elapsed().as_secs_f64();
    let cpu_pct = (srv.cpu_ticks().saturating_sub(cpu_before)) as f64 / server::ticks_per_sec() / idle_secs * 100.0;

    // DONE + NOOP while hibernated.
    got.probes.clear();
    for c in &mut clients {
        let _ = writeln!(c.stdin, "probe {}", args.probe_rounds);
    }
    let probe_bound = Duration::from_secs_f64((srv.hibernate_after_secs + 3.0) * f64::from(args.probe_rounds) + 30.0);
    let probe_start = Instant::now();
    let want = PROBES.div_ceil(clients.len()) * clients.len() * args.probe_rounds as usize;
    while got.probes.len() < want && probe_start.elapsed() < probe_bound {
        got.drain(&rx, Duration::from_millis(500));
    }
    let mut probes: Vec<f64> = got.probes.iter().map(|&ns| ns as f64 / 1e6).collect();
    probes.sort_by(f64::total_cmp);
    // Let the probes park again before the deliveries.
    got.drain(&rx, Duration::from_secs_f64(srv.hibernate_after_secs.min(5.0) + 2.0));

    // Deliveries.
    got.exists.clear();
    // Dovecot's passdb here looks users up by the whole address (%u): it
    // gets the bare name, which its LMTP accepts; dormouse takes the domain.
    let rcpt_domain = if kind == ServerKind::Dovecot { "" } else { "@localhost" };
    let acks = deliver(srv.lmtp_port, users, args.deliveries, args.delivery_rate, rcpt_domain);
    got.drain(&rx, Duration::from_secs(5));
    let (mut latencies, before_ack, missing) = match_latencies(&acks, &got.exists, args.sessions_per_user, users, args.sessions);
    latencies.sort_by(f64::total_cmp);

    // Everyone leaves.
    for c in &mut clients {
        let _ = writeln!(c.stdin, "quit");
    }
    got.drain(&rx, Duration::from_secs(3));
    let connected_at_end: u64 = got.still_connected.values().sum();
    for c in &mut clients {
        let _ = c.child.wait();
    }
    std::thread::sleep(Duration::from_secs(10));
    let gone = srv.memory();
    let n = ok.max(1) as f64;
    let mut t = String::new();
    let row = |t: &mut String, what: &str, value: String| t.push_str(&format!("  {what:<58} {value}\n"));
    t.push_str(&format!("{name}: {} sessions offered ({}% TLS)\n", args.sessions, args.tls_percent));
    row(&mut t, "sessions in IDLE / failed / unfinished", format!("{ok} / {failed} / {not_done}"));
    row(&mut t, "sessions per second during ramp", format!("{:.0}", ok as f64 / ramp_secs));
    row(&mut t, "sessions parked in hibernation", parked.to_string());
    row(&mut t, "still connected after the run", connected_at_end.to_string());
    row(&mut t, "PSS all processes: fresh / loaded (MiB)", format!("{:.1} / {:.1}", fresh.pss_kib as f64 / 1024.0, loaded.pss_kib as f64 / 1024.0));
    row(&mut t, "PSS all processes per session (B)", format!("{:.0}", (loaded.pss_kib as f64 - fresh.pss_kib as f64) * 1024.0 / n));
    for (kind, kib) in &loaded.by_kind {
        let before = fresh.by_kind.iter().find(|(k, _)| k == kind).map_or(0, |(_, v)| *v);
        row(&mut t, &format!("  of which {kind} per session (B)"), format!("{:.0}", (*kib as f64 - before as f64) * 1024.0 / n));
    }
    row(&mut t, "processes: fresh / loaded", format!("{} / {}", fresh.processes, loaded.processes));
    row(&mut t, "descriptors held by the master (loaded)", master_fds.to_string());
    row(&mut t, "kernel Slab per session (B)", format!("{:.0}", (slab_loaded as f64 - slab_before as f64) * 1024.0 / n));
    if restart_report.is_none() {
        row(&mut t, &format!("CPU of all server processes while idle {idle_secs:.0} s"), format!("{cpu_pct:.2}% of one core"));
    }
    if let Some(r) = &restart_report {
        for (what, value) in r {
            row(&mut t, what, value.clone());
        }
    }
    row(
        &mut t,
        "DONE + NOOP while hibernated p50 / p99 / max (ms)",
        format!("{:.3} / {:.3} / {:.3} ({} samples)", percentile(&probes, 0.5), percentile(&probes, 0.99), probes.last().copied().unwrap_or(f64::NAN), probes.len()),
    );
    row(
        &mut t,
        &format!("delivery ack -> * n EXISTS at {}/s p50 / p99 / max (ms)", args.delivery_rate),
        format!(
            "{:.3} / {:.3} / {:.3} ({} samples, {before_ack} before the ack, {missing} missing)",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
            latencies.len()
        ),
    );
    row(&mut t, "PSS all processes after every client left (MiB)", format!("{:.1} ({:+.1}% of fresh)", gone.pss_kib as f64 / 1024.0, (gone.pss_kib as f64 / fresh.pss_kib.max(1) as f64 - 1.0) * 100.0));
    for (kind, kib) in &gone.by_kind {
        let before = fresh.by_kind.iter().find(|(k, _)| k == kind).map_or(0, |(_, v)| *v);
        row(&mut t, &format!("  of which {kind}: fresh / after (MiB)"), format!("{:.1} / {:.1}", before as f64 / 1024.0, *kib as f64 / 1024.0));
    }
    drop(srv);
    t
}

/// NOOP pollers measuring the pause during a restart.
const PINGERS: usize = 20;

/// Runs `dormouse restart` while [`PINGERS`] extra sessions (live in a
/// worker: they never IDLE) send NOOP after NOOP; returns report rows.
fn restart_during_hold(srv: &ServerUnderTest, users: usize) -> Vec<(String, String)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let pingers: Vec<_> = (0..PINGERS)
        .map(|i| {
            let (stop, port) = (stop.clone(), srv.imap_port);
            std::thread::spawn(move || -> Result<(u64, Duration), String> {
                let s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
                let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
                let mut w = s;
                let mut line = String::new();
                let mut until = |r: &mut BufReader<std::net::TcpStream>, tag: &str| -> Result<(), String> {
                    loop {
                        line.clear();
                        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                            return Err("connection closed".into());
                        }
                        if line.starts_with("* BYE") {
                            return Err(line.trim_end().to_string());
                        }
                        if line.starts_with(tag) {
                            return Ok(());
                        }
                    }
                };
                until(&mut r, "* OK")?;
                let user = 1 + i % users.max(1);
                write!(w, "l LOGIN u{user} pass\r\ns SELECT INBOX\r\n").map_err(|e| e.to_string())?;
                until(&mut r, "l ")?;
                until(&mut r, "s ")?;
                let (mut rounds, mut worst) = (0u64, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    w.write_all(b"n NOOP\r\n").map_err(|e| e.to_string())?;
                    until(&mut r, "n ")?;
                    worst = worst.max(sent.elapsed());
                    rounds += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = w.write_all(b"z LOGOUT\r\n");
                Ok((rounds, worst))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let out = Command::new(bench_support::dormouse_bin())
        .arg("--config")
        .arg(srv.config_path())
        .arg("restart")
        .output()
        .expect("dormouse restart");
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("  {stdout}{}", String::from_utf8_lossy(&out.stderr).trim());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let mut worst = Duration::ZERO;
    let (mut rounds, mut broken) = (0u64, Vec::new());
    for p in pingers {
        match p.join().unwrap() {
            Ok((n, w)) => {
                rounds += n;
                worst = worst.max(w);
            }
            Err(e) => broken.push(e),
        }
    }
    // "restart: N sessions moved, M could not (D ms); serving as pid P"
    let nums: Vec<u64> = stdout
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (moved, lost, ms) = match nums.as_slice() {
        [moved, lost, ms, ..] if out.status.success() => (*moved, *lost, *ms),
        _ => (0, 0, 0),
    };
    vec![
        ("restart: outcome".into(), if out.status.success() { "ok".into() } else { format!("FAILED: {stdout}") }),
        ("restart: sessions moved / lost".into(), format!("{moved} / {lost}")),
        (
            "restart: hand-off time (server) / `dormouse restart` wall (ms)".into(),
            format!("{ms} / {:.0}", wall.as_secs_f64() * 1000.0),
        ),
        ("restart: sessions moved per second".into(), format!("{:.0}", moved as f64 / (ms.max(1) as f64 / 1000.0))),
        (
            format!("restart: longest NOOP wait of {PINGERS} pollers (ms)"),
            format!("{:.1} ({rounds} NOOPs, {} pollers disconnected{})", worst.as_secs_f64() * 1000.0, broken.len(), broken.first().map(|e| format!(": {e}")).unwrap_or_default()),
        ),
    ]
}

/// Delivers `count` messages at `rate` per second to random users over
/// several LMTP connections; returns (user, ack time in mono ns) per
/// delivery, in ack order.
fn deliver(port: u16, users: usize, count: usize, rate: f64, rcpt_domain: &str) -> Vec<(usize, u64)> {
    let per_conn = count.div_ceil(LMTP_CONNECTIONS);
    let interval = Duration::from_secs_f64(LMTP_CONNECTIONS as f64 / rate);
    let handles: Vec<_> = (0..LMTP_CONNECTIONS)
        .map(|c| {
            let rcpt_domain = rcpt_domain.to_string();
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                if let Err(e) = lmtp_session(port, users, c, per_conn.min(count.saturating_sub(c * per_conn)), interval, &rcpt_domain, &mut acks) {
                    eprintln!("LMTP connection {c}: {e} after {} deliveries", acks.len());
                }
                acks
            })
        })
        .collect();
    let mut all: Vec<(usize, u64)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort_by_key(|a| a.1);
    all
}

/// One LMTP connection delivering `count` messages, one per `interval`.
fn lmtp_session(
    port: u16,
    users: usize,
    c: usize,
    count: usize,
    interval: Duration,
    rcpt_domain: &str,
    acks: &mut Vec<(usize, u64)>,
) -> std::io::Result<()> {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    // Multi-line replies: read to the line with "NNN ".
    let reply = |r: &mut BufReader<std::net::TcpStream>| -> std::io::Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line);
            }
        }
    };
    reply(&mut r)?;
    w.write_all(b"LHLO bench\r\n")?;
    reply(&mut r)?;
    let start = Instant::now();
    for i in 0..count {
        std::thread::sleep((start + interval.mul_f64(i as f64)).saturating_duration_since(Instant::now()));
        let user = rand::random::<usize>() % users + 1;
        w.write_all(format!("MAIL FROM:<bench@localhost>\r\nRCPT TO:<u{user}{rcpt_domain}>\r\nDATA\r\n").as_bytes())?;
        let (mail, rcpt, data) = (reply(&mut r)?, reply(&mut r)?, reply(&mut r)?);
        if !(mail.starts_with("250") && rcpt.starts_with("250") && data.starts_with("354")) {
            return Err(std::io::Error::other(format!("refused: {mail:?} {rcpt:?} {data:?}")));
        }
        w.write_all(format!("Subject: bench {c}.{i}\r\n\r\nhello\r\n.\r\n").as_bytes())?;
        let done = reply(&mut r)?;
        if !done.starts_with("250") {
            return Err(std::io::Error::other(format!("refused: {done:?}")));
        }
        acks.push((user, mono_ns()));
    }
    w.write_all(b"QUIT\r\n")
}

/// Pairs the k-th acknowledged delivery to a user with each of that user's
/// sessions reporting `* k EXISTS` (INBOXes start empty). Returns the
/// latencies in ms, how many EXISTS came before their ack (counted as 0),
/// and how many (delivery, session) pairs got no EXISTS at all.
fn match_latencies(acks: &[(usize, u64)], exists: &[(usize, u64, u64)], per_user: usize, users: usize, sessions: usize) -> (Vec<f64>, usize, usize) {
    let mut ack_of: HashMap<(usize, u64), u64> = HashMap::new();
    let mut per_user_count: HashMap<usize, u64> = HashMap::new();
    for &(u, t) in acks {
        let k = per_user_count.entry(u).or_insert(0);
        *k += 1;
        ack_of.insert((u, *k), t);
    }
    let mut lat = Vec::new();
    let mut before = 0;
    for &(u, n, t) in exists {
        if let Some(&ack) = ack_of.get(&(u, n)) {
            if t < ack {
                before += 1;
                lat.push(0.0);
            } else {
                lat.push((t - ack) as f64 / 1e6);
            }
        }
    }
    // Sessions of user u: every global index i with i % users == u - 1.
    let sessions_of = |u: usize| (0..per_user).filter(|k| (u - 1) + k * users < sessions).count();
    let expected: usize = acks.iter().map(|&(u, _)| sessions_of(u)).sum();
    (lat.clone(), before, expected.saturating_sub(lat.len()))
}
