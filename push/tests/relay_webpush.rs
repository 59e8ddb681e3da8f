//! Web Push registrations through the relay: sent with the same queue and
//! retry machinery, a gone subscription is dead-lettered and removed, and an
//! event above the Web Push size limit is cut, not refused.

mod relay_support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use push::registration_store::RegistrationStore;
use push::relay::{Relay, RelaySettings};
use push::{Registration, Target};
use relay_support::*;

fn subscription(endpoint: &str) -> Target {
    let (key_pair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
    Target::Webpush {
        endpoint: endpoint.into(),
        p256dh: URL_SAFE_NO_PAD.encode(key_pair.pub_as_raw().unwrap()),
        auth: URL_SAFE_NO_PAD.encode(auth),
    }
}

#[tokio::test]
async fn webpush_registrations_are_sent_and_gone_ones_removed() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    rx.set("/push/gone", Behaviour::Status(410));
    let store = RegistrationStore::new(dir.path());
    let ok = Registration::new("alice", &[], subscription(&rx.url("/push/ok"))).unwrap();
    let gone = Registration::new("alice", &[], subscription(&rx.url("/push/gone"))).unwrap();
    store.add(ok.clone(), |_| true).unwrap();
    store.add(gone.clone(), |_| true).unwrap();
    // A larger event limit than Web Push allows: the relay cuts a second copy.
    let relay = Relay::new(&RelaySettings {
        relay: test_config(),
        max_event_bytes: 16_000,
        state_dir: dir.path().to_path_buf(),
        remember_delivered: false,
        webpush: push::web_push::WebPushConfig::default(),
    })
    .unwrap();
    relay.set_registrations(&store.load().unwrap());
    let mut ev = new_mail("alice", 1);
    ev.snippet = Some("y".repeat(10_000));
    relay.dispatch(&ev, None);
    let got = rx.wait_for("/push/ok", 1).await;
    assert!(got[0].body.len() <= push::web_push::MAX_ENCRYPTED_BYTES, "{}", got[0].body.len());
    assert!(!got[0].body.windows(4).any(|w| w == b"yyyy"), "the body is encrypted");
    eventually("delivered", || relay.counters().deliveries_ok == 1).await;
    eventually("gone dead-lettered", || dead_letters(&relay).len() == 1).await;
    let letter = &dead_letters(&relay)[0];
    assert_eq!(letter["registration"], gone.id.as_str());
    assert!(letter["reason"].as_str().unwrap().contains("gone"), "{letter}");
    assert_eq!(rx.requests_to("/push/gone").len(), 1, "a gone subscription is not retried");
    let left: Vec<String> = store.load().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, [ok.id], "the gone registration was removed from the store");
}

#[test]
fn bad_subscriptions_are_refused_at_registration() {
    let err = Registration::new(
        "alice",
        &[],
        Target::Webpush { endpoint: "http://push.example.net/x".into(), p256dh: "AAAA".into(), auth: "AAAA".into() },
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("invalid Web Push subscription: "), "{err}");
}
