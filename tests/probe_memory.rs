//! Memory of the real `serve` while large message bodies arrive: 8
//! concurrent 60 MB IMAP APPENDs and 6 concurrent 45 MB LMTP DATAs, each
//! held open just before its end so that every body is in flight at once.
//! The PSS of the serve process and all its children is sampled throughout;
//! bodies are streamed to disk, so the growth must stay bounded, and every
//! message must arrive intact. Also: a streamed APPEND goes to folders,
//! keeps flags and date, and leaves nothing in `tmp/` when refused or cut off.

mod imap_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use imap_support::{Server, ServerOptions};

const APPENDS: usize = 8;
const APPEND_SIZE: usize = 60 * 1024 * 1024;
const DELIVERIES: usize = 6;
const DELIVERY_SIZE: usize = 45 * 1024 * 1024;
/// Allowed growth of the summed PSS over the baseline while all bodies are
/// in flight (they total 750 MB).
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

fn checksum(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// Checksums of every message file of `user`'s INBOX, with the trace
/// headers LMTP adds cut off (everything before `From: probe@`), sorted.
fn stored_checksums(dir: &Path, user: &str) -> Vec<u64> {
    let maildir = dir.join("data/home").join(user).join("Maildir");
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for entry in std::fs::read_dir(maildir.join(sub)).unwrap().flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            let start = data.windows(18).position(|w| w == b"From: probe@exampl").expect("probe header");
            out.push(checksum(&data[start..]));
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
    let mut want: Vec<u64> = appends.iter().map(|b| checksum(b)).collect();
    want.sort();
    assert_eq!(stored_checksums(server.dir.path(), "alice"), want, "an APPENDed message differs");
    let mut want: Vec<u64> = deliveries.iter().map(|b| checksum(b)).collect();
    want.sort();
    assert_eq!(stored_checksums(server.dir.path(), "bob"), want, "a delivered message differs");
    assert!(
        peak_all.saturating_sub(baseline) < MAX_GROWTH_KB,
        "memory grew by {} KiB (limit {MAX_GROWTH_KB})",
        peak_all - baseline
    );
    assert!(after.saturating_sub(baseline) < MAX_GROWTH_KB / 2, "memory stayed {} KiB above the baseline", after - baseline);
}

fn tmp_entries(server: &Server, mailbox_dir: &str) -> usize {
    let tmp = server.dir.path().join("data/home/alice/Maildir").join(mailbox_dir).join("tmp");
    std::fs::read_dir(tmp).map_or(0, |d| d.count())
}

/// A streamed APPEND behaves like one from memory: folders, flags, date,
/// LITERAL+, TRYCREATE; refused or cut-off literals leave no file.
#[test]
fn streamed_append_commits_into_any_mailbox_and_cleans_up() {
    let server = Server::start(ServerOptions { workers: 1, ..ServerOptions::default() });
    let mut c = imap_support::Conn::open(server.imap);
    c.cmd("a", "LOGIN alice secret-a");
    c.cmd("b", "CREATE Work");
    let body = message(1, 300_000);
    c.send(format!("c APPEND Work (\\Seen $Label) \"01-Jan-2020 10:00:00 +0000\" {{{}}}\r\n", body.len()).as_bytes());
    assert!(c.line().starts_with('+'));
    c.send(&body);
    c.send(b"\r\n");
    let done = c.until_tagged("c");
    assert!(done.last().unwrap().starts_with("c OK [APPENDUID "), "{done:?}");
    let files: Vec<_> = std::fs::read_dir(server.dir.path().join("data/home/alice/Maildir/.Work/new")).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    assert!(std::fs::read(files[0].path()).unwrap() == body);
    let fetched = c.cmd("d", "EXAMINE Work");
    assert!(fetched.iter().any(|l| l.contains("* 1 EXISTS")), "{fetched:?}");
    let meta = c.cmd("e", "FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)");
    assert!(meta[0].contains("\\Seen") && meta[0].contains("$Label"), "{meta:?}");
    assert!(meta[0].contains("INTERNALDATE \"01-Jan-2020 10:00:00 +0000\""), "{meta:?}");
    assert!(meta[0].contains(&format!("RFC822.SIZE {}", body.len())), "{meta:?}");
    // LITERAL+ into INBOX, bare LF stored as CRLF.
    c.send(b"f APPEND INBOX {14+}\r\nSubject: x\n\nb\n\r\n");
    let done = c.until_tagged("f");
    assert!(done.last().unwrap().starts_with("f OK [APPENDUID "), "{done:?}");
    // No such mailbox: TRYCREATE, and the streamed file is gone.
    c.send(b"g APPEND Nope {5+}\r\nhello\r\n");
    let done = c.until_tagged("g");
    assert!(done.last().unwrap().starts_with("g NO [TRYCREATE]"), "{done:?}");
    // A syntax error after the literal: BAD, file gone too.
    c.send(b"h APPEND INBOX {5+}\r\nhello trailing junk\r\n");
    let done = c.until_tagged("h");
    assert!(done.last().unwrap().starts_with("h BAD"), "{done:?}");
    assert_eq!(tmp_entries(&server, ""), 0);
    assert_eq!(tmp_entries(&server, ".Work"), 0);
    // Cut off in the middle of the literal: the partial file is removed.
    c.send(b"i APPEND INBOX {100000+}\r\n");
    c.send(&body[..50_000]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmp_entries(&server, "") == 0 {
        assert!(Instant::now() < deadline, "no tmp file while the literal streams");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
    while tmp_entries(&server, "") != 0 {
        assert!(Instant::now() < deadline, "tmp file left after the client went away");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = imap_support::Conn::open(server.imap);
    c.cmd("a", "LOGIN alice secret-a");
    let status = c.cmd("b", "STATUS INBOX (MESSAGES)");
    assert!(status[0].contains("MESSAGES 1"), "{status:?}");
}
