//! A subscriber process for the bus tests and the benchmark.
//!
//! Arguments are `key=value` pairs:
//! `transport=unix|nats`, `dir=BUS_DIR` (unix), `url=NATS_URL` (nats),
//! `users=a,b,c` (subscribed users), `expect=N` (exit after N events),
//! `truth=DIR` (a "storage" folder holding one file per user with its current
//! modseq, read when resyncing), `synthetic=N` (also subscribe N users
//! `synthetic-0..N`, to measure the cost of many subscriptions),
//! `mode=wildcard` (NATS: one wildcard subscription), `all=1` (UNIX: ask
//! publishers for every event, as before routing; filtered here), `timeout=SECS`.
//!
//! Protocol: prints `READY` once subscribed, `P <events>` every 4,096
//! events (the benchmark's flow-control window), then `SUBSCRIBED ms=.. rss_kb=..`
//! if `synthetic` was given; reads `STOP` on stdin; at the end prints one
//! `DONE key=value ...` line with events, resyncs, gaps, latency
//! percentiles (from the send time in nanoseconds since the UNIX epoch that
//! the benchmark puts in `status.size`) and the final modseq per user.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus::{BusConfig, BusMessage, BusSubscriber, Transport};
use tokio::io::AsyncBufReadExt;

/// A `P <events>` progress line is printed every this many events.
const PROGRESS_EVERY: u64 = 4096;

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn rss_kb(pid: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct State {
    modseq: BTreeMap<String, u64>,
    dirty: BTreeSet<String>,
    truth: Option<PathBuf>,
}

impl State {
    /// Re-reads dirty users from the "storage" folder, if present.
    fn resync(&mut self) {
        let Some(dir) = &self.truth else { return };
        for user in std::mem::take(&mut self.dirty) {
            match std::fs::read_to_string(dir.join(&user)) {
                Ok(text) => {
                    self.modseq.insert(user, text.trim().parse().unwrap_or(0));
                }
                Err(_) => {
                    self.dirty.insert(user);
                }
            }
        }
    }
}

/// What the subscriber saw.
#[derive(Default)]
struct Tally {
    events: u64,
    resyncs: u64,
    first_ns: u64,
    last_ns: u64,
    latencies: Vec<u64>,
}

impl Tally {
    fn handle(&mut self, msg: BusMessage, state: &mut State, users: &[String]) {
        match msg {
            BusMessage::Event(ev) => {
                let now = now_ns();
                if self.first_ns == 0 {
                    self.first_ns = now;
                }
                self.last_ns = now;
                self.events += 1;
                if self.events % PROGRESS_EVERY == 0 {
                    println!("P {}", self.events);
                }
                if ev.status.size > 0 && ev.status.size <= now {
                    self.latencies.push(now - ev.status.size);
                }
                match state.modseq.get_mut(&ev.user) {
                    Some(m) if *m == ev.modseq_before => *m = ev.modseq_after,
                    Some(m) => {
                        if ev.modseq_after > *m {
                            state.dirty.insert(ev.user);
                        }
                    }
                    None => {
                        state.modseq.insert(ev.user, ev.modseq_after);
                    }
                }
            }
            BusMessage::Resync { user, .. } => {
                self.resyncs += 1;
                match user {
                    Some(u) => {
                        state.dirty.insert(u);
                    }
                    None => state.dirty.extend(users.iter().cloned()),
                }
                state.resync();
            }
        }
    }
}

/// Runs the subscriber (also called by `bench_bus child ...`).
#[tokio::main(flavor = "current_thread")]
pub async fn main() {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    for a in std::env::args().skip(1) {
        if let Some((k, v)) = a.split_once('=') {
            args.insert(k.to_owned(), v.to_owned());
        }
    }
    let get = |k: &str| args.get(k).cloned().unwrap_or_default();
    let mut cfg = BusConfig::default();
    if get("transport") == "nats" {
        cfg.transport = Transport::Nats;
        cfg.nats.url = get("url");
        if get("mode") == "wildcard" {
            cfg.nats.subscription_mode = bus::SubscriptionMode::Wildcard;
        }
    } else {
        cfg.unix.dir = PathBuf::from(get("dir"));
    }
    cfg.queue_capacity = 1 << 20;
    let users: Vec<String> = get("users").split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let expect: u64 = get("expect").parse().unwrap_or(u64::MAX);
    let synthetic: usize = get("synthetic").parse().unwrap_or(0);
    let timeout = Duration::from_secs(get("timeout").parse().unwrap_or(120));
    let mut state = State {
        modseq: BTreeMap::new(),
        dirty: BTreeSet::new(),
        truth: args.get("truth").map(PathBuf::from),
    };

    let mut sub = match BusSubscriber::from_config(&cfg).await {
        Ok(s) => s,
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(1);
        }
    };
    for u in &users {
        sub.subscribe(u);
    }
    if let (BusSubscriber::Unix(s), "1") = (&sub, get("all").as_str()) {
        s.set_receive_all(true);
    }
    if let Err(e) = sub.sync().await {
        println!("ERROR {e}");
        std::process::exit(1);
    }
    println!("READY");
    if synthetic > 0 {
        let before = rss_kb("self");
        let start = Instant::now();
        for i in 0..synthetic {
            sub.subscribe(&format!("synthetic-{i}"));
        }
        let sync = sub.sync().await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        println!("SUBSCRIBED ms={ms:.1} rss_kb={} rss_before_kb={before} ok={}", rss_kb("self"), sync.is_ok());
    }

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tally = Tally::default();
    let mut timed_out = false;
    let mut stdin_open = true;
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    while tally.events < expect {
        tokio::select! {
            msg = sub.recv() => {
                let Some(msg) = msg else { break };
                tally.handle(msg, &mut state, &users);
                // Drain what is already queued without going through select! again.
                while tally.events < expect {
                    let Some(msg) = sub.try_recv() else { break };
                    tally.handle(msg, &mut state, &users);
                }
            }
            line = stdin.next_line(), if stdin_open => {
                match line {
                    Ok(Some(l)) if l.trim() == "STOP" => break,
                    Ok(Some(_)) => {}
                    _ => stdin_open = false,
                }
            }
            _ = &mut sleep => { timed_out = true; break; }
        }
    }
    let Tally { events, resyncs, first_ns, last_ns, mut latencies } = tally;
    state.resync();
    latencies.sort_unstable();
    let c = sub.counters();
    let st: Vec<String> = state.modseq.iter().map(|(u, m)| format!("{u}:{m}")).collect();
    println!(
        "DONE events={events} resyncs={resyncs} gaps={} malformed={} timed_out={timed_out} first_ns={first_ns} last_ns={last_ns} \
         p50_ns={} p99_ns={} dirty={} rss_kb={} state={}",
        c.gaps,
        c.dropped_malformed + c.dropped_unknown_version,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        state.dirty.len(),
        rss_kb("self"),
        st.join(",")
    );
}
