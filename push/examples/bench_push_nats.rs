//! Throughput of the NATS push publisher: external events per second
//! published to JetStream and acknowledged (file storage, de-duplication
//! on), with its own nats-server (`/usr/sbin/nats-server -js`) on a free
//! port and a temporary store directory.
//!
//! ```sh
//! cargo run --release -p push --example bench_push_nats -- [events] [users]
//! ```
//!
//! Prints one line per figure: the hook's cost per call (the storage
//! thread's share), and events/s from the first hook call until `flush`
//! returned (every event acked by the stream).

use std::time::Instant;

use push::config::PushNatsConfig;
use push::{PushConfig, PushNatsPublisher};
use storage_hooks::{ChangeHook, EventKind, Flags, MailboxEvent, MailboxStatus, MessageSummary, UidSet};

fn event(user: &str, uid: u32) -> MailboxEvent {
    MailboxEvent {
        kind: EventKind::MessageNew,
        user: user.into(),
        mailbox: "INBOX".into(),
        old_mailbox: None,
        uidvalidity: 1_764_000_000,
        uids: UidSet::from_range(uid, uid),
        flags: Flags::default(),
        status: MailboxStatus { messages: uid, unseen: uid, uidnext: uid + 1, highestmodseq: u64::from(uid) + 1, ..Default::default() },
        modseq_before: u64::from(uid),
        modseq_after: u64::from(uid) + 1,
        summary: Some(MessageSummary {
            from: "Bob Example <bob@example.org>".into(),
            subject: format!("Message number {uid}"),
            snippet: "Hi Alice, are you free at noon? The new place on Main Street has a lunch menu that".into(),
        }),
        timestamp_ms: 1_764_081_000_000 + u64::from(uid),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let events = args.first().copied().unwrap_or(100_000) as u32;
    let users = args.get(1).copied().unwrap_or(1000).max(1) as u32;

    let store = tempfile::tempdir().expect("temp dir");
    let mut server = bus::LocalNatsServer::start(store.path()).expect("start /usr/sbin/nats-server");
    let nats = bus::NatsConfig { url: server.url(), ..bus::NatsConfig::default() };
    let cfg = PushConfig { nats: PushNatsConfig { enabled: true, max_bytes: -1, ..PushNatsConfig::default() }, ..PushConfig::default() };
    let publisher = PushNatsPublisher::connect(&nats, &cfg, events as usize + 1).await.expect("connect");
    let names: Vec<String> = (0..users).map(|u| format!("user{u}@example.org")).collect();
    let prepared: Vec<MailboxEvent> = (0..events).map(|i| event(&names[(i % users) as usize], i / users + 1)).collect();

    let started = Instant::now();
    for ev in &prepared {
        publisher.on_change(ev).expect("queue");
    }
    let queued = started.elapsed();
    publisher.flush().await.expect("flush");
    let total = started.elapsed();
    let c = publisher.counters();
    server.stop();

    assert_eq!(c.acked, u64::from(events), "{c:?}");
    let json_bytes = push::ExternalEvent::from_mailbox_event(&prepared[0], &cfg.headers)[0].to_json().len();
    println!("events: {events} MessageNew over {users} users, JSON {json_bytes} bytes each");
    println!("hook (queue only): {:.0} ns per call", queued.as_nanos() as f64 / f64::from(events));
    println!(
        "published + acked by JetStream: {:.0} events/s ({:.2} s total; retried {}, duplicates {})",
        f64::from(events) / total.as_secs_f64(),
        total.as_secs_f64(),
        c.retried,
        c.duplicates
    );
}
