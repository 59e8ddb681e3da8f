//! The relay engine against a local HTTP receiver: signed deliveries,
//! retries, dead letters, queue overflow, filters and user isolation.

mod relay_support;

use std::time::{Duration, Instant};

use push::relay::{verify_signature, RelayConfig};
use push::ExternalEventKind;
use relay_support::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn one_signed_webhook_per_event_with_the_right_payload() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let relay = relay(dir.path(), test_config());
    relay.set_registrations(&[webhook("alice", &rx.url("/a"), SECRET, &[])]);
    let ev = new_mail("alice", 7);
    relay.dispatch(&ev, None);
    let got = rx.wait_for("/a", 1).await;
    assert_eq!(got[0].event, "MessageNew");
    assert_eq!(got[0].event_id, ev.id);
    assert_eq!(got[0].attempt, 1);
    assert_eq!(got[0].content_type, "application/json");
    assert_eq!(got[0].event(), ev);
    verify_signature(&got[0].signature, SECRET.as_bytes(), &got[0].body, now_secs(), 300).unwrap();
    assert!(verify_signature(&got[0].signature, b"another secret!!", &got[0].body, now_secs(), 300).is_err());
    eventually("delivered counter", || relay.counters().deliveries_ok == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.requests().len(), 1, "exactly one request");
    assert!(dead_letters(&relay).is_empty());
}

#[tokio::test]
async fn three_failures_then_success_is_delivered_once_more() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    rx.set("/flaky", Behaviour::FailTimes(3, 500));
    let relay = relay(dir.path(), RelayConfig { max_attempts: 8, ..test_config() });
    relay.set_registrations(&[webhook("alice", &rx.url("/flaky"), SECRET, &[])]);
    let ev = new_mail("alice", 1);
    relay.dispatch(&ev, None);
    let got = rx.wait_for("/flaky", 4).await;
    eventually("delivery", || relay.counters().deliveries_ok == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_all = rx.requests_to("/flaky");
    assert_eq!(got_all.len(), 4, "three failures and one success: {got:#?}");
    assert!(got_all.iter().all(|r| r.event_id == ev.id));
    assert_eq!(got_all.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let c = relay.counters();
    assert_eq!((c.attempts, c.retries, c.dead_lettered), (4, 3, 0));
}

#[tokio::test]
async fn failing_endpoints_end_in_the_dead_letter_log() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    rx.set("/500", Behaviour::Status(500));
    rx.set("/400", Behaviour::Status(400));
    rx.set("/redirect", Behaviour::Redirect(rx.url("/elsewhere")));
    rx.set("/slow", Behaviour::Slow(Duration::from_secs(5)));
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = RelayConfig { timeout_ms: 300, max_attempts: 3, ..test_config() };
    let relay = relay(dir.path(), cfg);
    let regs = [
        webhook("alice", &rx.url("/500"), SECRET, &[]),
        webhook("alice", &rx.url("/400"), SECRET, &[]),
        webhook("alice", &rx.url("/redirect"), SECRET, &[]),
        webhook("alice", &rx.url("/slow"), SECRET, &[]),
        webhook("alice", &format!("http://user:hunter2@127.0.0.1:{closed_port}/gone"), SECRET, &[]),
    ];
    relay.set_registrations(&regs);
    let ev = new_mail("alice", 3);
    relay.dispatch(&ev, None);
    eventually("five dead letters", || dead_letters(&relay).len() == 5).await;
    let letters = dead_letters(&relay);
    let reason_of = |reg: &str| {
        let l = letters.iter().find(|l| l["registration"] == reg).unwrap();
        assert_eq!(l["event"]["id"], ev.id.as_str());
        assert_eq!(l["user"], "alice");
        (l["attempts"].as_u64().unwrap(), l["reason"].as_str().unwrap().to_owned(), l["url"].as_str().unwrap().to_owned())
    };
    let (attempts, reason, _) = reason_of(&regs[0].id);
    assert_eq!(attempts, 3);
    assert!(reason.contains("HTTP 500"), "{reason}");
    let (attempts, reason, _) = reason_of(&regs[1].id);
    assert_eq!(attempts, 1, "a 400 is not retried");
    assert!(reason.contains("HTTP 400"), "{reason}");
    let (attempts, reason, _) = reason_of(&regs[2].id);
    assert_eq!(attempts, 1);
    assert!(reason.contains("302") && reason.contains("not followed"), "{reason}");
    assert!(rx.requests_to("/elsewhere").is_empty(), "redirects are never followed");
    let (attempts, reason, _) = reason_of(&regs[3].id);
    assert_eq!(attempts, 3);
    assert!(reason.contains("timeout"), "{reason}");
    let (attempts, reason, url) = reason_of(&regs[4].id);
    assert_eq!(attempts, 3);
    assert!(reason.contains("connection failed"), "{reason}");
    assert!(!url.contains("hunter2") && !reason.contains("hunter2"), "{url} {reason}");
    let raw = std::fs::read_to_string(relay.dead_letter_path()).unwrap();
    assert!(!raw.contains("hunter2") && !raw.contains(SECRET), "no credentials in the dead-letter log");
    assert_eq!(relay.counters().dead_lettered, 5);
}

