//! Both-ways interoperability with a real Dovecot 2.3 (dovecot-lda and
//! doveadm from the system packages) on one Maildir: we keep Dovecot's UIDs,
//! flags and keywords, and Dovecot keeps ours. Skipped (with a message) when
//! Dovecot or `runuser` is missing or we are not root (Dovecot refuses to
//! run mail processes as root, so it runs as `nobody`).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use storage_hooks::{AppendOptions, FlagOp, Flags, Hooks, SystemFlags, UidSet, UserStore};

const LDA: &str = "/usr/lib/dovecot/dovecot-lda";
const CHILD_MAILDIR: &str = "DOVECOT_TEST_MAILDIR";
const CHILD_COUNT: &str = "DOVECOT_TEST_COUNT";

/// Child process entry: appends as the user it runs as; does nothing when run directly.
#[test]
#[ignore = "run by the concurrent Dovecot test as a child process"]
fn ours_child() {
    let (Ok(maildir), Ok(count)) = (std::env::var(CHILD_MAILDIR), std::env::var(CHILD_COUNT)) else { return };
    let store = UserStore::open("nobody", maildir, Hooks::new()).unwrap();
    for n in 0..count.parse::<u32>().unwrap() {
        let msg = format!("Subject: ours {n}\n\nfrom dormouse\n");
        store.append("INBOX", msg.as_bytes(), &AppendOptions::default()).unwrap();
    }
}

struct Dovecot {
    conf: PathBuf,
    home: PathBuf,
}

impl Dovecot {
    fn setup(base: &Path) -> Option<Dovecot> {
        let is_root = Command::new("id").arg("-u").output().ok().is_some_and(|o| o.stdout.starts_with(b"0\n"));
        let have = Path::new(LDA).exists() && Path::new("/usr/bin/doveadm").exists() && Path::new("/usr/sbin/runuser").exists();
        if !is_root || !have {
            eprintln!("skipping Dovecot interop test: needs root, dovecot-lda, doveadm and runuser");
            return None;
        }
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = base.join("home");
        std::fs::create_dir(&home).unwrap();
        let conf = base.join("dovecot.conf");
        let b = base.display();
        std::fs::write(
            &conf,
            format!(
                "base_dir = {b}/home/run\nstate_dir = {b}/home/state\nlog_path = {b}/home/dovecot.log\n\
                 mail_location = maildir:{b}/home/Maildir\nssl = no\n\
                 passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home={b}/home\n}}\n\
                 namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n"
            ),
        )
        .unwrap();
        let d = Dovecot { conf, home };
        d.chown();
        Some(d)
    }

    fn chown(&self) {
        let ok = Command::new("chown").args(["-R", "nobody:nogroup"]).arg(&self.home).status().unwrap().success();
        assert!(ok);
    }

