//! The Maildir watcher: outside changes become events (once), our own
//! writes never do, bursts coalesce, watch exhaustion falls back to polling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use storage_hooks::watcher::{MaildirWatcher, WatcherConfig};
use storage_hooks::{
    AppendOptions, CollectingHook, Durability, EventKind, FlagOp, Flags, Hooks, MailboxEvent, SystemFlags, UidSet,
    UserStore,
};

const MSG: &[u8] = b"From: a@example.org\r\nSubject: outside\r\n\r\nhello\r\n";
/// Generous: the machine is shared; the latency itself is printed and benchmarked.
const WAIT: Duration = Duration::from_secs(10);

fn store(user: &str, base: &std::path::Path) -> (UserStore, Arc<CollectingHook>) {
    let hook = CollectingHook::new();
    let store = UserStore::open(user, base.join(user), Hooks::new().with(hook.clone()))
        .unwrap()
        .with_durability(Durability::NoFsync);
    (store, hook)
}

/// Collects events until `done` says so or the wait runs out.
fn wait_for(hook: &CollectingHook, done: impl Fn(&[MailboxEvent]) -> bool) -> Vec<MailboxEvent> {
    let deadline = Instant::now() + WAIT;
    let mut all = Vec::new();
    while Instant::now() < deadline {
        all.extend(hook.take());
        if done(&all) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    all
}

fn quiet_for(hook: &CollectingHook, d: Duration) -> Vec<MailboxEvent> {
    std::thread::sleep(d);
    hook.take()
}

#[test]
fn outside_delivery_flag_change_and_delete_are_published_once() {
    let base = tempfile::tempdir().unwrap();
    let (store, hook) = store("alice", base.path());
    store.append("INBOX", MSG, &AppendOptions::default()).unwrap();
    hook.take();
    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    watcher.watch_user(&store);

    let t = Instant::now();
    std::fs::write(store.root().join("new/outside.1"), MSG).unwrap();
    let events = wait_for(&hook, |e| !e.is_empty());
    eprintln!("outside cp -> MessageNew in {:?}", t.elapsed());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::MessageNew);
    assert_eq!(events[0].uids.to_imap_string(), "2");
    assert!(quiet_for(&hook, Duration::from_millis(300)).is_empty(), "exactly one event");

    // mutt moves it to cur/ with \Seen: a flag change.
    let t = Instant::now();
    std::fs::rename(store.root().join("new/outside.1"), store.root().join("cur/outside.1:2,S")).unwrap();
    let events = wait_for(&hook, |e| !e.is_empty());
    eprintln!("outside rename -> FlagsSet in {:?}", t.elapsed());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::FlagsSet);
    assert_eq!(events[0].flags, Flags::system(SystemFlags::SEEN));
    assert_eq!(events[0].uids.to_imap_string(), "2");

    let t = Instant::now();
    std::fs::remove_file(store.root().join("cur/outside.1:2,S")).unwrap();
    let events = wait_for(&hook, |e| !e.is_empty());
    eprintln!("outside rm -> MessageExpunge in {:?}", t.elapsed());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::MessageExpunge);
    assert_eq!(events[0].uids.to_imap_string(), "2");
    assert_eq!(watcher.stats().users, 1);
    assert_eq!(watcher.stats().watches, 3, "root, new/, cur/");
}

