//! Byte-script tests of the core with an in-memory storage.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use storage_hooks::{EventKind, Flags, MailboxEvent, MailboxStatus, SystemFlags, UidSet};

use super::source::{ChangedFlags, MailboxSnapshot, SourceError, StateSource};
use super::*;
use crate::record::{ClientTransport, Extensions, HibernationRecord, SelectedView};

/// One fake mailbox: UID -> (flags, modseq).
#[derive(Default, Clone)]
struct FakeBox {
    uidvalidity: u32,
    msgs: BTreeMap<u32, (Flags, u64)>,
    modseq: u64,
    uidnext: u32,
}

#[derive(Default, Clone)]
struct FakeStore {
    boxes: Rc<RefCell<BTreeMap<String, FakeBox>>>,
    reads: Rc<RefCell<u32>>,
}

impl FakeStore {
    fn status_of(b: &FakeBox) -> MailboxStatus {
        MailboxStatus {
            messages: b.msgs.len() as u32,
            unseen: b.msgs.values().filter(|(f, _)| !f.system.contains(SystemFlags::SEEN)).count() as u32,
            recent: 0,
            uidnext: b.uidnext,
            uidvalidity: b.uidvalidity,
            highestmodseq: b.modseq,
            size: 0,
        }
    }

    fn create(&self, name: &str, n: u32) {
        let mut b = FakeBox { uidvalidity: 7, modseq: 1, uidnext: n + 1, ..Default::default() };
        for uid in 1..=n {
            b.msgs.insert(uid, (Flags::default(), 1));
        }
        self.boxes.borrow_mut().insert(name.into(), b);
    }

    /// Applies a change to the fake store and returns its event.
    fn change(&self, name: &str, kind: EventKind, uids: &[u32], flag: SystemFlags) -> MailboxEvent {
        let mut boxes = self.boxes.borrow_mut();
        let b = boxes.get_mut(name).unwrap();
        let before = b.modseq;
        b.modseq += 1;
        let m = b.modseq;
        for &uid in uids {
            match kind {
                EventKind::MessageNew => {
                    b.msgs.insert(uid, (Flags::default(), m));
                    b.uidnext = uid + 1;
                }
                EventKind::MessageExpunge => {
                    b.msgs.remove(&uid);
                }
                EventKind::FlagsSet => {
                    let e = b.msgs.get_mut(&uid).unwrap();
                    e.0.system = e.0.system.union(flag);
                    e.1 = m;
                }
                _ => {}
            }
        }
        MailboxEvent {
            kind,
            user: "bob".into(),
            mailbox: name.into(),
            old_mailbox: None,
            uidvalidity: b.uidvalidity,
            uids: uids.iter().copied().collect(),
            flags: Flags::system(flag),
            status: Self::status_of(b),
            modseq_before: before,
            modseq_after: m,
            summary: None,
            timestamp_ms: 0,
        }
    }
}

impl StateSource for FakeStore {
    fn status(&self, _: &str, _: &Path, mailbox: &str) -> Result<MailboxStatus, SourceError> {
        *self.reads.borrow_mut() += 1;
        self.boxes.borrow().get(mailbox).map(Self::status_of).ok_or_else(|| SourceError("no such mailbox".into()))
    }

    fn snapshot(&self, _: &str, _: &Path, mailbox: &str) -> Result<MailboxSnapshot, SourceError> {
        *self.reads.borrow_mut() += 1;
        let boxes = self.boxes.borrow();
        let b = boxes.get(mailbox).ok_or_else(|| SourceError("no such mailbox".into()))?;
        Ok(MailboxSnapshot { status: Self::status_of(b), uids: b.msgs.keys().copied().collect() })
    }

    fn changed_flags(&self, _: &str, _: &Path, mailbox: &str, since: u64) -> Result<Vec<ChangedFlags>, SourceError> {
        *self.reads.borrow_mut() += 1;
        let boxes = self.boxes.borrow();
        let b = boxes.get(mailbox).ok_or_else(|| SourceError("no such mailbox".into()))?;
        Ok(b.msgs
            .iter()
            .filter(|(_, (_, m))| *m > since)
            .map(|(&uid, (f, m))| ChangedFlags { uid, flags: f.clone(), modseq: *m })
            .collect())
    }
}

