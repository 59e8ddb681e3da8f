//! Benchmark of the webhook relay against a local HTTP receiver; prints a
//! small table.
//!
//! Run: `cargo run --release -p push --example bench_relay [quick]`
//!
//! * throughput: events dispatched as fast as the relay accepts them to
//!   one webhook registration (queue 100,000; 4 and 16 requests in flight
//!   per endpoint) and to 16 registrations of 16 users (4 in flight each);
//!   webhooks per second until the receiver has them all.
//! * latency: a real store appends a message (UNIX-datagram bus, relay in
//!   this process, no fsync so the disk does not dominate) at 200
//!   messages/s; the time from calling `append`, and from `append`
//!   returning, to the receiver getting the webhook, p50/p99/max (the hook
//!   publishes before `append` returns, so the webhook can arrive first:
//!   negative values, counted on the last line). The same again through
//!   JetStream (`[push.nats]` publisher hook, the relay's durable consumer,
//!   delivered log on) when `/usr/sbin/nats-server` exists (own port and
//!   folder).
//!
//! Everything runs on 127.0.0.1 in a temporary folder; every phase has a
//! count and a time limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use bus::{BusConfig, BusPublisher, BusSubscriber};
use push::relay::bus_source::run_bus_source;
use push::relay::jetstream_source::run_jetstream_source;
use push::relay::{Relay, RelayConfig, RelaySettings};
use push::{ExternalEvent, HeaderPolicy, Registration, Target};
use storage_hooks::{
    AppendOptions, Durability, EventKind, Flags, Hooks, MailboxEvent, MailboxStatus, MessageSummary, UidSet, UserStore,
};

/// What the receiver saw: arrival time per event subject.
#[derive(Default)]
struct Seen {
    count: u64,
    arrivals: HashMap<String, Instant>,
}

