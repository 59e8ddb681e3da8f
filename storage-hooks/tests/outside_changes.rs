//! Reconciling changes other programs made to the Maildir: exactly one event
//! per kind for real outside changes, none for our own writes.

use std::sync::Arc;

use storage_hooks::{
    AppendOptions, CollectingHook, Durability, EventKind, FlagOp, Flags, Hooks, SystemFlags, UidSet, UserStore,
};

const MSG: &[u8] = b"From: a@example.org\r\nSubject: outside\r\n\r\nhello\r\n";

/// A store whose events the returned hook collects; `report_outside` as
/// [`Hooks::with_outside_change_reporting`].
fn store_reporting(report_outside: bool) -> (tempfile::TempDir, UserStore, Arc<CollectingHook>) {
    let dir = tempfile::tempdir().unwrap();
    let hook = CollectingHook::new();
    let hooks = Hooks::new().with(hook.clone()).with_outside_change_reporting(report_outside);
    let store = UserStore::open("u", dir.path().join("Maildir"), hooks).unwrap().with_durability(Durability::NoFsync);
    (dir, store, hook)
}

fn store() -> (tempfile::TempDir, UserStore, Arc<CollectingHook>) {
    store_reporting(false)
}

fn kinds(hook: &CollectingHook) -> Vec<EventKind> {
    hook.take().iter().map(|e| e.kind).collect()
}

/// The hook saw exactly one event: the outside file `new/outside.1`
/// numbered as UID 2 of a two-message INBOX, in an unbroken modseq chain.
fn assert_one_outside_delivery_as_uid_2(hook: &CollectingHook) {
    let events = hook.take();
    assert_eq!(events.len(), 1);
    let ev = &events[0];
    assert_eq!(ev.kind, EventKind::MessageNew);
    assert_eq!(ev.uids.to_imap_string(), "2");
    assert_eq!(ev.status.messages, 2);
    assert_eq!(ev.modseq_after, ev.status.highestmodseq);
    assert_eq!(ev.modseq_before + 1, ev.modseq_after);
    assert_eq!(ev.summary.as_ref().unwrap().subject, "outside");
}

#[test]
fn outside_copy_into_new_is_exactly_one_message_new() {
    let (_d, store, hook) = store();
    store.append("INBOX", MSG, &AppendOptions::default()).unwrap();
    assert_eq!(kinds(&hook), [EventKind::MessageNew], "the delivery itself");
    std::fs::write(store.root().join("new/outside.1"), MSG).unwrap();
    let report = store.reconcile_outside_changes("INBOX").unwrap();
    assert_eq!(report.events, 1);
    assert_one_outside_delivery_as_uid_2(&hook);
    // Nothing changed since: nothing reported.
    assert_eq!(store.reconcile_outside_changes("INBOX").unwrap().events, 0);
    assert!(hook.is_empty());
}

#[test]
fn outside_flag_rename_and_delete() {
    let (_d, store, hook) = store();
    std::fs::write(store.root().join("cur/m1:2,S"), MSG).unwrap();
    std::fs::write(store.root().join("cur/m2:2,"), MSG).unwrap();
    store.reconcile_outside_changes("INBOX").unwrap();
    hook.take();
    // mutt flags m1 (and drops \Seen), and m2 gets \Seen.
    std::fs::rename(store.root().join("cur/m1:2,S"), store.root().join("cur/m1:2,F")).unwrap();
    std::fs::rename(store.root().join("cur/m2:2,"), store.root().join("cur/m2:2,S")).unwrap();
    store.reconcile_outside_changes("INBOX").unwrap();
    let events = hook.take();
    assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::FlagsSet, EventKind::FlagsClear]);
    assert_eq!(events[0].uids.to_imap_string(), "1:2");
    assert_eq!(events[0].flags, Flags::system(SystemFlags::FLAGGED.union(SystemFlags::SEEN)));
    assert_eq!(events[1].uids.to_imap_string(), "1");
    assert_eq!(events[1].flags, Flags::system(SystemFlags::SEEN));
    assert_eq!(events[1].modseq_before, events[1].modseq_after);
    // A touch that changes nothing is no event.
    let f = std::fs::File::options().write(true).open(store.root().join("cur/m1:2,F")).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    assert_eq!(store.reconcile_outside_changes("INBOX").unwrap().events, 0);
    std::fs::remove_file(store.root().join("cur/m2:2,S")).unwrap();
    store.reconcile_outside_changes("INBOX").unwrap();
    let events = hook.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::MessageExpunge);
    assert_eq!(events[0].uids.to_imap_string(), "2");
    assert_eq!(events[0].status.messages, 1);
}

