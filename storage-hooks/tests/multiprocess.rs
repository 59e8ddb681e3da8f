//! Several OS processes writing one Maildir at once, and writers killed with
//! SIGKILL at random moments. The test binary re-executes itself
//! (`std::env::current_exe()`) running the ignored `child_role` test with
//! `STORAGE_TEST_ROLE` selecting what the child does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use storage_hooks::uidlist::UidList;
use storage_hooks::{AppendOptions, Durability, FlagOp, Flags, Hooks, SystemFlags, UidSet, UserStore};

const ROLE: &str = "STORAGE_TEST_ROLE";
const DIR: &str = "STORAGE_TEST_DIR";
const WRITER: &str = "STORAGE_TEST_WRITER";
const COUNT: &str = "STORAGE_TEST_COUNT";
const FSYNC: &str = "STORAGE_TEST_FSYNC";
const TRAILER: &str = "-- end of test message --";

fn message(writer: u32, n: u32) -> Vec<u8> {
    // Bare LF on purpose: the store must turn it into CRLF.
    let mut body = format!("From: w{writer}@example.org\nSubject: writer {writer} message {n}\n\n");
    for line in 0..40 {
        body.push_str(&format!("line {line} of message {n} from writer {writer}, padding padding padding\n"));
    }
    body.push_str(TRAILER);
    body.push('\n');
    body.into_bytes()
}

fn spawn(role: &str, dir: &Path, writer: u32, count: u32, durability: Durability) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_role", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .env(WRITER, writer.to_string())
        .env(COUNT, count.to_string())
        .env(FSYNC, if durability == Durability::Fsync { "1" } else { "0" })
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn env_u32(name: &str) -> u32 {
    std::env::var(name).unwrap().parse().unwrap()
}