fn record(idle: bool, n: u32, modseq: u64, input: &[u8]) -> HibernationRecord {
    HibernationRecord {
        session_id: 1,
        user: "bob".into(),
        maildir: "/nonexistent".into(),
        peer: "127.0.0.1:5000".parse().unwrap(),
        local: "127.0.0.1:143".parse().unwrap(),
        transport: ClientTransport::PlainTcp,
        authenticated_at_ms: 0,
        enabled: Extensions::default(),
        idle_tag: idle.then(|| "A1".to_string()),
        selected: Some(SelectedView {
            mailbox: "INBOX".into(),
            read_only: false,
            uidvalidity: 7,
            uids: UidSet::from_range(1, n),
            highest_modseq_seen: modseq,
        }),
        pending_input: input.to_vec(),
        tls: None,
        notify: None,
        deflate: None,
    }
}

type Core = Hibernator<FakeStore, u32>;

fn setup(n: u32) -> (FakeStore, Core, Instant) {
    let store = FakeStore::default();
    store.create("INBOX", n);
    store.create("Sent", 2);
    let t0 = Instant::now();
    let core = Hibernator::new(Settings::default(), store.clone(), t0);
    (store, core, t0)
}

fn out(core: &mut Core, key: SessionKey) -> String {
    String::from_utf8(core.take_output(key)).unwrap()
}

#[test]
fn delivery_expunge_and_flags_reach_an_idle_client() {
    let (store, mut core, _) = setup(5);
    let key = core.admit(record(true, 5, 1, b""), 10, 0);
    let actions = core.take_actions();
    assert!(matches!(&actions[..], [Action::Subscribe(u)] if u == "bob"));
    assert_eq!(out(&mut core, key), "");
    core.on_event(&store.change("INBOX", EventKind::MessageNew, &[6], SystemFlags::empty()));
    assert_eq!(core.take_dirty(), vec![key]);
    assert_eq!(out(&mut core, key), "* 6 EXISTS\r\n");
    core.on_event(&store.change("INBOX", EventKind::MessageExpunge, &[2, 3], SystemFlags::empty()));
    assert_eq!(out(&mut core, key), "* 2 EXPUNGE\r\n* 2 EXPUNGE\r\n");
    core.on_event(&store.change("INBOX", EventKind::FlagsSet, &[5], SystemFlags::SEEN));
    assert_eq!(out(&mut core, key), "* 3 FETCH (UID 5 FLAGS (\\Seen))\r\n");
    assert_eq!(core.counters().notifications, 3);
    // DONE, then a pipelined FETCH goes back with exactly its bytes.
    core.on_input(key, b"DONE\r\nA2 UID FETCH 1:* (FLAGS)\r\n");
    assert_eq!(out(&mut core, key), "A1 OK Idle completed.\r\n");
    core.output_flushed(key);
    let actions = core.take_actions();
    let Some(Action::HandBack { handle, record, reason }) = actions.iter().find(|a| matches!(a, Action::HandBack { .. }))
    else {
        panic!("no hand-back: {actions:?}")
    };
    assert_eq!((*handle, *reason), (10, HandBackReason::Command));
    assert_eq!(record.pending_input, b"A2 UID FETCH 1:* (FLAGS)\r\n");
    assert_eq!(record.idle_tag, None);
    let sel = record.selected.as_ref().unwrap();
    assert_eq!(sel.uids.to_imap_string(), "1,4:6");
    assert_eq!(sel.highest_modseq_seen, 4);
    assert!(actions.iter().any(|a| matches!(a, Action::Unsubscribe(u) if u == "bob")));
    assert!(core.is_empty());
}

