//! Storage benchmarks: durable appends (fsync on), STATUS from the status
//! record, STATUS right after a change (rescan), mailbox open and sync.
//!
//! Run: `cargo run --release -p storage-hooks --example bench_append [N] [BIG] [DIR]`
//! N appends are timed (default 300); BIG is the size of the large mailbox
//! (default 10000); DIR defaults to a temp dir (put it on the filesystem you
//! care about). Prints: what, N, median, p99, unit.

use std::path::Path;
use std::time::{Duration, Instant};

use storage_hooks::{AppendOptions, Durability, Hooks, UserStore};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn row(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let (median, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("{what:<52} {:>7} {:>11.1} {:>11.1} us", samples.len(), us(median), us(p99));
}

fn rate(what: &str, n: usize, total: Duration) {
    println!("{what:<52} {n:>7} {:>11.0} {:>11} appends/s", n as f64 / total.as_secs_f64(), "-");
}

fn time<T>(n: usize, mut f: impl FnMut(usize) -> T) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect()
}

fn appends(store: &UserStore, n: usize, body: &[u8]) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let samples = time(n, |_| store.append("INBOX", body, &AppendOptions::default()).expect("append"));
    (samples, start.elapsed())
}

/// Makes the directories look quiet (mtimes in the past), as they are
/// between deliveries, so the status record and sync stamp are trusted.
fn settle(root: &Path) {
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    for sub in ["cur", "new"] {
        std::fs::File::open(root.join(sub)).and_then(|f| f.set_modified(past)).expect("backdate");
    }
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (n, big) = (arg(1, 300), arg(2, 10_000));
    let tmp = tempfile::tempdir().expect("temp dir");
    let base = std::env::args().nth(3).map(std::path::PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
    let pid = std::process::id();
    let body = format!("From: a@example.org\r\nSubject: bench\r\n\r\n{}\r\n", "x".repeat(2000));
    let body = body.as_bytes();

    println!("{:<52} {:>7} {:>11} {:>11} unit", "what", "N", "median", "p99");
    let small = UserStore::open("bench", base.join(format!("small-{pid}")), Hooks::new()).expect("open");
    let (samples, total) = appends(&small, n, body);
    row("append 2 KB, fsync on, mailbox 0..N", samples);
    rate("append throughput, fsync on, 1 process", n, total);
    for threads in [8usize, 16] {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                let store = small.clone();
                s.spawn(move || {
                    for _ in 0..(n / threads).max(1) {
                        store.append("INBOX", body, &AppendOptions::default()).expect("append");
                    }
                });
            }
        });
        let done = threads * (n / threads).max(1);
        rate(&format!("append throughput, fsync on, {threads} threads, 1 mailbox"), done, start.elapsed());
    }
    let nofsync = small.clone().with_durability(Durability::NoFsync);
    let (_, total) = appends(&nofsync, n, body);
    rate("append throughput, fsync OFF (comparison)", n, total);

    let bigstore = UserStore::open("bench", base.join(format!("big-{pid}")), Hooks::new()).expect("open");
    let (_, total) = appends(&bigstore.clone().with_durability(Durability::NoFsync), big, body);
    rate(&format!("prefill {big} messages, fsync off"), big, total);
    let (samples, _) = appends(&bigstore, n.min(100), body);
    row(&format!("append 2 KB, fsync on, mailbox of {big}"), samples);

    let root = bigstore.root().to_path_buf();
    settle(&root);
    bigstore.status("INBOX").expect("status"); // record taken while quiet
    row(&format!("STATUS from record ({big} messages)"), time(10_000, |_| bigstore.status("INBOX").expect("status")));
    let samples: Vec<Duration> = (0..20)
        .map(|i| {
            std::fs::write(root.join("new").join(format!("outside.{i}")), b"Subject: x\r\n\r\ny\r\n").expect("write");
            let t = Instant::now();
            bigstore.status("INBOX").expect("status");
            t.elapsed()
        })
        .collect();
    row(&format!("STATUS right after an outside delivery ({big})"), samples);
    row(&format!("open_mailbox ({big} messages)"), time(10, |_| bigstore.open_mailbox("INBOX").expect("open")));
    let mut mb = bigstore.open_mailbox("INBOX").expect("open");
    settle(&root);
    mb.sync().expect("sync");
    row(&format!("sync, nothing changed, quiet mailbox ({big})"), time(10_000, |_| mb.sync().expect("sync")));
    let samples: Vec<Duration> = (0..20)
        .map(|i| {
            std::fs::write(root.join("new").join(format!("outside2.{i}")), b"Subject: x\r\n\r\ny\r\n").expect("write");
            let t = Instant::now();
            mb.sync().expect("sync");
            t.elapsed()
        })
        .collect();
    row(&format!("sync after one outside delivery ({big})"), samples);
    let _ = std::fs::remove_dir_all(small.root());
    let _ = std::fs::remove_dir_all(&root);
}
