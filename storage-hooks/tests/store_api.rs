//! Behaviour of the public store API: messages, flags, events, mailboxes.

use std::path::Path;
use std::sync::Arc;

use storage_hooks::{
    AppendKind, AppendOptions, CollectingHook, EventKind, FlagOp, Flags, Hooks, MailboxEvent, StoreError, SystemFlags,
    UidSet, UserStore,
};

fn store(dir: &Path) -> (UserStore, Arc<CollectingHook>) {
    let hook = CollectingHook::new();
    let store = UserStore::open("alice", dir.join("Maildir"), Hooks::new().with(hook.clone())).unwrap();
    (store, hook)
}

fn msg(n: u32) -> Vec<u8> {
    format!("From: Bob <bob@example.org>\nSubject: message {n}\n\nHello number {n}.\n").into_bytes()
}

fn append(store: &UserStore, mailbox: &str, n: u32) -> u32 {
    store.append(mailbox, &msg(n), &AppendOptions::default()).unwrap().uid
}

fn seen() -> Flags {
    Flags::system(SystemFlags::SEEN)
}

#[test]
fn append_read_status_and_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let (store, hook) = store(dir.path());
    assert!(matches!(
        store.append("INBOX", b"", &AppendOptions::default()),
        Err(StoreError::InvalidMessage(_))
    ));
    assert!(matches!(
        store.append("Nope", &msg(1), &AppendOptions::default()),
        Err(StoreError::NoSuchMailbox(_))
    ));
    let r1 = store.append("INBOX", &msg(1), &AppendOptions::default()).unwrap();
    let r2 = store
        .append("inbox", &msg(2), &AppendOptions { flags: seen(), internal_date: Some(1_000_000_000), kind: AppendKind::Append })
        .unwrap();
    assert_eq!((r1.uid, r2.uid), (1, 2));
    assert_eq!(r1.uidvalidity, r2.uidvalidity);

    let events = hook.take();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventKind::MessageNew);
    assert_eq!(events[1].kind, EventKind::MessageAppend);
    let summary = events[0].summary.as_ref().unwrap();
    assert_eq!(summary.from, "Bob <bob@example.org>");
    assert_eq!(summary.subject, "message 1");
    assert_eq!(summary.snippet, "Hello number 1.");
    assert_eq!(events[1].flags, seen());
    for ev in &events {
        assert!(ev.modseq_after > ev.modseq_before, "even the first append of a new mailbox: {ev:?}");
    }
    assert_eq!(events[1].modseq_before, events[0].modseq_after);
    assert_eq!(events[1].uids.to_imap_string(), "2");

    let status = store.status("INBOX").unwrap();
    assert_eq!(status.messages, 2);
    assert_eq!(status.unseen, 1);
    assert_eq!(status.recent, 2);
    assert_eq!(status.uidnext, 3);
    assert_eq!(status.uidvalidity, r1.uidvalidity);
    assert_eq!(status, events[1].status);
    let crlf = String::from_utf8(msg(1)).unwrap().replace('\n', "\r\n");
    assert_eq!(status.size, 2 * crlf.len() as u64);

    let mb = store.open_mailbox("INBOX").unwrap();
    assert_eq!(mb.read_message(1).unwrap(), crlf.as_bytes());
    assert!(matches!(mb.read_message(9), Err(StoreError::NoSuchMessage(9))));
    let m2 = mb.message(2).unwrap();
    assert_eq!(m2.internal_date, 1_000_000_000);
    assert_eq!(m2.size, crlf.len() as u64);
    assert!(m2.recent);
    assert_eq!(m2.flags, seen());
    // The uidlist is Dovecot's version 3 format.
    let uidlist = std::fs::read_to_string(dir.path().join("Maildir/dovecot-uidlist")).unwrap();
    let mut lines = uidlist.lines();
    let header = lines.next().unwrap();
    // New records are appended without rewriting the header (as Dovecot
    // does): N is a lower bound, the next UID is max(N, last UID + 1).
    assert!(header.starts_with(&format!("3 V{} N", r1.uidvalidity)) && header.contains(" G"), "{header}");
    assert_eq!(storage_hooks::uidlist::UidList::parse(&uidlist).unwrap().next_uid, 3);
    assert!(lines.next().unwrap().starts_with("1 :"));
    assert!(lines.next().unwrap().starts_with("2 :"));
    assert!(hook.is_empty(), "reads emit nothing");
    // Mail is private: files 0600, directories 0700.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = dir.path().join("Maildir");
    for entry in std::fs::read_dir(root.join("new")).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }
    for f in ["dovecot-uidlist", "dormouse-index", "dormouse-index.log", "dormouse-status"] {
        assert_eq!(mode(&root.join(f)), 0o600, "{f}");
    }
    store.create_mailbox("Private").unwrap();
    assert_eq!(mode(&root.join(".Private")), 0o700);
    assert_eq!(mode(&root.join(".Private/cur")), 0o700);
}

