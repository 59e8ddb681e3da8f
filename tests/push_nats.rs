//! External events on NATS end to end: a real `dormouse serve` (bus over
//! NATS, `[push.nats] enabled`) and `dormouse deliver` against the test's
//! own nats-server; a JetStream consumer created only afterwards (a consumer
//! that was down) still gets every event, in the documented format.

mod imap_support;
mod support;

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use bus::LocalNatsServer;
use futures::StreamExt;
use imap_support::{Conn, Server, ServerOptions};
use serde_json::Value;

/// One event as a consumer sees it.
#[derive(Debug)]
struct Received {
    subject: String,
    msg_id: String,
    json: Value,
}

impl Received {
    fn kind(&self) -> &str {
        self.json["event"].as_str().unwrap_or_default()
    }
}

/// Creates a durable pull consumer on the push stream for `user`'s events
/// (starting at the beginning of the stream) and reads until `done` holds
/// for what arrived, for at most 20 s.
fn consume(url: &str, user: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(client);
        let stream = js.get_stream("DORMOUSE_PUSH").await.expect("the push stream exists");
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("late-consumer".into()),
                filter_subject: format!("dormouse.v1.push.{}.>", bus::nats::user_token(user)),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&got) && Instant::now() < deadline {
            let mut batch = consumer.fetch().max_messages(100).expires(Duration::from_millis(500)).messages().await.unwrap();
            while let Some(m) = batch.next().await {
                let m = m.unwrap();
                let msg_id =
                    m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str().to_owned()).unwrap_or_default();
                got.push(Received { subject: m.subject.to_string(), msg_id, json: serde_json::from_slice(&m.payload).unwrap() });
                m.ack().await.unwrap();
            }
        }
        got
    })
}

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!("From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\n{body}\r\n").into_bytes()
}

fn lmtp_deliver(port: u16, rcpt: &str, message: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut script = format!("LHLO test\r\nMAIL FROM:<bob@example.org>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").into_bytes();
    script.extend_from_slice(message);
    script.extend_from_slice(b".\r\nQUIT\r\n");
    w.write_all(&script).unwrap();
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        all.push_str(&line);
        if line.starts_with("221") {
            break;
        }
    }
    assert!(all.contains("Saved as UID"), "{all}");
}

fn by_kind<'a>(got: &'a [Received], kind: &str) -> Vec<&'a Received> {
    got.iter().filter(|r| r.kind() == kind).collect()
}