#[test]
fn qresync_and_condstore_formats() {
    let (store, mut core, _) = setup(3);
    let mut r = record(true, 3, 1, b"");
    r.enabled = Extensions { condstore: true, qresync: true };
    let key = core.admit(r, 1, 0);
    core.on_event(&store.change("INBOX", EventKind::MessageExpunge, &[1, 3], SystemFlags::empty()));
    assert_eq!(out(&mut core, key), "* VANISHED 1,3\r\n");
    core.on_event(&store.change("INBOX", EventKind::FlagsSet, &[2], SystemFlags::FLAGGED));
    assert_eq!(out(&mut core, key), "* 1 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (3))\r\n");
}

#[test]
fn noop_pollers_get_queued_changes_and_status_is_cached() {
    let (store, mut core, _) = setup(4);
    let key = core.admit(record(false, 4, 1, b""), 1, 0);
    core.take_actions();
    core.on_event(&store.change("INBOX", EventKind::MessageNew, &[5], SystemFlags::empty()));
    core.on_event(&store.change("INBOX", EventKind::FlagsSet, &[1], SystemFlags::SEEN));
    assert_eq!(out(&mut core, key), "", "a non-idle session is not told before its next command");
    core.on_input(key, b"a1 NOOP\r\n");
    assert_eq!(out(&mut core, key), "* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n* 5 EXISTS\r\na1 OK NOOP completed.\r\n");
    let reads = *store.reads.borrow();
    core.on_input(key, b"a2 STATUS INBOX (MESSAGES UIDNEXT UNSEEN)\r\n");
    assert_eq!(out(&mut core, key), "* STATUS \"INBOX\" (MESSAGES 5 UIDNEXT 6 UNSEEN 4)\r\na2 OK Status completed.\r\n");
    assert_eq!(*store.reads.borrow(), reads, "STATUS of the selected mailbox comes from the cache");
    core.on_input(key, b"a3 STATUS Sent (MESSAGES)\r\na4 STATUS Sent (MESSAGES)\r\n");
    assert_eq!(
        out(&mut core, key),
        "* STATUS \"Sent\" (MESSAGES 2)\r\na3 OK Status completed.\r\n* STATUS \"Sent\" (MESSAGES 2)\r\na4 OK Status completed.\r\n"
    );
    assert_eq!(*store.reads.borrow(), reads + 1, "one storage read, then cached");
    core.on_input(key, b"a5 STATUS Nope (MESSAGES)\r\n");
    assert!(matches!(&core.take_actions()[..], [Action::HandBack { reason: HandBackReason::Command, .. }, ..]));
    assert_eq!(core.counters().hand_backs_total(), 1);
}

#[test]
fn idle_noop_idle_cycle_and_logout() {
    let (_, mut core, _) = setup(1);
    let key = core.admit(record(false, 1, 1, b""), 1, 0);
    core.on_input(key, b"b1 IDLE\r\n");
    assert_eq!(out(&mut core, key), "+ idling\r\n");
    core.on_input(key, b"DONE\r\nb2 CHECK\r\nb3 LOGOUT\r\nb4 NOOP\r\n");
    assert_eq!(
        out(&mut core, key),
        "b1 OK Idle completed.\r\nb2 OK CHECK completed.\r\n* BYE Logging out.\r\nb3 OK Logout completed.\r\n"
    );
    core.output_flushed(key);
    let actions = core.take_actions();
    assert!(matches!(actions[1], Action::Close { handle: 1 }), "{actions:?}");
    assert!(matches!(&actions[2], Action::Unsubscribe(u) if u == "bob"));
    assert_eq!(core.counters().answered, 4);
}

