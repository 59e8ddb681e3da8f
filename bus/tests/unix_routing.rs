//! UNIX-datagram bus routing: publishers send an event only to receivers
//! whose interest file asks for its user (or that have no usable one).

mod common;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bus::unix_dgram::interest::{user_hash, InterestFile, HEADER_LEN, MAGIC};
use bus::wire::{decode_frame, Record};
use bus::{BusMessage, ResyncReason, UnixConfig, UnixPublisher, UnixSubscriber};
use common::event;
use storage_hooks::UidSet;

const WAIT: Duration = Duration::from_secs(30);

async fn next(sub: &mut UnixSubscriber) -> BusMessage {
    tokio::time::timeout(WAIT, sub.recv()).await.expect("message in time").expect("subscriber open")
}

fn config(dir: &Path) -> UnixConfig {
    UnixConfig { dir: dir.join("bus"), ..UnixConfig::default() }
}

/// A bare receiver socket in the bus folder that counts what it gets.
struct RawReceiver {
    sock: UnixDatagram,
    path: PathBuf,
}

impl RawReceiver {
    fn bind(cfg: &UnixConfig, name: &str) -> Self {
        bus::unix_dgram::ensure_bus_dir(&cfg.dir).unwrap();
        let path = cfg.dir.join(format!("{name}.sock"));
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        Self { sock, path }
    }

    /// Frames and the users of their records received so far.
    fn drain(&self) -> (usize, Vec<String>) {
        let mut buf = vec![0u8; 256 * 1024];
        let (mut frames, mut users) = (0, Vec::new());
        while let Ok(n) = self.sock.recv(&mut buf) {
            frames += 1;
            for r in decode_frame(&buf[..n]).unwrap().records {
                match r.unwrap() {
                    Record::Event(ev) => users.push(ev.user),
                    Record::Reference { user, .. } => users.push(user),
                }
            }
        }
        (frames, users)
    }
}

/// Two user names in the same bit of a 2^16-bit interest bitmap.
fn colliding_users() -> (String, String) {
    let mut seen = std::collections::HashMap::new();
    for i in 0u32.. {
        let u = format!("user{i}");
        if let Some(other) = seen.insert(user_hash(&u) & 0xffff, u.clone()) {
            return (other, u);
        }
    }
    unreachable!()
}

