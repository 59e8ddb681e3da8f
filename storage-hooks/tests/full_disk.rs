//! A full disk: reads keep working from what is on disk, a refused append
//! leaves nothing behind, and after space is freed everything catches up.
//! Uses a 2 MiB tmpfs; skipped (with a message) when mounting is not allowed.

use std::path::{Path, PathBuf};
use std::process::Command;

use storage_hooks::{AppendOptions, Hooks, UidSet, UserStore};

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().to_path_buf();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping full-disk test: mounting a tmpfs is not allowed here");
            return None;
        }
        Some(Tmpfs { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem at `dir` with a file `filler` until `ENOSPC`.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![b'x'; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// Messages delivered by another program before the disk fills up.
const OUTSIDE: usize = 20;

#[test]
fn reads_work_and_refused_appends_leave_nothing_when_the_disk_is_full() {
    let Some(fs) = Tmpfs::mount("2m") else { return };
    let root = fs.path.join("Maildir");
    let store = UserStore::open("u", &root, Hooks::new()).unwrap();
    for n in 0..5 {
        store.append("INBOX", format!("Subject: {n}\r\n\r\nbody\r\n").as_bytes(), &AppendOptions::default()).unwrap();
    }
    store.create_mailbox("Other").unwrap();
    // Messages another program delivered (no UID yet), written while there
    // was still room. Their uidlist records (long names) do not fit into
    // the uidlist's last page: appending them needs space too.
    for n in 0..OUTSIDE {
        let name = format!("{n}.outside.{}", "h".repeat(220));
        std::fs::write(root.join("new").join(name), b"Subject: outside\r\n\r\nx\r\n").unwrap();
    }
    // Outdated status caches: STATUS must rebuild (and cannot write) them.
    std::fs::remove_file(root.join("dormouse-status")).unwrap();
    let filler = fill(&fs.path);

    let status = store.status("INBOX").expect("STATUS on a full disk");
    assert_eq!(status.messages, 5, "only messages with a UID are counted");
    store.status("Other").expect("STATUS of another mailbox on a full disk");
    let mut mailbox = store.open_mailbox("INBOX").expect("SELECT on a full disk");
    assert_eq!(mailbox.messages().len(), 5);
    let uid = mailbox.messages()[0].uid;
    assert!(mailbox.read_message(uid).unwrap().starts_with(b"Subject: 0"));
    mailbox.clear_recent().expect("clearing \\Recent on a full disk");
    mailbox.sync().expect("NOOP on a full disk");

    let new_before = files_in(&root.join("new"));
    let big = vec![b'y'; 64 * 1024];
    let mut msg = b"Subject: big\r\n\r\n".to_vec();
    msg.extend_from_slice(&big);
    for _ in 0..5 {
        let err = store.append("INBOX", &msg, &AppendOptions::default()).expect_err("append on a full disk");
        assert!(err.is_storage_full(), "{err}");
    }
    let copy = mailbox.copy_to(&UidSet::from_range(1, 5), "Other");
    assert!(copy.as_ref().is_err_and(|e| e.is_storage_full()), "{copy:?}");
    assert_eq!(files_in(&root.join("new")), new_before, "nothing new in new/");
    assert!(files_in(&root.join("tmp")).is_empty(), "nothing left in tmp/: {:?}", files_in(&root.join("tmp")));
    assert!(files_in(&root.join(".Other/tmp")).is_empty());
    assert!(files_in(&root.join(".Other/new")).is_empty());

    // Space again: the outside message gets its UID, the retry is stored once.
    std::fs::remove_file(filler).unwrap();
    store.append("INBOX", &msg, &AppendOptions::default()).unwrap();
    mailbox.sync().unwrap();
    let all = 5 + OUTSIDE + 1;
    assert_eq!(mailbox.messages().len(), all, "5 + outside + exactly one retried append");
    assert_eq!(store.status("INBOX").unwrap().messages as usize, all);
}
