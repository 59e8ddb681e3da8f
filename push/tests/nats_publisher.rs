//! The NATS push publisher against a real nats-server (JetStream, own port
//! and store directory): subjects, headers, JSON, de-duplication, stream
//! set-up and behaviour across a server outage.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use bus::LocalNatsServer;
use push::config::PushNatsConfig;
use push::nats_publisher::{ensure_stream, event_subject, StreamSetup};
use push::{ExternalEvent, ExternalEventKind, PushConfig, PushNatsPublisher};
use storage_hooks::{ChangeHook, EventKind, Flags, MailboxEvent, MailboxStatus, MessageSummary, SystemFlags, UidSet};

/// Client settings for the test's own nats-server.
fn bus_config(server: &LocalNatsServer) -> bus::NatsConfig {
    bus::NatsConfig { url: server.url(), ..bus::NatsConfig::default() }
}

fn push_config(stream: &str) -> PushConfig {
    PushConfig {
        nats: PushNatsConfig {
            enabled: true,
            subject_prefix: format!("test.{}", stream.to_lowercase()),
            stream: stream.into(),
            ..PushNatsConfig::default()
        },
        ..PushConfig::default()
    }
}

fn event(user: &str, kind: EventKind, uid: u32, modseq: u64) -> MailboxEvent {
    MailboxEvent {
        kind,
        user: user.into(),
        mailbox: "INBOX".into(),
        old_mailbox: None,
        uidvalidity: 1_700_000_000,
        uids: UidSet::from_range(uid, uid),
        flags: if kind == EventKind::FlagsSet { Flags::system(SystemFlags::SEEN) } else { Flags::default() },
        status: MailboxStatus { messages: uid, unseen: 1, uidnext: uid + 1, highestmodseq: modseq, ..Default::default() },
        modseq_before: modseq - 1,
        modseq_after: modseq,
        summary: (kind == EventKind::MessageNew).then(|| MessageSummary {
            from: "Bob <bob@example.org>".into(),
            subject: "Lunch?".into(),
            snippet: "Are you free at noon".into(),
        }),
        timestamp_ms: 1_764_079_200_000,
    }
}

/// One stored message of the stream.
struct Stored {
    subject: String,
    msg_id: String,
    event: ExternalEvent,
}

async fn stored(client: &async_nats::Client, stream: &str) -> Vec<Stored> {
    let js = jetstream::new(client.clone());
    let mut s = js.get_stream(stream).await.unwrap();
    let info = s.info().await.unwrap().clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        let m = s.get_raw_message(seq).await.unwrap();
        let msg_id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()).unwrap_or_default();
        out.push(Stored { subject: m.subject.to_string(), msg_id, event: ExternalEvent::from_json(&m.payload).unwrap() });
    }
    out
}

