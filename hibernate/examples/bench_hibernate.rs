//! Benchmark: N hibernated IDLE sessions in hibernate processes.
//!
//! `cargo run --release -p hibernate --example bench_hibernate -- [N] [IDLE_SECS] [DELIVERIES]`
//!
//! The benchmark process plays the IMAP worker: it accepts N TCP
//! connections (opened by client processes from 127.0.0.2, 127.0.0.3, ...,
//! at most 15,000 sockets per process because of the 20,000 descriptor
//! limit), and hands each accepted socket with a hibernation record to one
//! of P hibernate processes (P = ceil(N / 15,000); each runs
//! `hibernate::driver::run`). It then reports: RSS/PSS of every hibernate
//! process before and after, user-space bytes per hibernated session
//! (RSS growth / sessions), kernel memory per connection (Slab from
//! /proc/meminfo, before/after, per TCP connection = 2 sockets), CPU used by
//! the hibernate processes over IDLE_SECS idle seconds, the latency from a
//! delivery's acknowledgement (the append returned, event published) to
//! `* n EXISTS` at an idling client at up to 1,000 deliveries/s, and the
//! round trip of `DONE` + `NOOP` answered by the hibernate process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{BusConfig, BusPublisher, UnixPublisher};
use hibernate::core::Settings;
use hibernate::driver::channel;
use hibernate::driver::control::{query, ControlReply, ControlRequest};
use hibernate::driver::{run, DriverConfig};
use hibernate::record::{ClientTransport, Extensions, HibernationRecord, SelectedView};
use storage_hooks::{AppendOptions, Hooks, MailboxStatus, UidSet, UserStore};

const PER_PROCESS: usize = 15_000;
const USERS: usize = 500;
const PROBES: usize = 40;
const DELIVERY_THREADS: usize = 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--serve") => serve(args[2].parse().unwrap(), Path::new(&args[3])),
        Some("--clients") => clients(args[2].parse().unwrap(), args[3].parse().unwrap(), args[4].parse().unwrap()),
        _ => orchestrate(
            args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000),
            args.get(2).and_then(|a| a.parse().ok()).unwrap_or(60),
            args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2_000),
        ),
    }
}

/// A hibernate process (child mode).
fn serve(index: u32, run_dir: &Path) {
    let cfg = DriverConfig {
        index,
        socket_path: run_dir.join(format!("hibernate-{index}.sock")),
        bus: BusConfig::unix_in_run_dir(run_dir),
        settings: Settings::default(),
        max_sessions: 0,
        store_hooks: storage_hooks::Hooks::default(),
    };
    run(cfg, Arc::new(AtomicBool::new(false))).unwrap();
}

/// A client process (child mode): opens `count` connections from `source`
/// and holds them until stdin closes.
fn clients(count: usize, target: SocketAddr, source: Ipv4Addr) {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let sock = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::STREAM, None).unwrap();
        rustix::net::bind(&sock, &SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
        rustix::net::connect(&sock, &target).unwrap();
        held.push(sock);
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut buf = [0u8; 1];
    let _ = std::io::stdin().read(&mut buf);
    drop(held);
}

struct Proc {
    child: Child,
    socket: PathBuf,
}

fn smaps(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("Rss:"), field("Pss:"))
}

