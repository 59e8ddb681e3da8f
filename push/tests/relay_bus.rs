//! The relay fed by the real UNIX-datagram bus from a real store: new mail,
//! flag changes and expunges each become one signed webhook, and one
//! user's registration never sees another user's events. Also over core
//! NATS (the relay's wildcard subscription).

mod relay_support;

use std::sync::Arc;
use std::time::Duration;

use bus::{BusConfig, BusPublisher, BusSubscriber};
use push::relay::bus_source::run_bus_source;
use push::relay::verify_signature;
use push::HeaderPolicy;
use relay_support::*;
use storage_hooks::{AppendOptions, FlagOp, Flags, Hooks, SystemFlags, UidSet, UserStore};

const SECRET: &str = "bus-test-secret-0123456789";

/// The relay's bus source running on `bus_cfg`, and a publisher on it.
struct BusFeed {
    stop_tx: tokio::sync::watch::Sender<bool>,
    source: tokio::task::JoinHandle<Result<(), push::relay::RelayError>>,
    publisher: BusPublisher,
}

impl BusFeed {
    async fn start(relay: &push::relay::Relay, bus_cfg: &BusConfig) -> BusFeed {
        let subscriber = BusSubscriber::from_config(bus_cfg).await.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let source = {
            let relay = relay.clone();
            tokio::spawn(async move {
                run_bus_source(&relay, subscriber, HeaderPolicy::default(), stop_rx, Duration::from_secs(2)).await
            })
        };
        let publisher = BusPublisher::from_config(bus_cfg).await.unwrap();
        BusFeed { stop_tx, source, publisher }
    }
}