#[test]
fn reads_and_syncs_emit_nothing_and_writes_chain_modseqs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, hook) = store(dir.path());
    for n in 1..=5 {
        append(&store, "INBOX", n);
    }
    // A file written behind our back (procmail style) also gets a UID quietly.
    std::fs::write(dir.path().join("Maildir/new/msg.abcd"), b"Subject: outside\n\nx\n").unwrap();
    let mut chain: Vec<MailboxEvent> = hook.take();
    let mut mb = store.open_mailbox("INBOX").unwrap();
    for m in mb.messages().to_vec() {
        mb.read_message(m.uid).unwrap();
    }
    let changes = mb.sync().unwrap();
    assert!(changes.added.is_empty() && changes.expunged.is_empty() && changes.flags_changed.is_empty());
    store.status("INBOX").unwrap();
    store.list_mailboxes().unwrap();
    assert_eq!(mb.messages().len(), 6);
    assert!(hook.is_empty(), "open + read + sync emit nothing: {:?}", hook.take());
    chain.clear(); // outside delivery above broke the chain on purpose; start fresh
    let all = UidSet::from_range(1, 6);

    let r = mb.store_flags(&UidSet::from_range(1, 2), FlagOp::Add, &seen(), None).unwrap();
    assert_eq!(r.changed.len(), 2);
    let r = mb.store_flags(&UidSet::from_range(1, 2), FlagOp::Add, &seen(), None).unwrap();
    assert!(r.changed.is_empty(), "already seen: no change");
    mb.expunge(None).unwrap();
    assert_eq!(hook.len(), 1, "no-op STORE and EXPUNGE emit nothing");

    let deleted = Flags::system(SystemFlags::DELETED);
    mb.store_flags(&UidSet::from_range(2, 3), FlagOp::Add, &deleted, None).unwrap();
    mb.store_flags(&all, FlagOp::Remove, &seen(), None).unwrap();
    mb.store_flags(&UidSet::from_range(4, 4), FlagOp::Replace, &Flags::from_imap_names(["$Junk", "\\Flagged"]).unwrap(), None)
        .unwrap();
    let expunged = mb.expunge(Some(&UidSet::from_range(3, 10))).unwrap();
    assert_eq!(expunged, [3]);
    append(&store, "INBOX", 7);
    chain.extend(hook.take());
    let kinds: Vec<EventKind> = chain.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::FlagsSet,
            EventKind::FlagsSet,
            EventKind::FlagsClear,
            EventKind::FlagsSet,
            EventKind::MessageExpunge,
            EventKind::MessageNew
        ]
    );
    for pair in chain.windows(2) {
        assert_eq!(pair[1].modseq_before, pair[0].modseq_after, "modseq chain: {pair:?}");
    }
    for ev in &chain {
        assert!(ev.modseq_after > ev.modseq_before);
        assert_eq!(ev.modseq_after, ev.status.highestmodseq);
        assert_eq!(ev.user, "alice");
        assert_eq!(ev.mailbox, "INBOX");
        assert!(ev.timestamp_ms > 0);
    }
    assert_eq!(chain[0].uids.to_imap_string(), "1:2");
    assert_eq!(chain[2].uids.to_imap_string(), "1:2");
    assert_eq!(chain[2].flags, seen());
    assert_eq!(chain[4].uids.to_imap_string(), "3");
    assert_eq!(chain[4].status.messages, 5);
    assert_eq!(chain[5].status.messages, 6);
    assert_eq!(chain[5].status.uidnext, 8);
    assert_eq!(store.status("INBOX").unwrap(), chain[5].status);

    // A Replace that adds and removes emits FlagsSet then FlagsClear with one MODSEQ.
    mb.store_flags(&UidSet::from_range(4, 4), FlagOp::Replace, &seen(), None).unwrap();
    let evs = hook.take();
    assert_eq!(evs.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::FlagsSet, EventKind::FlagsClear]);
    assert_eq!(evs[0].modseq_before, chain[5].modseq_after);
    assert_eq!(evs[1].modseq_before, evs[0].modseq_after);
    assert_eq!(evs[1].modseq_after, evs[0].modseq_after);
    assert_eq!(evs[1].flags.to_imap_string(), "\\Flagged $Junk");

    let changes = mb.sync().unwrap();
    assert_eq!(changes.added, [7]);
    assert!(changes.expunged.is_empty());
    assert!(changes.flags_changed.is_empty(), "own changes were applied to the view already");
    assert_eq!(mb.highestmodseq(), store.status("INBOX").unwrap().highestmodseq);
}