/// Entry point of child processes; does nothing when run directly.
#[test]
#[ignore = "run by the multi-process tests as a child process"]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let durability = if env_u32(FSYNC) == 1 { Durability::Fsync } else { Durability::NoFsync };
    let store = UserStore::open("u", &dir, Hooks::new()).unwrap().with_durability(durability);
    let writer = env_u32(WRITER);
    let count = env_u32(COUNT);
    match role.as_str() {
        "writer" => {
            for n in 0..count {
                store.append("INBOX", &message(writer, n), &AppendOptions::default()).unwrap();
            }
        }
        "flagger" => {
            // Syncs and flag changes until the stop file appears.
            let mut mb = store.open_mailbox("INBOX").unwrap();
            let stop = dir.join("stop-flagger");
            let mut round = 0u32;
            while !stop.exists() {
                mb.sync().unwrap();
                if mb.messages().len() > 1 {
                    mb.clear_recent().unwrap();
                    let last = mb.messages().last().unwrap().uid;
                    let op = if round % 2 == 0 { FlagOp::Add } else { FlagOp::Remove };
                    mb.store_flags(&UidSet::from_range(1, last), op, &Flags::system(SystemFlags::SEEN), None).unwrap();
                    let kw = Flags::from_imap_names(["$Label1"]).unwrap();
                    mb.store_flags(&UidSet::from_range(last / 2, last), FlagOp::Add, &kw, None).unwrap();
                }
                round += 1;
            }
        }
        "endless" => {
            let mut n = 0;
            loop {
                store.append("INBOX", &message(writer, n), &AppendOptions::default()).unwrap();
                n += 1;
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Checks every message file is complete and the uidlist is sound; returns
/// the (writer, n) pairs found.
fn check_maildir(root: &Path) -> Vec<(u32, u32)> {
    let uidlist = UidList::parse(&std::fs::read_to_string(root.join("dovecot-uidlist")).unwrap()).unwrap();
    let mut uids = HashSet::new();
    for r in &uidlist.records {
        assert!(uids.insert(r.uid), "duplicate UID {}", r.uid);
    }
    let mut found = Vec::new();
    for sub in ["new", "cur"] {
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read_to_string(&path).unwrap();
            assert!(data.ends_with(&format!("{TRAILER}\r\n")), "incomplete message {}", path.display());
            assert!(!data.contains("\n\n") && data.contains("\r\n\r\n"), "stored with CRLF");
            let subject = data.lines().find_map(|l| l.strip_prefix("Subject: writer ")).unwrap();
            let mut words = subject.split(' ');
            let w: u32 = words.next().unwrap().parse().unwrap();
            let n: u32 = words.nth(1).unwrap().parse().unwrap();
            found.push((w, n));
        }
    }
    found
}

/// Locking and UID allocation across processes. fsync is off here: it
/// guards against power loss, not against other processes, and on a busy
/// shared disk it would make this test take minutes (the SIGKILL test below
/// runs with fsync on).
#[test]
fn concurrent_processes_never_share_a_uid_or_lose_mail() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    UserStore::open("u", &root, Hooks::new()).unwrap();
    let (writers, per_writer) = (4u32, 200u32);
    let flagger = spawn("flagger", &root, 99, 0, Durability::NoFsync);
    let children: Vec<Child> = (0..writers).map(|w| spawn("writer", &root, w, per_writer, Durability::NoFsync)).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "writer failed");
    }
    std::fs::write(root.join("stop-flagger"), b"").unwrap();
    let mut flagger = flagger;
    assert!(flagger.wait().unwrap().success(), "flagger failed");

    let mut found = check_maildir(&root);
    found.sort_unstable();
    let expected: Vec<(u32, u32)> = (0..writers).flat_map(|w| (0..per_writer).map(move |n| (w, n))).collect();
    assert_eq!(found, expected, "every message present exactly once");

    let store = UserStore::open("u", &root, Hooks::new()).unwrap();
    let total = writers * per_writer;
    let status = store.status("INBOX").unwrap();
    assert_eq!(status.messages, total);
    assert_eq!(status.uidnext, total + 1);
    let mb = store.open_mailbox("INBOX").unwrap();
    let uids: Vec<u32> = mb.messages().iter().map(|m| m.uid).collect();
    assert_eq!(uids, (1..=total).collect::<Vec<_>>());
    let uidlist = UidList::parse(&std::fs::read_to_string(root.join("dovecot-uidlist")).unwrap()).unwrap();
    assert_eq!(uidlist.records.len() as u32, total);
    assert_eq!(uidlist.next_uid, total + 1);
    assert_eq!(store.status("INBOX").unwrap(), mb.status());
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    UserStore::open("u", &root, Hooks::new()).unwrap();
    let rounds = 8u32;
    for round in 0..rounds {
        let mut child = spawn("endless", &root, round, 0, Durability::Fsync);
        // Every other round a syncing/flagging process is killed too.
        let flagger = (round % 2 == 1).then(|| spawn("flagger", &root, 99, 0, Durability::Fsync));
        std::thread::sleep(Duration::from_millis(30 + u64::from(rand_u32() % 120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap(); // reap, so its pid is really dead
        if let Some(mut f) = flagger {
            f.kill().unwrap();
            f.wait().unwrap();
        }
    }
    // A live store must get going again quickly (stale locks broken).
    let start = Instant::now();
    let store = UserStore::open("u", &root, Hooks::new()).unwrap();
    let mut mb = store.open_mailbox("INBOX").unwrap();
    assert!(start.elapsed() < Duration::from_secs(20), "stale lock blocked for {:?}", start.elapsed());
    mb.sync().unwrap();
    store.append("INBOX", &message(1000, 0), &AppendOptions::default()).unwrap();
    mb.sync().unwrap();
    assert!(!root.join("dovecot-uidlist.lock").exists());
    let temps: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("dormouse-tmp") || n.contains(".lock."))
        .collect();
    assert!(temps.is_empty(), "temp files of killed writers are cleaned on open: {temps:?}");

    let found = check_maildir(&root);
    let unique: HashSet<(u32, u32)> = found.iter().copied().collect();
    assert_eq!(unique.len(), found.len(), "no message stored twice");
    assert_eq!(mb.messages().len(), found.len(), "every file has a UID");
    for w in 0..rounds {
        // Messages of one writer are numbered from 0 without holes, except
        // possibly the one in flight when it was killed (left in tmp/ only).
        let mut ns: Vec<u32> = found.iter().filter(|(fw, _)| *fw == w).map(|(_, n)| *n).collect();
        ns.sort_unstable();
        assert_eq!(ns, (0..ns.len() as u32).collect::<Vec<_>>(), "writer {w} lost an acknowledged message");
    }
    for m in mb.messages() {
        let raw = mb.read_message(m.uid).unwrap();
        assert_eq!(raw.len() as u64, m.size);
    }
    let status = store.status("INBOX").unwrap();
    assert_eq!(status.messages as usize, found.len());
    assert_eq!(status.uidnext, mb.messages().last().unwrap().uid + 1);
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}
