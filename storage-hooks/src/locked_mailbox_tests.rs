//! Unit tests of `locked_mailbox` (own file to keep that one short).

use super::*;
use crate::durable::Durability;
use crate::mailbox_name::MailboxName;
use std::time::{Duration, SystemTime};

fn setup() -> (tempfile::TempDir, MailboxDir) {
    let dir = tempfile::tempdir().unwrap();
    let mb = MailboxDir::new(dir.path(), MailboxName::inbox(), "host", Durability::NoFsync);
    std::fs::create_dir_all(dir.path()).unwrap();
    mb.require().unwrap();
    (dir, mb)
}

fn put(mb: &MailboxDir, name: &str, age_secs: u64) {
    let path = mb.path.join("new").join(name);
    std::fs::write(&path, b"Subject: x\n\nbody\n").unwrap();
    let t = SystemTime::now() - Duration::from_secs(age_secs);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(t).unwrap();
}

#[test]
fn foreign_files_by_mtime_then_own_files_in_order() {
    let (_d, mb) = setup();
    put(&mb, "b-oldest", 300);
    put(&mb, "a-newer", 100);
    put(&mb, "c-middle", 200);
    put(&mb, "own2", 1000);
    put(&mb, "own1", 1000);
    let locked = LockedMailbox::load(&mb, &["own1".into(), "own2".into()]).unwrap();
    let names: Vec<&str> = locked.messages().iter().map(|m| m.basename.as_str()).collect();
    assert_eq!(names, ["b-oldest", "c-middle", "a-newer", "own1", "own2"]);
    let committed = locked.commit().unwrap();
    assert_eq!(committed.status.uidnext, 6);
    assert_eq!(committed.status.size, 5 * 20, "vsize counts CRLF");
    assert_eq!(committed.messages[0].vsize, 20);
    // Fresh index: everything at MODSEQ 1 except our own new files.
    assert_eq!(committed.messages[0].modseq, 1);
    assert_eq!(committed.messages[3].modseq, 2);
    assert_eq!(fresh_status(&mb), None, "directories changed just now: not trusted yet");
    backdate_dirs(&mb);
    let again = LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    assert_eq!(fresh_status(&mb), Some(again.status));
    assert_eq!(again.status, committed.status);
}

fn backdate_dirs(mb: &MailboxDir) {
    let t = SystemTime::now() - Duration::from_secs(10);
    for sub in ["cur", "new"] {
        std::fs::File::open(mb.path.join(sub)).unwrap().set_modified(t).unwrap();
    }
}

#[test]
fn vanished_files_are_logged_and_corrupt_uidlist_is_recovered() {
    let (_d, mb) = setup();
    put(&mb, "one", 10);
    put(&mb, "two", 5);
    let c = LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    let uv = c.status.uidvalidity;
    std::fs::remove_file(mb.path.join("new/one")).unwrap();
    let locked = LockedMailbox::load(&mb, &[]).unwrap();
    assert_eq!(locked.messages().len(), 1);
    assert_eq!(locked.base_modseq, 2, "outside expunge got a MODSEQ");
    let c = locked.commit().unwrap();
    let index = crate::index_log::load(&mb.path).unwrap().0.unwrap();
    assert_eq!(index.expunge_log.since(1).unwrap().to_imap_string(), "1");
    assert_eq!(c.status.uidnext, 3);
    // A broken uidlist is moved aside; mail is kept under a new UIDVALIDITY.
    std::fs::write(mb.path.join(UIDLIST_FILE), "garbage\n").unwrap();
    let c = LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    assert_ne!(c.status.uidvalidity, uv);
    assert_eq!(c.messages.len(), 1);
    assert_eq!(c.messages[0].uid, 1);
    let aside = std::fs::read_dir(&mb.path)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("dovecot-uidlist.broken."))
        .count();
    assert_eq!(aside, 1);
}

