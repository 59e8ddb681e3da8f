//! NATS transport against a real nats-server started by the test.

mod common;

use std::time::Duration;

use bus::{BusMessage, NatsConfig, NatsPublisher, NatsSubscriber, ResyncReason};
use bus::LocalNatsServer;
use common::event;

const WAIT: Duration = Duration::from_secs(30);

fn config(server: &LocalNatsServer) -> NatsConfig {
    NatsConfig { url: server.url(), ..NatsConfig::default() }
}

async fn next(sub: &mut NatsSubscriber) -> BusMessage {
    tokio::time::timeout(WAIT, sub.recv()).await.expect("message in time").expect("subscriber open")
}

const NASTY: [&str; 6] = ["a.b", "star*", "gt>", "with space", "ünï.cødé>*", "dots.and spaces.*.>"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_sees_only_its_users_even_with_nasty_names() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(tmp.path()).unwrap();
    let cfg = config(&server);
    let publisher = NatsPublisher::connect(&cfg, 1024).await.unwrap();
    let mut subs = Vec::new();
    for name in NASTY {
        let sub = NatsSubscriber::connect(&cfg, 1024).await.unwrap();
        sub.subscribe(name);
        sub.sync().await.unwrap();
        subs.push(sub);
    }
    // Every user gets two events; "a.b"'s neighbour "a" (a prefix) gets one too.
    publisher.publish(&event("a", 0)).unwrap();
    for round in 0..2 {
        for name in NASTY {
            publisher.publish(&event(name, round)).unwrap();
        }
    }
    publisher.flush().await.unwrap();
    for (sub, name) in subs.iter_mut().zip(NASTY) {
        assert_eq!(next(sub).await, BusMessage::Event(event(name, 0)));
        assert_eq!(next(sub).await, BusMessage::Event(event(name, 1)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for sub in &mut subs {
        assert!(sub.try_recv().is_none(), "a subscriber got another user's event");
        // The server never even sent other users' events.
        assert_eq!(sub.counters().filtered, 0);
    }
    // Unsubscribe at run time: the subscription is dropped at the server.
    subs[0].unsubscribe(NASTY[0]);
    subs[0].sync().await.unwrap();
    publisher.publish(&event(NASTY[0], 2)).unwrap();
    publisher.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(subs[0].try_recv().is_none());
    assert_eq!(subs[0].counters().filtered, 0);
    // The server no longer sends it: that connection received nothing more.
    let before = subs[0].client().statistics().in_messages.load(std::sync::atomic::Ordering::Relaxed);
    publisher.publish(&event(NASTY[0], 3)).unwrap();
    publisher.flush().await.unwrap();
    subs[1].sync().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = subs[0].client().statistics().in_messages.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after, before, "the dropped subscription still receives messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_mode_still_delivers_only_subscribed_users() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(tmp.path()).unwrap();
    let cfg = NatsConfig { subscription_mode: bus::SubscriptionMode::Wildcard, ..config(&server) };
    let publisher = NatsPublisher::connect(&cfg, 1024).await.unwrap();
    let mut sub = NatsSubscriber::connect(&cfg, 1024).await.unwrap();
    sub.subscribe(NASTY[1]);
    sub.sync().await.unwrap();
    publisher.publish(&event(NASTY[0], 0)).unwrap();
    publisher.publish(&event(NASTY[1], 0)).unwrap();
    publisher.publish(&event(NASTY[2], 0)).unwrap();
    publisher.flush().await.unwrap();
    assert_eq!(next(&mut sub).await, BusMessage::Event(event(NASTY[1], 0)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sub.try_recv().is_none());
    assert_eq!(sub.counters().filtered, 2, "other users' events reach the process but are filtered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_stream_resyncs_and_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = LocalNatsServer::start(tmp.path()).unwrap();
    let cfg = config(&server);
    let publisher = NatsPublisher::connect(&cfg, 1 << 16).await.unwrap();
    let mut sub = NatsSubscriber::connect(&cfg, 1 << 16).await.unwrap();
    sub.subscribe("u");
    sub.sync().await.unwrap();
    for i in 0..100 {
        publisher.publish(&event("u", i)).unwrap();
    }
    publisher.flush().await.unwrap();
    for i in 0..100 {
        assert_eq!(next(&mut sub).await, BusMessage::Event(event("u", i)));
    }
    server.restart().unwrap();
    // Events published while the client reconnects may be lost; the resync covers them.
    let mut i = 100;
    let mut resynced = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !resynced {
        assert!(tokio::time::Instant::now() < deadline, "no resync after the restart");
        let _ = publisher.publish(&event("u", i));
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Some(msg) = sub.try_recv() {
            if let BusMessage::Resync { user: None, reason: ResyncReason::Reconnected, .. } = msg {
                resynced = true;
            }
        }
    }
    // After the resync, later events arrive again.
    tokio::time::timeout(WAIT, async {
        loop {
            publisher.publish(&event("u", i)).unwrap();
            let _ = publisher.flush().await;
            i += 1;
            if let Ok(Some(BusMessage::Event(ev))) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
                if ev.modseq_before >= 100 {
                    break;
                }
            }
        }
    })
    .await
    .expect("events flow again after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_stream_captures_events() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(tmp.path()).unwrap();
    let mut cfg = config(&server);
    cfg.jetstream.enabled = true;
    cfg.jetstream.stream = "EVENTS_TEST".into();
    cfg.jetstream.max_age_secs = 600;
    let publisher = NatsPublisher::connect(&cfg, 1024).await.unwrap();
    for i in 0..25 {
        publisher.publish(&event("durable user", i)).unwrap();
    }
    publisher.flush().await.unwrap();
    let js = async_nats::jetstream::new(publisher.client().clone());
    let mut stream = js.get_stream("EVENTS_TEST").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = stream.info().await.unwrap();
        if info.state.messages == 25 {
            assert_eq!(info.config.max_age, Duration::from_secs(600));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stream holds {} messages", info.state.messages);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second publisher finds the existing stream.
    NatsPublisher::connect(&cfg, 16).await.unwrap();
    // Stored payloads are our frames.
    let msg = stream.get_raw_message(1).await.unwrap();
    let frame = bus::wire::decode_frame(&msg.payload).unwrap();
    assert!(matches!(&frame.records[0], Ok(bus::wire::Record::Event(ev)) if ev.user == "durable user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_counted_and_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(tmp.path()).unwrap();
    let cfg = config(&server);
    let mut sub = NatsSubscriber::connect(&cfg, 64).await.unwrap();
    sub.subscribe("u");
    sub.sync().await.unwrap();
    let raw = async_nats::connect(server.url()).await.unwrap();
    let subject = bus::nats::subject_for_user(&cfg.subject_prefix, "u");
    raw.publish(subject.clone(), "garbage".into()).await.unwrap();
    raw.publish(subject.clone(), vec![1u8, 0xff].into()).await.unwrap();
    raw.flush().await.unwrap();
    let publisher = NatsPublisher::connect(&cfg, 64).await.unwrap();
    publisher.publish(&event("u", 0)).unwrap();
    publisher.flush().await.unwrap();
    assert_eq!(next(&mut sub).await, BusMessage::Event(event("u", 0)));
    let c = sub.counters();
    assert_eq!(c.dropped_malformed + c.dropped_unknown_version, 2, "{c:?}");
}

/// The permission set documented in the `nats` module: the server's user
/// publishes and subscribes; the push user reads events but its publishes
/// are refused. Also checks user/password authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_permissions_let_a_push_consumer_read_but_not_publish() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("nats.conf");
    std::fs::write(
        &conf,
        r#"
authorization {
  users = [
    { user: dormouse, password: "server-secret",
      permissions: { publish: ["dormouse.v1.events.>", "$JS.API.>", "_INBOX.>"],
                     subscribe: ["dormouse.v1.events.>", "_INBOX.>"] } }
    { user: push, password: "push-secret",
      permissions: { publish: { deny: ["dormouse.v1.events.>"] },
                     subscribe: { allow: ["dormouse.v1.events.>"] } } }
  ]
}
"#,
    )
    .unwrap();
    let server = LocalNatsServer::start_with(&tmp.path().join("js"), &["-c".into(), conf.display().to_string()]).unwrap();
    let as_user = |user: &str, password: &str| NatsConfig {
        user: Some(user.into()),
        password: Some(password.into()),
        ..config(&server)
    };
    // Wrong password: a clear connect error, no hang.
    let err = NatsPublisher::connect(&as_user("dormouse", "wrong"), 16).await.unwrap_err();
    assert!(matches!(err, bus::BusError::NatsConnect { .. }), "{err}");
    assert!(!err.to_string().contains("wrong"), "secrets must not appear in errors: {err}");

    let publisher = NatsPublisher::connect(&as_user("dormouse", "server-secret"), 64).await.unwrap();
    // The push consumer reads with a plain client, as an external consumer would.
    let push = async_nats::ConnectOptions::with_user_and_password("push".into(), "push-secret".into())
        .connect(server.url())
        .await
        .unwrap();
    let mut push_sub = push.subscribe("dormouse.v1.events.>").await.unwrap();
    push.flush().await.unwrap();
    let mut server_sub = NatsSubscriber::connect(&as_user("dormouse", "server-secret"), 64).await.unwrap();
    server_sub.subscribe("victim");
    server_sub.sync().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The push user tries to inject an event for "victim": refused by the server.
    let forged = bus::wire::encode_frame(
        &bus::wire::FrameHeader { publisher: 1, seq: 1, count: 1 },
        &bus::wire::encode_event_record(&event("victim", 41)),
    );
    push.publish(bus::nats::subject_for_user("dormouse.v1.events", "victim"), forged.into()).await.unwrap();
    push.flush().await.unwrap();
    // A real event from the server's user arrives at both.
    publisher.publish(&event("victim", 0)).unwrap();
    publisher.flush().await.unwrap();
    assert_eq!(next(&mut server_sub).await, BusMessage::Event(event("victim", 0)));
    let got = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut push_sub)).await.unwrap().unwrap();
    let frame = bus::wire::decode_frame(&got.payload).unwrap();
    assert!(matches!(&frame.records[0], Ok(bus::wire::Record::Event(ev)) if ev.modseq_before == 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server_sub.try_recv().is_none(), "the forged event got through");
}
