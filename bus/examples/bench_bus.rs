//! Benchmark of both bus transports; prints a table (what, N, median, p99/worst, unit).
//!
//! Run: `cargo run --release -p bus --example bench_bus [quick]`
//!
//! * throughput: one publisher (this process) to 1 and to 4 subscriber
//!   processes (this binary re-executed as `bench_bus child ...`), lossless:
//!   the publisher stays at most 32,768 events ahead of the slowest
//!   subscriber (progress lines from the children), and also slows down
//!   when a receiver's pending batch is half full (UNIX) or the publish
//!   queue is full (NATS). Median and worst of 3 runs.
//! * latency at 1,000 events/s to one subscriber process: the send time
//!   (ns since the UNIX epoch) travels in the event's `status.size` field.
//! * UNIX routing: one publisher, 8 subscriber processes each subscribing
//!   its own 8 of 64 users (events round-robin over the users): lossless
//!   throughput and latency at 1,000 events/s, routed (each event goes to
//!   its owner only) and broadcast (`all=1`: every subscriber asks for
//!   every event and filters, as before routing). Skip with `no-routing`.
//! * NATS: time to create 100,000 per-user subscriptions in a fresh
//!   subscriber process and the RSS of that process and of nats-server.
//!
//! Uses its own nats-server (`/usr/sbin/nats-server -js`) on a free port
//! and a temporary bus folder. Every phase has a count and a time limit.

#[path = "bus_subscriber.rs"]
mod child;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus::{BusError, NatsConfig, NatsPublisher, UnixConfig, UnixPublisher};
use storage_hooks::{EventKind, Flags, MailboxEvent, MailboxStatus, UidSet};

const RUNS: usize = 3;

/// How many events the publisher may be ahead of the slowest subscriber.
const WINDOW: u64 = 32_768;

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn event(i: u64) -> MailboxEvent {
    MailboxEvent {
        kind: EventKind::MessageNew,
        user: "bench-user".into(),
        mailbox: "INBOX".into(),
        old_mailbox: None,
        uidvalidity: 1_700_000_000,
        uids: UidSet::from_range(i as u32 + 1, i as u32 + 1),
        flags: Flags::default(),
        status: MailboxStatus { messages: i as u32 + 1, uidnext: i as u32 + 2, size: now_ns(), ..Default::default() },
        modseq_before: i,
        modseq_after: i + 1,
        summary: None,
        timestamp_ms: 0,
    }
}

struct Sub {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// Events the subscriber reported so far (`P <n>` lines).
    progress: Arc<AtomicU64>,
}

impl Sub {
    fn spawn(args: &[String]) -> Sub {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("child")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn subscriber");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        let progress = Arc::new(AtomicU64::new(0));
        let seen = progress.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = l.strip_prefix("P ").and_then(|n| n.parse().ok()) {
                    seen.store(n, Ordering::Relaxed);
                } else if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Sub { child, stdin, lines, progress }
    }

