//! The JetStream source against a real nats-server: pairs the delivered log
//! already holds are skipped (and the message acknowledged), and a message
//! the server redelivers while its webhook is still in flight is not sent
//! twice.

mod relay_support;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use push::config::PushNatsConfig;
use push::relay::jetstream_source::run_jetstream_source;
use push::relay::{Relay, RelayConfig, RelaySettings};
use push::ExternalEvent;
use relay_support::*;

const SECRET: &str = "jetstream-test-secret-0123";

/// A nats-server of the test's own, with its JetStream folder.
struct Nats {
    server: bus::LocalNatsServer,
    _dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        Nats { server: bus::LocalNatsServer::start(dir.path()).unwrap(), _dir: dir }
    }
}

struct Setup {
    url: String,
    nats: Nats,
    js: jetstream::Context,
    nats_cfg: PushNatsConfig,
    relay_cfg: RelayConfig,
    relay: Relay,
    stop: tokio::sync::watch::Sender<bool>,
    source: tokio::task::JoinHandle<Result<(), push::relay::RelayError>>,
}

/// A nats-server, a relay on `state_dir` with `cfg`, and its JetStream
/// source running with the consumer in place.
async fn setup(state_dir: &std::path::Path, cfg: RelayConfig, regs: &[push::Registration]) -> Setup {
    let nats = Nats::start();
    let client = async_nats::connect(nats.server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let nats_cfg = PushNatsConfig { enabled: true, subject_prefix: "test.push".into(), stream: "TESTPUSH".into(), ..PushNatsConfig::default() };
    let relay = Relay::new(&RelaySettings {
        relay: cfg.clone(),
        max_event_bytes: 3800,
        state_dir: state_dir.to_path_buf(),
        remember_delivered: true,
        webpush: push::web_push::WebPushConfig::default(),
    })
    .unwrap();
    relay.set_registrations(regs);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let source = {
        let (relay, nats_cfg, cfg) = (relay.clone(), nats_cfg.clone(), cfg.clone());
        tokio::spawn(async move { run_jetstream_source(&relay, client, &nats_cfg, &cfg, stop_rx, Duration::from_secs(2)).await })
    };
    // The consumer starts with new messages: wait until it exists.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(stream) = js.get_stream(&nats_cfg.stream).await {
            if stream.consumer_info(&cfg.consumer).await.is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the relay never created its consumer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Setup { url: nats.server.url(), nats, js, nats_cfg, relay_cfg: cfg, relay, stop, source }
}

impl Setup {
    async fn publish(&self, ev: &ExternalEvent) {
        let subject = push::nats_publisher::event_subject(&self.nats_cfg.subject_prefix, ev);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", ev.id.as_str());
        self.js.publish_with_headers(subject, headers, ev.to_json().into()).await.unwrap().await.unwrap();
    }

    /// Waits until the consumer has nothing pending or un-acknowledged.
    async fn wait_all_acked(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stream = self.js.get_stream(&self.nats_cfg.stream).await.unwrap();
            let info = stream.consumer_info(&self.relay_cfg.consumer).await.unwrap();
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "still open: {} un-acked, {} pending", info.num_ack_pending, info.num_pending);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.source.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_already_delivered_are_skipped_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let reg = webhook("alice", &rx.url("/a"), SECRET, &[]);
    let (done, fresh) = (new_mail("alice", 1), new_mail("alice", 2));
    // As if a previous run delivered `done` and died before acknowledging it.
    std::fs::write(dir.path().join("delivered.log"), format!("{} {}\n", reg.id, done.id)).unwrap();
    let s = setup(dir.path(), RelayConfig { consumer: "skip-test".into(), ..test_config() }, &[reg]).await;
    s.publish(&done).await;
    s.publish(&fresh).await;
    let got = rx.wait_for("/a", 1).await;
    assert_eq!(got[0].event_id, fresh.id);
    s.wait_all_acked().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 1, "the delivered pair is not sent again");
    assert_eq!(s.relay.counters().duplicates_skipped, 1);
    let log = std::fs::read_to_string(dir.path().join("delivered.log")).unwrap();
    assert!(log.contains(&fresh.id), "the new delivery is remembered: {log}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redelivered_while_in_flight_is_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    // The webhook takes longer than ack_wait: the server redelivers meanwhile.
    rx.set("/slow", Behaviour::Slow(Duration::from_millis(2500)));
    let reg = webhook("alice", &rx.url("/slow"), SECRET, &[]);
    let cfg = RelayConfig { consumer: "slow-test".into(), ack_wait_secs: 1, timeout_ms: 10_000, ..test_config() };
    let s = setup(dir.path(), cfg, &[reg]).await;
    let ev = new_mail("alice", 1);
    s.publish(&ev).await;
    rx.wait_for("/slow", 1).await;
    s.wait_all_acked().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = rx.requests_to("/slow");
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(s.relay.counters().deliveries_ok, 1);
    // The server did hand the message out more than once.
    let stream = s.js.get_stream(&s.nats_cfg.stream).await.unwrap();
    let info = stream.consumer_info(&s.relay_cfg.consumer).await.unwrap();
    assert!(info.delivered.consumer_sequence >= 2, "no redelivery happened: {:?}", info.delivered);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_consumer_settings_apply_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RelayConfig { consumer: "settings-test".into(), ack_wait_secs: 30, max_ack_pending: 100, ..test_config() };
    let s = setup(dir.path(), cfg.clone(), &[]).await;
    let (url, js, nats_cfg, relay) = (s.url.clone(), s.js.clone(), s.nats_cfg.clone(), s.relay.clone());
    let nats = {
        s.stop.send(true).unwrap();
        s.source.await.unwrap().unwrap();
        s.nats
    };
    let changed = RelayConfig { ack_wait_secs: 2, max_ack_pending: 7, ..cfg };
    let client = async_nats::connect(url).await.unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let source = {
        let (nats_cfg, changed) = (nats_cfg.clone(), changed.clone());
        tokio::spawn(async move { run_jetstream_source(&relay, client, &nats_cfg, &changed, stop_rx, Duration::from_secs(1)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stream = js.get_stream(&nats_cfg.stream).await.unwrap();
        let info = stream.consumer_info(&changed.consumer).await.unwrap();
        if info.config.ack_wait == Duration::from_secs(2) && info.config.max_ack_pending == 7 {
            break;
        }
        assert!(Instant::now() < deadline, "consumer not updated: {:?}", info.config);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    source.await.unwrap().unwrap();
    drop(nats);
}