#[test]
fn split_at_every_byte_boundary() {
    let script: &[u8] = b"DONE\r\nA2 NOOP\r\nA3 IDLE\r\nDONE\r\nA4 UID FETCH 1:* (FLAGS)\r\nA5 NOOP\r\n";
    for cut in 0..=script.len() {
        let (_, mut core, _) = setup(2);
        let key = core.admit(record(true, 2, 1, b""), 1, 0);
        core.on_input(key, &script[..cut]);
        core.on_input(key, &script[cut..]);
        let text = out(&mut core, key);
        assert_eq!(text, "A1 OK Idle completed.\r\nA2 OK NOOP completed.\r\n+ idling\r\nA3 OK Idle completed.\r\n", "cut {cut}");
        core.output_flushed(key);
        let actions = core.take_actions();
        let Some(Action::HandBack { record, .. }) = actions.iter().find(|a| matches!(a, Action::HandBack { .. })) else {
            panic!("cut {cut}: no hand-back")
        };
        assert_eq!(record.pending_input, b"A4 UID FETCH 1:* (FLAGS)\r\nA5 NOOP\r\n", "cut {cut}");
    }
}

#[test]
fn input_during_idle_other_than_done_goes_back_in_idle() {
    let (_, mut core, _) = setup(1);
    let key = core.admit(record(true, 1, 1, b""), 1, 0);
    core.on_input(key, b"A9 NOOP\r\n");
    let actions = core.take_actions();
    let Some(Action::HandBack { record, reason, .. }) = actions.iter().find(|a| matches!(a, Action::HandBack { .. }))
    else {
        panic!("{actions:?}")
    };
    assert_eq!(*reason, HandBackReason::IdleInput);
    assert_eq!(record.idle_tag.as_deref(), Some("A1"));
    assert_eq!(record.pending_input, b"A9 NOOP\r\n");
}

#[test]
fn pending_input_in_the_record_is_processed_on_arrival() {
    let (_, mut core, _) = setup(1);
    let key = core.admit(record(true, 1, 1, b"DONE\r\nA2 NOOP\r\nA3 SEL"), 1, 0);
    assert_eq!(out(&mut core, key), "A1 OK Idle completed.\r\nA2 OK NOOP completed.\r\n");
    core.on_input(key, b"ECT INBOX\r\n");
    let actions = core.take_actions();
    let Some(Action::HandBack { record, .. }) = actions.iter().find(|a| matches!(a, Action::HandBack { .. })) else {
        panic!("{actions:?}")
    };
    assert_eq!(record.pending_input, b"A3 SELECT INBOX\r\n");
}

#[test]
fn identical_views_are_shared_and_diverge_on_write() {
    let (store, mut core, _) = setup(1000);
    let idle: Vec<SessionKey> = (0..10).map(|i| core.admit(record(true, 1000, 1, b""), i, 0)).collect();
    let polling: Vec<SessionKey> = (0..10).map(|i| core.admit(record(false, 1000, 1, b""), 100 + i, 0)).collect();
    assert_eq!(*store.reads.borrow(), 1, "one status read for twenty sessions");
    core.on_event(&store.change("INBOX", EventKind::MessageNew, &[1001], SystemFlags::empty()));
    for &k in &idle {
        assert_eq!(out(&mut core, k), "* 1001 EXISTS\r\n");
    }
    // Poller views are the old shared one; they catch up on NOOP and then
    // share the current one again.
    for &k in &polling {
        core.on_input(k, b"x NOOP\r\n");
        assert_eq!(out(&mut core, k), "* 1001 EXISTS\r\nx OK NOOP completed.\r\n");
    }
    let infos = core.session_infos();
    assert_eq!(infos.len(), 20);
    assert_eq!(core.len(), 20);
}

#[test]
fn gap_triggers_resync_from_storage() {
    let (store, mut core, _) = setup(3);
    let key = core.admit(record(true, 3, 1, b""), 1, 0);
    // An event is lost (not given to the core); the next one breaks the chain.
    let _lost = store.change("INBOX", EventKind::MessageExpunge, &[1], SystemFlags::empty());
    core.on_event(&store.change("INBOX", EventKind::MessageNew, &[4], SystemFlags::empty()));
    assert_eq!(core.counters().resyncs, 1);
    assert_eq!(out(&mut core, key), "* 1 EXPUNGE\r\n* 3 EXISTS\r\n");
    // A bus-level resync with nothing changed writes nothing.
    core.on_resync(Some("bob"), None);
    assert_eq!(out(&mut core, key), "");
    assert_eq!(core.counters().resyncs, 2);
}

