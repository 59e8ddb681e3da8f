//! Unit tests of `load_cache` and `load_catch_up`: what other processes and
//! programs change is seen through the cache, and the cache is really used.

use super::*;
use crate::durable::Durability;
use crate::index_file::INDEX_FILE;
use crate::locked_mailbox::{LockedMailbox, UIDLIST_FILE};
use crate::mailbox_dir::MailboxDir;
use crate::mailbox_name::MailboxName;
use crate::{Flags, SystemFlags, UidSet};
use std::time::{Duration, SystemTime};
use crate::uidlist::UidList;
use crate::mailbox_dir::Listing;

fn setup(n: usize) -> (tempfile::TempDir, MailboxDir) {
    let dir = tempfile::tempdir().unwrap();
    let mb = MailboxDir::new(dir.path(), MailboxName::inbox(), "host", Durability::NoFsync);
    mb.require().unwrap();
    for i in 0..n {
        std::fs::write(mb.path.join("cur").join(format!("m{i}:2,")), b"Subject: x\r\n\r\nbody\r\n").unwrap();
    }
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    (dir, mb)
}

/// Sets the mtimes of `new/` and `cur/` to `secs` ago, so that the next
/// listing is taken while they are settled (and trusted afterwards).
fn backdate_dirs(mb: &MailboxDir, secs: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs);
    for sub in ["cur", "new"] {
        std::fs::File::open(mb.path.join(sub)).unwrap().set_modified(t).unwrap();
    }
}

fn set_dir_mtime(mb: &MailboxDir, sub: &str, t: SystemTime) {
    std::fs::File::open(mb.path.join(sub)).unwrap().set_modified(t).unwrap();
}

fn dir_mtime(mb: &MailboxDir, sub: &str) -> SystemTime {
    std::fs::metadata(mb.path.join(sub)).unwrap().modified().unwrap()
}

/// Runs `f` as another process would: without this process's cache entry,
/// which is put back afterwards, as it was, for the next load to catch up.
fn as_other_process(mb: &MailboxDir, f: impl FnOnce()) {
    let mine = take(&mb.path).expect("a cached state to catch up from");
    f();
    forget(&mb.path);
    put(&mb.path, mine);
}

/// Makes the next load use the mtime rules, as without inotify.
fn without_change_log(mb: &MailboxDir) {
    let mut entry = take(&mb.path).expect("a cached state");
    entry.new_dir.events = None;
    entry.cur_dir.events = None;
    put(&mb.path, entry);
}

fn flags_of(mb: &MailboxDir) -> Vec<(u32, Flags, u64)> {
    let c = LockedMailbox::load(mb, &[]).unwrap().commit().unwrap();
    c.messages.iter().map(|m| (m.uid, m.flags.clone(), m.modseq)).collect()
}

#[test]
fn another_processes_append_flag_change_and_expunge_are_seen() {
    let (_d, mb) = setup(3);
    as_other_process(&mb, || {
        std::fs::write(mb.path.join("new/fresh"), b"Subject: y\r\n\r\nnew\r\n").unwrap();
        let mut l = LockedMailbox::load(&mb, &["fresh".into()]).unwrap();
        let idx = l.find(2).unwrap();
        assert!(l.set_flags(idx, &Flags::system(SystemFlags::SEEN)).unwrap());
        l.commit().unwrap();
    });
    let got = flags_of(&mb);
    assert_eq!(got.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 2, 3, 4], "the other process's UID 4");
    assert_eq!(got[1].1, Flags::system(SystemFlags::SEEN));
    assert_eq!(got[1].2, got[3].2, "its MODSEQ, from its index log record");
    let l = LockedMailbox::load(&mb, &[]).unwrap();
    assert!(l.outside.is_empty(), "changes of another dormouse are not outside changes: {:?}", l.outside);
    l.commit().unwrap();
    let high = got[1].2;
    as_other_process(&mb, || {
        let mut l = LockedMailbox::load(&mb, &[]).unwrap();
        l.expunge(&UidSet::from_range(1, 1)).unwrap();
        l.commit().unwrap();
    });
    let l = LockedMailbox::load(&mb, &[]).unwrap();
    assert_eq!(l.messages().iter().map(|m| m.uid).collect::<Vec<_>>(), [2, 3, 4]);
    assert!(l.outside.is_empty(), "{:?}", l.outside);
    assert!(l.highestmodseq() > high);
    l.commit().unwrap();
}

