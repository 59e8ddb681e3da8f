//! Benchmark of the Maildir watcher: delay from an outside file creation to
//! the event reaching the hooks (the bus publisher's place), and the cost of
//! watching 10,000 users (watches, process memory, kernel inotify marks).
//!
//! `cargo run --release -p storage-hooks --example bench_watcher [users]`

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use storage_hooks::watcher::{MaildirWatcher, WatcherConfig};
use storage_hooks::{ChangeHook, HookError, Hooks, MailboxEvent, UserStore};

const MSG: &[u8] = b"From: a@example.org\r\nSubject: bench\r\n\r\nhello\r\n";

/// Sends the arrival time of every event.
struct Arrivals(std::sync::Mutex<mpsc::Sender<(Instant, u64)>>);

impl ChangeHook for Arrivals {
    fn on_change(&self, event: &MailboxEvent) -> Result<(), HookError> {
        let _ = self.0.lock().unwrap_or_else(|e| e.into_inner()).send((Instant::now(), event.uids.len()));
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn row(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<52} {:>7} {:>11.2} {:>11.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );
}

fn value(what: &str, n: usize, v: f64, unit: &str) {
    println!("{what:<52} {n:>7} {v:>11.1} {:>11} {unit}", "-");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes in the kernel's inotify mark slab (root only; 0 otherwise).
fn inotify_slab_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/slabinfo") else { return 0 };
    text.lines()
        .find(|l| l.starts_with("inotify_inode_mark "))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(f.get(2)?.parse::<u64>().ok()? * f.get(3)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Measures `n` outside deliveries into `store`'s INBOX, returning delays.
fn deliveries(store: &UserStore, rx: &mpsc::Receiver<(Instant, u64)>, n: usize, plain_copy: bool) -> Vec<Duration> {
    let mut delays = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("bench.{}.{}.{i}", std::process::id(), u8::from(plain_copy));
        let t0 = Instant::now();
        if plain_copy {
            std::fs::write(store.root().join("new").join(&name), MSG).unwrap();
        } else {
            let tmp = store.root().join("tmp").join(&name);
            std::fs::write(&tmp, MSG).unwrap();
            std::fs::rename(&tmp, store.root().join("new").join(&name)).unwrap();
        }
        let (at, _) = rx.recv_timeout(Duration::from_secs(30)).expect("event within 30 s");
        delays.push(at.duration_since(t0));
        // Let the batch close so every sample is a lone delivery.
        std::thread::sleep(Duration::from_millis(5));
        while rx.try_recv().is_ok() {}
    }
    delays
}

fn main() {
    let users: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let base = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let hooks = Hooks::new().with(Arc::new(Arrivals(std::sync::Mutex::new(tx))));
    println!("{:<52} {:>7} {:>11} {:>11} unit", "what", "N", "median", "p99");

    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    let probe = UserStore::open("probe", base.path().join("probe"), hooks.clone()).unwrap();
    watcher.watch_user(&probe);
    row("tmp/+rename into new/ -> MessageNew at hook, 1 user", deliveries(&probe, &rx, 200, false));
    row("plain cp into new/ -> MessageNew at hook, 1 user", deliveries(&probe, &rx, 200, true));

    // Many users, each with INBOX and two folders (root + 3 x (new, cur) = 7 watches).
    let stores: Vec<UserStore> = (0..users)
        .map(|i| {
            let s = UserStore::open(&format!("u{i}"), base.path().join(format!("u{i}")), hooks.clone()).unwrap();
            for f in ["Sent", "Trash"] {
                let dir = s.root().join(format!(".{f}"));
                for sub in ["cur", "new", "tmp"] {
                    std::fs::create_dir_all(dir.join(sub)).unwrap();
                }
            }
            s
        })
        .collect();
    let (rss0, slab0) = (rss_kib(), inotify_slab_bytes());
    let t = Instant::now();
    for s in &stores {
        watcher.watch_user(s);
    }
    let took = t.elapsed();
    let stats = watcher.stats();
    let (rss1, slab1) = (rss_kib(), inotify_slab_bytes());
    value("watch_user, per user", users, took.as_secs_f64() * 1e6 / users as f64, "us");
    value("watches in place (incl. probe user)", users, stats.watches as f64, "watches");
    value("users stat-polled (watch limit reached)", users, stats.polled_users as f64, "users");
    value("process RSS growth", users, (rss1.saturating_sub(rss0)) as f64 / 1024.0, "MiB");
    value("process RSS growth per user", users, (rss1.saturating_sub(rss0)) as f64 * 1024.0 / users as f64, "bytes");
    if slab0 > 0 {
        value("kernel inotify marks growth (slabinfo)", users, slab1.saturating_sub(slab0) as f64 / 1024.0 / 1024.0, "MiB");
    } else {
        println!("{:<52} {users:>7} {:>11} {:>11} (no inotify_inode_mark slab visible)", "kernel inotify marks growth", "n/a", "-");
    }
    row(
        &format!("tmp/+rename -> MessageNew, {users} users watched"),
        deliveries(&stores[users / 2], &rx, 200, false),
    );

    // A burst: 1,000 files into one INBOX as fast as possible.
    let target = &stores[0];
    let t = Instant::now();
    for i in 0..1000 {
        let tmp = target.root().join(format!("tmp/burst{i}"));
        std::fs::write(&tmp, MSG).unwrap();
        std::fs::rename(&tmp, target.root().join(format!("new/burst{i}"))).unwrap();
    }
    let written = t.elapsed();
    let mut seen = 0;
    let mut events = 0;
    while seen < 1000 {
        let (_, n) = rx.recv_timeout(Duration::from_secs(30)).expect("burst events");
        seen += n;
        events += 1;
    }
    value("burst of 1000 files: written in", 1000, written.as_secs_f64() * 1000.0, "ms");
    value("burst of 1000 files: all published after", 1000, t.elapsed().as_secs_f64() * 1000.0, "ms");
    value("burst of 1000 files: events (wake-ups)", 1000, events as f64, "events");
    for s in &stores {
        watcher.unwatch_user(s.user());
    }
    value("watches after every session left (probe stays)", users, watcher.stats().watches as f64, "watches");
}
