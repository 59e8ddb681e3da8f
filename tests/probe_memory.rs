//! Memory of the real `serve` while large message bodies arrive: 8
//! concurrent 20 MB IMAP APPENDs and 6 concurrent 45 MB LMTP DATAs, each
//! held open just before its end so that every body is in flight at once.
//! The PSS of the serve process and all its children is sampled throughout;
//! bodies are streamed to disk, so the growth must stay bounded, and every
//! message must arrive intact.
//!
//! (The issue measured 8 x 60 MB APPENDs; 20 MB keeps this test fast in a
//! debug build and still shows the difference: a body held in memory is
//! 20 MB per connection, 160 MB in all.)

mod imap_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use imap_support::{Server, ServerOptions};

const APPENDS: usize = 8;
const APPEND_SIZE: usize = 20 * 1024 * 1024;
const DELIVERIES: usize = 6;
const DELIVERY_SIZE: usize = 45 * 1024 * 1024;
/// Allowed growth of the summed PSS over the baseline while all bodies are
/// in flight (they total 430 MB).
const MAX_GROWTH_KB: u64 = 64 * 1024;

/// The serve process and all its descendants.
fn process_tree(root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
        i += 1;
    }
    out
}

/// PSS of one process in KiB (0 if it is gone).
fn pss_kb(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn total_pss_kb(root: u32) -> u64 {
    process_tree(root).into_iter().map(pss_kb).sum()
}

/// Deterministic message `n` of `size` bytes: headers, then CRLF lines
/// that differ per message (no dot at a line start, no bare LF).
fn message(n: usize, size: usize) -> Vec<u8> {
    let mut m = format!("From: probe@example.org\r\nSubject: probe {n}\r\n\r\n").into_bytes();
    let mut i = 0u64;
    while m.len() < size {
        let line = format!("{n:02} line {i:09} abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW\r\n");
        m.extend_from_slice(line.as_bytes());
        i += 1;
    }
    m.truncate(size - 2);
    m.extend_from_slice(b"\r\n");
    m
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

/// One APPEND of `body`, holding before the final CRLF at `held`.
fn append(port: u16, body: &[u8], held: &Barrier, go: &Barrier) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    assert!(read_line(&mut r).starts_with("* OK"));
    w.write_all(b"a LOGIN alice secret-a\r\n").unwrap();
    loop {
        let l = read_line(&mut r);
        assert!(!l.is_empty());
        if l.starts_with("a ") {
            assert!(l.starts_with("a OK"), "{l}");
            break;
        }
    }
    w.write_all(format!("b APPEND INBOX {{{}}}\r\n", body.len()).as_bytes()).unwrap();
    let cont = read_line(&mut r);
    assert!(cont.starts_with('+'), "{cont}");
    w.write_all(body).unwrap();
    held.wait();
    go.wait();
    w.write_all(b"\r\n").unwrap();
    loop {
        let l = read_line(&mut r);
        assert!(!l.is_empty(), "connection closed during APPEND");
        if l.starts_with("b ") {
            return l;
        }
    }
}

/// One LMTP transaction of `body` to bob, holding before the end mark.
fn deliver(port: u16, body: &[u8], held: &Barrier, go: &Barrier) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    assert!(read_line(&mut r).starts_with("220"));
    w.write_all(b"LHLO probe\r\nMAIL FROM:<probe@example.org>\r\nRCPT TO:<bob>\r\nDATA\r\n").unwrap();
    for _ in 0..8 {
        read_line(&mut r);
    }
    w.write_all(body).unwrap();
    held.wait();
    go.wait();
    w.write_all(b".\r\nQUIT\r\n").unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    rest
}

/// Contents of every message file of `user`'s INBOX, with the trace
/// headers LMTP adds cut off (everything before `From: probe@`).
fn stored_bodies(dir: &Path, user: &str) -> Vec<Vec<u8>> {
    let maildir = dir.join("data/home").join(user).join("Maildir");
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for entry in std::fs::read_dir(maildir.join(sub)).unwrap().flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            let start = data.windows(18).position(|w| w == b"From: probe@exampl").expect("probe header");
            out.push(data[start..].to_vec());
        }
    }
    out.sort();
    out
}

