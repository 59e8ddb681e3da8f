//! The registration store: checks at add time, concurrent writers, and a
//! running relay picking up changes without a restart.

mod relay_support;

use std::time::Duration;

use push::registration_store::{RegistrationError, RegistrationStore};
use push::relay::runner::{run_relay, RunTiming};
use push::{Registration, Target};
use relay_support::*;

fn hook(url: &str) -> Target {
    Target::Webhook { url: url.into(), secret: push::registration::generate_secret() }
}

#[test]
fn bad_registrations_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = RegistrationStore::new(dir.path());
    let err = Registration::new("alice", &[], hook("htp//nowhere")).unwrap_err();
    assert!(matches!(err, RegistrationError::InvalidUrl { .. }), "{err}");
    let err = Registration::new("alice", &["NewMail".into()], hook("https://example.org/")).unwrap_err();
    assert!(err.to_string().contains("unknown event type \"NewMail\""), "{err}");
    let reg = Registration::new("mallory", &[], hook("https://example.org/")).unwrap();
    let err = store.add(reg, |u| u == "alice").unwrap_err();
    assert_eq!(err.to_string(), "unknown user \"mallory\": not in the passwd file");
    assert!(store.load().unwrap().is_empty());
}

#[test]
fn concurrent_adds_keep_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("push");
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let state = state.clone();
            std::thread::spawn(move || {
                // A store per thread, as separate CLI invocations would have.
                let store = RegistrationStore::new(&state);
                for i in 0..10 {
                    let reg = Registration::new(&format!("user{t}"), &[], hook(&format!("https://example.org/{t}/{i}"))).unwrap();
                    store.add(reg, |_| true).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let regs = RegistrationStore::new(&state).load().unwrap();
    assert_eq!(regs.len(), 60);
    let ids: std::collections::HashSet<_> = regs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 60);
}

#[tokio::test]
async fn a_running_relay_reloads_changed_registrations() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let store = RegistrationStore::new(dir.path());
    let relay = relay(dir.path(), test_config());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let (relay, store) = (relay.clone(), store.clone());
        tokio::spawn(async move {
            let timing = RunTiming { reload_interval: Duration::from_millis(100), ..RunTiming::default() };
            run_relay(&relay, &store, timing, async move {
                let _ = stop_rx.await;
                Ok(())
            })
            .await
        })
    };
    let reg = Registration::new("alice", &[], hook(&rx.url("/a"))).unwrap();
    store.add(reg.clone(), |_| true).unwrap();
    eventually("the new registration", || relay.counters().registrations == 1).await;
    relay.dispatch(&new_mail("alice", 1), None);
    rx.wait_for("/a", 1).await;
    store.remove(&reg.id).unwrap();
    eventually("the removal", || relay.counters().registrations == 0).await;
    relay.dispatch(&new_mail("alice", 2), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests_to("/a").len(), 1);
    // A broken file keeps the previous set.
    store.add(Registration::new("alice", &[], hook(&rx.url("/b"))).unwrap(), |_| true).unwrap();
    eventually("the second registration", || relay.counters().registrations == 1).await;
    std::fs::write(store.path(), b"not json").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(relay.counters().registrations, 1);
    stop_tx.send(()).unwrap();
    runner.await.unwrap().unwrap();
}