async fn events_reach_only_receivers_that_subscribed_the_user(interest_watch: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = UnixConfig { interest_watch, ..config(tmp.path()) };
    let mut sub_x = UnixSubscriber::bind(&cfg, 1 << 12).unwrap();
    let mut sub_y = UnixSubscriber::bind(&cfg, 1 << 12).unwrap();
    sub_x.subscribe("xavier");
    sub_y.subscribe("yvonne");
    // A bare socket with an interest file asking for yvonne only.
    let raw = RawReceiver::bind(&cfg, "1-00000000000000aa");
    let mut raw_interest = InterestFile::create(&raw.path).unwrap();
    raw_interest.add("yvonne");
    let publisher = UnixPublisher::open(&cfg).unwrap();
    assert_eq!(publisher.receiver_count(), 3);
    let n = 300u64;
    for i in 0..n {
        publisher.publish(&event("xavier", i));
    }
    publisher.publish(&event("yvonne", 0));
    for i in 0..n {
        assert_eq!(next(&mut sub_x).await, BusMessage::Event(event("xavier", i)));
    }
    assert_eq!(next(&mut sub_y).await, BusMessage::Event(event("yvonne", 0)));
    assert!(publisher.flush_pending() == 0);
    let (frames, users) = raw.drain();
    assert_eq!((frames, users), (1, vec!["yvonne".to_string()]), "xavier's events must not reach the raw receiver");
    // Nothing of xavier's was even received (and filtered) by yvonne's subscriber.
    let cy = sub_y.counters();
    assert_eq!((cy.filtered, cy.events_in, cy.gaps), (0, 1, 0));
    let cx = sub_x.counters();
    assert_eq!((cx.filtered, cx.events_in, cx.gaps), (0, n, 0));
    assert_eq!(publisher.skipped_by_routing(), 2 * n + 1);
    // After the last session of yvonne leaves, her events stop coming.
    sub_y.subscribe("yvonne");
    sub_y.unsubscribe("yvonne");
    publisher.publish(&event("yvonne", 1));
    assert_eq!(next(&mut sub_y).await, BusMessage::Event(event("yvonne", 1)));
    sub_y.unsubscribe("yvonne");
    publisher.flush_pending();
    assert_eq!(raw.drain(), (1, vec!["yvonne".to_string()]));
    raw_interest.remove("yvonne");
    // Past the publisher's 10 ms belief in bits it saw set.
    tokio::time::sleep(Duration::from_millis(50)).await;
    publisher.publish(&event("yvonne", 2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sub_y.try_recv().is_none());
    assert_eq!(sub_y.counters().filtered, 0, "no datagram for an unsubscribed user");
    assert_eq!(raw.drain().0, 0);
}

/// The race the interest file must win: a subscription that returned is
/// seen by the very next publish from another thread, every time.
fn subscribe_then_immediate_publish_is_never_lost(interest_watch: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = UnixConfig { interest_watch, ..config(tmp.path()) };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut sub = rt.block_on(async { UnixSubscriber::bind(&cfg, 1 << 12) }).unwrap();
    let publisher = UnixPublisher::open(&cfg).unwrap();
    assert_eq!(publisher.receiver_count(), 1);
    let (to_pub, from_sub) = std::sync::mpsc::channel::<String>();
    let publishing = {
        let publisher = publisher.clone();
        std::thread::spawn(move || {
            for user in from_sub {
                publisher.publish(&event(&user, 0));
            }
        })
    };
    let rounds = 2_000;
    for i in 0..rounds {
        let user = format!("race-{i}");
        sub.subscribe(&user);
        to_pub.send(user.clone()).unwrap();
        let got = rt.block_on(next(&mut sub));
        assert_eq!(got, BusMessage::Event(event(&user, 0)), "round {i}");
        // Unsubscribing keeps the bitmap busy with clears as well as sets.
        sub.unsubscribe(&user);
    }
    drop(to_pub);
    publishing.join().unwrap();
    let c = sub.counters();
    assert_eq!((c.events_in, c.gaps, c.resyncs), (rounds, 0, 0));
}

async fn unsubscribing_one_user_keeps_a_colliding_user_delivered(interest_watch: bool) {
    let (a, b) = colliding_users();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = UnixConfig { interest_watch, ..config(tmp.path()) };
    let mut sub = UnixSubscriber::bind(&cfg, 1 << 12).unwrap();
    sub.subscribe(&a);
    sub.subscribe(&b);
    sub.unsubscribe(&a);
    let publisher = UnixPublisher::open(&cfg).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    publisher.publish(&event(&a, 0));
    publisher.publish(&event(&b, 0));
    // a's event still travels (same bit) but is filtered here; b's arrives.
    assert_eq!(next(&mut sub).await, BusMessage::Event(event(&b, 0)));
    assert_eq!(sub.counters().filtered, 1);
    sub.unsubscribe(&b);
    tokio::time::sleep(Duration::from_millis(50)).await;
    publisher.publish(&event(&b, 1));
    assert_eq!(publisher.skipped_by_routing(), 1, "the bit is clear once both left");
}

async fn wildcard_receivers_get_everything(interest_watch: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = UnixConfig { interest_watch, ..config(tmp.path()) };
    let raw = RawReceiver::bind(&cfg, "1-00000000000000bb");
    let mut interest = InterestFile::create(&raw.path).unwrap();
    interest.set_wildcard(true);
    let sub = UnixSubscriber::bind(&cfg, 1 << 12).unwrap();
    sub.set_receive_all(true);
    assert!(sub.receives_all());
    // A consumer of all events (the push relay) gets them delivered too.
    let mut relay = UnixSubscriber::bind(&cfg, 1 << 12).unwrap();
    relay.subscribe_all();
    assert!(relay.receives_all());
    let publisher = UnixPublisher::open(&cfg).unwrap();
    let users: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    for u in &users {
        publisher.publish(&event(u, 0));
    }
    // The raw socket's queue holds 10 datagrams; the rest waits in a batch.
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while got.len() < users.len() && std::time::Instant::now() < deadline {
        got.extend(raw.drain().1);
        publisher.flush_pending();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(got, users);
    for u in &users {
        assert_eq!(next(&mut relay).await, BusMessage::Event(event(u, 0)));
    }
    // The subscriber received them all; nobody is subscribed, so all are filtered locally.
    let deadline = std::time::Instant::now() + WAIT;
    while sub.counters().filtered < users.len() as u64 {
        assert!(std::time::Instant::now() < deadline, "{:?}", sub.counters());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(publisher.skipped_by_routing(), 0);
    // Wildcard off again: only subscribed users (past the 10 ms belief).
    sub.set_receive_all(false);
    interest.set_wildcard(false);
    tokio::time::sleep(Duration::from_millis(50)).await;
    publisher.publish(&event("w0", 1));
    assert_eq!(publisher.skipped_by_routing(), 2, "only the relay still wants w0");
    assert_eq!(next(&mut relay).await, BusMessage::Event(event("w0", 1)));
}

/// Events for other users are skipped, in sustained (coalesced) streams
/// too: the frame sequence numbers per receiver stay gap-free, and a large
/// event still travels as a reference to its user's receivers only.
#[tokio::test]
async fn skipped_events_cause_no_gap_or_resync() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = UnixConfig { coalesce_us: 2_000, ..config(tmp.path()) };
    let mut sub = UnixSubscriber::bind(&cfg, 1 << 16).unwrap();
    let mut other = UnixSubscriber::bind(&cfg, 1 << 16).unwrap();
    sub.subscribe("mine");
    other.subscribe("theirs");
    let publisher = UnixPublisher::open(&cfg).unwrap();
    let (mut mine, mut theirs) = (0u64, 0u64);
    for i in 0..20_000u64 {
        if i % 7 == 0 {
            publisher.publish(&event("mine", mine));
            mine += 1;
        } else {
            publisher.publish(&event("theirs", theirs));
            theirs += 1;
        }
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut big = event("theirs", theirs);
    big.uids = UidSet::from_ranges((1..=20_000u32).map(|i| storage_hooks::UidRange { first: i * 2, last: i * 2 }));
    publisher.publish(&big);
    let deadline = std::time::Instant::now() + WAIT;
    while publisher.flush_pending() > 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..mine {
        assert_eq!(next(&mut sub).await, BusMessage::Event(event("mine", i)));
    }
    for i in 0..theirs {
        assert_eq!(next(&mut other).await, BusMessage::Event(event("theirs", i)));
    }
    assert_eq!(
        next(&mut other).await,
        BusMessage::Resync { user: Some("theirs".into()), mailbox: Some("INBOX".into()), reason: ResyncReason::Oversized }
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sub.try_recv().is_none());
    let (c, o) = (sub.counters(), other.counters());
    assert_eq!((c.gaps, c.resyncs, c.filtered), (0, 0, 0), "{c:?}");
    // The one resync is the reference's (Oversized), not a gap.
    assert_eq!((o.gaps, o.resyncs, o.filtered), (0, 1, 0), "{o:?}");
    assert_eq!(publisher.skipped_by_routing(), mine + theirs + 1);
}

/// Collects what the publisher logs, to check that bad interest files are reported.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn unusable_interest_files_mean_everything_and_are_logged() {
    let log = LogBuf::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let mut good_header = [0u8; HEADER_LEN];
    good_header[..8].copy_from_slice(MAGIC);
    good_header[8] = 1;
    good_header[10] = 16;
    good_header[11] = 1;
    let mut wrong_version = good_header.to_vec();
    wrong_version[8] = 9;
    wrong_version.resize(HEADER_LEN + 8192, 0);
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("garbage", Some(b"this is not an interest file at all".to_vec())),
        ("short", Some(good_header[..7].to_vec())),
        ("header-only", Some(good_header.to_vec())),
        ("wrong-version", Some(wrong_version)),
        ("empty", Some(Vec::new())),
        ("missing", None),
    ];
    let receivers: Vec<RawReceiver> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, content))| {
            let name = format!("1-{i:016x}");
            if let Some(bytes) = content {
                std::fs::create_dir_all(&cfg.dir).unwrap();
                std::fs::write(cfg.dir.join(format!("{name}.sock.interest")), bytes).unwrap();
            }
            RawReceiver::bind(&cfg, &name)
        })
        .collect();
    let publisher = UnixPublisher::open(&cfg).unwrap();
    for i in 0..5 {
        publisher.publish(&event("nobody-subscribed", i));
    }
    publisher.flush_pending();
    for ((what, _), r) in cases.iter().zip(&receivers) {
        assert_eq!(r.drain().1.len(), 5, "{what}: every event must be sent");
    }
    assert_eq!(publisher.skipped_by_routing(), 0);
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    for reason in ["bad magic", "header is 7 bytes", "file is 16 bytes", "unsupported format version 9", "header is 0 bytes"] {
        assert!(text.contains(reason), "{reason:?} not logged in:\n{text}");
    }
}