    fn as_nobody(&self, program: &str) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", "env"])
            .arg(format!("HOME={}", self.home.display()))
            .args(["USER=nobody", program, "-c"])
            .arg(&self.conf);
        c
    }

    fn deliver(&self, raw: &str) {
        self.chown();
        let mut child = self.as_nobody(LDA).stdin(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(raw.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "dovecot-lda failed");
    }

    fn doveadm(&self, args: &[&str]) -> String {
        self.chown();
        let out = self.as_nobody("doveadm").args(args).output().unwrap();
        assert!(out.status.success(), "doveadm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `uid -> flags` from `doveadm fetch`.
    fn fetch_flags(&self, mailbox: &str) -> Vec<(u32, String)> {
        let out = self.doveadm(&["-f", "tab", "fetch", "uid flags", "mailbox", mailbox, "all"]);
        out.lines()
            .skip(1)
            .map(|l| {
                let (uid, flags) = l.split_once('\t').unwrap();
                (uid.parse().unwrap(), flags.to_string())
            })
            .collect()
    }
}

fn has_all(flags: &str, wanted: &[&str]) -> bool {
    wanted.iter().all(|w| flags.split(' ').any(|f| f == *w))
}

#[test]
fn dovecot_and_we_keep_each_others_uids_flags_and_keywords() {
    let base = tempfile::tempdir().unwrap();
    let Some(dovecot) = Dovecot::setup(base.path()) else { return };
    for n in 1..=3 {
        dovecot.deliver(&format!("From: dovecot@example.org\nSubject: from dovecot {n}\n\nbody {n}\n"));
    }
    dovecot.doveadm(&["flags", "add", "\\Seen $Junk Kw2", "mailbox", "INBOX", "uid", "2"]);
    dovecot.doveadm(&["mailbox", "create", "Sub"]);

    // We read Dovecot's files.
    let store = UserStore::open("nobody", dovecot.home.join("Maildir"), Hooks::new()).unwrap();
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let uids: Vec<u32> = inbox.messages().iter().map(|m| m.uid).collect();
    assert_eq!(uids, [1, 2, 3], "Dovecot's UIDs are kept");
    let dovecot_uidvalidity = inbox.uidvalidity();
    assert_eq!(inbox.message(2).unwrap().flags, Flags::from_imap_names(["\\Seen", "$Junk", "Kw2"]).unwrap());
    // Dovecot stores LF line endings; we serve CRLF.
    assert_eq!(inbox.read_message(1).unwrap(), b"From: dovecot@example.org\r\nSubject: from dovecot 1\r\n\r\nbody 1\r\n");
    assert_eq!(inbox.message(1).unwrap().size, inbox.read_message(1).unwrap().len() as u64);

    // We write; Dovecot must see our UIDs, flags and keywords.
    let ours = Flags::from_imap_names(["$Junk", "Ours"]).unwrap();
    let r4 = store.append("INBOX", b"Subject: ours 4\n\nx\n", &AppendOptions { flags: ours.clone(), ..Default::default() }).unwrap();
    let r5 = store.append("INBOX", b"Subject: ours 5\n\ny\n", &AppendOptions::default()).unwrap();
    assert_eq!((r4.uid, r5.uid, r4.uidvalidity), (4, 5, dovecot_uidvalidity));
    inbox.sync().unwrap();
    inbox.store_flags(&UidSet::from_range(1, 1), FlagOp::Add, &Flags::system(SystemFlags::FLAGGED), None).unwrap();
    inbox.store_flags(&UidSet::from_range(3, 3), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None).unwrap();
    assert_eq!(inbox.expunge(None).unwrap(), [3]);
    let copy = inbox.copy_to(&UidSet::from_range(2, 2), "Sub").unwrap();
    assert_eq!(copy.target_uids, [1]);
    store.subscribe("Sub").unwrap();

    let flags = dovecot.fetch_flags("INBOX");
    let uids: Vec<u32> = flags.iter().map(|(u, _)| *u).collect();
    assert_eq!(uids, [1, 2, 4, 5], "Dovecot keeps our UIDs: {flags:?}");
    assert!(has_all(&flags[0].1, &["\\Flagged"]), "{flags:?}");
    assert!(has_all(&flags[1].1, &["\\Seen", "$Junk", "Kw2"]), "{flags:?}");
    assert!(has_all(&flags[2].1, &["$Junk", "Ours"]), "{flags:?}");
    let sub = dovecot.fetch_flags("Sub");
    assert_eq!(sub.len(), 1);
    assert!(has_all(&sub[0].1, &["\\Seen", "$Junk", "Kw2"]), "{sub:?}");
    let subscribed = dovecot.doveadm(&["mailbox", "list", "-s"]);
    assert!(subscribed.lines().any(|l| l == "Sub"), "{subscribed}");
    let status = dovecot.doveadm(&["-f", "tab", "mailbox", "status", "uidnext uidvalidity messages", "INBOX"]);
    let mut lines = status.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let values: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let field = |name: &str| values[header.iter().position(|h| *h == name).unwrap()].to_string();
    assert_eq!(field("messages"), "4", "{status}");
    assert_eq!(field("uidnext"), "6", "{status}");
    assert_eq!(field("uidvalidity"), dovecot_uidvalidity.to_string(), "{status}");

    // Dovecot delivers after us: UID 6, and we pick it up.
    dovecot.deliver("Subject: from dovecot 6\n\nsix\n");
    let changes = inbox.sync().unwrap();
    assert_eq!(changes.added, [6]);
    assert!(!changes.uidvalidity_changed);
    let st = store.status("INBOX").unwrap();
    assert_eq!((st.messages, st.uidnext), (5, 7));

    // Our next UIDs are appended to the file Dovecot last wrote (no
    // rewrite), as Dovecot appends; Dovecot reads them, its index warm.
    let uidlist = dovecot.home.join("Maildir/dovecot-uidlist");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&uidlist).unwrap());
    let r7 = store.append("INBOX", b"Subject: ours 7\n\nz\n", &AppendOptions::default()).unwrap();
    let r8 = store.append("INBOX", b"Subject: ours 8\n\nw\n", &AppendOptions::default()).unwrap();
    assert_eq!((r7.uid, r8.uid), (7, 8));
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&uidlist).unwrap()), inode, "appended, not rewritten");
    let uids: Vec<u32> = dovecot.fetch_flags("INBOX").iter().map(|(u, _)| *u).collect();
    assert_eq!(uids, [1, 2, 4, 5, 6, 7, 8], "Dovecot reads our appended records");
    dovecot.deliver("Subject: from dovecot 9\n\nnine\n");
    assert_eq!(inbox.sync().unwrap().added, [7, 8, 9]);
    let log = std::fs::read_to_string(dovecot.home.join("dovecot.log")).unwrap_or_default();
    assert!(!log.contains("Error") && !log.contains("Panic"), "Dovecot complained:\n{log}");
}

