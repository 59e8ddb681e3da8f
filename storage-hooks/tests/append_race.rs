//! Appends racing with another program that renames files (new/ -> cur/,
//! flag changes within cur/) without our lock (a second server, Dovecot, a
//! mail client on the same Maildir). readdir misses a file renamed within a
//! directory while it is read; every append must still succeed with its own
//! UID (#13: "a message written just now vanished before it got a UID") and
//! no stored message may lose its UID (be "expunged" and renumbered).
//!
//! The test binary re-executes itself (`std::env::current_exe()`) running
//! the ignored `child_role` test for the writer processes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use storage_hooks::uidlist::UidList;
use storage_hooks::{AppendOptions, Durability, Hooks, UserStore};

const ROLE: &str = "APPEND_RACE_ROLE";
const DIR: &str = "APPEND_RACE_DIR";
const WRITER: &str = "APPEND_RACE_WRITER";
const COUNT: &str = "APPEND_RACE_COUNT";

fn message(writer: u32, n: u32) -> Vec<u8> {
    format!("From: w{writer}@example.org\r\nMessage-ID: <w{writer}.n{n}@example.org>\r\nSubject: w{writer} n{n}\r\n\r\nbody\r\n")
        .into_bytes()
}

/// Appends `count` messages as writer `writer`; returns the UIDs or panics
/// with the first error.
fn append_all(store: &UserStore, writer: u32, count: u32) -> Vec<u32> {
    (0..count)
        .map(|n| match store.append("INBOX", &message(writer, n), &AppendOptions::default()) {
            Ok(r) => r.uid,
            Err(e) => panic!("writer {writer} message {n}: {e}"),
        })
        .collect()
}

/// Entry point of writer processes; does nothing when run directly.
#[test]
#[ignore = "run by the race tests as a child process"]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else { return };
    assert_eq!(role, "writer");
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let writer: u32 = std::env::var(WRITER).unwrap().parse().unwrap();
    let count: u32 = std::env::var(COUNT).unwrap().parse().unwrap();
    let store = UserStore::open("u", &dir, Hooks::new()).unwrap().with_durability(Durability::NoFsync);
    // Two threads per process: in-process group commit and cross-process locking at once.
    std::thread::scope(|s| {
        let a = s.spawn(|| append_all(&store, writer * 2, count));
        let b = s.spawn(|| append_all(&store, writer * 2 + 1, count));
        for uid in a.join().unwrap().into_iter().chain(b.join().unwrap()) {
            // libtest may print "test child_role ... " before the first line.
            println!("uid {uid}");
        }
    });
}

fn spawn_writer(dir: &Path, writer: u32, count: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_role", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE, "writer")
        .env(DIR, dir)
        .env(WRITER, writer.to_string())
        .env(COUNT, count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// One round of another program working on the Maildir without our lock,
/// the way Dovecot does: every file in `new/` moves to `cur/` (adding
/// `:2,`), and every file in `cur/` has `\Seen` toggled (a client doing
/// `STORE 1:* +FLAGS \Seen` / `-FLAGS` through the other server).
fn outside_round(root: &Path) -> u32 {
    let mut renamed = 0;
    for (sub, target) in [("new", "cur"), ("cur", "cur")] {
        let Ok(rd) = std::fs::read_dir(root.join(sub)) else { continue };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let new_name = match name.split_once(":2,") {
                None => format!("{name}:2,"),
                Some((base, "")) => format!("{base}:2,S"),
                Some((base, _)) => format!("{base}:2,"),
            };
            if std::fs::rename(entry.path(), root.join(target).join(new_name)).is_ok() {
                renamed += 1;
            }
        }
    }
    renamed
}

#[test]
fn appends_racing_with_outside_renames_all_keep_distinct_uids() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let store = UserStore::open("u", &root, Hooks::new()).unwrap().with_durability(Durability::NoFsync);
    let (processes, threads, per_writer) = (3u32, 3u32, 150u32);
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU32::new(0));
    let mover = {
        let (root, stop, moved) = (root.clone(), stop.clone(), moved.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                moved.fetch_add(outside_round(&root), Ordering::Relaxed);
            }
        })
    };
    let children: Vec<Child> = (0..processes).map(|p| spawn_writer(&root, p, per_writer)).collect();
    let mut uids: Vec<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|t| {
            let store = &store;
            s.spawn(move || append_all(store, 100 + t, per_writer))
        }).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        if !out.status.success() {
            failures.push(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr));
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        uids.extend(text.lines().filter_map(|l| l.rsplit_once("uid ").map(|(_, u)| u)).map(|u| u.parse::<u32>().unwrap()));
    }
    stop.store(true, Ordering::Relaxed);
    mover.join().unwrap();
    let failed: Vec<&str> = failures.iter().flat_map(|f| f.lines().filter(|l| l.contains("panicked") || l.contains("writer "))).collect();
    assert!(failures.is_empty(), "writer processes failed: {failed:?}");
    let total = (processes * 2 + threads) * per_writer;
    assert!(moved.load(Ordering::Relaxed) > 0, "the mover never raced");
    assert_eq!(uids.len() as u32, total);
    let unique: HashSet<u32> = uids.iter().copied().collect();
    assert_eq!(unique.len(), uids.len(), "every append got its own UID");
    let uidlist = UidList::parse(&std::fs::read_to_string(root.join("dovecot-uidlist")).unwrap()).unwrap();
    let listed: HashSet<u32> = uidlist.records.iter().map(|r| r.uid).collect();
    assert_eq!(listed, unique, "the UIDs answered are the UIDs stored");
    let mb = store.open_mailbox("INBOX").unwrap();
    assert_eq!(mb.messages().len() as u32, total);
    let mut ids = HashSet::new();
    for m in mb.messages() {
        let raw = String::from_utf8(mb.read_message(m.uid).unwrap()).unwrap();
        let id = raw.lines().find(|l| l.starts_with("Message-ID:")).unwrap().to_string();
        assert!(ids.insert(id), "message stored twice");
    }
}