#[tokio::test]
async fn interest_files_of_dead_receivers_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    // A receiver that died without cleaning up: socket and interest file left.
    let dead_path = cfg.dir.join("999999-00000000deadbeef.sock");
    let dead = RawReceiver::bind(&cfg, "999999-00000000deadbeef");
    let dead_interest = InterestFile::create(&dead_path).unwrap();
    std::mem::forget(dead_interest); // its owner never removed it
    drop(dead);
    // An old orphan interest file (no socket), and a fresh one (a subscriber starting).
    let old_orphan = cfg.dir.join("999998-0000000000000001.sock.interest");
    let fresh_orphan = cfg.dir.join("999997-0000000000000002.sock.interest.tmp");
    std::fs::write(&old_orphan, b"x").unwrap();
    std::fs::write(&fresh_orphan, b"x").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old_orphan)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(600))
        .unwrap();
    let mut sub = UnixSubscriber::bind(&cfg, 64).unwrap();
    sub.subscribe("u");
    let publisher = UnixPublisher::open(&cfg).unwrap();
    publisher.publish(&event("u", 0));
    publisher.publish(&event("u", 1));
    assert_eq!(next(&mut sub).await, BusMessage::Event(event("u", 0)));
    assert_eq!(next(&mut sub).await, BusMessage::Event(event("u", 1)));
    assert_eq!(publisher.counters().receivers_removed, 1);
    assert!(!dead_path.exists());
    assert!(!bus::unix_dgram::interest::interest_path(&dead_path).exists());
    assert!(!old_orphan.exists());
    assert!(fresh_orphan.exists());
    assert_eq!(publisher.receiver_count(), 1);
    let sock = sub.socket_path().to_owned();
    drop(sub);
    assert!(!sock.exists() && !bus::unix_dgram::interest::interest_path(&sock).exists());
}