#[test]
fn our_own_writes_and_reads_produce_no_extra_events() {
    let base = tempfile::tempdir().unwrap();
    let (store, hook) = store("bob", base.path());
    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    watcher.watch_user(&store);
    store.create_mailbox("Archive").unwrap();
    for _ in 0..5 {
        store.append("INBOX", MSG, &AppendOptions::default()).unwrap();
    }
    let mut mb = store.open_mailbox("INBOX").unwrap();
    mb.clear_recent().unwrap();
    mb.store_flags(&UidSet::from_range(1, 3), FlagOp::Add, &Flags::system(SystemFlags::SEEN), None).unwrap();
    mb.store_flags(&UidSet::from_range(1, 1), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None).unwrap();
    mb.copy_to(&UidSet::from_range(2, 3), "Archive").unwrap();
    mb.move_to(&UidSet::from_range(4, 4), "Archive").unwrap();
    mb.expunge(None).unwrap();
    for uid in [2, 3, 5] {
        mb.read_message(uid).unwrap();
    }
    mb.sync().unwrap();
    store.status("Archive").unwrap();
    store.rename_mailbox("Archive", "Old").unwrap();
    store.create_mailbox("Tmp").unwrap();
    store.delete_mailbox("Tmp").unwrap();
    let mut own = hook.take();
    own.extend(quiet_for(&hook, Duration::from_millis(600)));
    let kinds: Vec<EventKind> = own.iter().map(|e| e.kind).collect();
    let expected = [
        EventKind::MailboxCreate,
        EventKind::MessageNew,
        EventKind::MessageNew,
        EventKind::MessageNew,
        EventKind::MessageNew,
        EventKind::MessageNew,
        EventKind::FlagsSet,
        EventKind::FlagsSet,
        EventKind::MessageAppend,
        EventKind::MessageAppend,
        EventKind::MessageExpunge,
        EventKind::MessageExpunge,
        EventKind::MailboxRename,
        EventKind::MailboxCreate,
        EventKind::MailboxDelete,
    ];
    assert_eq!(kinds, expected, "only the store's own events, none from the watcher");
    // The watcher now watches the renamed folder: outside delivery there is seen.
    std::fs::write(store.root().join(".Old/new/x"), MSG).unwrap();
    let events = wait_for(&hook, |e| !e.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].kind, events[0].mailbox.as_str()), (EventKind::MessageNew, "Old"));
}

#[test]
fn our_own_appends_deliveries_and_copies_cause_no_reconcile() {
    let base = tempfile::tempdir().unwrap();
    let (store, hook) = store("erin", base.path());
    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    watcher.watch_user(&store);
    store.create_mailbox("Archive").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = watcher.stats().reconciles;
    for _ in 0..3 {
        store.append("INBOX", MSG, &AppendOptions::default()).unwrap();
    }
    let mb = store.open_mailbox("INBOX").unwrap();
    mb.copy_to(&UidSet::from_range(1, 2), "Archive").unwrap();
    quiet_for(&hook, Duration::from_millis(800));
    assert_eq!(watcher.stats().reconciles, before, "our own new files are not outside changes: no locked load by the watcher");
    // Another program's file still is.
    std::fs::write(store.root().join("new/outside"), MSG).unwrap();
    let events = wait_for(&hook, |e| !e.is_empty());
    assert_eq!(events[0].kind, EventKind::MessageNew);
    assert!(watcher.stats().reconciles > before);
}

#[test]
fn a_burst_of_1000_files_arrives_complete_in_uid_order_in_few_batches() {
    let base = tempfile::tempdir().unwrap();
    let (store, hook) = store("carol", base.path());
    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    watcher.watch_user(&store);
    let batches_before = watcher.stats().batches;
    for i in 0..1000 {
        // Maildir protocol: write in tmp/, rename into new/.
        let tmp = store.root().join(format!("tmp/burst.{i:04}"));
        std::fs::write(&tmp, MSG).unwrap();
        std::fs::rename(&tmp, store.root().join(format!("new/burst.{i:04}"))).unwrap();
    }
    let events = wait_for(&hook, |e| e.iter().map(|e| e.uids.len()).sum::<u64>() >= 1000);
    let mut last = 0;
    for ev in &events {
        assert_eq!(ev.kind, EventKind::MessageNew);
        for uid in ev.uids.iter() {
            assert_eq!(uid, last + 1, "UIDs arrive in order without gaps");
            last = uid;
        }
    }
    assert_eq!(last, 1000);
    let batches = watcher.stats().batches - batches_before;
    eprintln!("1000 files: {} events, {} batches", events.len(), batches);
    assert!(events.len() <= 50, "coalesced: {} events", events.len());
    assert!(quiet_for(&hook, Duration::from_millis(300)).is_empty());
}