#[test]
fn unchangedsince_and_per_message_modseq() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _hook) = store(dir.path());
    for n in 1..=3 {
        append(&store, "INBOX", n);
    }
    let mut mb = store.open_mailbox("INBOX").unwrap();
    let base = mb.highestmodseq();
    let r = mb.store_flags(&UidSet::from_range(1, 1), FlagOp::Add, &seen(), None).unwrap();
    let m1 = r.changed[0].2;
    assert!(m1 > base);
    assert_eq!(mb.message(1).unwrap().modseq, m1);
    assert!(mb.message(2).unwrap().modseq < m1);
    let flagged = Flags::system(SystemFlags::FLAGGED);
    let r = mb.store_flags(&UidSet::from_range(1, 3), FlagOp::Add, &flagged, Some(base)).unwrap();
    assert_eq!(r.modified.to_imap_string(), "1");
    assert_eq!(r.changed.iter().map(|c| c.0).collect::<Vec<_>>(), [2, 3]);
    assert!(!mb.message(1).unwrap().flags.system.contains(SystemFlags::FLAGGED));
    assert!(mb.message(3).unwrap().flags.system.contains(SystemFlags::FLAGGED));
    // Invalid keywords are refused before anything is written.
    let bad = Flags { system: SystemFlags::empty(), keywords: vec!["bad\nkw".into()] };
    assert!(matches!(mb.store_flags(&UidSet::from_range(1, 3), FlagOp::Add, &bad, None), Err(StoreError::InvalidMessage(_))));
}

#[test]
fn keywords_beyond_26_live_in_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _hook) = store(dir.path());
    append(&store, "INBOX", 1);
    let mut mb = store.open_mailbox("INBOX").unwrap();
    let names: Vec<String> = (0..30).map(|i| format!("kw{i:02}")).collect();
    let kws = Flags::from_imap_names(names.iter().map(String::as_str)).unwrap();
    mb.store_flags(&UidSet::from_range(1, 1), FlagOp::Add, &kws, None).unwrap();
    let keywords_file = std::fs::read_to_string(dir.path().join("Maildir/dovecot-keywords")).unwrap();
    assert_eq!(keywords_file.lines().count(), 26);
    assert!(keywords_file.starts_with("0 kw00\n1 kw01\n"));
    let file = std::fs::read_dir(dir.path().join("Maildir/new")).unwrap().next().unwrap().unwrap();
    assert!(file.file_name().to_str().unwrap().ends_with(":2,abcdefghijklmnopqrstuvwxyz"));
    let again = store.open_mailbox("INBOX").unwrap();
    assert_eq!(again.message(1).unwrap().flags, kws);
    // Removing a letter keyword and an index-only one.
    let rm = Flags::from_imap_names(["kw00", "kw29"]).unwrap();
    mb.store_flags(&UidSet::from_range(1, 1), FlagOp::Remove, &rm, None).unwrap();
    let again = store.open_mailbox("INBOX").unwrap();
    assert_eq!(again.message(1).unwrap().flags.keywords.len(), 28);
    assert!(!again.message(1).unwrap().flags.keywords.contains(&"kw29".to_string()));
}