#[test]
fn our_own_writes_and_reads_are_never_reported_again() {
    let (_d, store, hook) = store();
    store.create_mailbox("Archive").unwrap();
    for _ in 0..3 {
        store.append("INBOX", MSG, &AppendOptions::default()).unwrap();
    }
    let mut mb = store.open_mailbox("INBOX").unwrap();
    mb.clear_recent().unwrap();
    mb.store_flags(&UidSet::from_range(1, 2), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None).unwrap();
    mb.store_flags(&UidSet::from_range(2, 2), FlagOp::Remove, &Flags::system(SystemFlags::DELETED), None).unwrap();
    mb.copy_to(&UidSet::from_range(3, 3), "Archive").unwrap();
    mb.expunge(None).unwrap();
    for uid in [2, 3] {
        mb.read_message(uid).unwrap();
    }
    mb.sync().unwrap();
    store.status("INBOX").unwrap();
    let own = hook.take();
    assert!(!own.is_empty());
    assert_eq!(store.reconcile_all_outside_changes().unwrap(), 0);
    assert!(hook.is_empty(), "our own writes reported twice: {:?}", hook.take());
}

#[test]
fn burst_is_one_event_in_uid_order_by_mtime() {
    let (_d, store, hook) = store();
    let base = std::time::SystemTime::now() - std::time::Duration::from_secs(1000);
    // Written in reverse name order with ascending mtimes: UIDs follow mtime.
    for i in 0..200u64 {
        let path = store.root().join(format!("new/z{:04}", 200 - i));
        std::fs::write(&path, MSG).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(base + std::time::Duration::from_secs(i)).unwrap();
    }
    store.reconcile_outside_changes("INBOX").unwrap();
    let events = hook.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].uids.to_imap_string(), "1:200");
    let mb = store.open_mailbox("INBOX").unwrap();
    assert_eq!(mb.messages().len(), 200);
    let uidlist = std::fs::read_to_string(store.root().join("dovecot-uidlist")).unwrap();
    let first = uidlist.lines().nth(1).unwrap();
    assert!(first.ends_with(":z0200"), "{first}");
}

#[test]
fn vanished_mailbox_reports_nothing() {
    let (_d, store, hook) = store();
    assert_eq!(store.reconcile_outside_changes("Nope").unwrap().events, 0);
    assert!(hook.is_empty());
}

fn reporting_store() -> (tempfile::TempDir, UserStore, Arc<CollectingHook>) {
    store_reporting(true)
}

#[test]
fn with_reporting_a_sync_before_the_watcher_publishes_once() {
    let (_d, store, hook) = reporting_store();
    store.append("INBOX", MSG, &AppendOptions::default()).unwrap();
    let mut mb = store.open_mailbox("INBOX").unwrap();
    assert_eq!(kinds(&hook), [EventKind::MessageNew], "the delivery itself; opening is no event");
    std::fs::write(store.root().join("new/outside.1"), MSG).unwrap();
    // A NOOP's sync runs before the watcher's reconcile.
    let changes = mb.sync().unwrap();
    assert_eq!(changes.added.len(), 1);
    assert_one_outside_delivery_as_uid_2(&hook);
    // The watcher's reconcile comes later and finds nothing left to publish.
    assert_eq!(store.reconcile_outside_changes("INBOX").unwrap().events, 0);
    assert!(hook.is_empty());
}