#[test]
fn stale_view_on_arrival_is_caught_up() {
    let (store, mut core, _) = setup(3);
    store.change("INBOX", EventKind::MessageNew, &[4], SystemFlags::empty());
    store.change("INBOX", EventKind::FlagsSet, &[2], SystemFlags::SEEN);
    let key = core.admit(record(true, 3, 1, b""), 1, 0);
    assert_eq!(out(&mut core, key), "* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n* 4 EXISTS\r\n");
}

#[test]
fn mailbox_deleted_or_uidvalidity_changed_hands_back() {
    let (store, mut core, _) = setup(3);
    let key = core.admit(record(true, 3, 1, b""), 1, 0);
    let _ = key;
    let mut ev = store.change("INBOX", EventKind::MailboxDelete, &[], SystemFlags::empty());
    ev.uids = UidSet::new();
    core.on_event(&ev);
    let actions = core.take_actions();
    assert!(actions.iter().any(|a| matches!(a, Action::HandBack { reason: HandBackReason::MailboxChanged, .. })));
    let mut r = record(true, 3, 2, b"");
    r.selected.as_mut().unwrap().uidvalidity = 99;
    core.admit(r, 2, 0);
    let actions = core.take_actions();
    assert!(actions.iter().any(|a| matches!(a, Action::HandBack { reason: HandBackReason::UidValidity, .. })));
}

#[test]
fn keepalive_from_the_wheel_only_for_idle_sessions() {
    let (_, mut core, t0) = setup(1);
    let idle = core.admit(record(true, 1, 1, b""), 1, 0);
    let busy = core.admit(record(false, 1, 1, b""), 2, 0);
    core.on_tick(t0 + Duration::from_secs(60));
    assert_eq!(out(&mut core, idle), "");
    core.on_tick(t0 + Duration::from_secs(120));
    assert_eq!(out(&mut core, idle), "* OK Still here\r\n");
    assert_eq!(out(&mut core, busy), "");
    core.on_tick(t0 + Duration::from_secs(240));
    assert_eq!(out(&mut core, idle), "* OK Still here\r\n");
    assert_eq!(core.counters().keepalives, 2);
}

#[test]
fn blocked_output_delays_the_hand_back_and_keeps_order() {
    let (store, mut core, _) = setup(1);
    let key = core.admit(record(true, 1, 1, b""), 1, 0);
    core.take_actions();
    core.on_event(&store.change("INBOX", EventKind::MessageNew, &[2], SystemFlags::empty()));
    let first = core.take_output(key);
    assert!(core.output_blocked(key, &first[3..]));
    core.on_input(key, b"DONE\r\nA2 FETCH 1 BODY[]\r\n");
    assert!(core.take_actions().is_empty(), "hand-back waits for the output");
    assert!(!core.wants_input(key));
    assert_eq!(out(&mut core, key), " EXISTS\r\nA1 OK Idle completed.\r\n");
    core.output_flushed(key);
    assert!(matches!(&core.take_actions()[..], [Action::HandBack { .. }, Action::Unsubscribe(_)]));
}

#[test]
fn clients_leaving_free_everything() {
    let (_, mut core, _) = setup(10);
    let keys: Vec<SessionKey> = (0..2000).map(|i| core.admit(record(i % 2 == 0, 10, 1, b""), i, 0)).collect();
    assert_eq!(core.len(), 2000);
    for k in keys {
        assert!(core.client_gone(k).is_some());
        assert!(core.client_gone(k).is_none(), "stale key must not match");
    }
    assert!(core.is_empty());
    assert_eq!(core.counters().ended, 2000);
    let actions = core.take_actions();
    assert!(matches!(actions.last(), Some(Action::Unsubscribe(_))));
}