async fn flush(p: &PushNatsPublisher) {
    tokio::time::timeout(Duration::from_secs(60), p.flush()).await.expect("flush within 60 s").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_in_the_stream_with_subject_header_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(tmp.path()).unwrap();
    let cfg = push_config("LAND");
    let p = PushNatsPublisher::connect(&bus_config(&server), &cfg, 1024).await.unwrap();
    let new_mail = event("alice", EventKind::MessageNew, 7, 31);
    let seen = event("alice", EventKind::FlagsSet, 7, 32);
    p.on_change(&new_mail).unwrap();
    p.on_change(&seen).unwrap();
    flush(&p).await;

    let mut expected = ExternalEvent::from_mailbox_event(&new_mail, &cfg.headers);
    expected.extend(ExternalEvent::from_mailbox_event(&seen, &cfg.headers));
    let got = stored(p.client(), "LAND").await;
    assert_eq!(got.len(), 3);
    let kinds: Vec<_> = got.iter().map(|s| s.event.event).collect();
    assert_eq!(kinds, [ExternalEventKind::MessageNew, ExternalEventKind::FlagsSet, ExternalEventKind::MessageRead]);
    for (s, want) in got.iter().zip(&expected) {
        assert_eq!(&s.event, want);
        assert_eq!(s.msg_id, want.id);
        assert_eq!(s.subject, format!("test.land.{}.{}", bus::nats::user_token("alice"), want.event.as_str()));
        assert_eq!(s.subject, event_subject("test.land", want));
    }
    assert_eq!(got[0].event.subject.as_deref(), Some("Lunch?"));
    let c = p.counters();
    assert_eq!((c.queued, c.published, c.acked, c.failed, c.dropped_queue_full), (2, 3, 3, 0, 0), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(tmp.path()).unwrap();
    let cfg = push_config("DEDUP");
    let p = PushNatsPublisher::connect(&bus_config(&server), &cfg, 1024).await.unwrap();
    let ev = event("bob", EventKind::MessageNew, 1, 2);
    p.on_change(&ev).unwrap();
    flush(&p).await;
    // Another process (or a restart) announcing the same change.
    let other = PushNatsPublisher::connect(&bus_config(&server), &cfg, 1024).await.unwrap();
    other.on_change(&ev).unwrap();
    p.on_change(&event("bob", EventKind::MessageNew, 2, 3)).unwrap();
    flush(&other).await;
    flush(&p).await;
    let got = stored(p.client(), "DEDUP").await;
    let uids: Vec<_> = got.iter().map(|s| s.event.uids.as_str()).collect();
    assert_eq!(uids, ["1", "2"]);
    assert_eq!(other.counters().duplicates, 1, "{:?}", other.counters());
    assert_eq!(p.counters().duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_created_when_missing_and_its_limits_updated() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(tmp.path()).unwrap();
    let client = async_nats::connect(format!("127.0.0.1:{}", server.port())).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut cfg = push_config("LIMITS").nats;
    cfg.max_age_secs = 3600;
    cfg.duplicate_window_secs = 60;
    assert_eq!(ensure_stream(&js, &cfg).await.unwrap(), StreamSetup::Created);
    assert_eq!(ensure_stream(&js, &cfg).await.unwrap(), StreamSetup::Unchanged);
    let info = js.get_stream("LIMITS").await.unwrap().cached_info().config.clone();
    assert_eq!(info.subjects, ["test.limits.>"]);
    assert_eq!(info.max_age, Duration::from_secs(3600));
    assert_eq!(info.duplicate_window, Duration::from_secs(60));
    assert_eq!(info.retention, jetstream::stream::RetentionPolicy::Limits);
    assert_eq!(info.storage, jetstream::stream::StorageType::File);

    cfg.max_age_secs = 7200;
    cfg.max_bytes = 1 << 20;
    cfg.duplicate_window_secs = 30;
    assert_eq!(ensure_stream(&js, &cfg).await.unwrap(), StreamSetup::Updated);
    let info = js.get_stream("LIMITS").await.unwrap().cached_info().config.clone();
    assert_eq!((info.max_age, info.max_bytes, info.duplicate_window), (Duration::from_secs(7200), 1 << 20, Duration::from_secs(30)));

    // A stream of that name made by someone else over other subjects.
    js.create_stream(jetstream::stream::Config { name: "OTHER".into(), subjects: vec!["elsewhere.>".into()], ..Default::default() })
        .await
        .unwrap();
    let other = PushNatsConfig { stream: "OTHER".into(), subject_prefix: "test.other".into(), ..cfg.clone() };
    assert_eq!(ensure_stream(&js, &other).await.unwrap(), StreamSetup::Updated);
    let info = js.get_stream("OTHER").await.unwrap().cached_info().config.clone();
    assert_eq!(info.subjects, ["test.other.>"]);

    // Without JetStream on the server, set-up fails with a clear error.
    let plain_dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut plain = Command::new("/usr/sbin/nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(plain_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let nats = bus::NatsConfig { url: format!("nats://127.0.0.1:{port}"), ..bus::NatsConfig::default() };
    let err = PushNatsPublisher::connect(&nats, &push_config("NOJS"), 16).await.unwrap_err();
    let _ = plain.kill();
    let _ = plain.wait();
    assert!(err.to_string().contains("NOJS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_user_names_map_to_safe_subjects() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(tmp.path()).unwrap();
    let cfg = push_config("NAMES");
    let p = PushNatsPublisher::connect(&bus_config(&server), &cfg, 1024).await.unwrap();
    let users = ["a.b", "x*", "y>", "with space", "ünï@exämple.org", "a.>"];
    for (i, u) in users.iter().enumerate() {
        p.on_change(&event(u, EventKind::MessageNew, 1, 2 + i as u64)).unwrap();
    }
    flush(&p).await;
    let got = stored(p.client(), "NAMES").await;
    assert_eq!(got.len(), users.len());
    for (s, u) in got.iter().zip(users) {
        assert_eq!(s.event.user, u);
        let tokens: Vec<&str> = s.subject.split('.').collect();
        assert_eq!(tokens.len(), 4, "{}", s.subject);
        assert_eq!(tokens[2], bus::nats::user_token(u));
        assert!(tokens[2].bytes().all(|b| b.is_ascii_hexdigit()), "{}", s.subject);
        assert_eq!(tokens[3], "MessageNew");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_blocks_nothing_and_queued_events_arrive_afterwards() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = LocalNatsServer::start(tmp.path()).unwrap();
    let cfg = push_config("OUTAGE");
    let p = PushNatsPublisher::connect(&bus_config(&server), &cfg, 1024).await.unwrap();
    p.on_change(&event("carol", EventKind::MessageNew, 1, 2)).unwrap();
    flush(&p).await;

    server.stop();
    // The hook only queues: with the server gone it still returns at once
    // (a blocking publish would wait for the 5 s connect or ack timeout).
    let started = std::time::Instant::now();
    for uid in 2..=50 {
        p.on_change(&event("carol", EventKind::MessageNew, uid, u64::from(uid) + 1)).unwrap();
    }
    let spent = started.elapsed();
    assert!(spent < Duration::from_secs(3), "49 hook calls took {spent:?}");
    // Longer than the ack timeout: the first publishes fail and are sent
    // again (same ids) once the server is back.
    tokio::time::sleep(Duration::from_secs(7)).await;

    server.restart().unwrap();
    flush(&p).await;
    let got = stored(p.client(), "OUTAGE").await;
    let mut uids: Vec<u32> = got.iter().map(|s| s.event.uids.parse().unwrap()).collect();
    uids.sort_unstable();
    assert_eq!(uids, (1..=50).collect::<Vec<_>>(), "each event stored exactly once");
    let c = p.counters();
    assert_eq!((c.published, c.failed), (50, 0), "{c:?}");
    assert!(c.retried > 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_memory_is_bounded_and_drops_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = LocalNatsServer::start(tmp.path()).unwrap();
    let cfg = push_config("BOUNDED");
    let queue = 16;
    let p = PushNatsPublisher::connect(&bus_config(&server), &cfg, queue).await.unwrap();
    server.stop();
    let total = 2000u32;
    for uid in 1..=total {
        p.on_change(&event("dave", EventKind::MessageNew, uid, u64::from(uid) + 1)).unwrap();
        if uid % 100 == 0 {
            // Give the task a chance to take as much as it ever would.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let c = p.counters();
    // At most MAX_IN_FLIGHT unsettled events, the queue, and one event
    // being converted are held; the rest was dropped and counted.
    let held = (push::nats_publisher::MAX_IN_FLIGHT + queue + 1) as u64;
    assert!(c.dropped_queue_full >= u64::from(total) - held, "{c:?}");
    assert_eq!(c.queued + c.dropped_queue_full, u64::from(total), "{c:?}");

    server.restart().unwrap();
    flush(&p).await;
    let got = stored(p.client(), "BOUNDED").await;
    let ids: std::collections::HashSet<&str> = got.iter().map(|s| s.msg_id.as_str()).collect();
    assert_eq!(got.len() as u64, c.queued, "every queued event stored once");
    assert_eq!(ids.len(), got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_is_created_again_and_the_event_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(tmp.path()).unwrap();
    let cfg = push_config("GONE");
    let p = PushNatsPublisher::connect(&bus_config(&server), &cfg, 64).await.unwrap();
    let js = jetstream::new(p.client().clone());
    js.delete_stream("GONE").await.unwrap();
    p.on_change(&event("erin", EventKind::MessageNew, 1, 2)).unwrap();
    flush(&p).await;
    let got = stored(p.client(), "GONE").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.user, "erin");
    let c = p.counters();
    assert!(c.retried >= 1 && c.acked == 1, "{c:?}");
}