#[test]
fn with_reporting_outside_changes_precede_our_own_in_one_modseq_chain() {
    let (_d, store, hook) = reporting_store();
    std::fs::write(store.root().join("cur/m1:2,"), MSG).unwrap();
    std::fs::write(store.root().join("cur/m2:2,"), MSG).unwrap();
    let mut mb = store.open_mailbox("INBOX").unwrap();
    assert_eq!(kinds(&hook), [EventKind::MessageNew], "SELECT found two outside files");
    // Another program flags m2 and removes m1; then we set \Seen on 2.
    std::fs::rename(store.root().join("cur/m2:2,"), store.root().join("cur/m2:2,F")).unwrap();
    std::fs::remove_file(store.root().join("cur/m1:2,")).unwrap();
    mb.store_flags(&UidSet::from_range(2, 2), FlagOp::Add, &Flags::system(SystemFlags::SEEN), None).unwrap();
    let events = hook.take();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::FlagsSet, EventKind::MessageExpunge, EventKind::FlagsSet]
    );
    assert_eq!(events[0].flags, Flags::system(SystemFlags::FLAGGED));
    assert_eq!(events[1].uids.to_imap_string(), "1");
    assert_eq!(events[2].flags, Flags::system(SystemFlags::SEEN));
    assert_eq!(events[0].modseq_before + 1, events[0].modseq_after);
    assert_eq!(events[1].modseq_before, events[0].modseq_after);
    assert_eq!(events[1].modseq_after, events[0].modseq_after);
    assert_eq!(events[2].modseq_before, events[1].modseq_after, "our change follows the outside ones");
    assert!(events[2].modseq_after > events[2].modseq_before);
    assert_eq!(store.reconcile_outside_changes("INBOX").unwrap().events, 0);
    assert!(hook.is_empty());
}

#[test]
fn with_reporting_status_and_delivery_publish_what_they_find() {
    let (_d, store, hook) = reporting_store();
    store.create_mailbox("Work").unwrap();
    hook.take();
    std::fs::write(store.root().join(".Work/new/outside.1"), MSG).unwrap();
    assert_eq!(store.status("Work").unwrap().messages, 1);
    assert_eq!(kinds(&hook), [EventKind::MessageNew], "a STATUS rescan publishes the outside file");
    std::fs::write(store.root().join("new/outside.2"), MSG).unwrap();
    store.append("INBOX", MSG, &AppendOptions::default()).unwrap();
    let events = hook.take();
    assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::MessageNew, EventKind::MessageNew]);
    assert_eq!(events[0].uids.to_imap_string(), "1", "the outside file first");
    assert_eq!(events[1].uids.to_imap_string(), "2", "then our delivery");
    assert_eq!(events[1].modseq_before, events[0].modseq_after);
    assert_eq!(store.reconcile_all_outside_changes().unwrap(), 0);
    assert!(hook.is_empty());
}

#[test]
fn with_reporting_our_own_writes_are_never_outside_events() {
    let (_d, store, hook) = reporting_store();
    store.append("INBOX", MSG, &AppendOptions::default()).unwrap();
    let mut mb = store.open_mailbox("INBOX").unwrap();
    mb.clear_recent().unwrap();
    mb.store_flags(&UidSet::from_range(1, 1), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None).unwrap();
    mb.expunge(None).unwrap();
    mb.sync().unwrap();
    store.status("INBOX").unwrap();
    assert_eq!(kinds(&hook), [EventKind::MessageNew, EventKind::FlagsSet, EventKind::MessageExpunge]);
    assert_eq!(store.reconcile_outside_changes("INBOX").unwrap().events, 0);
    assert!(hook.is_empty());
}

#[test]
fn without_reporting_a_sync_stays_silent_and_the_reconcile_finds_nothing() {
    let (_d, store, hook) = store();
    store.append("INBOX", MSG, &AppendOptions::default()).unwrap();
    let mut mb = store.open_mailbox("INBOX").unwrap();
    hook.take();
    std::fs::write(store.root().join("new/outside.1"), MSG).unwrap();
    assert_eq!(mb.sync().unwrap().added.len(), 1);
    assert!(hook.is_empty(), "change_source = hooks: outside changes stay silent");
    assert_eq!(store.reconcile_outside_changes("INBOX").unwrap().events, 0);
    assert!(hook.is_empty());
}