#[test]
fn outside_changes_are_noticed_by_sync_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let (store, hook) = store(dir.path());
    append(&store, "INBOX", 1);
    let mut mb = store.open_mailbox("INBOX").unwrap();
    mb.clear_recent().unwrap();
    assert!(!mb.message(1).unwrap().recent);
    assert_eq!(store.status("INBOX").unwrap().recent, 0);
    let before = store.status("INBOX").unwrap();
    // Procmail-style deliveries: names not time-ordered; mtime decides the UID order.
    let older = root.join("new/zzz-older");
    let newer = root.join("new/aaa-newer");
    std::fs::write(&newer, b"Subject: newer\n\nb\n").unwrap();
    std::fs::write(&older, b"Subject: older\n\na\n").unwrap();
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&older).unwrap().set_modified(t).unwrap();
    let status = store.status("INBOX").unwrap();
    assert_eq!(status.messages, 3, "status notices the outside delivery");
    assert_eq!(status.uidnext, 4);
    assert!(status.highestmodseq > before.highestmodseq);
    // Another program sets \Seen by renaming in cur/.
    let cur_file = std::fs::read_dir(root.join("cur")).unwrap().next().unwrap().unwrap().path();
    let renamed = format!("{}S", cur_file.display());
    std::fs::rename(&cur_file, &renamed).unwrap();
    let changes = mb.sync().unwrap();
    assert_eq!(changes.added, [2, 3]);
    assert_eq!(changes.flags_changed, [1]);
    assert!(mb.message(1).unwrap().flags.system.contains(SystemFlags::SEEN));
    assert!(mb.message(1).unwrap().modseq > before.highestmodseq);
    assert_eq!(mb.read_message(2).unwrap(), b"Subject: older\r\n\r\na\r\n");
    assert_eq!(mb.read_message(3).unwrap(), b"Subject: newer\r\n\r\nb\r\n");
    assert_eq!(mb.message(2).unwrap().size, 21);
    // Deleted behind our back.
    std::fs::remove_file(&renamed).unwrap();
    let changes = mb.sync().unwrap();
    assert_eq!(changes.expunged, [1]);
    assert_eq!(mb.expunged_since(before.highestmodseq).unwrap().unwrap().to_imap_string(), "1");
    assert!(hook.take().len() == 1, "only the first append emitted");
}