#[test]
fn catch_up_reads_only_what_was_appended() {
    // Enough records that the first is not among the last bytes compared.
    let (_d, mb) = setup(30);
    // The state is cached now; a record appended the way Dovecot does it...
    std::fs::write(mb.path.join("cur/dove:2,S"), b"Subject: z\r\n\r\nz\r\n").unwrap();
    let path = mb.path.join(UIDLIST_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("99 :dove\n");
    // ...and, to tell a catch-up from a full read, an earlier record changed
    // in place with the same length (no writer does that: only a full read
    // would see it).
    let text = text.replace(" :m0\n", " :mX\n");
    let mut f = std::fs::File::options().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    drop(f);
    let l = LockedMailbox::load(&mb, &[]).unwrap();
    let names: Vec<(u32, &str)> = l.messages().iter().map(|m| (m.uid, m.basename.as_str())).collect();
    assert_eq!(names[0], (1, "m0"), "only the appended record was read");
    assert_eq!(names.last(), Some(&(99, "dove")));
    assert_eq!(names.len(), 31);
    drop(l);
    // A rewrite (new inode) is read whole.
    forget(&mb.path);
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(mb.path.join("uidlist.new"), text.replace("99 :dove\n", "142 :dove\n")).unwrap();
    std::fs::rename(mb.path.join("uidlist.new"), &path).unwrap();
    let l = LockedMailbox::load(&mb, &[]).unwrap();
    assert_eq!(l.find_basename("dove").map(|i| l.messages()[i].uid), Some(142));
}

#[test]
fn outside_writer_adding_to_new_is_seen_and_a_quiet_mailbox_is_not_listed_again() {
    let (_d, mb) = setup(2);
    backdate_dirs(&mb, 10);
    // Listed while settled: trusted from now on.
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    // The mtime rules (no change log: as without inotify).
    without_change_log(&mb);
    // A change that (impossibly) kept the mtime shows the listing is reused...
    let cur_mtime = dir_mtime(&mb, "cur");
    std::fs::write(mb.path.join("cur/hidden:2,"), b"x\r\n").unwrap();
    set_dir_mtime(&mb, "cur", cur_mtime);
    assert_eq!(LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap().messages.len(), 2, "no readdir");
    std::fs::remove_file(mb.path.join("cur/hidden:2,")).unwrap();
    set_dir_mtime(&mb, "cur", cur_mtime);
    // ...and a delivery by another program moves new/'s mtime: seen.
    std::fs::write(mb.path.join("new/procmail"), b"Subject: p\r\n\r\np\r\n").unwrap();
    let l = LockedMailbox::load(&mb, &[]).unwrap();
    assert_eq!(l.messages().len(), 3);
    assert_eq!(l.outside.added.to_imap_string(), "3");
    l.commit().unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn after_our_own_change_the_next_load_lists_no_directory_and_still_sees_outside_changes() {
    let (_d, mb) = setup(3);
    let listed = || crate::mailbox_dir::LISTED.with(|c| c.replace(0));
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    // Our own flag change and expunge (a rename and a removal in cur/)...
    let mut l = LockedMailbox::load(&mb, &[]).unwrap();
    assert!(l.set_flags(0, &Flags::system(SystemFlags::SEEN)).unwrap());
    l.expunge(&UidSet::from_range(2, 2)).unwrap();
    l.commit().unwrap();
    listed();
    // ...are known to the next load from the change log: nothing listed.
    let got = flags_of(&mb);
    assert_eq!(listed(), 0, "no directory listed again after our own change");
    let seen = Flags::system(SystemFlags::SEEN);
    assert_eq!(got.iter().map(|m| (m.0, m.1.clone())).collect::<Vec<_>>(), [(1, seen.clone()), (3, Flags::default())]);
    // Another program's changes right after ours (same timestamp tick) are
    // in the log too.
    std::fs::rename(mb.path.join("cur/m2:2,"), mb.path.join("cur/m2:2,F")).unwrap();
    std::fs::write(mb.path.join("new/dove"), b"Subject: d\r\n\r\nd\r\n").unwrap();
    std::fs::remove_file(mb.path.join("cur/m0:2,S")).unwrap();
    let l = LockedMailbox::load(&mb, &[]).unwrap();
    assert_eq!(listed(), 0);
    assert_eq!(l.outside.added.to_imap_string(), "4");
    assert_eq!(l.outside.flags_set.to_imap_string(), "3");
    assert_eq!(l.outside.expunged.to_imap_string(), "1");
    l.commit().unwrap();
    let cached = flags_of(&mb);
    // A full listing (no cache) gives the same.
    forget(&mb.path);
    assert_eq!(flags_of(&mb), cached);
    assert!(listed() > 0);
}

#[test]
fn a_change_in_the_same_tick_as_ours_is_seen() {
    let (_d, mb) = setup(2);
    backdate_dirs(&mb, 10);
    LockedMailbox::load(&mb, &[]).unwrap().commit().unwrap();
    // Our own flag change renames in cur/...
    let mut l = LockedMailbox::load(&mb, &[]).unwrap();
    assert!(l.set_flags(0, &Flags::system(SystemFlags::FLAGGED)).unwrap());
    l.commit().unwrap();
    // (the mtime rules, as without inotify)
    without_change_log(&mb);
    // ...and another program changes cur/ in the same timestamp tick
    // (a coarse filesystem: the mtime stays what our change left).
    let ours = dir_mtime(&mb, "cur");
    std::fs::rename(mb.path.join("cur/m1:2,"), mb.path.join("cur/m1:2,S")).unwrap();
    std::fs::write(mb.path.join("cur/same-tick:2,"), b"Subject: t\r\n\r\nt\r\n").unwrap();
    set_dir_mtime(&mb, "cur", ours);
    let l = LockedMailbox::load(&mb, &[]).unwrap();
    assert_eq!(l.messages().len(), 3, "the added file");
    assert_eq!(l.messages()[1].flags, Flags::system(SystemFlags::SEEN), "the renamed file");
    l.commit().unwrap();
    // Also once that mtime has settled (the first listing after it).
    let (_d2, mb2) = setup(1);
    let mut l = LockedMailbox::load(&mb2, &[]).unwrap();
    assert!(l.set_flags(0, &Flags::system(SystemFlags::FLAGGED)).unwrap());
    l.commit().unwrap();
    without_change_log(&mb2);
    std::fs::write(mb2.path.join("cur/late:2,"), b"x\r\n").unwrap();
    backdate_dirs(&mb2, 10);
    let t = dir_mtime(&mb2, "cur");
    assert_eq!(LockedMailbox::load(&mb2, &[]).unwrap().commit().unwrap().messages.len(), 2);
    assert_eq!(dir_mtime(&mb2, "cur"), t);
}

#[test]
fn index_compaction_and_lost_cache_give_the_same_state() {
    let (_d, mb) = setup(4);
    for round in 0..6u32 {
        let mut l = LockedMailbox::load(&mb, &[]).unwrap();
        let idx = (round % 4) as usize;
        let f = if round % 2 == 0 { SystemFlags::SEEN } else { SystemFlags::ANSWERED };
        assert!(l.set_flags(idx, &Flags::system(f)).unwrap());
        if round == 3 {
            l.expunge(&UidSet::from_range(4, 4)).unwrap();
        }
        l.commit().unwrap();
    }
    let cached = flags_of(&mb);
    forget(&mb.path);
    assert_eq!(flags_of(&mb), cached, "a full read gives what the cache held");
    // A compacted index (new snapshot) is read whole.
    std::fs::remove_file(mb.path.join(INDEX_FILE)).unwrap();
    let rebuilt = flags_of(&mb);
    assert_eq!(rebuilt.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 2, 3]);
    forget(&mb.path);
    assert_eq!(flags_of(&mb), rebuilt);
}

#[test]
fn a_listing_is_trusted_once_its_mtime_tick_is_over() {
    let fine = (1, 1_000, 5_000_000);
    let whole = (1, 1_000, 0);
    let at = |ms: i64| u64::try_from(1_000 * 1_000 + ms).unwrap();
    assert!(!settled(fine, at(5 + FINE_SETTLE_MS - 1)));
    assert!(settled(fine, at(5 + FINE_SETTLE_MS)));
    assert!(!settled(whole, at(SETTLE_MS - 1)), "second-granularity mtimes wait longer");
    assert!(settled(whole, at(SETTLE_MS)));
}

fn dummy_entry(messages: usize) -> Cached {
    let mut uidlist = UidList::new(1);
    for i in 0..messages {
        uidlist.push(&format!("m{i}"));
    }
    Cached {
        uidlist,
        uidlist_file: CachedFile::default(),
        uidlist_appendable: false,
        index: None,
        index_file: None,
        index_log_file: None,
        index_log_len: None,
        listing: Listing::default(),
        new_dir: DirState::default(),
        cur_dir: DirState::default(),
    }
}

#[test]
fn the_cache_keeps_at_most_max_mailboxes_and_max_messages() {
    let limits = Limits { max_messages: 100, max_mailboxes: 3, idle: Duration::from_secs(120) };
    let mut c = Cache::default();
    let t = now_ms();
    let p = |i: usize| PathBuf::from(format!("/nonexistent/lc/{i}"));
    for i in 0..5 {
        c.put(&p(i), dummy_entry(10), t, &limits);
    }
    assert_eq!(c.len(), 3);
    assert!(!c.contains(&p(0)) && !c.contains(&p(1)), "the least recently used went first");
    // Using one (a load takes it, its commit puts it back) makes it recent.
    let e = c.remove(&p(2)).unwrap();
    c.put(&p(2), e, t, &limits);
    c.put(&p(5), dummy_entry(10), t, &limits);
    assert!(c.contains(&p(2)) && !c.contains(&p(3)) && c.contains(&p(4)) && c.contains(&p(5)));
    // The message bound still holds, and one big mailbox alone is kept.
    c.put(&p(6), dummy_entry(85), t, &limits);
    assert_eq!(c.len(), 2, "85 + 10 + 10 > 100");
    assert!(c.contains(&p(6)) && c.contains(&p(5)), "the oldest two went");
    assert_eq!(c.messages, 95);
    c.put(&p(7), dummy_entry(500), t, &limits);
    assert_eq!(c.len(), 1);
    assert!(c.contains(&p(7)));
}

#[test]
fn idle_entries_and_their_dates_are_dropped() {
    let limits = Limits { max_messages: 1000, max_mailboxes: 10, idle: Duration::from_secs(120) };
    let mut c = Cache::default();
    let t0 = now_ms();
    let (a, b) = (Path::new("/nonexistent/lc-idle/a"), Path::new("/nonexistent/lc-idle/b"));
    c.put(a, dummy_entry(5), t0, &limits);
    c.internal_dates(a, t0).lock().unwrap().insert("m0".into(), 42);
    c.put(b, dummy_entry(5), t0 + 100_000, &limits);
    assert_eq!(c.sweep(t0 + 120_000, &limits), 0, "not idle for longer than 120 s yet");
    assert_eq!(c.sweep(t0 + 121_000, &limits), 1);
    assert!(!c.contains(a) && c.contains(b));
    assert!(c.internal_dates(a, t0 + 121_000).lock().unwrap().is_empty(), "its dates went with it");
    // A commit sweeps too.
    c.put(a, dummy_entry(5), t0 + 300_000, &limits);
    assert!(c.contains(a) && !c.contains(b));
    assert_eq!(c.messages, 5);
}

#[test]
fn an_evicted_mailbox_reloads_from_disk_as_it_was() {
    let (_d, mb) = setup(5);
    let mut l = LockedMailbox::load(&mb, &[]).unwrap();
    assert!(l.set_flags(1, &Flags::system(SystemFlags::SEEN)).unwrap());
    l.expunge(&UidSet::from_range(4, 4)).unwrap();
    l.commit().unwrap();
    std::fs::write(mb.path.join("new/late"), b"Subject: l\r\n\r\nl\r\n").unwrap();
    let before = flags_of(&mb);
    assert_eq!(before.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 2, 3, 5, 6]);
    // Last used long ago: the sweep drops it (and only idle entries).
    let entry = take(&mb.path).unwrap();
    put_at(&mb.path, entry, now_ms() - 1_000_000);
    assert!(sweep(now_ms()) >= 1);
    assert!(!is_cached(&mb.path));
    let l = LockedMailbox::load(&mb, &[]).unwrap();
    assert!(l.outside.is_empty(), "a reload finds nothing new: {:?}", l.outside);
    let got: Vec<(u32, Flags, u64)> = l.messages().iter().map(|m| (m.uid, m.flags.clone(), m.modseq)).collect();
    l.commit().unwrap();
    assert_eq!(got, before);
    assert!(is_cached(&mb.path), "cached again");
    assert_eq!(flags_of(&mb), before);
}