fn meminfo(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = text.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn held(p: &Proc) -> u64 {
    match query(&p.socket, ControlRequest::Stats) {
        Ok(ControlReply::Stats { counters, .. }) => counters.held,
        _ => 0,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn row(what: &str, n: usize, median: f64, p99: f64, unit: &str) {
    println!("| {what:<52} | {n:>7} | {median:>12.3} | {p99:>12.3} | {unit:<10} |");
}

struct UserBox {
    name: String,
    maildir: PathBuf,
    status: MailboxStatus,
    uids: UidSet,
}

fn make_user(home: &Path, name: &str, messages: usize, hooks: Hooks) -> (UserBox, UserStore) {
    let maildir = home.join(name);
    let store = UserStore::open(name, &maildir, hooks).unwrap();
    for i in 0..messages {
        store.append("INBOX", format!("Subject: m{i}\r\n\r\nbody\r\n").as_bytes(), &AppendOptions::default()).unwrap();
    }
    let status = store.status("INBOX").unwrap();
    let uids = store.open_mailbox("INBOX").unwrap().messages().iter().map(|m| m.uid).collect();
    (UserBox { name: name.into(), maildir, status, uids }, store)
}

fn record(u: &UserBox, id: u64, peer: SocketAddr, local: SocketAddr) -> Vec<u8> {
    HibernationRecord {
        session_id: id,
        user: u.name.clone(),
        maildir: u.maildir.clone(),
        peer,
        local,
        transport: ClientTransport::PlainTcp,
        authenticated_at_ms: 0,
        enabled: Extensions::default(),
        idle_tag: Some(format!("A{id}")),
        selected: Some(SelectedView {
            mailbox: "INBOX".into(),
            read_only: false,
            uidvalidity: u.status.uidvalidity,
            uids: u.uids.clone(),
            highest_modseq_seen: u.status.highestmodseq,
        }),
        pending_input: Vec::new(),
        tls: None,
        notify: None,
        deflate: None,
    }
    .encode()
    .unwrap()
}

fn read_until(s: &mut TcpStream, want: &[u8]) {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(want.len()).any(|w| w == want) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "EOF");
        got.extend_from_slice(&buf[..n]);
    }
}

fn orchestrate(n: usize, idle_secs: u64, deliveries: usize) {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&run_dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let procs_n = n.div_ceil(PER_PROCESS).max(1);
    eprintln!("N = {n}, {procs_n} hibernate process(es); preparing {USERS} users");
    let mut procs: Vec<Proc> = (0..procs_n)
        .map(|i| Proc {
            child: Command::new(&exe).arg("--serve").arg(i.to_string()).arg(&run_dir).spawn().unwrap(),
            socket: run_dir.join(format!("hibernate-{i}.sock")),
        })
        .collect();
    let users: Vec<UserBox> = (0..USERS).map(|i| make_user(&home, &format!("u{i}"), 2, Hooks::default()).0).collect();
    let bus_cfg = BusConfig::unix_in_run_dir(&run_dir);
    let publisher = BusPublisher::Unix(UnixPublisher::open(&bus_cfg.unix).unwrap());
    let hooks = Hooks::new().with(Arc::new(publisher));
    let probes: Vec<(UserBox, UserStore)> =
        (0..PROBES).map(|i| make_user(&home, &format!("p{i}"), 1, hooks.clone())).collect();
    for p in &procs {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.socket.exists() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let workers: Vec<OwnedFd> = procs.iter().map(|p| channel::connect(&p.socket).unwrap()).collect();
    let rss_before: Vec<(u64, u64)> = procs.iter().map(|p| smaps(p.child.id())).collect();
    let slab_before = meminfo("Slab:");
    let unrec_before = meminfo("SUnreclaim:");

    // A deep accept queue: with std's default backlog, bursts of connects
    // overflow it and wait for SYN retransmits (seconds).
    let listener = {
        let fd = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::STREAM, None).unwrap();
        rustix::net::sockopt::set_socket_reuseaddr(&fd, true).unwrap();
        rustix::net::bind(&fd, &SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        rustix::net::listen(&fd, 4096).unwrap();
        TcpListener::from(fd)
    };
    let target = listener.local_addr().unwrap();
    let client_procs = n.div_ceil(PER_PROCESS);
    let started = Instant::now();
    let mut kids: Vec<Child> = Vec::new();
    let mut remaining = n;
    for c in 0..client_procs {
        let count = remaining.min(PER_PROCESS);
        remaining -= count;
        let src = Ipv4Addr::new(127, 0, 0, 2 + c as u8);
        kids.push(
            Command::new(&exe)
                .arg("--clients")
                .arg(count.to_string())
                .arg(target.to_string())
                .arg(src.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for i in 0..n {
        let (sock, peer) = listener.accept().unwrap();
        let u = &users[i % USERS];
        let w = &workers[i % procs_n];
        channel::send(w.as_fd(), &record(u, i as u64, peer, target), Some(sock.as_fd())).unwrap();
    }
    for k in &mut kids {
        let mut line = String::new();
        BufReader::new(k.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    }
    let per_proc = |i: usize| n / procs_n + usize::from(i < n % procs_n);
    for (i, p) in procs.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(120);
        while held(p) < per_proc(i) as u64 {
            assert!(Instant::now() < deadline, "process {i} holds {} of {}", held(p), per_proc(i));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let setup = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rss_after: Vec<(u64, u64)> = procs.iter().map(|p| smaps(p.child.id())).collect();
    let slab_after = meminfo("Slab:");
    let unrec_after = meminfo("SUnreclaim:");

    println!();
    println!("| {:<52} | {:>7} | {:>12} | {:>12} | {:<10} |", "what", "N", "median", "p99", "unit");
    println!("|{}|{}|{}|{}|{}|", "-".repeat(54), "-".repeat(9), "-".repeat(14), "-".repeat(14), "-".repeat(12));
    row("connect + hand over + hibernate, all sessions", n, setup.as_secs_f64(), setup.as_secs_f64(), "s");
    let mut grew = 0i64;
    for (i, p) in procs.iter().enumerate() {
        let (r0, p0) = rss_before[i];
        let (r1, p1) = rss_after[i];
        grew += r1 as i64 - r0 as i64;
        row(&format!("hibernate {i} (pid {}) RSS before", p.child.id()), 0, r0 as f64 / 1e6, p0 as f64 / 1e6, "MB (RSS/PSS)");
        row(&format!("hibernate {i} (pid {}) RSS with sessions", p.child.id()), per_proc(i), r1 as f64 / 1e6, p1 as f64 / 1e6, "MB (RSS/PSS)");
    }
    let bps = grew as f64 / n as f64;
    row("user-space bytes per hibernated session (RSS growth/N)", n, bps, bps, "bytes");
    let kernel = (slab_after as f64 - slab_before as f64) / n as f64;
    let kernel_unrec = (unrec_after as f64 - unrec_before as f64) / n as f64;
    row("kernel Slab per connection (both ends, all processes)", n, kernel, kernel_unrec, "bytes (Slab/SUnrecl)");

    let ticks_before: Vec<u64> = procs.iter().map(|p| cpu_ticks(p.child.id())).collect();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let ticks: u64 = procs.iter().zip(&ticks_before).map(|(p, b)| cpu_ticks(p.child.id()) - b).sum();
    let hz = 100.0;
    row(&format!("CPU of hibernate processes over {idle_secs} idle s"), n, ticks as f64 / hz * 1000.0, ticks as f64 / hz * 1000.0, "ms");

    // Probe clients: one IDLE session per probe user, held here.
    let mut probe_clients: Vec<TcpStream> = Vec::new();
    for (i, (u, _)) in probes.iter().enumerate() {
        let c = TcpStream::connect(target).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (sock, peer) = listener.accept().unwrap();
        channel::send(workers[i % procs_n].as_fd(), &record(u, 1_000_000 + i as u64, peer, target), Some(sock.as_fd())).unwrap();
        probe_clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    // Deliveries from DELIVERY_THREADS threads (each append fsyncs, so one
    // thread cannot reach 1,000/s), each owning PROBES / DELIVERY_THREADS
    // probe users, paced to 1,000 deliveries/s in total.
    let t0 = Instant::now();
    let per_thread = deliveries / DELIVERY_THREADS;
    let mut groups: Vec<Vec<((UserBox, UserStore), TcpStream)>> = (0..DELIVERY_THREADS).map(|_| Vec::new()).collect();
    for (i, pair) in probes.into_iter().zip(probe_clients.drain(..)).enumerate() {
        groups[i % DELIVERY_THREADS].push(pair);
    }
    let handles: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(t, mut group)| {
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per_thread);
                for j in 0..per_thread {
                    let due = t0 + Duration::from_micros((1000 * (j * DELIVERY_THREADS + t)) as u64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let k = j % group.len();
                    let ((_, store), client) = &mut group[k];
                    store.append("INBOX", b"Subject: probe\r\n\r\nhi\r\n", &AppendOptions::default()).unwrap();
                    let acked = Instant::now();
                    read_until(client, b" EXISTS\r\n");
                    lat.push(acked.elapsed().as_secs_f64() * 1000.0);
                }
                (lat, group)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        let (l, group) = h.join().unwrap();
        lat.extend(l);
        probe_clients.extend(group.into_iter().map(|(_, c)| c));
    }
    let rate = lat.len() as f64 / t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    row(&format!("delivery ack -> * n EXISTS ({rate:.0} deliveries/s)"), lat.len(), percentile(&lat, 0.5), percentile(&lat, 0.99), "ms");

    // DONE + NOOP (and STATUS) answered by the hibernate process, then IDLE again.
    let mut noop = Vec::new();
    let mut status = Vec::new();
    for i in 0..1000 {
        let c = &mut probe_clients[i % PROBES];
        let t = Instant::now();
        c.write_all(format!("DONE\r\nn{i} NOOP\r\n").as_bytes()).unwrap();
        read_until(c, format!("n{i} OK").as_bytes());
        noop.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        c.write_all(format!("s{i} STATUS INBOX (MESSAGES UIDNEXT)\r\n").as_bytes()).unwrap();
        read_until(c, format!("s{i} OK").as_bytes());
        status.push(t.elapsed().as_secs_f64() * 1000.0);
        c.write_all(format!("i{i} IDLE\r\n").as_bytes()).unwrap();
        read_until(c, b"+ idling\r\n");
    }
    noop.sort_by(f64::total_cmp);
    status.sort_by(f64::total_cmp);
    row("DONE + NOOP round trip, answered while hibernated", noop.len(), percentile(&noop, 0.5), percentile(&noop, 0.99), "ms");
    row("STATUS round trip, answered while hibernated", status.len(), percentile(&status, 0.5), percentile(&status, 0.99), "ms");

    // Leave: every session must be released.
    for k in &mut kids {
        drop(k.stdin.take());
        let _ = k.wait();
    }
    drop(probe_clients);
    let deadline = Instant::now() + Duration::from_secs(60);
    while procs.iter().map(held).sum::<u64>() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: u64 = procs.iter().map(held).sum();
    row("sessions still held after all clients left", n, left as f64, left as f64, "sessions");
    for p in &mut procs {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}