#[test]
fn outside_folder_create_rename_delete_are_mailbox_events() {
    let base = tempfile::tempdir().unwrap();
    let (store, hook) = store("dave", base.path());
    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    watcher.watch_user(&store);
    // maildirmake .Lists with a message already inside.
    let folder = store.root().join(".Lists");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(folder.join(sub)).unwrap();
    }
    std::fs::write(folder.join("new/m1"), MSG).unwrap();
    let events = wait_for(&hook, |e| e.len() >= 2);
    let kinds: Vec<(EventKind, &str)> = events.iter().map(|e| (e.kind, e.mailbox.as_str())).collect();
    assert_eq!(kinds, [(EventKind::MailboxCreate, "Lists"), (EventKind::MessageNew, "Lists")]);
    std::fs::rename(&folder, store.root().join(".Groups")).unwrap();
    let events = wait_for(&hook, |e| !e.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::MailboxRename);
    assert_eq!((events[0].old_mailbox.as_deref(), events[0].mailbox.as_str()), (Some("Lists"), "Groups"));
    std::fs::write(store.root().join(".Groups/new/m2"), MSG).unwrap();
    let events = wait_for(&hook, |e| !e.is_empty());
    assert_eq!((events[0].kind, events[0].mailbox.as_str()), (EventKind::MessageNew, "Groups"));
    // `rm -rf` may race the watcher's reconcile of m2 (its dot-lock and
    // index files appear while the tree is being removed): retry as a user would.
    let mut attempts = 0;
    while let Err(e) = std::fs::remove_dir_all(store.root().join(".Groups")) {
        attempts += 1;
        assert!(attempts < 50 && e.kind() == std::io::ErrorKind::DirectoryNotEmpty, "rm -rf .Groups: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let events = wait_for(&hook, |e| !e.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].kind, events[0].mailbox.as_str()), (EventKind::MailboxDelete, "Groups"));
}

#[test]
fn watches_are_shared_and_dropped_with_the_last_session() {
    let base = tempfile::tempdir().unwrap();
    let (a, _) = store("erin", base.path());
    let (b, _) = store("frank", base.path());
    b.create_mailbox("Sent").unwrap();
    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    for _ in 0..3 {
        watcher.watch_user(&a);
    }
    watcher.watch_user(&b);
    assert_eq!(watcher.stats().users, 2);
    assert_eq!(watcher.stats().watches, 3 + 5);
    watcher.unwatch_user("erin");
    watcher.unwatch_user("erin");
    assert_eq!(watcher.stats().watches, 8, "one session of erin left");
    watcher.unwatch_user("erin");
    assert_eq!(watcher.stats().watches, 5);
    watcher.unwatch_user("frank");
    assert_eq!((watcher.stats().users, watcher.stats().watches), (0, 0));
}

#[test]
fn watch_exhaustion_falls_back_to_polling_and_rescan_finds_everything() {
    let base = tempfile::tempdir().unwrap();
    let (watched, watched_hook) = store("gina", base.path());
    let (polled, polled_hook) = store("hank", base.path());
    let config = WatcherConfig { max_watches: Some(3), poll_interval: Duration::from_millis(200), ..Default::default() };
    let watcher = MaildirWatcher::start(config).unwrap();
    watcher.watch_user(&watched);
    watcher.watch_user(&polled);
    let stats = watcher.stats();
    assert_eq!((stats.watches, stats.polled_users), (3, 1));
    std::fs::write(polled.root().join("new/p1"), MSG).unwrap();
    let events = wait_for(&polled_hook, |e| !e.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::MessageNew);
    // Changes the watch never saw (made before it existed) are found by a rescan.
    drop(watcher);
    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    std::fs::write(watched.root().join("new/unseen"), MSG).unwrap();
    watcher.watch_user(&watched);
    assert!(quiet_for(&watched_hook, Duration::from_millis(300)).is_empty());
    watcher.rescan_all();
    let events = wait_for(&watched_hook, |e| !e.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::MessageNew);
    assert_eq!(watcher.stats().overflows, 1);
}

#[test]
fn a_slow_plain_copy_is_published_once_complete() {
    use std::io::Write;
    let base = tempfile::tempdir().unwrap();
    let (store, hook) = store("ivan", base.path());
    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    watcher.watch_user(&store);
    let mut f = std::fs::File::create(store.root().join("new/slow")).unwrap();
    f.write_all(&MSG[..20]).unwrap();
    f.flush().unwrap();
    assert!(quiet_for(&hook, Duration::from_millis(200)).is_empty(), "not while still being written");
    f.write_all(&MSG[20..]).unwrap();
    drop(f);
    let events = wait_for(&hook, |e| !e.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::MessageNew);
    assert_eq!(events[0].status.size, MSG.len() as u64);
    assert_eq!(events[0].summary.as_ref().unwrap().subject, "outside");
    assert!(quiet_for(&hook, Duration::from_millis(200)).is_empty());
}

#[test]
fn a_file_named_like_a_live_writers_own_is_left_to_it_then_still_published() {
    let base = tempfile::tempdir().unwrap();
    let (store, hook) = store("judy", base.path());
    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    watcher.watch_user(&store);
    // Named like one of our own deliveries by this (live) process, but no
    // writer numbers it: after the grace period the watcher publishes it.
    let name = format!("1700000000.M1P{}Q1R0badcafe.host,S=10,W=10", std::process::id());
    let tmp = store.root().join("tmp").join(&name);
    std::fs::write(&tmp, MSG).unwrap();
    let t = Instant::now();
    std::fs::rename(&tmp, store.root().join("new").join(&name)).unwrap();
    let events = wait_for(&hook, |e| !e.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::MessageNew);
    assert!(t.elapsed() >= Duration::from_millis(150), "left to its writer first: {:?}", t.elapsed());
}

/// What a hibernate process uses: only the selected mailboxes' `new/` and
/// `cur/` are watched (no root, no other folder), counted per session.
#[test]
fn watching_selected_mailboxes_only_costs_two_watches_each() {
    let base = tempfile::tempdir().unwrap();
    let (store, hook) = store("sel", base.path());
    for name in ["Sent", "Trash", "Lists"] {
        store.create_mailbox(name).unwrap();
    }
    store.append("INBOX", MSG, &AppendOptions::default()).unwrap();
    hook.take();
    let watcher = MaildirWatcher::start(WatcherConfig::default()).unwrap();
    watcher.watch_mailbox(&store, "INBOX");
    watcher.watch_mailbox(&store, "INBOX");
    assert_eq!(watcher.stats().watches, 2, "INBOX new/ and cur/ only, shared by both sessions");
    assert_eq!(watcher.stats().users, 1);

    std::fs::write(store.root().join("new/outside.1"), MSG).unwrap();
    let events = wait_for(&hook, |e| !e.is_empty());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].kind, events[0].mailbox.as_str()), (EventKind::MessageNew, "INBOX"));

    // Another folder is not followed, nor are folders created.
    let lists = store.root().join(".Lists");
    std::fs::write(lists.join("new/outside.2"), MSG).unwrap();
    std::fs::create_dir_all(store.root().join(".Made/new")).unwrap();
    assert!(quiet_for(&hook, Duration::from_millis(400)).is_empty());

    // Selecting it adds its two watches; it is then followed.
    watcher.watch_mailbox(&store, "Lists");
    assert_eq!(watcher.stats().watches, 4);
    std::fs::write(lists.join("new/outside.3"), MSG).unwrap();
    let events = wait_for(&hook, |e| e.iter().any(|e| e.mailbox == "Lists"));
    assert!(events.iter().any(|e| e.kind == EventKind::MessageNew && e.mailbox == "Lists"), "{events:?}");

    watcher.unwatch_mailbox("sel", "INBOX");
    assert_eq!(watcher.stats().watches, 4, "one INBOX session is left");
    watcher.unwatch_mailbox("sel", "Lists");
    assert_eq!(watcher.stats().watches, 2);
    watcher.unwatch_mailbox("sel", "INBOX");
    assert_eq!((watcher.stats().watches, watcher.stats().users), (0, 0));
}