#[tokio::test]
async fn events_reach_only_receivers_that_subscribed_the_user_reading_interest_per_event() {
    events_reach_only_receivers_that_subscribed_the_user(false).await;
}

#[tokio::test]
async fn events_reach_only_receivers_that_subscribed_the_user_with_inotify_copies() {
    events_reach_only_receivers_that_subscribed_the_user(true).await;
}

#[tokio::test]
async fn unsubscribing_one_user_keeps_a_colliding_user_delivered_reading_interest_per_event() {
    unsubscribing_one_user_keeps_a_colliding_user_delivered(false).await;
}

#[tokio::test]
async fn unsubscribing_one_user_keeps_a_colliding_user_delivered_with_inotify_copies() {
    unsubscribing_one_user_keeps_a_colliding_user_delivered(true).await;
}

#[tokio::test]
async fn wildcard_receivers_get_everything_reading_interest_per_event() {
    wildcard_receivers_get_everything(false).await;
}

#[tokio::test]
async fn wildcard_receivers_get_everything_with_inotify_copies() {
    wildcard_receivers_get_everything(true).await;
}

#[test]
fn subscribe_then_immediate_publish_is_never_lost_reading_interest_per_event() {
    subscribe_then_immediate_publish_is_never_lost(false);
}

#[test]
fn subscribe_then_immediate_publish_is_never_lost_with_inotify_copies() {
    subscribe_then_immediate_publish_is_never_lost(true);
}