#[test]
fn follows_files_renamed_behind_our_back() {
    let (_d, mb) = setup();
    put(&mb, "a", 20);
    put(&mb, "b", 10);
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    let mut locked = LockedMailbox::load(&mb, &[]).unwrap();
    // Another program (not using our lock) moves both to cur/ meanwhile.
    std::fs::rename(mb.path.join("new/a"), mb.path.join("cur/a:2,S")).unwrap();
    std::fs::rename(mb.path.join("new/b"), mb.path.join("cur/b:2,")).unwrap();
    let flagged = Flags::system(SystemFlags::FLAGGED.union(SystemFlags::SEEN));
    assert!(locked.set_flags(0, &flagged).unwrap());
    assert_eq!(locked.messages()[0].entry, FileEntry { file_name: "a:2,FS".into(), in_new: false });
    assert_eq!(locked.expunge(&UidSet::from_range(2, 2)).unwrap().to_imap_string(), "2");
    let c = locked.commit().unwrap();
    assert!(mb.path.join("cur/a:2,FS").exists());
    assert!(!mb.path.join("cur/b:2,").exists());
    assert_eq!(c.messages.len(), 1);
    // A file that vanished entirely: set_flags reports it, nothing breaks.
    let mut locked = LockedMailbox::load(&mb, &[]).unwrap();
    std::fs::remove_file(mb.path.join("cur/a:2,FS")).unwrap();
    assert!(!locked.set_flags(0, &Flags::default()).unwrap());
    locked.commit().unwrap();
    assert_eq!(LockedMailbox::load(&mb, &[]).unwrap().messages().len(), 0);
}

#[test]
fn own_file_numbered_elsewhere_and_expunged_keeps_its_uid() {
    let (_d, mb) = setup();
    put(&mb, "mine", 0);
    // Another process saw the file first and numbered it...
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    // ...and another program expunged it before our batch ran.
    std::fs::remove_file(mb.path.join("new/mine")).unwrap();
    let locked = LockedMailbox::load(&mb, &["mine".into()]).unwrap();
    assert_eq!(locked.find_basename("mine"), None);
    assert_eq!(locked.vanished_own_uid("mine"), Some(1));
    assert_eq!(locked.vanished_own_uid("other"), None);
    assert_eq!(locked.commit().unwrap().status.uidnext, 2, "the UID is not reused");
}

#[test]
fn new_uids_are_appended_and_a_torn_append_is_replayed_consistently() {
    use std::os::unix::fs::MetadataExt;
    let (_d, mb) = setup();
    put(&mb, "one", 30);
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    let path = mb.path.join(UIDLIST_FILE);
    let inode = std::fs::metadata(&path).unwrap().ino();
    put(&mb, "two", 20);
    LockedMailbox::load(&mb, &["two".into()]).unwrap().commit().unwrap();
    let full = std::fs::read_to_string(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "appended in place, not rewritten");
    assert!(full.ends_with("\n1 :one\n2 :two\n"), "{full}");
    // Killed at every byte of the last append: the complete records stay,
    // the torn one is dropped and the file gets the same UID again.
    let last = full.len() - "2 :two\n".len();
    for cut in last..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let c = LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
        let uids: Vec<(u32, &str)> = c.messages.iter().map(|m| (m.uid, m.basename.as_str())).collect();
        assert_eq!(uids, [(1, "one"), (2, "two")], "cut at {cut}");
        assert_eq!(c.status.uidnext, 3, "cut at {cut}");
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("\n1 :one\n2 :two\n"), "repaired at {cut}");
    }
    // An expunge leaves its record in place (no rewrite)...
    let inode = std::fs::metadata(&path).unwrap().ino();
    let mut locked = LockedMailbox::load(&mb, &[]).unwrap();
    locked.expunge(&UidSet::from_range(1, 1)).unwrap();
    locked.commit().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "not rewritten");
    assert!(std::fs::read_to_string(&path).unwrap().ends_with("\n1 :one\n2 :two\n"));
    // ...which later loads know dead: not expected, not reported again.
    crate::load_cache::forget(&mb.path);
    let again = LockedMailbox::load(&mb, &[]).unwrap();
    assert!(again.outside.is_empty(), "{:?}", again.outside);
    assert_eq!(again.messages().iter().map(|m| m.uid).collect::<Vec<_>>(), [2]);
    again.commit().unwrap();
    // A file showing up again under the dead record's name gets a new UID:
    // the uidlist is compacted, with N brought up to date.
    put(&mb, "one", 5);
    let c = LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    assert_eq!(c.messages.iter().map(|m| (m.uid, m.basename.as_str())).collect::<Vec<_>>(), [(2, "two"), (3, "one")]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(" N4") && text.ends_with("\n2 :two\n3 :one\n"), "{text}");
}