#[test]
fn serve_and_deliver_publish_external_events_a_late_consumer_gets() {
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = LocalNatsServer::start(nats_dir.path()).unwrap();
    let server = Server::start(ServerOptions {
        sections_extra: format!(
            "[bus]\ntransport = \"nats\"\n[bus.nats]\nurl = \"{}\"\n[push.nats]\nenabled = true\n",
            nats.url()
        ),
        ..ServerOptions::default()
    });
    lmtp_deliver(server.lmtp, "alice@example.org", &message("By LMTP", "Are you free at noon?"));
    server.deliver("alice", &message("By deliver", "Second message body"));
    let mut c = Conn::open(server.imap);
    c.cmd("a", "LOGIN alice secret-a");
    c.cmd("b", "SELECT INBOX");
    let stored = c.cmd("c", "UID STORE 1 +FLAGS (\\Seen)");
    assert!(stored.last().unwrap().starts_with("c OK"), "{stored:?}");
    c.cmd("d", "LOGOUT");

    let got = consume(&nats.url(), "alice", |got| {
        by_kind(got, "MessageNew").len() >= 2 && !by_kind(got, "MessageRead").is_empty()
    });
    let log = server.log_text();
    let new = by_kind(&got, "MessageNew");
    assert_eq!(new.len(), 2, "{got:#?}\nlog:\n{log}");
    let token = bus::nats::user_token("alice");
    for r in &got {
        assert_eq!(r.json["version"], 1);
        assert_eq!(r.json["user"], "alice");
        assert_eq!(r.msg_id, r.json["id"].as_str().unwrap(), "Nats-Msg-Id is the event id");
        assert_eq!(r.subject, format!("dormouse.v1.push.{token}.{}", r.kind()));
    }
    let subjects: Vec<&str> = new.iter().map(|r| r.json["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["By LMTP", "By deliver"]);
    assert!(new.iter().all(|r| r.json["from"].as_str().unwrap().contains("bob@example.org")), "{new:#?}");
    assert_eq!(new[0].json["snippet"], "Are you free at noon?");
    assert_eq!((new[1].json["uids"].as_str(), new[1].json["messages"].as_u64()), (Some("2"), Some(2)));

    let set = by_kind(&got, "FlagsSet");
    let read = by_kind(&got, "MessageRead");
    assert_eq!((set.len(), read.len()), (1, 1), "{got:#?}");
    for r in [set[0], read[0]] {
        assert_eq!(r.json["uids"], "1");
        assert_eq!(r.json["flags"], serde_json::json!(["\\Seen"]));
        assert_eq!(r.json["unseen"], 1);
        assert!(r.json.get("subject").is_none());
    }
    assert_ne!(set[0].json["id"], read[0].json["id"]);
    let ids: std::collections::HashSet<&str> = got.iter().map(|r| r.msg_id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "every event once");
}

#[test]
fn deliver_respects_the_header_policy_and_survives_a_missing_server() {
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = LocalNatsServer::start(nats_dir.path()).unwrap();
    let env = support::TestEnv::new(
        "",
        &format!("[bus.nats]\nurl = \"{}\"\n[push.nats]\nenabled = true\n[push.headers]\nsubject = false\n", nats.url()),
    );
    env.add_user("alice", "pw");
    let out = env.deliver(&["--user", "alice"], &message("Secret plans", "Meet at the old mill"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `deliver` waited for the ack before exiting: the event is stored now.
    let got = consume(&nats.url(), "alice", |got| !by_kind(got, "MessageNew").is_empty());
    let new = by_kind(&got, "MessageNew");
    assert_eq!(new.len(), 1, "{got:#?}");
    let json = &new[0].json;
    assert!(json.get("subject").is_none(), "{json}");
    assert!(!json.to_string().contains("Secret plans"), "{json}");
    assert_eq!(json["snippet"], "Meet at the old mill");
    assert!(json["from"].as_str().unwrap().contains("bob@example.org"));

    // No NATS server at all: mail is still stored, with a warning.
    drop(nats);
    let started = Instant::now();
    let out = env.deliver(&["--user", "alice"], &message("Offline", "still delivered"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no NATS push publisher"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let inbox: PathBuf = env.home("alice").join("Maildir");
    assert_eq!(support::files_in(&inbox).len(), 2);
}

#[test]
fn outside_changes_seen_by_the_hibernate_process_are_external_events_too() {
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = LocalNatsServer::start(nats_dir.path()).unwrap();
    let server = Server::start(ServerOptions {
        sections_extra: format!(
            "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 2\nprocesses = 1\nkeepalive_secs = 600\n\
             [bus.nats]\nurl = \"{}\"\n[push.nats]\nenabled = true\n",
            nats.url()
        ),
        ..ServerOptions::default()
    });
    server.deliver("alice", &message("Delivered", "first"));
    let mut c = Conn::open(server.imap);
    c.cmd("a", "LOGIN alice secret-a");
    c.cmd("b", "SELECT INBOX");
    c.send(b"c IDLE\r\n");
    assert!(c.line().starts_with("+ "));
    server.wait_held(1);

    // Another program drops a message into the Maildir: the hibernate
    // process finds it, tells the client, and publishes it.
    let maildir = server.dir.path().join("data/home/alice/Maildir");
    std::fs::write(
        maildir.join("new/outside.1"),
        b"From: Carol <carol@example.org>\r\nSubject: From outside\r\n\r\nDropped in by procmail\r\n",
    )
    .unwrap();
    assert_eq!(c.line().trim_end(), "* 2 EXISTS");
    let got = consume(&nats.url(), "alice", |got| by_kind(got, "MessageNew").len() >= 2);
    let new = by_kind(&got, "MessageNew");
    let subjects: Vec<&str> = new.iter().map(|r| r.json["subject"].as_str().unwrap_or_default()).collect();
    assert_eq!(subjects, ["Delivered", "From outside"], "{got:#?}\nlog:\n{}", server.log_text());
    assert_eq!(new[1].json["uids"], "2");
    assert_eq!(new[1].json["snippet"], "Dropped in by procmail");
}

#[test]
fn serve_started_while_nats_is_down_publishes_once_it_is_up() {
    let nats_dir = tempfile::tempdir().unwrap();
    let mut nats = LocalNatsServer::start(nats_dir.path()).unwrap();
    nats.stop();
    // The bus stays the UNIX default; only the push publisher needs NATS.
    let server = Server::start(ServerOptions {
        sections_extra: format!("[bus.nats]\nurl = \"{}\"\n[push.nats]\nenabled = true\n", nats.url()),
        ..ServerOptions::default()
    });
    lmtp_deliver(server.lmtp, "alice@example.org", &message("While NATS was down", "stored all the same"));
    nats.restart().unwrap();
    server.wait_for_log("push: NATS reachable", Duration::from_secs(90));
    lmtp_deliver(server.lmtp, "alice@example.org", &message("After NATS came back", "published"));
    let got = consume(&nats.url(), "alice", |got| !by_kind(got, "MessageNew").is_empty());
    let subjects: Vec<&str> = by_kind(&got, "MessageNew").iter().map(|r| r.json["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["After NATS came back"], "{got:#?}");
    let mut c = Conn::open(server.imap);
    c.cmd("a", "LOGIN alice secret-a");
    let selected = c.cmd("b", "SELECT INBOX");
    assert!(selected.iter().any(|l| l.starts_with("* 2 EXISTS")), "both messages stored: {selected:?}");
}