async fn start_receiver(seen: Arc<Mutex<Seen>>, record_subjects: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let seen = seen.clone();
        async move {
            let now = Instant::now();
            let subject = if record_subjects {
                ExternalEvent::from_json(&body).ok().and_then(|e| e.subject)
            } else {
                None
            };
            let mut s = seen.lock().unwrap();
            s.count += 1;
            if let Some(subject) = subject {
                s.arrivals.insert(subject, now);
            }
            StatusCode::NO_CONTENT
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

fn relay(dir: &std::path::Path, cfg: RelayConfig) -> Relay {
    Relay::new(&RelaySettings {
        relay: cfg,
        max_event_bytes: 3800,
        state_dir: dir.to_path_buf(),
        remember_delivered: false,
        webpush: push::web_push::WebPushConfig::default(),
    })
    .unwrap()
}

fn registration(user: &str, url: &str) -> Registration {
    let target = Target::Webhook { url: url.into(), secret: push::registration::generate_secret() };
    Registration::new(user, &[], target).unwrap()
}

fn event(user: &str, n: u32) -> ExternalEvent {
    let ev = MailboxEvent {
        kind: EventKind::MessageNew,
        user: user.into(),
        mailbox: "INBOX".into(),
        old_mailbox: None,
        uidvalidity: 1,
        uids: UidSet::from_range(n, n),
        flags: Flags::default(),
        status: MailboxStatus { messages: n, unseen: n, uidnext: n + 1, highestmodseq: u64::from(n), ..Default::default() },
        modseq_before: u64::from(n) - 1,
        modseq_after: u64::from(n),
        summary: Some(MessageSummary { from: "Bob <bob@example.org>".into(), subject: format!("m{n}"), snippet: "hello there".into() }),
        timestamp_ms: 0,
    };
    ExternalEvent::from_mailbox_event(&ev, &HeaderPolicy::default()).remove(0)
}

/// Webhooks per second for `n` events over `users` users, one registration each.
async fn throughput(n: u32, users: usize, concurrency: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = start_receiver(seen.clone(), false).await;
    let cfg = RelayConfig { queue_per_endpoint: 100_000, concurrency_per_endpoint: concurrency, ..RelayConfig::default() };
    let relay = relay(dir.path(), cfg);
    let names: Vec<String> = (0..users).map(|u| format!("user{u}")).collect();
    let regs: Vec<Registration> = names.iter().map(|u| registration(u, &url)).collect();
    relay.set_registrations(&regs);
    let events: Vec<ExternalEvent> = (1..=n).map(|i| event(&names[i as usize % users], i)).collect();
    let start = Instant::now();
    for ev in &events {
        relay.dispatch(ev, None);
    }
    let deadline = start + Duration::from_secs(120);
    while seen.lock().unwrap().count < u64::from(n) {
        assert!(Instant::now() < deadline, "throughput run did not finish in 120 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(relay.counters().dead_lettered, 0);
    f64::from(n) / secs
}

/// Where the latency run's events travel.
enum EventPath {
    /// The UNIX-datagram bus.
    UnixBus,
    /// `[push.nats]` JetStream publishing and the relay's durable consumer,
    /// on a nats-server at this port.
    JetStream(u16),
}

/// Latencies (µs) from calling `append` and from `append` returning to the
/// webhook arriving (negative: it arrived before `append` returned).
async fn latency(n: u32, rate_per_sec: u32, path: EventPath) -> (Vec<i64>, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = start_receiver(seen.clone(), true).await;
    let jetstream = matches!(path, EventPath::JetStream(_));
    let relay = Relay::new(&RelaySettings {
        relay: RelayConfig::default(),
        max_event_bytes: 3800,
        state_dir: dir.path().join("push"),
        remember_delivered: jetstream,
        webpush: push::web_push::WebPushConfig::default(),
    })
    .unwrap();
    relay.set_registrations(&[registration("alice", &url)]);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (hooks, source) = match path {
        EventPath::UnixBus => {
            let bus_cfg = BusConfig::unix_in_run_dir(&dir.path().join("run"));
            let subscriber = BusSubscriber::from_config(&bus_cfg).await.unwrap();
            let relay = relay.clone();
            let source = tokio::spawn(async move {
                run_bus_source(&relay, subscriber, HeaderPolicy::default(), stop_rx, Duration::from_secs(1)).await
            });
            let publisher = BusPublisher::from_config(&bus_cfg).await.unwrap();
            (Hooks::new().with(Arc::new(publisher)), source)
        }
        EventPath::JetStream(port) => {
            let nats = bus::NatsConfig { url: format!("nats://127.0.0.1:{port}"), ..bus::NatsConfig::default() };
            let push_cfg = push::PushConfig {
                nats: push::config::PushNatsConfig { enabled: true, ..Default::default() },
                ..Default::default()
            };
            let publisher = push::PushNatsPublisher::connect(&nats, &push_cfg, 65_536).await.unwrap();
            let client = async_nats::connect(&nats.url).await.unwrap();
            let relay = relay.clone();
            let source = tokio::spawn(async move {
                run_jetstream_source(&relay, client, &push_cfg.nats, &RelayConfig::default(), stop_rx, Duration::from_secs(1))
                    .await
            });
            (Hooks::new().with(Arc::new(publisher)), source)
        }
    };
    let store = UserStore::open("alice", dir.path().join("alice"), hooks).unwrap().with_durability(Durability::NoFsync);
    // Warm up until the relay's subscription is live.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().count == 0 {
        assert!(Instant::now() < deadline, "relay never received the warm-up mail");
        store.append("INBOX", b"Subject: warm-up\r\n\r\nx\r\n", &AppendOptions::default()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gap = Duration::from_secs(1) / rate_per_sec;
    let mut appended = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let raw = format!("From: b@example.org\r\nSubject: lat{i}\r\n\r\nbody\r\n");
        // The store call blocks; run it on a blocking thread like the server does.
        let s = store.clone();
        let t = tokio::task::spawn_blocking(move || {
            let called = Instant::now();
            s.append("INBOX", raw.as_bytes(), &AppendOptions::default()).unwrap();
            (called, Instant::now())
        })
        .await
        .unwrap();
        appended.push(t);
        let next = start + gap * (i + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = seen.lock().unwrap().arrivals.keys().filter(|k| k.starts_with("lat")).count();
        if got == n as usize {
            break;
        }
        assert!(Instant::now() < deadline, "only {got} of {n} latency webhooks arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop_tx.send(true).unwrap();
    source.await.unwrap().unwrap();
    let s = seen.lock().unwrap();
    let micros = |arrived: Instant, t: Instant| {
        if arrived >= t {
            arrived.duration_since(t).as_micros() as i64
        } else {
            -(t.duration_since(arrived).as_micros() as i64)
        }
    };
    let arrived = |i: u32| s.arrivals[&format!("lat{i}")];
    let from_call = (0..n).map(|i| micros(arrived(i), appended[i as usize].0)).collect();
    let from_return = (0..n).map(|i| micros(arrived(i), appended[i as usize].1)).collect();
    (from_call, from_return)
}

fn report_latency(n: u32, (mut from_call, mut from_return): (Vec<i64>, Vec<i64>), via: &str) {
    from_call.sort_unstable();
    from_return.sort_unstable();
    let early = from_return.iter().filter(|&&l| l < 0).count();
    for (what, lat) in [("append call", &from_call), ("append return", &from_return)] {
        println!(
            "{:<58} {:>8} {:>14}",
            format!("latency {what} -> webhook, 200/s, {via}, p50/p99/max"),
            n,
            format!("{}/{}/{} us", pct(lat, 0.5), pct(lat, 0.99), lat[lat.len() - 1])
        );
    }
    println!("{:<58} {:>8} {:>14}", format!("webhooks before append returned ({via})"), n, early);
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let n = if quick { 5_000 } else { 50_000 };
    println!("{:<58} {:>8} {:>14}", "what", "N", "result");
    for (users, conc) in [(1, 4), (1, 16), (16, 4)] {
        let rate = throughput(n, users, conc).await;
        println!("{:<58} {:>8} {:>10.0} /s", format!("webhooks/s, {users} registration(s), {conc} in flight each"), n, rate);
    }
    let lat_n = if quick { 500 } else { 2_000 };
    report_latency(lat_n, latency(lat_n, 200, EventPath::UnixBus).await, "UNIX bus");
    if std::path::Path::new(bus::LocalNatsServer::BINARY).exists() {
        let nats_dir = tempfile::tempdir().unwrap();
        let server = bus::LocalNatsServer::start(nats_dir.path()).expect("start nats-server");
        report_latency(lat_n, latency(lat_n, 200, EventPath::JetStream(server.port())).await, "JetStream");
        drop(server);
    } else {
        println!("(no {}: JetStream latency skipped)", bus::LocalNatsServer::BINARY);
    }
}