/// Stores of alice and bob under `dir` whose changes go to `publisher`.
fn alice_and_bob(dir: &std::path::Path, publisher: &BusPublisher) -> (UserStore, UserStore) {
    let hooks = Hooks::new().with(Arc::new(publisher.clone()));
    let alice = UserStore::open("alice", dir.join("alice"), hooks.clone()).unwrap();
    let bob = UserStore::open("bob", dir.join("bob"), hooks).unwrap();
    (alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_changes_become_signed_webhooks_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let bus_cfg = BusConfig::unix_in_run_dir(&dir.path().join("run"));
    let rx = Receiver::start().await;
    let relay = relay(&dir.path().join("push"), test_config());
    relay.set_registrations(&[
        webhook("alice", &rx.url("/alice"), SECRET, &[]),
        webhook("bob", &rx.url("/bob"), SECRET, &["MessageNew"]),
    ]);
    let BusFeed { stop_tx, source, publisher } = BusFeed::start(&relay, &bus_cfg).await;
    let (alice, bob) = alice_and_bob(dir.path(), &publisher);
    // Until the relay's subscription is in effect nothing can arrive; keep
    // delivering to bob until the first webhook shows up.
    let mut bob_mails = 0;
    for _ in 0..200 {
        bob.append("INBOX", b"Subject: for bob\r\n\r\nhi bob\r\n", &AppendOptions::default()).unwrap();
        bob_mails += 1;
        publisher.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !rx.requests_to("/bob").is_empty() {
            break;
        }
    }
    assert!(!rx.requests_to("/bob").is_empty(), "the relay never received bob's mail");

    let raw = b"From: Carol <carol@example.org>\r\nSubject: Lunch?\r\n\r\nAre you free at noon\r\n";
    alice.append("INBOX", raw, &AppendOptions::default()).unwrap();
    let mut inbox = alice.open_mailbox("INBOX").unwrap();
    inbox.store_flags(&UidSet::from_range(1, 1), FlagOp::Add, &Flags::system(SystemFlags::SEEN), None).unwrap();
    inbox.store_flags(&UidSet::from_range(1, 1), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None).unwrap();
    inbox.expunge(None).unwrap();
    publisher.flush().await.unwrap();

    // New, FlagsSet+MessageRead, FlagsSet+MessageTrash, MessageExpunge.
    let got = rx.wait_for("/alice", 6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = rx.requests_to("/alice");
    assert_eq!(got_all.len(), 6, "{got:#?}");
    let kinds: Vec<&str> = got_all.iter().map(|r| r.event.as_str()).collect();
    for k in ["MessageNew", "MessageRead", "MessageTrash", "MessageExpunge"] {
        assert_eq!(kinds.iter().filter(|x| **x == k).count(), 1, "{k} in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|x| **x == "FlagsSet").count(), 2, "{kinds:?}");
    let ids: std::collections::HashSet<&str> = got_all.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids.len(), 6, "every event has its own id");
    for r in &got_all {
        let ev = r.event();
        assert_eq!(ev.user, "alice");
        assert_eq!(ev.id, r.event_id);
        assert_eq!(ev.event.as_str(), r.event);
        verify_signature(&r.signature, SECRET.as_bytes(), &r.body, now_secs(), 300).unwrap();
    }
    let new = got_all.iter().find(|r| r.event == "MessageNew").unwrap().event();
    assert_eq!((new.mailbox.as_str(), new.uids.as_str(), new.uid_count), ("INBOX", "1", 1));
    assert_eq!(new.subject.as_deref(), Some("Lunch?"));
    assert_eq!(new.from.as_deref(), Some("Carol <carol@example.org>"));
    assert!(new.snippet.as_deref().unwrap_or("").starts_with("Are you free"));
    let read = got_all.iter().find(|r| r.event == "MessageRead").unwrap().event();
    assert!(read.flags.contains(&"\\Seen".to_string()), "{:?}", read.flags);
    let expunge = got_all.iter().find(|r| r.event == "MessageExpunge").unwrap().event();
    assert_eq!((expunge.uids.as_str(), expunge.messages), ("1", 0));

    // bob's registration: only bob's new mail, never alice's events.
    let bob_got = rx.requests_to("/bob");
    assert!(bob_got.iter().all(|r| r.event == "MessageNew" && r.event().user == "bob"));
    assert!(bob_got.len() <= bob_mails);

    stop_tx.send(true).unwrap();
    source.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_bus_reaches_the_relay_for_every_user() {
    let nats_dir = tempfile::tempdir().unwrap();
    let server = bus::LocalNatsServer::start(nats_dir.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut bus_cfg = BusConfig { transport: bus::Transport::Nats, ..BusConfig::default() };
    bus_cfg.nats.url = server.url();
    let rx = Receiver::start().await;
    let relay = relay(&dir.path().join("push"), test_config());
    relay.set_registrations(&[
        webhook("alice", &rx.url("/alice"), SECRET, &["MessageNew"]),
        webhook("bob", &rx.url("/bob"), SECRET, &["MessageNew"]),
    ]);
    let BusFeed { stop_tx, source, publisher } = BusFeed::start(&relay, &bus_cfg).await;
    let (alice, bob) = alice_and_bob(dir.path(), &publisher);
    // Until the wildcard subscription is confirmed nothing arrives; deliver
    // until the first webhook shows up.
    for _ in 0..200 {
        alice.append("INBOX", b"Subject: warm-up\r\n\r\nx\r\n", &AppendOptions::default()).unwrap();
        publisher.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !rx.requests_to("/alice").is_empty() {
            break;
        }
    }
    assert!(!rx.requests_to("/alice").is_empty(), "the relay never received alice's mail over NATS");
    bob.append("INBOX", b"Subject: for bob\r\n\r\nhi\r\n", &AppendOptions::default()).unwrap();
    publisher.flush().await.unwrap();
    let got = rx.wait_for("/bob", 1).await;
    let ev = got[0].event();
    assert_eq!((ev.user.as_str(), ev.subject.as_deref()), ("bob", Some("for bob")));
    verify_signature(&got[0].signature, SECRET.as_bytes(), &got[0].body, now_secs(), 300).unwrap();
    assert!(rx.requests_to("/alice").iter().all(|r| r.event().user == "alice"));
    stop_tx.send(true).unwrap();
    source.await.unwrap().unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_gap_is_counted_as_a_resync_and_later_events_still_flow() {
    let dir = tempfile::tempdir().unwrap();
    let bus_cfg = BusConfig::unix_in_run_dir(&dir.path().join("run"));
    let rx = Receiver::start().await;
    let relay = relay(&dir.path().join("push"), test_config());
    relay.set_registrations(&[webhook("alice", &rx.url("/alice"), SECRET, &[])]);
    let BusFeed { stop_tx, source, publisher } = BusFeed::start(&relay, &bus_cfg).await;
    let event = |before: u64, after: u64| storage_hooks::MailboxEvent {
        kind: storage_hooks::EventKind::MessageNew,
        user: "alice".into(),
        mailbox: "INBOX".into(),
        old_mailbox: None,
        uidvalidity: 1,
        uids: UidSet::from_range(after as u32, after as u32),
        flags: Flags::default(),
        status: storage_hooks::MailboxStatus::default(),
        modseq_before: before,
        modseq_after: after,
        summary: None,
        timestamp_ms: 0,
    };
    // Wait until the relay hears alice at all.
    let mut modseq = 0;
    for _ in 0..200 {
        publisher.publish(&event(modseq, modseq + 1)).unwrap();
        modseq += 1;
        publisher.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !rx.requests_to("/alice").is_empty() {
            break;
        }
    }
    rx.wait_for("/alice", 1).await;
    let resyncs = relay.counters().resyncs;
    // modseq jumps by 5: events were lost on the way.
    publisher.publish(&event(modseq + 5, modseq + 6)).unwrap();
    publisher.flush().await.unwrap();
    eventually("the resync", || relay.counters().resyncs == resyncs + 1).await;
    let after_gap = (modseq + 6).to_string();
    eventually("the event after the gap", || rx.requests_to("/alice").iter().any(|r| r.event().uids == after_gap)).await;
    stop_tx.send(true).unwrap();
    source.await.unwrap().unwrap();
}