#[test]
fn dovecot_lda_and_we_deliver_concurrently_without_sharing_a_uid() {
    let base = tempfile::tempdir().unwrap();
    let Some(dovecot) = Dovecot::setup(base.path()) else { return };
    dovecot.deliver("Subject: first\n\nmake the Maildir\n");
    let (lda_procs, per_lda, ours) = (3u32, 15u32, 45u32);
    let store = UserStore::open("nobody", dovecot.home.join("Maildir"), Hooks::new()).unwrap();
    std::thread::scope(|s| {
        for p in 0..lda_procs {
            let dovecot = &dovecot;
            s.spawn(move || {
                for n in 0..per_lda {
                    let mut child = dovecot.as_nobody(LDA).stdin(Stdio::piped()).spawn().unwrap();
                    let msg = format!("Subject: lda {p} {n}\n\nfrom dovecot-lda\n");
                    child.stdin.take().unwrap().write_all(msg.as_bytes()).unwrap();
                    assert!(child.wait().unwrap().success(), "dovecot-lda failed");
                }
            });
        }
        // Our writer runs as the mailbox owner too (as in production), in a
        // child process: the test binary re-executed as `nobody`.
        s.spawn(|| {
            let status = Command::new("runuser")
                .args(["-u", "nobody", "--"])
                .arg(std::env::current_exe().unwrap())
                .args(["ours_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .env(CHILD_MAILDIR, dovecot.home.join("Maildir"))
                .env(CHILD_COUNT, ours.to_string())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "our writer (as nobody) failed");
        });
    });
    let total = 1 + lda_procs * per_lda + ours;
    let mb = store.open_mailbox("INBOX").unwrap();
    let mut subjects: Vec<String> = mb
        .messages()
        .iter()
        .map(|m| {
            let raw = String::from_utf8(mb.read_message(m.uid).unwrap()).unwrap();
            raw.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap().to_string()
        })
        .collect();
    assert_eq!(mb.messages().len() as u32, total, "every delivery has a UID");
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len() as u32, total, "no message twice");
    let ours_uids: Vec<u32> = mb.messages().iter().map(|m| m.uid).collect();
    assert_eq!(ours_uids, (1..=total).collect::<Vec<_>>());
    // Dovecot sees exactly the same UIDs.
    let dovecot_uids: Vec<u32> = dovecot.fetch_flags("INBOX").iter().map(|(u, _)| *u).collect();
    assert_eq!(dovecot_uids, ours_uids);
    let log = std::fs::read_to_string(dovecot.home.join("dovecot.log")).unwrap_or_default();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("Error") || l.contains("Panic") || l.contains("Fatal")).collect();
    assert!(errors.is_empty(), "Dovecot complained: {errors:#?}");
}