#[test]
fn large_bodies_are_streamed_not_held_in_memory() {
    let server = Server::start(ServerOptions {
        workers: 1,
        lmtp_extra: "max_message_size = 67108864\n".into(),
        ..ServerOptions::default()
    });
    let root = server.pid();
    let started = Instant::now();
    let appends: Vec<Arc<Vec<u8>>> = (0..APPENDS).map(|n| Arc::new(message(n, APPEND_SIZE))).collect();
    let deliveries: Vec<Arc<Vec<u8>>> = (0..DELIVERIES).map(|n| Arc::new(message(50 + n, DELIVERY_SIZE))).collect();
    // Warm up: one logged-in session, so the worker exists and is loaded.
    let mut c = imap_support::Conn::open(server.imap);
    c.cmd("w", "LOGIN alice secret-a");
    c.cmd("x", "SELECT INBOX");
    c.cmd("y", "LOGOUT");
    std::thread::sleep(Duration::from_millis(300));
    let baseline = total_pss_kb(root);

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(total_pss_kb(root), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let clients = APPENDS + DELIVERIES;
    let held = Arc::new(Barrier::new(clients + 1));
    let go = Arc::new(Barrier::new(clients + 1));
    let mut threads = Vec::new();
    for body in &appends {
        let (body, held, go, port) = (body.clone(), held.clone(), go.clone(), server.imap);
        threads.push(std::thread::spawn(move || append(port, &body, &held, &go)));
    }
    for body in &deliveries {
        let (body, held, go, port) = (body.clone(), held.clone(), go.clone(), server.lmtp);
        threads.push(std::thread::spawn(move || deliver(port, &body, &held, &go)));
    }
    held.wait();
    // Every body has been sent (the server has read all but what the
    // socket buffers hold): sample a little longer with all of them open.
    std::thread::sleep(Duration::from_millis(500));
    let held_now = total_pss_kb(root);
    let peak_held = peak.load(Ordering::Relaxed).max(held_now);
    go.wait();
    let replies: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak_all = peak.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let after = total_pss_kb(root);
    eprintln!(
        "PSS of serve + children (KiB): baseline {baseline}, all {clients} bodies held {held_now}, \
         peak while held {peak_held} (+{}), peak incl. commits {peak_all} (+{}), 1 s after {after} (+{}); {:.1} s",
        peak_held.saturating_sub(baseline),
        peak_all.saturating_sub(baseline),
        after.saturating_sub(baseline),
        started.elapsed().as_secs_f64()
    );
    for (i, r) in replies.iter().enumerate() {
        if i < APPENDS {
            assert!(r.starts_with("b OK [APPENDUID "), "append {i}: {r}");
        } else {
            assert!(r.contains("250 2.0.0 <bob> Saved as UID"), "delivery {i}: {r}");
        }
    }
    // Every message arrived byte for byte.
    let mut want: Vec<Vec<u8>> = appends.iter().map(|b| b.to_vec()).collect();
    want.sort();
    assert!(stored_bodies(server.dir.path(), "alice") == want, "an APPENDed message differs");
    let mut want: Vec<Vec<u8>> = deliveries.iter().map(|b| b.to_vec()).collect();
    want.sort();
    assert!(stored_bodies(server.dir.path(), "bob") == want, "a delivered message differs");
    assert!(
        peak_all.saturating_sub(baseline) < MAX_GROWTH_KB,
        "memory grew by {} KiB (limit {MAX_GROWTH_KB})",
        peak_all - baseline
    );
    assert!(after.saturating_sub(baseline) < MAX_GROWTH_KB / 2, "memory stayed {} KiB above the baseline", after - baseline);
}