#[test]
fn change_before_the_subscription_took_effect_is_caught_up() {
    let (store, mut core, _) = setup(2);
    let key = core.admit(record(true, 2, 1, b""), 1, 0);
    let reads = *store.reads.borrow();
    // Nothing moved: one cheap status read, no resync.
    core.on_subscribed("bob");
    assert_eq!(core.counters().resyncs, 0);
    assert_eq!(*store.reads.borrow(), reads + 1);
    // A delivery whose event was published before we were subscribed.
    let _missed = store.change("INBOX", EventKind::MessageNew, &[3], SystemFlags::empty());
    core.on_subscribed("bob");
    assert_eq!(core.counters().resyncs, 1);
    assert_eq!(out(&mut core, key), "* 3 EXISTS\r\n");
}

#[test]
fn idle_timeout_and_autologout_say_bye() {
    let store = FakeStore::default();
    store.create("INBOX", 1);
    let t0 = Instant::now();
    let settings = Settings {
        idle_timeout: Duration::from_secs(300),
        autologout: Duration::from_secs(600),
        keepalive_interval: Duration::from_secs(60),
        ..Settings::default()
    };
    let mut core: Core = Hibernator::new(settings, store, t0);
    let idle = core.admit(record(true, 1, 1, b""), 1, 0);
    let poller = core.admit(record(false, 1, 1, b""), 2, 0);
    core.on_tick(t0 + Duration::from_secs(240));
    core.set_now(t0 + Duration::from_secs(250));
    core.on_input(poller, b"a NOOP\r\n");
    assert_eq!(out(&mut core, poller), "a OK NOOP completed.\r\n");
    core.on_tick(t0 + Duration::from_secs(300));
    assert_eq!(out(&mut core, idle), "* OK Still here\r\n* BYE Disconnected for inactivity.\r\n");
    core.output_flushed(idle);
    assert!(core.take_actions().iter().any(|a| matches!(a, Action::Close { handle: 1 })));
    // The poller's NOOP at 250 s restarted its clock: still there at 600 s.
    core.on_tick(t0 + Duration::from_secs(600));
    assert_eq!(out(&mut core, poller), "");
    core.on_tick(t0 + Duration::from_secs(900));
    assert_eq!(out(&mut core, poller), "* BYE Disconnected for inactivity.\r\n");
    assert_eq!(core.counters().timeouts, 2);
}

#[test]
fn events_of_one_group_commit_sharing_a_modseq_all_reach_the_idler() {
    let (store, mut core, _) = setup(3);
    let key = core.admit(record(true, 3, 1, b""), 1, 0);
    // Two deliveries committed together: both events carry the same
    // MODSEQ pair, the second must not be taken for already applied.
    let first = store.change("INBOX", EventKind::MessageNew, &[4], SystemFlags::empty());
    let mut second = store.change("INBOX", EventKind::MessageNew, &[5], SystemFlags::empty());
    second.modseq_before = first.modseq_before;
    second.modseq_after = first.modseq_after;
    core.on_event(&first);
    assert_eq!(out(&mut core, key), "* 4 EXISTS\r\n");
    core.on_event(&second);
    assert_eq!(out(&mut core, key), "* 5 EXISTS\r\n");
    // A repeat of an event already in the view changes nothing and reads nothing.
    let resyncs = core.counters().resyncs;
    core.on_event(&first);
    core.on_event(&second);
    assert_eq!(out(&mut core, key), "");
    assert_eq!(core.counters().resyncs, resyncs);
    // The hand-back carries every message.
    core.on_input(key, b"DONE\r\nA2 FETCH 1:* UID\r\n");
    assert_eq!(out(&mut core, key), "A1 OK Idle completed.\r\n");
    core.output_flushed(key);
    let actions = core.take_actions();
    let Some(Action::HandBack { record, .. }) = actions.iter().find(|a| matches!(a, Action::HandBack { .. })) else {
        panic!("no hand-back: {actions:?}")
    };
    assert_eq!(record.selected.as_ref().unwrap().uids.to_imap_string(), "1:5");
}