#[test]
fn copy_move_and_expunged_since() {
    let dir = tempfile::tempdir().unwrap();
    let (store, hook) = store(dir.path());
    store.create_mailbox("Archive").unwrap();
    for n in 1..=4 {
        store
            .append("INBOX", &msg(n), &AppendOptions { internal_date: Some(1_600_000_000 + i64::from(n)), ..Default::default() })
            .unwrap();
    }
    let mut mb = store.open_mailbox("INBOX").unwrap();
    let kw = Flags::from_imap_names(["\\Answered", "$Label1"]).unwrap();
    mb.store_flags(&UidSet::from_range(2, 2), FlagOp::Add, &kw, None).unwrap();
    hook.take();
    let copy = mb.copy_to(&UidSet::from_range(1, 2), "Archive").unwrap();
    assert_eq!(copy.source_uids, [1, 2]);
    assert_eq!(copy.target_uids, [1, 2]);
    let archive_status = store.status("Archive").unwrap();
    assert_eq!(copy.uidvalidity, archive_status.uidvalidity);
    let ev = hook.take();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, EventKind::MessageAppend);
    assert_eq!(ev[0].mailbox, "Archive");
    assert_eq!(ev[0].summary.as_ref().unwrap().subject, "message 1");
    let archive = store.open_mailbox("Archive").unwrap();
    assert_eq!(archive.message(2).unwrap().flags, kw);
    assert_eq!(archive.message(1).unwrap().internal_date, 1_600_000_001);
    assert_eq!(archive.read_message(2).unwrap(), mb.read_message(2).unwrap());

    let modseq_before_move = mb.highestmodseq();
    let moved = mb.move_to(&UidSet::from_range(3, 4), "Archive").unwrap();
    assert_eq!(moved.target_uids, [3, 4]);
    assert_eq!(mb.messages().iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
    let ev = hook.take();
    assert_eq!(ev.iter().map(|e| (e.kind, e.mailbox.as_str())).collect::<Vec<_>>(),
        [(EventKind::MessageAppend, "Archive"), (EventKind::MessageExpunge, "INBOX")]);
    assert_eq!(ev[1].uids.to_imap_string(), "3:4");
    assert_eq!(mb.expunged_since(modseq_before_move).unwrap().unwrap().to_imap_string(), "3:4");
    assert_eq!(mb.expunged_since(mb.highestmodseq()).unwrap().unwrap().len(), 0);
    assert!(matches!(mb.copy_to(&UidSet::from_range(1, 1), "Nope"), Err(StoreError::NoSuchMailbox(_))));
    assert_eq!(store.status("Archive").unwrap().messages, 4);
}

#[test]
fn mailbox_management() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let (store, hook) = store(dir.path());
    for bad in ["", "a//b", "/a", "a/", "..", "a/../b", "x\u{7}", "a/./b"] {
        assert!(matches!(store.create_mailbox(bad), Err(StoreError::InvalidMailboxName { .. })), "{bad:?}");
    }
    assert!(matches!(store.create_mailbox("inbox"), Err(StoreError::MailboxExists(_))));
    store.create_mailbox("Work/Projects/Ünïcode&Co").unwrap();
    let created: Vec<String> = hook.take().iter().map(|e| {
        assert_eq!(e.kind, EventKind::MailboxCreate);
        assert!(e.uidvalidity > 0);
        e.mailbox.clone()
    }).collect();
    assert_eq!(created, ["Work", "Work/Projects", "Work/Projects/Ünïcode&Co"]);
    assert!(root.join(".Work.Projects.&ANw-n&AO8-code&-Co/maildirfolder").exists());
    assert!(matches!(store.create_mailbox("Work"), Err(StoreError::MailboxExists(_))));
    store.create_mailbox("Sent").unwrap();
    store.subscribe("Sent").unwrap();
    store.subscribe("Sent").unwrap();
    let evs = hook.take();
    assert_eq!(evs.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::MailboxCreate, EventKind::MailboxSubscribe]);
    let list = store.list_mailboxes().unwrap();
    let names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["INBOX", "Sent", "Work", "Work/Projects", "Work/Projects/Ünïcode&Co"]);
    assert_eq!(list[1].special_use, Some("\\Sent"));
    assert!(list[1].subscribed && !list[2].subscribed);
    assert!(list[2].has_children && !list[4].has_children);

    // Rename with children keeps UIDs and UIDVALIDITY.
    append(&store, "Work/Projects", 1);
    let uv = store.status("Work/Projects").unwrap().uidvalidity;
    hook.take();
    assert!(matches!(store.rename_mailbox("Work", "Work/Sub"), Err(StoreError::NotAllowed(_))));
    assert!(matches!(store.rename_mailbox("Nope", "X"), Err(StoreError::NoSuchMailbox(_))));
    assert!(matches!(store.rename_mailbox("Work", "Sent"), Err(StoreError::MailboxExists(_))));
    store.rename_mailbox("Work", "Old/Work").unwrap();
    let evs = hook.take();
    let renames: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e.kind == EventKind::MailboxRename)
        .map(|e| (e.old_mailbox.clone().unwrap(), e.mailbox.clone()))
        .collect();
    assert_eq!(renames.len(), 3);
    assert!(renames.contains(&("Work/Projects".into(), "Old/Work/Projects".into())));
    assert_eq!(evs[0].kind, EventKind::MailboxCreate, "missing parent Old is created");
    let st = store.status("Old/Work/Projects").unwrap();
    assert_eq!((st.uidvalidity, st.messages), (uv, 1));
    assert!(!store.mailbox_exists("Work"));

    // Renaming INBOX moves its messages and leaves INBOX empty.
    append(&store, "INBOX", 1);
    append(&store, "INBOX", 2);
    hook.take();
    store.rename_mailbox("INBOX", "Before").unwrap();
    let evs = hook.take();
    assert_eq!(evs.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::MailboxRename, EventKind::MessageExpunge]);
    assert_eq!(store.status("INBOX").unwrap().messages, 0);
    let before = store.open_mailbox("Before").unwrap();
    assert_eq!(before.messages().len(), 2);
    assert_eq!(before.read_message(1).unwrap(), String::from_utf8(msg(1)).unwrap().replace('\n', "\r\n").as_bytes());

    // Delete: INBOX refused; children stay (Dovecot's Maildir++ behaviour).
    assert!(matches!(store.delete_mailbox("INBOX"), Err(StoreError::NotAllowed(_))));
    assert!(matches!(store.delete_mailbox("Nope"), Err(StoreError::NoSuchMailbox(_))));
    store.delete_mailbox("Old/Work").unwrap();
    let evs = hook.take();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, EventKind::MailboxDelete);
    assert!(!store.mailbox_exists("Old/Work"));
    assert!(store.mailbox_exists("Old/Work/Projects"));
    let list = store.list_mailboxes().unwrap();
    let parent = list.iter().find(|m| m.name == "Old/Work").expect("missing parent still listed");
    assert!(!parent.selectable && parent.has_children);
    assert!(list.iter().filter(|m| m.name != "Old/Work").all(|m| m.selectable));
    assert!(matches!(store.open_mailbox("Old/Work"), Err(StoreError::NoSuchMailbox(_))));
    store.unsubscribe("Sent").unwrap();
    assert_eq!(hook.take()[0].kind, EventKind::MailboxUnsubscribe);
    assert!(!store.list_mailboxes().unwrap().iter().any(|m| m.subscribed));
    // No temp or trash directories left behind.
    let leftovers: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Re-created mailbox gets a new UIDVALIDITY.
    store.create_mailbox("Old/Work").unwrap();
    assert_ne!(store.status("Old/Work").unwrap().uidvalidity, uv);
}