#[tokio::test]
async fn a_full_queue_dead_letters_without_blocking_other_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    rx.set("/slow", Behaviour::Slow(Duration::from_millis(2500)));
    let cfg = RelayConfig { queue_per_endpoint: 2, concurrency_per_endpoint: 1, timeout_ms: 10_000, ..test_config() };
    let relay = relay(dir.path(), cfg);
    let slow = webhook("alice", &rx.url("/slow"), SECRET, &[]);
    relay.set_registrations(&[slow.clone(), webhook("alice", &rx.url("/fast"), SECRET, &[])]);
    for uid in 1..=10 {
        let start = Instant::now();
        relay.dispatch(&new_mail("alice", uid), None);
        assert!(start.elapsed() < Duration::from_millis(500), "dispatch never waits for an endpoint");
        // The healthy endpoint gets every event while the slow one is stuck.
        rx.wait_for("/fast", uid as usize).await;
    }
    assert_eq!(rx.requests_to("/fast").len(), 10);
    // One in flight and two queued at a time; the rest overflowed.
    eventually("overflow dead letters", || relay.counters().queue_full >= 5).await;
    eventually("slow ones final", || rx.requests_to("/slow").len() as u64 + relay.counters().queue_full == 10).await;
    let letters = dead_letters(&relay);
    assert!(letters.iter().all(|l| l["registration"] == slow.id.as_str() && l["reason"] == "queue full"), "{letters:#?}");
    assert_eq!(letters.len() as u64, relay.counters().queue_full);
}

#[tokio::test]
async fn filters_and_users_are_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let relay = relay(dir.path(), test_config());
    relay.set_registrations(&[
        webhook("alice", &rx.url("/alice-new"), SECRET, &["MessageNew"]),
        webhook("alice", &rx.url("/alice-flags"), SECRET, &["FlagsSet", "MessageRead"]),
        webhook("bob", &rx.url("/bob"), SECRET, &[]),
    ]);
    let mut flags = new_mail("alice", 2);
    flags.event = ExternalEventKind::FlagsSet;
    flags.id = "f".repeat(32);
    relay.dispatch(&new_mail("alice", 1), None);
    relay.dispatch(&flags, None);
    relay.dispatch(&new_mail("bob", 1), None);
    relay.dispatch(&new_mail("carol", 1), None);
    let bob = rx.wait_for("/bob", 1).await;
    let new = rx.wait_for("/alice-new", 1).await;
    let fl = rx.wait_for("/alice-flags", 1).await;
    eventually("three deliveries", || relay.counters().deliveries_ok == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 3);
    assert_eq!(bob[0].event().user, "bob");
    assert_eq!((new[0].event().user.as_str(), new[0].event.as_str()), ("alice", "MessageNew"));
    assert_eq!((fl[0].event().user.as_str(), fl[0].event.as_str()), ("alice", "FlagsSet"));
}

#[tokio::test]
async fn global_endpoints_get_every_users_events() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let cfg = RelayConfig {
        endpoints: vec![push::relay::GlobalEndpoint { url: rx.url("/all"), secret: SECRET.into(), events: vec!["MessageNew".into()] }],
        ..test_config()
    };
    let relay = relay(dir.path(), cfg);
    relay.dispatch(&new_mail("alice", 1), None);
    relay.dispatch(&new_mail("bob", 1), None);
    let got = rx.wait_for("/all", 2).await;
    let mut users: Vec<String> = got.iter().map(|r| r.event().user).collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    verify_signature(&got[0].signature, SECRET.as_bytes(), &got[0].body, now_secs(), 300).unwrap();
}

#[tokio::test]
async fn an_oversized_event_is_truncated_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let relay = push::relay::Relay::new(&push::relay::RelaySettings {
        relay: test_config(),
        max_event_bytes: 1024,
        state_dir: dir.path().to_path_buf(),
        remember_delivered: false,
        webpush: push::web_push::WebPushConfig::default(),
    })
    .unwrap();
    relay.set_registrations(&[webhook("alice", &rx.url("/a"), SECRET, &[])]);
    let mut ev = new_mail("alice", 1);
    ev.snippet = Some("x".repeat(10_000));
    ev.subject = Some("s".repeat(5_000));
    relay.dispatch(&ev, None);
    let got = rx.wait_for("/a", 1).await;
    assert!(got[0].body.len() <= 1024, "{}", got[0].body.len());
    let back = got[0].event();
    assert!(back.truncated);
    assert_eq!(back.id, ev.id);
    verify_signature(&got[0].signature, SECRET.as_bytes(), &got[0].body, now_secs(), 300).unwrap();
}

#[tokio::test]
async fn removing_a_registration_stops_its_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let relay = relay(dir.path(), test_config());
    let reg = webhook("alice", &rx.url("/a"), SECRET, &[]);
    relay.set_registrations(std::slice::from_ref(&reg));
    assert_eq!(relay.counters().registrations, 1);
    relay.dispatch(&new_mail("alice", 1), None);
    rx.wait_for("/a", 1).await;
    relay.set_registrations(&[]);
    assert_eq!(relay.counters().registrations, 0);
    relay.dispatch(&new_mail("alice", 2), None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.requests_to("/a").len(), 1);
}