    fn wait(&self, prefix: &str, timeout: Duration) -> Option<BTreeMap<String, String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => {
                    return Some(
                        l.split_whitespace()
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                    )
                }
                Ok(l) if l.starts_with("ERROR") => {
                    eprintln!("subscriber: {l}");
                    return None;
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    fn stop(&mut self) {
        let _ = writeln!(self.stdin, "STOP");
        let _ = self.stdin.flush();
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the publisher sends.
enum Target<'a> {
    Unix(&'a UnixPublisher, usize),
    Nats(&'a NatsPublisher),
}

impl Target<'_> {
    fn child_args(&self, dir: &str, url: &str) -> Vec<String> {
        match self {
            Target::Unix(..) => vec!["transport=unix".into(), format!("dir={dir}")],
            Target::Nats(_) => vec!["transport=nats".into(), format!("url={url}")],
        }
    }

    /// Publishes without losing events: waits while the transport is saturated.
    async fn publish(&self, ev: &MailboxEvent) {
        match self {
            Target::Unix(p, max_frame) => {
                if p.publish(ev) > max_frame / 2 {
                    while p.flush_pending() > max_frame / 4 {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
            }
            Target::Nats(p) => loop {
                match p.publish(ev) {
                    Ok(()) => break,
                    Err(BusError::QueueFull) => tokio::time::sleep(Duration::from_micros(50)).await,
                    Err(e) => panic!("publish: {e}"),
                }
            },
        }
    }

    async fn flush(&self) {
        match self {
            Target::Unix(p, _) => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while p.flush_pending() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            Target::Nats(p) => p.flush().await.expect("flush"),
        }
    }
}

struct Row {
    what: String,
    n: u64,
    median: f64,
    p99: f64,
    unit: &'static str,
}

fn median_and_worst(mut v: Vec<f64>, higher_is_better: bool) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let median = v[v.len() / 2];
    let worst = if higher_is_better { v[0] } else { v[v.len() - 1] };
    (median, worst)
}

/// One throughput run: `events` events to `subs` subscriber processes.
async fn throughput(target: &Target<'_>, dir: &str, url: &str, subs: usize, events: u64) -> Option<f64> {
    let mut args = target.child_args(dir, url);
    args.push("users=bench-user".into());
    args.push(format!("expect={events}"));
    args.push("timeout=60".into());
    let children: Vec<Sub> = (0..subs).map(|_| Sub::spawn(&args)).collect();
    for c in &children {
        c.wait("READY", Duration::from_secs(30))?;
    }
    let start = now_ns();
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..events {
        // Flow control: stay at most WINDOW events ahead of the slowest
        // subscriber, so the run measures lossless throughput.
        if i % 1024 == 0 {
            while i > WINDOW + children.iter().map(|c| c.progress.load(Ordering::Relaxed)).min().unwrap_or(0) {
                if Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        target.publish(&event(i)).await;
        if i % 65_536 == 0 && Instant::now() > deadline {
            eprintln!("publisher hit the time limit");
            return None;
        }
    }
    target.flush().await;
    let mut last = 0u64;
    for c in &children {
        let done = c.wait("DONE", Duration::from_secs(60))?;
        if done.get("events").map(String::as_str) != Some(&events.to_string()) || done["gaps"] != "0" {
            eprintln!("subscriber incomplete: {done:?}");
            return None;
        }
        last = last.max(done["last_ns"].parse().ok()?);
    }
    Some(events as f64 / ((last - start) as f64 / 1e9))
}

/// Latency at `rate` events/s to one subscriber process.
async fn latency(target: &Target<'_>, dir: &str, url: &str, events: u64, rate: u64) -> Option<(f64, f64)> {
    let mut args = target.child_args(dir, url);
    args.push("users=bench-user".into());
    args.push(format!("expect={events}"));
    args.push("timeout=60".into());
    let child = Sub::spawn(&args);
    child.wait("READY", Duration::from_secs(30))?;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = tokio::time::Instant::now();
    for i in 0..events {
        tokio::time::sleep_until(start + interval * i as u32).await;
        target.publish(&event(i)).await;
        if let Target::Nats(p) = target {
            p.flush().await.ok()?;
        }
    }
    let done = child.wait("DONE", Duration::from_secs(60))?;
    Some((done["p50_ns"].parse::<f64>().ok()? / 1000.0, done["p99_ns"].parse::<f64>().ok()? / 1000.0))
}

fn rss_kb(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Users per subscriber process in the routing scenario.
const USERS_PER_SUB: usize = 8;

/// One routing run: `subs` subscriber processes owning `USERS_PER_SUB` users
/// each; `rate` paces the publisher (events/s), `all` asks for broadcast.
/// Returns (events/s, median of the subscribers' p50, worst p99) in µs.
async fn routing_run(p: &UnixPublisher, max_frame: usize, dir: &str, subs: usize, events: u64, all: bool, rate: Option<u64>) -> Option<(f64, f64, f64)> {
    let n_users = subs * USERS_PER_SUB;
    let events = events - events % n_users as u64;
    let user = |u: usize| format!("r{}-{}", u / USERS_PER_SUB, u % USERS_PER_SUB);
    let children: Vec<Sub> = (0..subs)
        .map(|k| {
            let mine: Vec<String> = (0..USERS_PER_SUB).map(|j| user(k * USERS_PER_SUB + j)).collect();
            let mut args = vec!["transport=unix".into(), format!("dir={dir}"), format!("users={}", mine.join(","))];
            args.push(format!("expect={}", events / subs as u64));
            args.push("timeout=60".into());
            if all {
                args.push("all=1".into());
            }
            Sub::spawn(&args)
        })
        .collect();
    for c in &children {
        c.wait("READY", Duration::from_secs(30))?;
    }
    let target = Target::Unix(p, max_frame);
    let mut modseq = vec![0u64; n_users];
    let start = now_ns();
    let t0 = tokio::time::Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..events {
        if let Some(rate) = rate {
            tokio::time::sleep_until(t0 + Duration::from_nanos(i * 1_000_000_000 / rate)).await;
        } else if i % 1024 == 0 {
            while i / subs as u64 > WINDOW + children.iter().map(|c| c.progress.load(Ordering::Relaxed)).min().unwrap_or(0) {
                if Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        let u = (i % n_users as u64) as usize;
        let mut ev = event(modseq[u]);
        ev.user = user(u);
        ev.modseq_after = modseq[u] + 1;
        modseq[u] += 1;
        target.publish(&ev).await;
        if i % 65_536 == 0 && Instant::now() > deadline {
            eprintln!("publisher hit the time limit");
            return None;
        }
    }
    target.flush().await;
    let (mut last, mut p50s, mut p99) = (0u64, Vec::new(), 0f64);
    for c in &children {
        let done = c.wait("DONE", Duration::from_secs(60))?;
        if done.get("events").map(String::as_str) != Some(&(events / subs as u64).to_string()) || done["gaps"] != "0" {
            eprintln!("subscriber incomplete: {done:?}");
            return None;
        }
        last = last.max(done["last_ns"].parse().ok()?);
        p50s.push(done["p50_ns"].parse::<f64>().ok()? / 1000.0);
        p99 = p99.max(done["p99_ns"].parse::<f64>().ok()? / 1000.0);
    }
    let (p50, _) = median_and_worst(p50s, false);
    Some((events as f64 / ((last - start) as f64 / 1e9), p50, p99))
}

/// The publisher's routing cost: hashing a user name, and deciding to skip
/// a receiver whose bit is clear (one drain of the inotify watch per event,
/// shared by the receivers; the encoding of the event is included).
fn routing_cost_rows(rows: &mut Vec<Row>) {
    let n = 1_000_000u64;
    let names: Vec<String> = (0..10_000).map(|i| format!("user-{i}@example.org")).collect();
    let t = Instant::now();
    let mut acc = 0u64;
    for i in 0..n {
        acc ^= bus::unix_dgram::interest::user_hash(&names[(i % 10_000) as usize]);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    std::hint::black_box(acc);
    rows.push(Row { what: "unix routing: user hash (SHA-256) per event".into(), n, median: ns, p99: ns, unit: "ns" });
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = UnixConfig { dir: tmp.path().join("bus"), ..UnixConfig::default() };
    let receivers = 8;
    let subs: Vec<bus::UnixSubscriber> =
        (0..receivers).map(|_| bus::UnixSubscriber::bind(&cfg, 16).expect("subscriber")).collect();
    let p = UnixPublisher::open(&cfg).expect("publisher");
    let n = 200_000u64;
    let mut ev = event(0);
    let t = Instant::now();
    for i in 0..n {
        ev.user.clear();
        ev.user.push_str(&names[(i % 10_000) as usize]);
        p.publish(&ev);
    }
    let ns = t.elapsed().as_nanos() as f64 / (n * receivers as u64) as f64;
    assert_eq!(p.skipped_by_routing(), n * receivers as u64);
    rows.push(Row { what: format!("unix routing: publish cost per skipped receiver ({receivers} receivers)"), n, median: ns, p99: ns, unit: "ns" });
    drop(subs);
}

/// Rows of the routing scenario (UNIX only).
async fn routing_rows(p: &UnixPublisher, max_frame: usize, dir: &str, events: u64, rows: &mut Vec<Row>) {
    routing_cost_rows(rows);
    let subs = 8;
    for (mode, all) in [("routed", false), ("broadcast", true)] {
        let mut rates = Vec::new();
        for _ in 0..RUNS {
            match routing_run(p, max_frame, dir, subs, events, all, None).await {
                Some((r, _, _)) => rates.push(r),
                None => eprintln!("unix {mode}: a throughput run failed"),
            }
        }
        if !rates.is_empty() {
            let (median, worst) = median_and_worst(rates, true);
            rows.push(Row {
                what: format!("unix {mode}: throughput, 1 publisher -> {subs} processes x {USERS_PER_SUB} own users (worst run)"),
                n: events * RUNS as u64,
                median,
                p99: worst,
                unit: "events/s",
            });
        }
        if let Some((_, p50, p99)) = routing_run(p, max_frame, dir, subs, 8_000, all, Some(1_000)).await {
            rows.push(Row { what: format!("unix {mode}: latency at 1,000 events/s, {subs} processes"), n: 8_000, median: p50, p99, unit: "us" });
        }
    }
}

async fn transport_rows(name: &str, target: &Target<'_>, dir: &str, url: &str, events: u64, rows: &mut Vec<Row>) {
    let latency_only = std::env::args().any(|a| a == "latency-only");
    for subs in [1usize, 4].into_iter().filter(|_| !latency_only) {
        let mut rates = Vec::new();
        for _ in 0..RUNS {
            match throughput(target, dir, url, subs, events).await {
                Some(r) => rates.push(r),
                None => eprintln!("{name}: a throughput run to {subs} subscribers failed"),
            }
        }
        if !rates.is_empty() {
            let (median, worst) = median_and_worst(rates, true);
            rows.push(Row {
                what: format!("{name}: throughput, 1 publisher -> {subs} subscriber process(es) (worst run)"),
                n: events * RUNS as u64,
                median,
                p99: worst,
                unit: "events/s",
            });
        }
    }
    let n = 5_000;
    if let Some((p50, p99)) = latency(target, dir, url, n, 1_000).await {
        rows.push(Row { what: format!("{name}: latency at 1,000 events/s"), n, median: p50, p99, unit: "us" });
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("child") {
        child::main();
        return;
    }
    let quick = std::env::args().any(|a| a == "quick");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run(quick));
}

async fn run(quick: bool) {
    let events: u64 = if quick { 50_000 } else { 500_000 };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("bus");
    let mut ucfg = UnixConfig { dir: dir.clone(), ..UnixConfig::default() };
    if let Some(us) = std::env::args().find_map(|a| a.strip_prefix("coalesce_us=").and_then(|v| v.parse().ok())) {
        ucfg.coalesce_us = us;
    }
    let mut rows = Vec::new();
    let dir_s = dir.display().to_string();

    let only = std::env::args().find_map(|a| a.strip_prefix("only=").map(str::to_owned));
    if only.as_deref() != Some("nats") {
        let unix = UnixPublisher::open(&ucfg).expect("unix publisher");
        transport_rows("unix", &Target::Unix(&unix, ucfg.max_frame_bytes), &dir_s, "", events, &mut rows).await;
        if !std::env::args().any(|a| a == "no-routing" || a == "latency-only") {
            routing_rows(&unix, ucfg.max_frame_bytes, &dir_s, events, &mut rows).await;
        }
    }
    if only.as_deref() == Some("unix") {
        print_rows(rows);
        return;
    }

    // Our own nats-server.
    let mut server = bus::LocalNatsServer::start(&tmp.path().join("js")).expect("start nats-server");
    let url = server.url();
    let ncfg = NatsConfig { url: url.clone(), ..NatsConfig::default() };
    let nats = NatsPublisher::connect(&ncfg, 1 << 16).await.expect("nats publisher");
    transport_rows("nats", &Target::Nats(&nats), &dir_s, &url, events, &mut rows).await;

    // Cost of 100,000 per-user subscriptions (and of the wildcard mode).
    let subs_n: u64 = if quick { 10_000 } else { 100_000 };
    for mode in ["per-user", "wildcard"] {
        subscription_rows(mode, server.pid(), &url, subs_n, &mut rows);
    }
    drop(nats);
    server.stop();

    print_rows(rows);
}

/// Subscribes `n` users in a fresh subscriber process and reports time and memory.
fn subscription_rows(mode: &str, server_pid: u32, url: &str, n: u64, rows: &mut Vec<Row>) {
    let server_before = rss_kb(server_pid);
    let mut child = Sub::spawn(&[
        "transport=nats".into(),
        format!("url={url}"),
        format!("mode={mode}"),
        "users=".into(),
        format!("synthetic={n}"),
        "timeout=120".into(),
    ]);
    if child.wait("READY", Duration::from_secs(30)).is_none() {
        return;
    }
    if let Some(s) = child.wait("SUBSCRIBED", Duration::from_secs(120)) {
        let ms: f64 = s["ms"].parse().unwrap_or(0.0);
        let rss: f64 = s["rss_kb"].parse().unwrap_or(0.0);
        let before: f64 = s["rss_before_kb"].parse().unwrap_or(0.0);
        let server_after = rss_kb(server_pid);
        let per_sub = (rss - before) * 1024.0 / n as f64;
        let server_per_sub = server_after.saturating_sub(server_before) as f64 * 1024.0 / n as f64;
        rows.push(Row { what: format!("nats {mode}: time to subscribe {n} users (+flush)"), n, median: ms, p99: ms, unit: "ms" });
        rows.push(Row { what: format!("nats {mode}: subscriber RSS after subscribing"), n, median: rss / 1024.0, p99: rss / 1024.0, unit: "MiB" });
        rows.push(Row { what: format!("nats {mode}: subscriber RSS growth per user"), n, median: per_sub, p99: per_sub, unit: "bytes" });
        rows.push(Row {
            what: format!("nats {mode}: nats-server RSS after"),
            n,
            median: server_after as f64 / 1024.0,
            p99: server_after as f64 / 1024.0,
            unit: "MiB",
        });
        rows.push(Row { what: format!("nats {mode}: nats-server RSS growth per user"), n, median: server_per_sub, p99: server_per_sub, unit: "bytes" });
    }
    child.stop();
    let _ = child.wait("DONE", Duration::from_secs(30));
}

fn print_rows(rows: Vec<Row>) {
    println!("{:<78} {:>9} {:>12} {:>12}  unit", "what", "N", "median", "p99/worst");
    for r in rows {
        println!("{:<78} {:>9} {:>12.1} {:>12.1}  {}", r.what, r.n, r.median, r.p99, r.unit);
    }
}
