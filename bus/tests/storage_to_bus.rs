//! End to end: a real Maildir store with the bus publisher as its change
//! hook, and a subscriber in the same test.

use std::sync::Arc;
use std::time::Duration;

use bus::{BusConfig, BusMessage, BusPublisher, BusSubscriber};
use storage_hooks::{AppendOptions, EventKind, Hooks, UserStore};

fn msg(n: u32) -> Vec<u8> {
    format!("From: a@example.org\r\nSubject: test {n}\r\n\r\nbody {n}\r\n").into_bytes()
}

#[tokio::test]
async fn store_changes_reach_only_the_owners_subscriber() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = BusConfig::unix_in_run_dir(&tmp.path().join("run"));
    let mut sub = BusSubscriber::from_config(&cfg).await.unwrap();
    sub.subscribe("alice");
    sub.sync().await.unwrap();
    let publisher = BusPublisher::from_config(&cfg).await.unwrap();
    let hooks = Hooks::new().with(Arc::new(publisher.clone()));
    let alice = UserStore::open("alice", tmp.path().join("alice"), hooks.clone()).unwrap();
    let bob = UserStore::open("bob", tmp.path().join("bob"), hooks).unwrap();
    for n in 1..=3 {
        alice.append("INBOX", &msg(n), &AppendOptions::default()).unwrap();
        bob.append("INBOX", &msg(n), &AppendOptions::default()).unwrap();
    }
    let mut last_modseq = None;
    for n in 1..=3u32 {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.recv()).await.unwrap().unwrap();
        let BusMessage::Event(ev) = m else { panic!("unexpected {m:?}") };
        assert_eq!(ev.user, "alice");
        assert_eq!(ev.mailbox, "INBOX");
        assert!(matches!(ev.kind, EventKind::MessageNew | EventKind::MessageAppend), "{:?}", ev.kind);
        assert_eq!(ev.status.messages, n);
        if let Some(prev) = last_modseq {
            assert_eq!(ev.modseq_before, prev, "modseq chain");
        }
        assert_eq!(ev.modseq_after, ev.status.highestmodseq);
        last_modseq = Some(ev.modseq_after);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sub.try_recv().is_none(), "bob's changes must not reach alice's subscriber");
    // Routed by alice's interest file: bob's events were not even sent.
    assert_eq!(sub.counters().filtered, 0);
    assert_eq!(publisher.counters().events_out, 3);
}