#[test]
fn mailboxes_are_watched_while_selected_and_unselected_status_can_be_read_each_time() {
    let store = FakeStore::default();
    store.create("INBOX", 3);
    store.create("Sent", 2);
    let t0 = Instant::now();
    let settings = Settings { unselected_status: UnselectedStatus::ReadEachTime, ..Settings::default() };
    let mut core: Core = Hibernator::new(settings, store.clone(), t0);
    let first = core.admit(record(false, 3, 1, b""), 1, 0);
    let second = core.admit(record(false, 3, 1, b""), 2, 0);
    assert_eq!(
        core.take_watch_changes(),
        vec![WatchChange::Selected { user: "bob".into(), mailbox: "INBOX".into() }],
        "one watch for both sessions of the mailbox"
    );
    let reads = *store.reads.borrow();
    core.on_input(first, b"a1 STATUS INBOX (MESSAGES)\r\na2 STATUS Sent (MESSAGES)\r\na3 STATUS Sent (MESSAGES)\r\n");
    assert_eq!(
        out(&mut core, first),
        "* STATUS \"INBOX\" (MESSAGES 3)\r\na1 OK Status completed.\r\n\
         * STATUS \"Sent\" (MESSAGES 2)\r\na2 OK Status completed.\r\n\
         * STATUS \"Sent\" (MESSAGES 2)\r\na3 OK Status completed.\r\n"
    );
    assert_eq!(*store.reads.borrow(), reads + 2, "the selected (watched) mailbox from the cache, Sent read each time");
    core.client_gone(first);
    assert!(core.take_watch_changes().is_empty(), "the other session still has INBOX selected");
    core.client_gone(second);
    assert_eq!(core.take_watch_changes(), vec![WatchChange::Released { user: "bob".into(), mailbox: "INBOX".into() }]);
}

#[test]
fn notify_reports_other_mailboxes_without_waking_and_travels_back() {
    use crate::notify::{Events, Filter, MailboxGroup, NotifySpec};
    let (store, mut core, _) = setup(3);
    let spec = NotifySpec {
        groups: vec![MailboxGroup {
            filter: Filter::Personal,
            events: Events { message_new: true, message_expunge: true, mailbox_name: true, ..Default::default() },
        }],
        ..Default::default()
    };
    let mut rec = record(true, 3, 1, b"");
    rec.notify = Some(spec.clone());
    let key = core.admit(rec, 1, 0);
    let plain = core.admit(record(true, 3, 1, b""), 2, 0);
    core.take_actions();
    core.on_event(&store.change("Sent", EventKind::MessageNew, &[3], SystemFlags::empty()));
    assert_eq!(out(&mut core, key), "* STATUS \"Sent\" (MESSAGES 3 UIDNEXT 4 UNSEEN 3)\r\n");
    assert_eq!(out(&mut core, plain), "");
    let mut created = store.change("Sent", EventKind::MailboxCreate, &[], SystemFlags::empty());
    created.mailbox = "Archive".into();
    core.on_event(&created);
    assert_eq!(out(&mut core, key), "* LIST () \"/\" \"Archive\"\r\n");
    // The selected mailbox is still reported as without NOTIFY.
    core.on_event(&store.change("INBOX", EventKind::MessageNew, &[4], SystemFlags::empty()));
    assert_eq!(out(&mut core, key), "* 4 EXISTS\r\n");
    assert_eq!(out(&mut core, plain), "* 4 EXISTS\r\n");
    // Nothing of this woke the session; a command hands it back with its NOTIFY state.
    assert!(core.take_actions().iter().all(|a| !matches!(a, Action::HandBack { .. })));
    core.on_input(key, b"DONE\r\nA2 FETCH 1 UID\r\n");
    core.take_output(key);
    core.output_flushed(key);
    let actions = core.take_actions();
    let Some(Action::HandBack { record, .. }) = actions.iter().find(|a| matches!(a, Action::HandBack { .. })) else {
        panic!("no hand-back: {actions:?}")
    };
    assert_eq!(record.notify.as_ref(), Some(&spec));
    // The session is gone from the user's NOTIFY list.
    core.on_event(&store.change("Sent", EventKind::MessageNew, &[4], SystemFlags::empty()));
    assert_eq!(out(&mut core, plain), "");
}