#[test]
fn quiet_mailbox_sync_fast_path_still_sees_outside_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let (store, _hook) = store(dir.path());
    append(&store, "INBOX", 1);
    let mut mb = store.open_mailbox("INBOX").unwrap();
    mb.clear_recent().unwrap();
    // Pretend the mailbox has been quiet for a while, then sync: the view's
    // stamp is now trusted and an unchanged mailbox syncs without a scan.
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(30);
    for sub in ["cur", "new"] {
        std::fs::File::open(root.join(sub)).unwrap().set_modified(past).unwrap();
    }
    mb.sync().unwrap();
    assert_eq!(mb.sync().unwrap(), Default::default());
    let before = store.status("INBOX").unwrap();
    assert_eq!(store.status("INBOX").unwrap(), before);
    // Another program flags the message: both sync and status notice.
    let file = std::fs::read_dir(root.join("cur")).unwrap().next().unwrap().unwrap().path();
    std::fs::rename(&file, format!("{}F", file.display())).unwrap();
    let changes = mb.sync().unwrap();
    assert_eq!(changes.flags_changed, [1]);
    assert!(mb.message(1).unwrap().flags.system.contains(SystemFlags::FLAGGED));
    assert!(store.status("INBOX").unwrap().highestmodseq > before.highestmodseq);
}