#[test]
fn expunged_records_are_compacted_past_the_threshold() {
    let (_d, mb) = setup();
    let n = 1100;
    for i in 0..n {
        std::fs::write(mb.path.join("cur").join(format!("m{i:05}:2,")), b"x\r\n").unwrap();
    }
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    let path = mb.path.join(UIDLIST_FILE);
    let records = || std::fs::read_to_string(&path).unwrap().lines().count() - 1;
    let expunge = |first: u32, last: u32| {
        let mut l = LockedMailbox::load(&mb, &[]).unwrap();
        l.expunge(&UidSet::from_range(first, last)).unwrap();
        l.commit().unwrap().messages.len()
    };
    assert_eq!(expunge(1, 1000), n - 1000);
    assert_eq!(records(), n, "1000 dead records stay");
    // Then one at a time, as clients do, until past 1024 + live / 8.
    let mut compacted_at = None;
    for uid in 1001..1060u32 {
        let live = expunge(uid, uid);
        let dead = uid as usize;
        if dead > compaction_threshold(live) {
            compacted_at = Some(uid);
            assert_eq!(records(), live, "compacted: only live records");
            break;
        }
        assert_eq!(records(), n, "{dead} dead records stay below the threshold");
    }
    assert_eq!(compacted_at, Some(1033), "1033 > 1024 + 67 / 8");
    crate::load_cache::forget(&mb.path);
    let l = LockedMailbox::load(&mb, &[]).unwrap();
    assert!(l.outside.is_empty());
    assert_eq!(l.status().uidnext, n as u32 + 1);
}

#[test]
fn index_changes_are_logged_and_a_torn_log_record_replays_consistently() {
    use std::os::unix::fs::MetadataExt;
    let (_d, mb) = setup();
    put(&mb, "a", 20);
    put(&mb, "b", 10);
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    let snapshot = mb.path.join(INDEX_FILE);
    let log = mb.path.join(INDEX_LOG_FILE);
    let inode = std::fs::metadata(&snapshot).unwrap().ino();
    for (idx, flag) in [(0, SystemFlags::FLAGGED), (1, SystemFlags::SEEN)] {
        let mut locked = LockedMailbox::load(&mb, &[]).unwrap();
        assert!(locked.set_flags(idx, &Flags::system(flag)).unwrap());
        locked.commit().unwrap();
    }
    assert_eq!(std::fs::metadata(&snapshot).unwrap().ino(), inode, "the snapshot is not rewritten");
    let (saved_snapshot, full) = (std::fs::read(&snapshot).unwrap(), std::fs::read(&log).unwrap());
    let first = crate::index_log::parse(&full).records[0].clone();
    let last_start = crate::index_log::HEADER_LEN + crate::index_log::encode_record(&first).len();
    let state = |c: &Committed| c.messages.iter().map(|m| (m.uid, m.flags.clone(), m.modseq)).collect::<Vec<_>>();
    let intact = state(&LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap());
    assert_eq!(intact[0], (1, Flags::system(SystemFlags::FLAGGED), 2));
    assert_eq!(intact[1], (2, Flags::system(SystemFlags::SEEN), 3));
    // Killed at every byte of the last record: the first change stays,
    // the second (its file already renamed) is found again as a change
    // on disk with a new MODSEQ, the log is compacted, and the result
    // stays put.
    for cut in last_start..full.len() {
        std::fs::write(&snapshot, &saved_snapshot).unwrap();
        std::fs::write(&log, &full[..cut]).unwrap();
        let locked = LockedMailbox::load(&mb, &[]).unwrap();
        let c = locked.commit().unwrap();
        let got = state(&c);
        assert_eq!(got[0], intact[0], "cut at {cut}");
        assert_eq!((got[1].0, &got[1].1), (2, &intact[1].1), "cut at {cut}");
        assert!(got[1].2 > 2, "cut at {cut}: a new MODSEQ for the change found on disk");
        if cut > last_start {
            assert!(!log.exists(), "cut at {cut}: a torn log is compacted away");
        }
        let again = LockedMailbox::load(&mb, &[]).unwrap();
        assert!(again.outside.is_empty(), "cut at {cut}: nothing more to find");
        assert_eq!(state(&again.commit().unwrap()), got, "cut at {cut}");
    }
}

#[test]
fn stale_status_is_noticed_and_lock_is_released() {
    let (_d, mb) = setup();
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    backdate_dirs(&mb);
    let c = LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    assert_eq!(fresh_status(&mb), Some(c.status));
    assert!(!mb.path.join("dovecot-uidlist.lock").exists());
    put(&mb, "outside", 0);
    assert_eq!(fresh_status(&mb), None);
}
