//! Storage benchmarks: durable appends (fsync on), STATUS from the status
//! record, mailbox open, and a STATUS that must rebuild after an outside change.
//!
//! Run: `cargo run --release -p storage-hooks --example bench_append [N] [DIR]`
//! (DIR defaults to a temp dir; put it on the filesystem you care about).

use std::time::{Duration, Instant};

use storage_hooks::{AppendOptions, Durability, Hooks, UserStore};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn row(what: &str, mut samples: Vec<Duration>, unit_us: bool) {
    samples.sort();
    let (median, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    let f = |d: Duration| if unit_us { d.as_secs_f64() * 1e6 } else { d.as_secs_f64() * 1e3 };
    let unit = if unit_us { "us" } else { "ms" };
    println!("{what:<44} {:>7} {:>10.1} {:>10.1} {unit}", samples.len(), f(median), f(p99));
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let tmp = tempfile::tempdir().expect("temp dir");
    let base = std::env::args().nth(2).map(std::path::PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
    let root = base.join(format!("bench-{}", std::process::id()));
    let store = UserStore::open("bench", &root, Hooks::new()).expect("open store");
    let body = format!("From: a@example.org\r\nSubject: bench\r\n\r\n{}\r\n", "x".repeat(2000));

    println!("{:<44} {:>7} {:>10} {:>10} unit", "what", "N", "median", "p99");
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        store.append("INBOX", body.as_bytes(), &AppendOptions::default()).expect("append");
        samples.push(t.elapsed());
    }
    let total = start.elapsed();
    row("append 2 KB, fsync on (mailbox grows to N)", samples, true);
    println!("{:<44} {:>7} {:>10.0} {:>10} appends/s", "append throughput (1 process)", n, n as f64 / total.as_secs_f64(), "-");

    let nofsync = UserStore::open("bench", base.join(format!("bench-nofsync-{}", std::process::id())), Hooks::new())
        .expect("open store")
        .with_durability(Durability::NoFsync);
    let start = Instant::now();
    for _ in 0..n {
        nofsync.append("INBOX", body.as_bytes(), &AppendOptions::default()).expect("append");
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!("{:<44} {:>7} {:>10.0} {:>10} appends/s", "append throughput, fsync OFF (comparison)", n, rate, "-");
    let _ = std::fs::remove_dir_all(nofsync.root());

    let samples: Vec<Duration> = (0..10_000)
        .map(|_| {
            let t = Instant::now();
            store.status("INBOX").expect("status");
            t.elapsed()
        })
        .collect();
    row(&format!("STATUS from record ({n} messages)"), samples, true);

    let samples: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            store.open_mailbox("INBOX").expect("open");
            t.elapsed()
        })
        .collect();
    row(&format!("open_mailbox ({n} messages)"), samples, false);

    let samples: Vec<Duration> = (0..20)
        .map(|i| {
            // An outside delivery makes the record stale: STATUS rescans.
            std::fs::write(root.join("new").join(format!("outside.{i}")), b"Subject: x\r\n\r\ny\r\n").expect("write");
            let t = Instant::now();
            store.status("INBOX").expect("status");
            t.elapsed()
        })
        .collect();
    row(&format!("STATUS rebuild after outside write ({n})"), samples, false);
    let _ = std::fs::remove_dir_all(&root);
}