#[test]
fn concurrent_appends_in_one_process_are_group_committed_with_one_event_each() {
    let dir = tempfile::tempdir().unwrap();
    let (store, hook) = store(dir.path());
    let (threads, per_thread) = (8u32, 25u32);
    std::thread::scope(|s| {
        for t in 0..threads {
            let store = store.clone();
            s.spawn(move || {
                for n in 0..per_thread {
                    store.append("INBOX", &msg(t * 1000 + n), &AppendOptions::default()).unwrap();
                }
            });
        }
    });
    let events = hook.take();
    let total = (threads * per_thread) as usize;
    assert_eq!(events.len(), total, "one event per message");
    let mb = store.open_mailbox("INBOX").unwrap();
    assert_eq!(mb.messages().len(), total);
    let mut seen_uids = std::collections::HashSet::new();
    for pair in events.windows(2) {
        assert_eq!(pair[1].modseq_before, pair[0].modseq_after, "one chain across batches");
    }
    for ev in &events {
        assert_eq!(ev.kind, EventKind::MessageNew);
        assert_eq!(ev.uids.len(), 1);
        let uid = ev.uids.first().unwrap();
        assert!(seen_uids.insert(uid), "UID {uid} reported twice");
        // Each event carries the summary of its own message.
        let raw = String::from_utf8(mb.read_message(uid).unwrap()).unwrap();
        let subject = raw.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap();
        assert_eq!(ev.summary.as_ref().unwrap().subject, subject);
    }
    let batches = events.iter().filter(|e| e.modseq_before != e.modseq_after).count();
    eprintln!("{total} appends committed in {batches} batches");
    assert_eq!(store.status("INBOX").unwrap().uidnext, total as u32 + 1);
}

/// Holds the INBOX's `dovecot-uidlist.lock` as another live process on
/// another host would (never stale for 2 minutes).
fn hold_inbox_lock(store: &UserStore) -> std::path::PathBuf {
    let lock = store.mailbox_path("INBOX").unwrap().join("dovecot-uidlist.lock");
    std::fs::write(&lock, format!("{}:otherhost.example", std::process::id())).unwrap();
    lock
}

#[test]
fn clear_recent_and_a_quiet_claiming_sync_take_no_lock_when_nothing_is_recent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _hook) = store(dir.path());
    append(&store, "INBOX", 1);
    let mut mb = store.open_mailbox("INBOX").unwrap();
    assert_eq!(mb.clear_recent().unwrap(), [1]);
    // Let the directories' mtimes settle, so a quiet mailbox is known quiet.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    mb.sync().unwrap();
    let lock = hold_inbox_lock(&store);
    let t = std::time::Instant::now();
    assert!(mb.clear_recent().unwrap().is_empty());
    let (changes, claimed) = mb.sync_claiming_recent().unwrap();
    assert!(claimed.is_empty() && changes.added.is_empty());
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "waited for the lock: {:?}", t.elapsed());
    std::fs::remove_file(lock).unwrap();
}

#[test]
fn a_claiming_sync_finds_new_mail_and_claims_it_in_one_load() {
    let dir = tempfile::tempdir().unwrap();
    let (store, hook) = store(dir.path());
    append(&store, "INBOX", 1);
    let mut mb = store.open_mailbox("INBOX").unwrap();
    assert_eq!(mb.clear_recent().unwrap(), [1]);
    append(&store, "INBOX", 2);
    let inbox = store.mailbox_path("INBOX").unwrap();
    std::fs::write(inbox.join("new/procmail.1"), msg(3)).unwrap();
    hook.take();
    let (changes, claimed) = mb.sync_claiming_recent().unwrap();
    assert_eq!(changes.added, [2, 3]);
    assert_eq!(claimed, [2, 3]);
    assert!(mb.messages().iter().all(|m| !m.recent), "all in cur/ now");
    assert_eq!(std::fs::read_dir(inbox.join("new")).unwrap().count(), 0);
    assert_eq!(mb.status().recent, 0);
    assert!(hook.take().is_empty(), "claiming \\Recent is not an event");
    // Nothing left to claim.
    let (changes, claimed) = mb.sync_claiming_recent().unwrap();
    assert!(changes.added.is_empty() && claimed.is_empty());
}
